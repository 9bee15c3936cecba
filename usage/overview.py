"""The administrators' overview (the first thing on the admin index): spend and calls today and
this month, daily spend over 30 days, the top spenders with their cap headroom, users near or
over a cap, models served without a price, and upstream error rates.

Caps are read through `caps.services.cap_status` (usage does not import caps at module level:
caps depends on usage).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model

from config import clock
from usage import selectors
from usage.services import Totals
from usage.windows import HOUR, floor_hour, period_start

logger = logging.getLogger(__name__)

CHART_DAYS = 30
TOP_USERS = 10
NEAR_CAP_PERCENT = 80


@dataclass(frozen=True)
class CapView:
    """A user's tightest cap: which one, how full, whether it blocks now."""

    cap_type: str
    percentage_used: float
    blocked: bool


@dataclass(frozen=True)
class UserRow:
    user_id: int
    email: str
    totals: Totals
    tightest: CapView | None


@dataclass(frozen=True)
class Overview:
    now: datetime
    today: Totals
    month: Totals
    chart: list[tuple[datetime, Totals]]
    top_users: list[UserRow]
    near_cap: list[UserRow]
    caps_unavailable: bool
    unpriced_models: list[dict]
    error_rates: dict[str, selectors.ErrorRate]
    near_cap_percent: int = NEAR_CAP_PERCENT


def _tightest(user_id: int, now: datetime) -> CapView | None:
    """The cap with the highest percentage used (blocked ones first); None without caps."""
    from caps.services import cap_status

    statuses = cap_status(user_id=user_id, now=now)
    if not statuses:
        return None
    worst = max(statuses, key=lambda s: (s["is_exceeded"] and s["enforced"], s["percentage_used"]))
    return CapView(
        cap_type=worst["cap_type"],
        percentage_used=worst["percentage_used"],
        blocked=bool(worst["is_exceeded"] and worst["enforced"]),
    )


def admin_overview(*, now: datetime | None = None) -> Overview:
    """Everything the overview shows, as of `now`."""
    from caps.services import CapStoreUnavailable

    now = now or clock.now()
    day = period_start("daily", now)
    month = period_start("monthly", now)
    end = floor_hour(now) + HOUR
    chart_start = day - timedelta(days=CHART_DAYS - 1)
    daily = selectors.summary_buckets(
        start=min(chart_start, month), end=end, bucket="daily", now=now
    )
    chart = [
        (chart_start + timedelta(days=n), daily.get(chart_start + timedelta(days=n), Totals()))
        for n in range(CHART_DAYS)
    ]
    month_totals = sum((t for start, t in daily.items() if start >= month), Totals())
    # Only users with calls this month can be near a cap: every cap window lies in the month.
    spenders = selectors.summary_by_user(start=month, end=end, now=now)
    # A live counter can outlive its user (deleted this hour): no caps to read for that one.
    existing = set(
        get_user_model()
        .objects.filter(pk__in=[s.user_id for s in spenders])
        .values_list("pk", flat=True)
    )
    rows, caps_unavailable = [], False
    for spender in spenders:
        tightest = None
        if not caps_unavailable and spender.user_id in existing:
            try:
                tightest = _tightest(spender.user_id, now)
            except CapStoreUnavailable:
                logger.warning("counter store unavailable: the overview shows no cap headroom")
                caps_unavailable = True
        rows.append(UserRow(spender.user_id, spender.email, spender.totals, tightest))
    near_cap = [
        row
        for row in rows
        if row.tightest
        and (row.tightest.blocked or row.tightest.percentage_used >= NEAR_CAP_PERCENT)
    ]
    near_cap.sort(key=lambda row: (not row.tightest.blocked, -row.tightest.percentage_used))
    return Overview(
        now=now,
        today=daily.get(day, Totals()),
        month=month_totals,
        chart=chart,
        top_users=rows[:TOP_USERS],
        near_cap=near_cap,
        caps_unavailable=caps_unavailable,
        unpriced_models=selectors.unpriced_models(now=now),
        error_rates=selectors.upstream_error_rates(since={"today": day, "month": month}, end=end),
    )
