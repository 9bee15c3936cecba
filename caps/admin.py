"""Django admin for caps: users' caps, teams with their caps and members, bulk cap actions on
users and teams, and the caps CSV import / export. Every write goes through caps.services
(grace period, caches) and accounts.services.user_team_set."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from accounts.admin import UserAdmin
from accounts.models import Team
from accounts.services import user_team_set
from caps import csvio
from caps.bulk import (
    TEAM_PERIODS,
    USER_PERIODS,
    BulkResult,
    Limits,
    limits_problems,
    teams_cap_apply,
    users_cap_apply,
)
from caps.models import CapPolicy, CapType, TeamCapConfig, UserCapConfig
from caps.policy import locked_fields, policy_rows, policy_update
from caps.rules import LIMIT_FIELDS
from caps.services import (
    cap_delete,
    cap_delete_many,
    cap_save,
    caps_set_active,
    team_cap_delete,
    team_cap_set,
)
from config import clock
from costs.money import cents_usd, micros_usd
from usage.overview import team_spend_subquery
from usage.windows import HOUR, floor_hour, period_start


class MaxCostInDollars:
    """`max_cost`: the cap's `max_cost_cents` shown as dollars ($12.34)."""

    @admin.display(description="max cost", ordering="max_cost_cents")
    def max_cost(self, obj: UserCapConfig) -> str:
        return cents_usd(obj.max_cost_cents)


