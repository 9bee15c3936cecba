"""Cap writes: a user's caps (their own, or an administrator's for them) and a team's, created,
changed and removed with the grace rules (caps/grace.py) and validated as the API and the
forms expect. Every write tells every process through `cap_config_changed` (caps/cache.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from caps.cache import cap_config_changed
from caps.grace import enforced_now, grace_apply
from caps.models import SetBy, TeamCapConfig, UserCapConfig
from caps.policy import policy_load
from caps.rules import LIMIT_FIELDS
from caps.windows import CAP_TYPES, SESSION, WINDOW_TYPES, team_owner
from config import clock


def _apply_grace(cap: UserCapConfig, was_enforced: tuple | None, now: datetime) -> None:
    if was_enforced is None and cap.set_by == SetBy.ADMIN:
        # A user's first administrator cap of a period replaces the policy's: what blocked
        # until now is the policy's limit.
        was_enforced = _policy_enforced(cap.cap_type, now)
    grace_apply(cap, was_enforced, now, by_admin=cap.set_by == SetBy.ADMIN)


def _policy_enforced(cap_type: str, now: datetime) -> tuple | None:
    rule = policy_load(version="").rule(cap_type)
    return None if rule is None else rule.enforced_limits(now)


def _validate(cap: UserCapConfig) -> None:
    errors: dict[str, list[str]] = {}
    if cap.cap_type not in WINDOW_TYPES:
        errors["cap_type"] = [f'"{cap.cap_type}" is not a valid choice.']
    _validate_limits(cap, errors)


def _validate_limits(cap: Any, errors: dict[str, list[str]] | None = None) -> None:
    errors = {} if errors is None else errors
    if cap.cap_type == SESSION:
        for name in ("max_requests", "max_tokens"):
            if getattr(cap, name) is not None:
                errors[name] = ["A session cap limits cost only: set max_cost_cents alone."]
    for name in LIMIT_FIELDS:
        value = getattr(cap, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            errors[name] = ["Ensure this value is greater than or equal to 1."]
    if all(getattr(cap, name) is None for name in LIMIT_FIELDS):
        errors["non_field_errors"] = [
            "Set at least one of max_requests, max_tokens, max_cost_cents."
        ]
    if errors:
        raise ValidationError(errors)


def _save(cap: UserCapConfig) -> UserCapConfig:
    _validate(cap)
    try:
        with transaction.atomic():
            cap.save()
            cap_config_changed(user_id=cap.user_id)
    except IntegrityError as exc:
        owner = "an administrator" if cap.set_by == SetBy.ADMIN else "you"
        raise ValidationError(
            {"cap_type": [f"A {cap.cap_type} cap set by {owner} already exists for this user."]}
        ) from exc
    return cap


def cap_create(
    *,
    user_id: int,
    cap_type: str,
    set_by: str,
    max_requests: int | None = None,
    max_tokens: int | None = None,
    max_cost_cents: int | None = None,
    is_active: bool = True,
    now: datetime | None = None,
) -> UserCapConfig:
    """Create a cap (an administrator's starts blocking after the grace period)."""
    now = now or clock.now()
    cap = UserCapConfig(
        user_id=user_id,
        cap_type=cap_type,
        set_by=set_by,
        max_requests=max_requests,
        max_tokens=max_tokens,
        max_cost_cents=max_cost_cents,
        is_active=is_active,
    )
    _apply_grace(cap, None, now)
    return _save(cap)


def cap_update(
    *, cap: UserCapConfig, by_admin: bool, now: datetime | None = None, **changes: Any
) -> UserCapConfig:
    """Change a cap's limits, type or activity; users cannot touch an administrator's cap."""
    if cap.set_by == SetBy.ADMIN and not by_admin:
        raise PermissionDenied("This cap was set by an administrator; you cannot change it.")
    now = now or clock.now()
    was_enforced = enforced_now(cap, now)
    for name, value in changes.items():
        if name not in (*LIMIT_FIELDS, "is_active", "cap_type"):
            raise ValueError(f"unknown cap field {name}")
        setattr(cap, name, value)
    _apply_grace(cap, was_enforced, now)
    return _save(cap)


def cap_delete(*, cap: UserCapConfig, by_admin: bool) -> None:
    """Remove a cap; users cannot remove an administrator's cap."""
    if cap.set_by == SetBy.ADMIN and not by_admin:
        raise PermissionDenied("This cap was set by an administrator; you cannot remove it.")
    with transaction.atomic():
        cap.delete()
        cap_config_changed(user_id=cap.user_id)


def caps_set_active(*, caps: list[UserCapConfig], active: bool) -> int:
    """Activate or deactivate caps (Django admin's bulk actions); returns how many changed."""
    changed = 0
    for cap in caps:
        if cap.is_active != active:
            cap_update(cap=cap, by_admin=True, is_active=active)
            changed += 1
    return changed


def cap_save(*, cap: UserCapConfig, now: datetime | None = None) -> UserCapConfig:
    """Save a cap edited as a whole by an administrator (Django admin), with the grace rules."""
    now = now or clock.now()
    before = UserCapConfig.objects.filter(pk=cap.pk).first() if cap.pk else None
    _apply_grace(cap, None if before is None else enforced_now(before, now), now)
    saved = _save(cap)
    if before is not None and before.user_id != cap.user_id:
        cap_config_changed(user_id=before.user_id)
    return saved


def cap_delete_many(*, caps: list[UserCapConfig]) -> None:
    """Remove caps as an administrator (Django admin's bulk delete)."""
    for cap in caps:
        cap_delete(cap=cap, by_admin=True)


def team_cap_set(
    *,
    team_id: int,
    cap_type: str,
    max_requests: int | None = None,
    max_tokens: int | None = None,
    max_cost_cents: int | None = None,
    is_active: bool = True,
    now: datetime | None = None,
) -> TeamCapConfig:
    """Create or change a team's cap of one period; a tightening blocks after the grace
    period (until then the limits that blocked before keep blocking)."""
    now = now or clock.now()
    if cap_type not in CAP_TYPES:
        raise ValidationError({"cap_type": [f'"{cap_type}" is not hourly, daily or monthly.']})
    with transaction.atomic():
        cap = (
            TeamCapConfig.objects.select_for_update().filter(team_id=team_id, cap_type=cap_type)
        ).first() or TeamCapConfig(team_id=team_id, cap_type=cap_type)
        was_enforced = enforced_now(cap, now)
        cap.max_requests, cap.max_tokens, cap.max_cost_cents = (
            max_requests,
            max_tokens,
            max_cost_cents,
        )
        cap.is_active = is_active
        _validate_limits(cap)
        grace_apply(cap, was_enforced, now, by_admin=True)
        cap.save()
        cap_config_changed(user_id=team_owner(team_id))
    return cap


def team_cap_delete(*, cap: TeamCapConfig) -> None:
    """Remove a team's cap (at once: removing only loosens)."""
    with transaction.atomic():
        cap.delete()
        cap_config_changed(user_id=team_owner(cap.team_id))
