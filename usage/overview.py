"""The administrators' overview (the first thing on the admin index): spend and calls today and
this month, daily spend over 30 days, the top spenders and the top teams with their cap
headroom, users near or over a cap, models served without a price, and upstream error rates.

Caps are read through `caps.status.cap_status` (usage does not import caps at module level:
caps depends on usage).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from accounts.models import Team
from config import clock
from costs.money import cents_usd
from usage import selectors
from usage.models import UsageRecord
from usage.services import Totals
from usage.windows import HOUR, floor_hour, period_start

logger = logging.getLogger(__name__)

CHART_DAYS = 30
TOP_USERS = 10
TOP_TEAMS = 10
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
class TeamCapView:
    """A team's tightest cap, as "$812.50 of $1,000.00 monthly" (its fullest limit)."""

    cap_type: str
    percentage_used: float
    blocked: bool
    used: str
    limit: str


@dataclass(frozen=True)
class TeamRow:
    team_id: int
    name: str
    requests: int
    cost_micros: int
    tightest: TeamCapView | None
    deleted: bool = False


@dataclass(frozen=True)
class Overview:
    now: datetime
    today: Totals
    month: Totals
    chart: list[tuple[datetime, Totals]]
    top_users: list[UserRow]
    top_teams: list[TeamRow]
    near_cap: list[UserRow]
    caps_unavailable: bool
    unpriced_models: list[dict]
    error_rates: dict[str, selectors.ErrorRate]
    near_cap_percent: int = NEAR_CAP_PERCENT


def _tightest(user_id: int, now: datetime) -> CapView | None:
    """The cap with the highest percentage used (blocked ones first); None without caps."""
    from caps.status import cap_status

    statuses = cap_status(user_id=user_id, now=now)
    if not statuses:
        return None
    worst = max(statuses, key=lambda s: (s["is_exceeded"] and s["enforced"], s["percentage_used"]))
    return CapView(
        cap_type=worst["cap_type"],
        percentage_used=worst["percentage_used"],
        blocked=bool(worst["is_exceeded"] and worst["enforced"]),
    )


def team_spend_subquery(*, start: datetime, end: datetime) -> Subquery:
    """The spend (micro-dollars) of the team in `OuterRef("pk")` over [start, end), for
    annotating teams: calls count for the team their user was in when they were made."""
    spend = (
        UsageRecord.objects.filter(
            team_id=OuterRef("pk"), started_at__gte=start, started_at__lt=end
        )
        .order_by()
        .values("team_id")
        .annotate(total=Sum("cost_micros"))
        .values("total")
    )
    return Coalesce(Subquery(spend, output_field=IntegerField()), Value(0))


def _fullest_limit(status: dict) -> tuple[str, str]:
    """(used, limit) of the status's fullest limit, cost first among equals, for people."""
    used, limits = status["current_usage"], status["limits"]
    candidates = []
    if limits["max_cost_cents"]:
        share = used["cost_cents"] / limits["max_cost_cents"]
        candidates.append(
            (share, 2, cents_usd(used["cost_cents"]), cents_usd(limits["max_cost_cents"]))
        )
    for name, unit, rank in (("requests", "requests", 1), ("tokens", "tokens", 0)):
        limit = limits[f"max_{name}"]
        if limit:
            candidates.append((used[name] / limit, rank, f"{used[name]:,}", f"{limit:,} {unit}"))
    _, _, used_text, limit_text = max(candidates)
    return used_text, limit_text


def _team_tightest(team_id: int, now: datetime) -> TeamCapView | None:
    """The team cap with the highest percentage used (blocked ones first); None without caps."""
    from caps.status import team_cap_status

    statuses = team_cap_status(team_id=team_id, now=now)
    if not statuses:
        return None
    worst = max(statuses, key=lambda s: (s["is_exceeded"] and s["enforced"], s["percentage_used"]))
    used, limit = _fullest_limit(worst)
    return TeamCapView(
        cap_type=worst["cap_type"],
        percentage_used=worst["percentage_used"],
        blocked=bool(worst["is_exceeded"] and worst["enforced"]),
        used=used,
        limit=limit,
    )


def top_teams(
    *, start: datetime, end: datetime, now: datetime, limit: int = TOP_TEAMS
) -> tuple[list[TeamRow], bool]:
    """The teams that spent most over [start, end) (the team at call time), dearest first, with
    their tightest cap; and whether the counter store was unavailable for the caps."""
    from caps.errors import CapStoreUnavailable

    spend = list(
        UsageRecord.objects.filter(team_id__isnull=False, started_at__gte=start, started_at__lt=end)
        .values("team_id")
        .annotate(cost=Coalesce(Sum("cost_micros"), 0), requests=Count("id"))
        .order_by("-cost", "team_id")[:limit]
    )
    # A deleted team keeps its records (billing history), not its name or caps.
    names = dict(
        Team.objects.filter(pk__in=[row["team_id"] for row in spend]).values_list("pk", "name")
    )
    rows, unavailable = [], False
    for row in spend:
        team_id = row["team_id"]
        tightest = None
        if team_id in names and not unavailable:
            try:
                tightest = _team_tightest(team_id, now)
            except CapStoreUnavailable:
                logger.warning("counter store unavailable: the overview shows no team cap headroom")
                unavailable = True
        name = names.get(team_id, f"deleted team #{team_id}")
        rows.append(
            TeamRow(
                team_id, name, row["requests"], row["cost"], tightest, deleted=team_id not in names
            )
        )
    return rows, unavailable


def admin_overview(*, now: datetime | None = None) -> Overview:
    """Everything the overview shows, as of `now`."""
    from caps.errors import CapStoreUnavailable

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
    near = [
        (row, cap)
        for row in rows
        if (cap := row.tightest) and (cap.blocked or cap.percentage_used >= NEAR_CAP_PERCENT)
    ]
    near.sort(key=lambda pair: (not pair[1].blocked, -pair[1].percentage_used))
    teams, teams_unavailable = top_teams(start=month, end=end, now=now)
    return Overview(
        now=now,
        today=daily.get(day, Totals()),
        month=month_totals,
        chart=chart,
        top_users=rows[:TOP_USERS],
        top_teams=teams,
        near_cap=[row for row, _cap in near],
        caps_unavailable=caps_unavailable or teams_unavailable,
        unpriced_models=selectors.unpriced_models(now=now),
        error_rates=selectors.upstream_error_rates(since={"today": day, "month": month}, end=end),
    )
