"""What a user or a team has used of its caps: per cap, the current window's settled usage and
calls in flight against its limits (the dashboard, the API, the admin overview); and a user's
spend today."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

from caps.cache import policy_current
from caps.errors import CapStoreUnavailable
from caps.rebuild import owner_rebuild
from caps.rules import LIMIT_FIELDS, MICROS_PER_CENT, CapRule, caps_load, cents
from caps.store import CapStore, StoreDown, cap_store
from caps.windows import CAP_TYPES, reset_time, team_owner, window_keys
from config import clock
from usage.windows import period_start


def cap_status(
    *, user_id: int, now: datetime | None = None, store: CapStore | None = None
) -> list[dict[str, Any]]:
    """Per cap that applies to the user (their own, an administrator's, the policy's, their
    team's): usage of its current window against its limits (settled usage; calls in flight
    are shown apart; a team cap shows the team's), whether it is exceeded and whether it blocks
    yet (grace)."""
    from accounts.models import User

    store = store or cap_store()
    now = now or clock.now()
    rules = caps_load(user_id=user_id, version="", policy=policy_current(store)).rules
    status = _owner_status(store, user_id, rules, now)
    team_id = User.objects.filter(pk=user_id).values_list("team_id", flat=True).first()
    if team_id is not None:
        status += team_cap_status(team_id=team_id, now=now, store=store)
    return status


def team_cap_status(
    *, team_id: int, now: datetime | None = None, store: CapStore | None = None
) -> list[dict[str, Any]]:
    """cap_status of a team's caps (set_by "team"): the members' use together."""
    store = store or cap_store()
    now = now or clock.now()
    owner = team_owner(team_id)
    return _owner_status(store, owner, caps_load(user_id=owner, version="").rules, now)


def _owner_status(
    store: CapStore, owner: int, rules: tuple[CapRule, ...], now: datetime
) -> list[dict[str, Any]]:
    try:
        if owner in store.rebuild_pending:
            owner_rebuild(store=store, owner=owner, now=now)
        elif store.needs_rebuild(owner):
            owner_rebuild(store=store, owner=owner, now=now, lost=True)
        windows = store.read(list(window_keys(owner, now)), now)
    except StoreDown as exc:
        raise CapStoreUnavailable(CapStoreUnavailable.message) from exc
    status = []
    for rule in rules:
        if rule.cap_type not in CAP_TYPES:
            continue  # a session cap: its usage is per session, shown by its 429 and headers
        window = windows[CAP_TYPES.index(rule.cap_type)]
        used = [window.get(f, 0) for f in ("requests", "tokens", "cost_micros")]
        flying = [window.get(f, 0) for f in ("if_requests", "if_tokens", "if_cost_micros")]
        shares = [
            used[j] / (limit * (MICROS_PER_CENT if j == 2 else 1))
            for j, limit in enumerate(rule.limits)
            if limit is not None
        ]
        status.append(
            {
                "id": rule.id,
                "cap_type": rule.cap_type,
                "set_by": rule.set_by,
                "current_usage": {
                    "requests": used[0],
                    "tokens": used[1],
                    "cost_cents": cents(used[2]),
                },
                "in_flight": {
                    "requests": flying[0],
                    "tokens": flying[1],
                    "cost_cents": cents(flying[2]),
                },
                "limits": dict(zip(LIMIT_FIELDS, rule.limits, strict=True)),
                "percentage_used": round(max(shares) * 100, 2),
                "reset_time": reset_time(rule.cap_type, now),
                "is_exceeded": max(shares) >= 1,
                "enforced": rule.enforced_limits(now) == rule.limits
                and settings.GATEWAY.usage_caps.enforce_caps,
                "enforce_from": rule.enforce_from,
            }
        )
    return status


def spend_today_cents(*, user_id: int, now: datetime | None = None) -> Decimal:
    """The user's spend since midnight UTC, in cents with four decimals: today's hours from
    the live usage summaries (persisted hours, else the live counters, else the records when
    the store is down), as on the dashboard. Calls without a known price are not in it."""
    from usage.selectors import summary_buckets

    now = now or clock.now()
    day = period_start("daily", now)
    buckets = summary_buckets(
        start=day, end=reset_time("daily", now), bucket="daily", user_id=user_id, now=now
    )
    return cents(sum(totals.cost_micros for totals in buckets.values()))