@admin.register(UserCapConfig)
class UserCapConfigAdmin(MaxCostInDollars, admin.ModelAdmin):
    """Usage caps of every user; saving goes through the services (grace period, caches)."""

    list_display = [
        "user",
        "cap_type",
        "set_by",
        "max_requests",
        "max_tokens",
        "max_cost",
        "is_active",
        "enforce_from",
        "updated_at",
    ]
    list_filter = ["cap_type", "is_active", "set_by"]
    search_fields = ["user__email"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    fields = [
        "user",
        "cap_type",
        "set_by",
        "max_requests",
        "max_tokens",
        "max_cost_cents",
        "is_active",
        "enforce_from",
        "prior_limits",
    ]
    readonly_fields = ["enforce_from", "prior_limits"]
    actions = ["activate", "deactivate"]
    change_list_template = "admin/caps/usercapconfig/change_list.html"

    def get_changeform_initial_data(self, request):
        return {"set_by": "admin", "cap_type": "daily"}

    def save_model(self, request, obj: UserCapConfig, form, change: bool) -> None:
        cap_save(cap=obj)

    def delete_model(self, request, obj: UserCapConfig) -> None:
        cap_delete(cap=obj, by_admin=True)

    def delete_queryset(self, request, queryset) -> None:
        cap_delete_many(caps=list(queryset))

    @admin.action(description="Activate selected caps")
    def activate(self, request, queryset) -> None:
        changed = caps_set_active(caps=list(queryset), active=True)
        self.message_user(request, f"{changed} cap(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate selected caps")
    def deactivate(self, request, queryset) -> None:
        changed = caps_set_active(caps=list(queryset), active=False)
        self.message_user(request, f"{changed} cap(s) deactivated.", messages.SUCCESS)

    def get_urls(self) -> list:
        return [
            path(
                "import-csv/",
                self.admin_site.admin_view(self.import_view),
                name="caps_usercapconfig_import",
            ),
            path(
                "export-csv/",
                self.admin_site.admin_view(self.export_view),
                name="caps_usercapconfig_export",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload shows a preview (or the errors by row); Apply imports the previewed text."""
        if not self.has_add_permission(request) or not self.has_change_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import caps from CSV",
            "form": CsvUploadForm(),
            "header": ",".join(csvio.COLUMNS),
        }
        if request.method == "POST" and "apply" in request.POST:
            try:
                result = csvio.caps_import_csv(text=request.POST.get("csv_text", ""))
            except csvio.CapsImportError as exc:
                context.update(errors=exc.errors)
            else:
                self.message_user(
                    request,
                    f"Imported caps: {result.created} created, {result.updated} updated, "
                    f"{result.unchanged} unchanged, {result.ignored} ignored.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:caps_usercapconfig_changelist"))
        elif request.method == "POST":
            form = CsvUploadForm(request.POST, request.FILES)
            context["form"] = form
            if form.is_valid():
                context.update(_preview(form.cleaned_data["file"]))
        return TemplateResponse(request, "admin/caps/usercapconfig/import.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every active cap with its use now, as a CSV file the import accepts back."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = clock.now()
        response = HttpResponse(
            csvio.caps_export_csv(now=now), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="caps-{now:%Y%m%d-%H%M}.csv"'
        return response


class CsvUploadForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV, at most 1 MB.")


def _preview(upload) -> dict:  # an UploadedFile
    if upload.size > csvio.MAX_IMPORT_BYTES:
        return {"errors": [csvio.RowError(None, None, "file is larger than 1 MB")]}
    try:
        text = upload.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        return {"errors": [csvio.RowError(None, "file", "file is not UTF-8 text")]}
    preview = csvio.caps_import_preview(text=text)
    rows = [
        {
            "item": item,
            "limits": _limits_text(item.limits),
            "before": "" if item.before is None else _limits_text(item.before),
        }
        for item in preview.rows
    ]
    return {
        "preview": preview,
        "rows": rows,
        "errors": preview.errors,
        "counts": {a: preview.count(a) for a in ("create", "update", "unchanged", "ignored")},
        "csv_text": text if preview.ok else "",
    }


def _limits_text(limits: Any) -> str:
    """A cap's limits for people: "1,000 requests · 2,000,000 tokens · $50.00"."""
    parts = []
    if limits.max_requests is not None:
        parts.append(f"{limits.max_requests:,} requests")
    if limits.max_tokens is not None:
        parts.append(f"{limits.max_tokens:,} tokens")
    if limits.max_cost_cents is not None:
        parts.append(cents_usd(limits.max_cost_cents))
    return " · ".join(parts) or "no limit"


class UserCapInline(MaxCostInDollars, admin.TabularInline):
    """A user's caps on their page, read-only here: edited on the cap's own page (through the
    services, for the grace period); "Add another" links to a new cap."""

    model = UserCapConfig
    fields = ["cap_type", "set_by", "max_requests", "max_tokens", "max_cost", "is_active"]
    readonly_fields = [*fields, "enforce_from"]
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


UserAdmin.inlines = [*UserAdmin.inlines, UserCapInline]


# --- Bulk cap actions ----------------------------------------------------------------------------


class DollarLimits:
    """`limits` of a form with max_requests, max_tokens and max_cost_usd (dollars)."""

    cleaned_data: dict

    @property
    def limits(self) -> Limits:
        dollars = self.cleaned_data.get("max_cost_usd")
        return Limits(
            max_requests=self.cleaned_data.get("max_requests"),
            max_tokens=self.cleaned_data.get("max_tokens"),
            max_cost_cents=None if dollars is None else int(dollars * 100),
        )


class LimitsForm(DollarLimits, forms.Form):
    """A period and its limits, cost in dollars; empty = no such limit."""

    period = forms.ChoiceField(choices=[(p, CapType(p).label) for p in USER_PERIODS])
    max_requests = forms.IntegerField(required=False, min_value=1, max_value=csvio.MAX_REQUESTS)
    max_tokens = forms.IntegerField(required=False, min_value=1, max_value=csvio.MAX_BIG)
    max_cost_usd = forms.DecimalField(
        required=False,
        min_value=Decimal("0.01"),
        max_digits=15,
        decimal_places=2,
        label="Max cost (USD)",
    )
    for_teams = False

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        problems = limits_problems(
            period=cleaned["period"], limits=self.limits, team=self.for_teams
        )
        if problems:
            raise ValidationError(problems)
        return cleaned


class TeamLimitsForm(LimitsForm):
    period = forms.ChoiceField(choices=[(p, CapType(p).label) for p in TEAM_PERIODS])
    for_teams = True


class MoveToTeamForm(forms.Form):
    team = forms.ModelChoiceField(
        queryset=Team.objects.all(), required=False, empty_label="(no team)"
    )


def _action_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    form: forms.Form,
    submit: str,
) -> TemplateResponse:
    """The intermediate page of an action: the form, the selection, back to the action."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": title,
        "form": form,
        "objects": queryset,
        "action": action,
        "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "submit": submit,
    }
    return TemplateResponse(request, "admin/caps/action_form.html", context)


def _result_message(result: BulkResult, what: str) -> str:
    return (
        f"{what}: {result.created} created, {result.updated} updated, {result.unchanged} unchanged."
    )


@admin.action(description="Apply a cap to selected users…")
def apply_cap(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet):
    """Create or update each selected user's administrator cap of one period."""
    form = LimitsForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        result = users_cap_apply(
            user_ids=list(queryset.values_list("pk", flat=True)),
            period=form.cleaned_data["period"],
            limits=form.limits,
        )
        modeladmin.message_user(
            request, _result_message(result, "Administrator caps"), messages.SUCCESS
        )
        return None
    return _action_page(
        modeladmin, request, queryset, action="apply_cap", form=form,
        title="Apply a cap to the selected users", submit="Apply the cap",
    )  # fmt: skip


@admin.action(description="Move selected users to a team…")
def move_to_team(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet):
    """Put the selected users in one team (or in none)."""
    form = MoveToTeamForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        team = form.cleaned_data["team"]
        moved = sum(user_team_set(user=user, team=team) for user in queryset)
        where = f"team {team.name}" if team else "no team"
        modeladmin.message_user(request, f"Moved {moved} user(s) to {where}.", messages.SUCCESS)
        return None
    return _action_page(
        modeladmin, request, queryset, action="move_to_team", form=form,
        title="Move the selected users to a team", submit="Move",
    )  # fmt: skip


# The user list from accounts.admin, extended here (accounts depends on no other app): the
# team as a column and a filter, and the two bulk actions.
UserAdmin.list_display = [*UserAdmin.list_display, "team"]
UserAdmin.list_filter = [*UserAdmin.list_filter, "team"]
UserAdmin.actions = [*UserAdmin.actions, move_to_team, apply_cap]


# --- Teams ---------------------------------------------------------------------------------------


class TeamCapForm(DollarLimits, forms.ModelForm):
    """A team cap with its cost in dollars."""

    max_cost_usd = forms.DecimalField(
        required=False,
        min_value=Decimal("0.01"),
        max_digits=15,
        decimal_places=2,
        label="Max cost (USD)",
    )

    class Meta:
        model = TeamCapConfig
        fields = ["cap_type", "max_requests", "max_tokens", "is_active"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.max_cost_cents is not None:
            cents = Decimal(self.instance.max_cost_cents)
            self.initial["max_cost_usd"] = (cents / 100).quantize(Decimal("0.01"))

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors or cleaned.get("DELETE"):
            return cleaned
        problems = limits_problems(
            period=cleaned.get("cap_type", ""), limits=self.limits, team=True
        )
        if problems:
            raise ValidationError(problems)
        return cleaned


class TeamCapInline(admin.TabularInline):
    """The team's caps; saved through the team cap services (TeamAdmin.save_formset)."""

    model = TeamCapConfig
    form = TeamCapForm
    verbose_name = "team cap"
    verbose_name_plural = "team caps"
    fields = ["cap_type", "max_requests", "max_tokens", "max_cost_usd", "is_active", "enforce_from"]
    readonly_fields = ["enforce_from"]
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """Teams: members, spend this month (calls made while in the team) and the team's caps."""

    list_display = ["name", "member_count", "spend_this_month", "caps_summary"]
    search_fields = ["name"]
    fields = ["name", "members_list", "created_at"]
    readonly_fields = ["members_list", "created_at"]
    inlines = [TeamCapInline]
    actions = ["set_team_cap"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        now = clock.now()
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_count=Count("members", distinct=True),
                month_spend=team_spend_subquery(
                    start=period_start("monthly", now), end=floor_hour(now) + HOUR
                ),
            )
            .prefetch_related("caps")
        )

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Team) -> int:
        return obj.member_count

    @admin.display(description="spend this month", ordering="month_spend")
    def spend_this_month(self, obj: Team) -> str:
        return micros_usd(obj.month_spend)

    @admin.display(description="team caps")
    def caps_summary(self, obj: Team) -> str:
        caps = sorted(
            (cap for cap in obj.caps.all() if cap.is_active),
            key=lambda cap: TEAM_PERIODS.index(cap.cap_type),
        )
        return "; ".join(f"{cap.cap_type} {_limits_text(cap)}" for cap in caps) or "none"

    @admin.display(description="members")
    def members_list(self, obj: Team) -> str:
        if obj.pk is None:
            return "—"
        members = obj.members.order_by("email").values_list("pk", "email")
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:accounts_user_change", args=[pk]), email) for pk, email in members),
        )
        return links or "none (move users here with the users list's action)"

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not TeamCapConfig:
            super().save_formset(request, form, formset, change)
            return
        # Through the services (grace period, the members' cached caps), not formset.save();
        # the lists are what admin's change message reads.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        team = form.instance
        for cap_form in formset.forms:
            old = cap_form.instance if cap_form.instance.pk else None
            if cap_form in formset.deleted_forms:
                if old is not None:
                    team_cap_delete(cap=old)
                    formset.deleted_objects.append(old)
                continue
            if not cap_form.has_changed():
                continue
            period = cap_form.cleaned_data["cap_type"]
            if old is not None and old.cap_type != period:
                team_cap_delete(cap=old)  # the period changed: a cap of another window
            saved = team_cap_set(
                team_id=team.pk,
                cap_type=period,
                is_active=cap_form.cleaned_data.get("is_active", True),
                **cap_form.limits.as_dict(),
            )
            if old is None:
                formset.new_objects.append(saved)
            else:
                formset.changed_objects.append((saved, cap_form.changed_data))

    @admin.action(description="Set a team cap…")
    def set_team_cap(self, request: HttpRequest, queryset: QuerySet):
        form = TeamLimitsForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            result = teams_cap_apply(
                team_ids=list(queryset.values_list("pk", flat=True)),
                period=form.cleaned_data["period"],
                limits=form.limits,
            )
            self.message_user(request, _result_message(result, "Team caps"), messages.SUCCESS)
            return None
        return _action_page(
            self, request, queryset, action="set_team_cap", form=form,
            title="Set a cap on the selected teams", submit="Set the cap",
        )  # fmt: skip


@admin.register(CapPolicy)
class CapPolicyAdmin(MaxCostInDollars, admin.ModelAdmin):
    """The caps everyone has without an administrator cap of that period: one row per period,
    live for every user. A limit set in YAML or the environment shows read-only here."""

    list_display = ["cap_type", "max_requests", "max_tokens", "max_cost", "enforce_from"]
    fields = ["cap_type", "max_requests", "max_tokens", "max_cost_cents", "enforce_from"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        policy_rows()  # created from the configuration on first sight
        return super().get_queryset(request)

    def get_readonly_fields(self, request: HttpRequest, obj: CapPolicy | None = None) -> list:
        locked = sorted(locked_fields(obj.cap_type)) if obj is not None else []
        return ["cap_type", "enforce_from", *locked]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CapPolicy | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: CapPolicy, form, change: bool) -> None:
        limits = {f: getattr(obj, f) for f in form.changed_data if f in LIMIT_FIELDS}
        try:
            policy_update(cap_type=obj.cap_type, **limits)
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
