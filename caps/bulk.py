"""Caps written in bulk by an administrator: one period's cap on many users or teams at once
(Django admin's actions, the CSV import). Each cap goes through the cap writes (caps/services.py),
so the grace period and the cache invalidation apply to every one as to a single edit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction

from caps.models import CapType, SetBy, TeamCapConfig, UserCapConfig
from caps.rules import LIMIT_FIELDS
from caps.services import cap_create, cap_update, team_cap_set
from caps.windows import SESSION

TEAM_PERIODS = ("hourly", "daily", "monthly")
USER_PERIODS = tuple(CapType.values)


@dataclass(frozen=True)
class Limits:
    """A cap's three limits; None = no such limit."""

    max_requests: int | None = None
    max_tokens: int | None = None
    max_cost_cents: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}

    @classmethod
    def of(cls, cap: object) -> Limits:
        return cls(**{name: getattr(cap, name) for name in LIMIT_FIELDS})


@dataclass(frozen=True)
class BulkResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def limits_problems(*, period: str, limits: Limits, team: bool) -> list[str]:
    """Why these limits cannot make a cap of `period` (empty when they can)."""
    periods = TEAM_PERIODS if team else USER_PERIODS
    if period not in periods:
        if team and period == SESSION:
            return ["a team cap cannot be per session (periods: hourly, daily, monthly)"]
        return [f"unknown period (one of: {', '.join(periods)})"]
    problems = []
    values = limits.as_dict()
    if all(value is None for value in values.values()):
        problems.append("set at least one limit")
    if any(value is not None and value <= 0 for value in values.values()):
        problems.append("limits must be greater than zero")
    if period == SESSION and (limits.max_requests is not None or limits.max_tokens is not None):
        problems.append("a session cap limits cost only")
    return problems


def put_action(*, existing: UserCapConfig | TeamCapConfig | None, limits: Limits) -> str:
    """What putting a cap with these limits over `existing` does: "create", "update" (also
    switching an inactive cap back on) or "unchanged"."""
    if existing is None:
        return "create"
    if existing.is_active and Limits.of(existing) == limits:
        return "unchanged"
    return "update"


def admin_cap_put(*, user_id: int, period: str, limits: Limits, now: datetime | None = None) -> str:
    """Create or update the user's administrator cap of `period` (active, with exactly these
    limits); returns "create", "update" or "unchanged"."""
    existing = UserCapConfig.objects.filter(
        user_id=user_id, cap_type=period, set_by=SetBy.ADMIN
    ).first()
    action = put_action(existing=existing, limits=limits)
    if action == "create":
        cap_create(
            user_id=user_id,
            cap_type=period,
            set_by=SetBy.ADMIN,  # type: ignore[arg-type]  # Django's Choices are untyped here
            max_requests=limits.max_requests,
            max_tokens=limits.max_tokens,
            max_cost_cents=limits.max_cost_cents,
            now=now,
        )
    elif action == "update":
        cap_update(cap=existing, by_admin=True, now=now, is_active=True, **limits.as_dict())
    return action


def team_cap_put(*, team_id: int, period: str, limits: Limits, now: datetime | None = None) -> str:
    """Create or update the team's cap of `period`; returns what it did."""
    existing = TeamCapConfig.objects.filter(team_id=team_id, cap_type=period).first()
    action = put_action(existing=existing, limits=limits)
    if action != "unchanged":
        team_cap_set(
            team_id=team_id,
            cap_type=period,
            max_requests=limits.max_requests,
            max_tokens=limits.max_tokens,
            max_cost_cents=limits.max_cost_cents,
            now=now,
        )
    return action


def _count(actions: list[str]) -> BulkResult:
    return BulkResult(
        created=actions.count("create"),
        updated=actions.count("update"),
        unchanged=actions.count("unchanged"),
    )


def _caps_apply(
    *, owner_ids: list[int], put: Callable[[int], str], period: str, limits: Limits, team: bool
) -> BulkResult:
    """`put` the cap on each owner (a user or a team), all or none."""
    problems = limits_problems(period=period, limits=limits, team=team)
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        actions = [put(owner_id) for owner_id in owner_ids]
    return _count(actions)


def users_cap_apply(
    *, user_ids: list[int], period: str, limits: Limits, now: datetime | None = None
) -> BulkResult:
    """Give each user an administrator cap of `period` with these limits, all or none."""
    return _caps_apply(
        owner_ids=user_ids,
        put=lambda user_id: admin_cap_put(user_id=user_id, period=period, limits=limits, now=now),
        period=period,
        limits=limits,
        team=False,
    )


def teams_cap_apply(
    *, team_ids: list[int], period: str, limits: Limits, now: datetime | None = None
) -> BulkResult:
    """Give each team a cap of `period` with these limits, all or none."""
    return _caps_apply(
        owner_ids=team_ids,
        put=lambda team_id: team_cap_put(team_id=team_id, period=period, limits=limits, now=now),
        period=period,
        limits=limits,
        team=True,
    )
