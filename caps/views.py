"""HTML pages of caps: each cap's usage against its limits, and the user's own caps' forms.

The forms call the caps services (the same rules as the JSON API); an administrator's cap is
shown read-only.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from caps.api import INT32_MAX, INT64_MAX
from caps.errors import CapStoreUnavailable
from caps.models import CapType, SetBy, UserCapConfig
from caps.services import cap_create, cap_delete, cap_update
from caps.status import cap_status
from config import clock

WARNING_PERCENT = 80
CENT = Decimal("0.01")


class CapForm(forms.Form):
    """A user's own cap; cost is entered in dollars and stored as whole cents."""

    cap_type = forms.ChoiceField(label="Period", choices=CapType.choices)
    max_requests = forms.IntegerField(
        label="Max requests", required=False, min_value=1, max_value=INT32_MAX
    )
    max_tokens = forms.IntegerField(
        label="Max tokens",
        required=False,
        min_value=1,
        max_value=INT64_MAX,
        help_text="Input + output + cache-write tokens.",
    )
    max_cost_usd = forms.DecimalField(
        label="Max cost (USD)",
        required=False,
        min_value=CENT,
        max_digits=16,
        decimal_places=2,
    )
    is_active = forms.BooleanField(label="Active", required=False, initial=True)

    def clean(self) -> dict:
        cleaned = super().clean()
        limits = ("max_requests", "max_tokens", "max_cost_usd")
        if not self.errors and all(cleaned.get(name) is None for name in limits):
            raise ValidationError("Set at least one limit: requests, tokens or cost.")
        return cleaned

    def service_values(self) -> dict:
        data = self.cleaned_data
        cost = data.get("max_cost_usd")
        return {
            "cap_type": data["cap_type"],
            "max_requests": data.get("max_requests"),
            "max_tokens": data.get("max_tokens"),
            "max_cost_cents": None if cost is None else int(cost * 100),
            "is_active": data.get("is_active", False),
        }

    def add_service_errors(self, exc: ValidationError) -> None:
        """The service's errors, on the fields they name (cents shown on the dollar field)."""
        names = {"max_cost_cents": "max_cost_usd", "non_field_errors": None, "__all__": None}
        for name, errors in exc.message_dict.items():
            field = names.get(name, name)
            self.add_error(field if field in self.fields else None, errors)

    @classmethod
    def for_cap(cls, cap: UserCapConfig) -> CapForm:
        cost = cap.max_cost_cents
        return cls(
            initial={
                "cap_type": cap.cap_type,
                "max_requests": cap.max_requests,
                "max_tokens": cap.max_tokens,
                "max_cost_usd": None if cost is None else (Decimal(cost) / 100).quantize(CENT),
                "is_active": cap.is_active,
            }
        )


def _state(percent: float, exceeded: bool) -> str:
    if exceeded:
        return "exceeded"
    return "warning" if percent >= WARNING_PERCENT else "ok"


def _meters(row: dict) -> list[dict]:
    """One bar per limit the cap sets: used / limit, percentage, state."""
    used, limits = row["current_usage"], row["limits"]
    meters = []
    for kind, used_value, limit in (
        ("Requests", used["requests"], limits["max_requests"]),
        ("Tokens", used["tokens"], limits["max_tokens"]),
        ("Cost", used["cost_cents"], limits["max_cost_cents"]),
    ):
        if limit is None:
            continue
        percent = float(Decimal(used_value) / Decimal(limit) * 100)
        if kind == "Cost":
            used_text = f"${(Decimal(used_value) / 100).quantize(Decimal('0.0001')):,}"
            limit_text = f"${(Decimal(limit) / 100).quantize(CENT):,}"
        else:
            used_text, limit_text = f"{used_value:,}", f"{limit:,}"
        meters.append(
            {
                "kind": kind,
                "used": used_text,
                "limit": limit_text,
                "percent": round(percent, 1),
                "width": min(100, round(percent, 1)),
                "state": _state(percent, percent >= 100),
            }
        )
    return meters


