from django.contrib import admin, messages

from accounts.admin import UserAdmin
from caps.models import UserCapConfig
from caps.services import cap_delete, cap_delete_many, cap_save, caps_set_active
from costs.money import cents_usd


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