def cap_cards(*, user_id: int, now: datetime | None = None) -> tuple[list[dict], bool]:
    """Cards for the caps page: active caps with usage, then the user's inactive caps.

    Returns (cards, live): `live` is False when the counter store could not be read.
    """
    now = now or clock.now()
    caps = {cap.pk: cap for cap in UserCapConfig.objects.filter(user_id=user_id)}
    try:
        rows = cap_status(user_id=user_id, now=now)
        live = True
    except CapStoreUnavailable:
        rows, live = [], False
    cards = []
    for row in rows:
        # The policy's and the team's caps are not the user's rows (their ids are another
        # table's): read-only, labelled by where they come from.
        own_row = row["set_by"] in (SetBy.ADMIN, SetBy.USER)
        cap = caps.pop(row["id"], None) if own_row else None
        cards.append(
            {
                "id": row["id"] if own_row else f"{row['set_by']}-{row['id']}",
                "cap_type": row["cap_type"],
                "period": CapType(row["cap_type"]).label,
                "by_admin": row["set_by"] != SetBy.USER,
                "source": row["set_by"],
                "active": True,
                "meters": _meters(row),
                "percent": row["percentage_used"],
                "state": _state(row["percentage_used"], row["is_exceeded"]),
                "reset_time": row["reset_time"],
                "enforced": row["enforced"],
                "enforce_from": row["enforce_from"],
                "in_flight": row["in_flight"]["requests"],
                "cap": cap,
            }
        )
    # Inactive caps (the status lists active ones only) — or every cap when the store is down.
    for cap in caps.values():
        cards.append(
            {
                "id": cap.pk,
                "cap_type": cap.cap_type,
                "period": CapType(cap.cap_type).label,
                "by_admin": cap.set_by == SetBy.ADMIN,
                "active": cap.is_active,
                "meters": [],
                "state": "inactive" if not cap.is_active else "unknown",
                "cap": cap,
                # A session cap has no calendar window: its limit, said in words.
                "session_limit": f"${Decimal(cap.max_cost_cents) / 100:,.2f}"
                if cap.cap_type == CapType.SESSION and cap.max_cost_cents
                else None,
            }
        )
    return cards, live


def _own_cap(request: HttpRequest, pk: int) -> UserCapConfig:
    # Someone else's cap is a 404; an administrator's cap of this user is read-only (403).
    cap = get_object_or_404(UserCapConfig, pk=pk, user_id=request.user.pk)
    if cap.set_by != SetBy.USER:
        raise _AdminCap
    return cap


class _AdminCap(Exception):
    pass


def _read_only(request: HttpRequest) -> HttpResponse:
    messages.error(request, "That cap was set by an administrator: only they can change it.")
    return redirect("caps-page")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def caps_page(request: HttpRequest) -> HttpResponse:
    """GET: every cap that applies to the user; POST: create one of their own."""
    form = CapForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            cap_create(
                user_id=request.user.pk,
                set_by=SetBy.USER,  # type: ignore[arg-type]  # Django's Choices are untyped here
                **form.service_values(),
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, "Cap created.")
            return redirect("caps-page")
    cards, live = cap_cards(user_id=request.user.pk)
    return render(
        request,
        "caps/index.html",
        {
            "cards": cards,
            "live": live,
            "form": form,
            "enforce_caps": settings.GATEWAY.usage_caps.enforce_caps,
            "warning_percent": WARNING_PERCENT,
        },
        status=400 if request.method == "POST" else 200,
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def cap_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change one of the user's own caps."""
    try:
        cap = _own_cap(request, pk)
    except _AdminCap:
        return _read_only(request)
    form = CapForm(request.POST) if request.method == "POST" else CapForm.for_cap(cap)
    if request.method == "POST" and form.is_valid():
        try:
            cap_update(cap=cap, by_admin=False, **form.service_values())
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"{cap.get_cap_type_display()} cap updated.")
            return redirect("caps-page")
    status = 400 if request.method == "POST" else 200
    return render(request, "caps/edit.html", {"form": form, "cap": cap}, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def cap_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: confirm; POST: remove one of the user's own caps."""
    try:
        cap = _own_cap(request, pk)
    except _AdminCap:
        return _read_only(request)
    if request.method == "POST":
        cap_delete(cap=cap, by_admin=False)
        messages.success(request, f"{cap.get_cap_type_display()} cap removed.")
        return redirect("caps-page")
    return render(request, "caps/delete.html", {"cap": cap})
