"""Reads of usage: records for the API, summaries merged from persisted rows and live counters.

See usage.services for why a persisted hour and its live counter are never added together.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth

from config import clock
from costs.pricing import price_get
from usage.models import UsageRecord, UsageSummary
from usage.services import (
    AGG,
    RECORD_AGGREGATES,
    SUMMARY_AGGREGATES,
    Totals,
    live_heal,
    live_sentinel_key,
    record_hourly_teams,
    record_hourly_totals,
)
from usage.store import StoreUnavailable, get_store
from usage.windows import (
    HOUR,
    floor_hour,
    hours_between,
    live_window_start,
    period_start,
    summary_key,
    summary_key_parse,
)

logger = logging.getLogger(__name__)


def records_query(
    *,
    user_id: int | None,
    model: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    api_key_id: int | None = None,
    status: int | str | None = None,
) -> QuerySet[UsageRecord]:
    """Usage records, newest first with a stable tiebreak; `user_id` None means every user.

    `model` matches the id as called or its base id; `status` is an HTTP status or
    "success" (2xx) / "error" (anything else).
    """
    rows = UsageRecord.objects.select_related("api_key", "user")
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    if model:
        rows = rows.filter(Q(model_id=model) | Q(base_model_id=model))
    if start is not None:
        rows = rows.filter(started_at__gte=start)
    if end is not None:
        rows = rows.filter(started_at__lt=end)
    if api_key_id is not None:
        rows = rows.filter(api_key_id=api_key_id)
    if status == "success":
        rows = rows.filter(upstream_status__gte=200, upstream_status__lt=300)
    elif status == "error":
        rows = rows.exclude(upstream_status__gte=200, upstream_status__lt=300)
    elif status is not None:
        rows = rows.filter(upstream_status=status)
    return rows.order_by("-started_at", "-id")


def hourly_totals_merged(
    *, start: datetime, end: datetime, user_id: int | None = None, now: datetime | None = None
) -> dict[tuple[int, datetime], Totals]:
    """Per (user, hour) totals of the hours in the live window: persisted rows, else live keys.

    Only hours whose live key may still exist are looked at (the rest are persisted rows,
    read by the caller in bulk). If the store cannot be reached, the hours not yet persisted
    are computed from the records instead, so figures are never stale.
    """
    now = now or clock.now()
    window_start = max(start, live_window_start(now))
    window_end = min(end, floor_hour(now) + HOUR)
    if window_start >= window_end:
        return {}
    persisted_rows = UsageSummary.objects.filter(
        period="hourly", period_start__gte=window_start, period_start__lt=window_end
    )
    if user_id is not None:
        persisted_rows = persisted_rows.filter(user_id=user_id)
    merged = {
        (row.user_id, row.period_start): Totals.from_mapping(row.__dict__) for row in persisted_rows
    }
    store = get_store()
    try:
        if not store.get_many([live_sentinel_key()])[live_sentinel_key()]:
            live_heal(now=now)  # the store lost its counters: rebuilt from the records
        if user_id is not None:
            keys = [summary_key(user_id, h) for h in hours_between(window_start, window_end)]
        else:
            keys = store.scan(settings.GATEWAY.redis.usage_summary_prefix)
        live = store.get_many(keys)
    except StoreUnavailable:
        logger.warning("counter store unavailable; live hours computed from records")
        for slot, totals in record_hourly_totals(
            start=window_start, end=window_end, user_id=user_id
        ).items():
            merged.setdefault(slot, totals)
        return merged
    for key, values in live.items():
        parsed = summary_key_parse(key)
        if not parsed or not values or not (window_start <= parsed[1] < window_end):
            continue
        # Persisted wins: a live key of a persisted hour is already counted in the row.
        merged.setdefault(parsed, Totals.from_mapping(values))
    return merged


def _iter_totals(rows: Iterable[Mapping]) -> Iterable[tuple[Mapping, Totals]]:
    for row in rows:
        yield row, Totals.from_mapping(row, AGG)


def summary_buckets(
    *,
    start: datetime,
    end: datetime,
    bucket: str,
    user_id: int | None = None,
    now: datetime | None = None,
) -> dict[datetime, Totals]:
    """Totals per `bucket` window (hourly/daily/weekly/monthly) over [start, end).

    Persisted hourly rows before the live window, plus the merged live window (persisted rows
    or live counters, never both).
    """
    now = now or clock.now()
    cut = max(start, min(end, live_window_start(now)))
    buckets: dict[datetime, Totals] = defaultdict(Totals)
    if start < cut:
        rows = UsageSummary.objects.filter(
            period="hourly", period_start__gte=start, period_start__lt=cut
        )
        if user_id is not None:
            rows = rows.filter(user_id=user_id)
        for row in rows.values("period_start").annotate(**SUMMARY_AGGREGATES):
            key = period_start(bucket, row["period_start"])
            buckets[key] = buckets[key] + Totals.from_mapping(row, AGG)
    merged = hourly_totals_merged(start=cut, end=end, user_id=user_id, now=now)
    for (_user, hour), totals in merged.items():
        key = period_start(bucket, hour)
        buckets[key] = buckets[key] + totals
    return dict(sorted(buckets.items()))


def record_breakdown(
    *, start: datetime, end: datetime, by: str, user_id: int | None = None
) -> list[tuple[str, Totals]]:
    """Totals per value of a record column (`base_model_id`, `client_family`) in [start, end)."""
    rows = UsageRecord.objects.filter(started_at__gte=start, started_at__lt=end)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    rows = rows.values(by).annotate(**RECORD_AGGREGATES).order_by(by)
    return [(row[by], totals) for row, totals in _iter_totals(rows)]


def unpriced_models(*, now: datetime | None = None) -> list[dict]:
    """Models seen in records with an unknown cost, and whether a price is known for them now."""
    now = now or clock.now()
    rows = (
        UsageRecord.objects.filter(cost_micros__isnull=True)
        .values("base_model_id")
        .annotate(
            requests=Count("id"),
            first_seen=Min("started_at"),
            last_seen=Max("started_at"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
        .order_by("base_model_id")
    )
    return [
        {**row, "priced_now": price_get(model_id=row["base_model_id"], at=now) is not None}
        for row in rows
    ]


@dataclass(frozen=True)
class Summary:
    """A range's totals with their breakdowns (periods from summaries, the rest from records)."""

    start: datetime
    end: datetime
    totals: Totals
    by_period: list[tuple[datetime, Totals]]
    by_model: list[tuple[str, Totals]]
    by_client: list[tuple[str, Totals]]


_BUCKETS = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly"}


def usage_summary(
    *, user_id: int | None, start: datetime, end: datetime, group_by: str = "day"
) -> Summary:
    """Summary of [start, end) (hour-aligned) for one user, or all users when `user_id` is None.

    Totals and periods come from persisted hourly rows merged with the live counters (current
    and recent hours), so they are up to the second; per-model and per-client breakdowns
    come from the records.
    """
    buckets = summary_buckets(start=start, end=end, bucket=_BUCKETS[group_by], user_id=user_id)
    totals = sum(buckets.values(), Totals())
    return Summary(
        start=start,
        end=end,
        totals=totals,
        by_period=list(buckets.items()),
        by_model=record_breakdown(start=start, end=end, by="base_model_id", user_id=user_id),
        by_client=record_breakdown(start=start, end=end, by="client_family", user_id=user_id),
    )


@dataclass(frozen=True)
class UserTotals:
    """One user's totals over a range (and a month of it, for chargeback; and a team, when
    split by team)."""

    user_id: int
    email: str
    totals: Totals
    month: datetime | None = None
    team_id: int | None = None
    team_name: str = ""


@dataclass(frozen=True)
class TeamTotals:
    """One team's totals over a range; `team_id` None: the calls of users in no team."""

    team_id: int | None
    name: str
    totals: Totals
    month: datetime | None = None


NO_TEAM = "(no team)"

# A grouping key: (user id or None, team id or None, month or None).
_Key = tuple[int | None, int | None, datetime | None]


def _slot_teams(
    *, slots: Iterable[tuple[int, datetime]], end: datetime
) -> dict[tuple[int, datetime], int | None]:
    """The team of each (user, hour) slot of the live window: the persisted row's, else the
    records' (a live counter does not know the team). Only the hours not persisted yet (the
    last one or two) are read from the records."""
    slots = set(slots)
    if not slots:
        return {}
    teams = {
        (user, hour): team
        for user, hour, team in UsageSummary.objects.filter(
            period="hourly",
            period_start__gte=min(hour for _user, hour in slots),
            period_start__lt=end,
        ).values_list("user_id", "period_start", "team_id")
    }
    missing = slots - teams.keys()
    if missing:
        first = min(hour for _user, hour in missing)
        for slot, (_totals, team) in record_hourly_teams(start=first, end=end).items():
            teams.setdefault(slot, team)
    return teams


def _grouped_totals(
    *,
    start: datetime,
    end: datetime,
    by_user: bool,
    by_team: bool,
    by_month: bool,
    user_id: int | None,
    now: datetime,
) -> dict[_Key, Totals]:
    """Totals over [start, end) (hour-aligned) grouped by user and/or team (at call time)
    and/or month: persisted hourly rows before the live window grouped in the database, plus
    the merged live window (the figures of `summary_buckets`, so groupings add up alike).

    Hourly rows, not daily ones: they are exact (a call recorded after its day was rolled up
    can miss the daily row), never purged, and a month of them groups in tens of
    milliseconds on the (period, period_start) index (bench/admin_summary.py).
    """
    cut = max(start, min(end, live_window_start(now)))
    totals: dict[_Key, Totals] = defaultdict(Totals)
    if start < cut:
        rows = UsageSummary.objects.filter(
            period="hourly", period_start__gte=start, period_start__lt=cut
        )
        if user_id is not None:
            rows = rows.filter(user_id=user_id)
        group = [name for name, on in (("user_id", by_user), ("team_id", by_team)) if on]
        if by_month:
            rows = rows.annotate(month=TruncMonth("period_start", tzinfo=UTC))
            group.append("month")
        for row in rows.values(*group).annotate(**SUMMARY_AGGREGATES).order_by():
            key = (
                row.get("user_id"),
                row.get("team_id"),
                period_start("monthly", row["month"]) if by_month else None,
            )
            totals[key] = totals[key] + Totals.from_mapping(row, AGG)
    merged = hourly_totals_merged(start=cut, end=end, user_id=user_id, now=now)
    teams = _slot_teams(slots=merged, end=end) if by_team else {}
    for (owner, hour), hour_totals in merged.items():
        key = (
            owner if by_user else None,
            teams.get((owner, hour)) if by_team else None,
            period_start("monthly", hour) if by_month else None,
        )
        totals[key] = totals[key] + hour_totals
    return totals


def _team_names(team_ids: Iterable[int | None]) -> dict[int, str]:
    from accounts.models import Team

    ids = {team for team in team_ids if team is not None}
    return dict(Team.objects.filter(pk__in=ids).values_list("pk", "name")) if ids else {}


def _team_name(names: Mapping[int, str], team_id: int | None) -> str:
    if team_id is None:
        return NO_TEAM
    # A team deleted since keeps its rows (billing history) under its id.
    return names.get(team_id, f"(deleted team {team_id})")


def summary_by_user(
    *,
    start: datetime,
    end: datetime,
    by_month: bool = False,
    user_id: int | None = None,
    now: datetime | None = None,
    by_team: bool = False,
) -> list[UserTotals]:
    """Totals per user (per user and month with `by_month`) over [start, end), hour-aligned.

    The figures of `summary_buckets`, split by user: persisted hourly rows before the live
    window grouped in the database, plus the merged live window. With `by_team`, a user's
    calls are split further by their team at call time (`team_id`, `team_name`). Sorted by
    month, then by cost (dearest first), then by user id.
    """
    now = now or clock.now()
    totals = _grouped_totals(
        start=start,
        end=end,
        by_user=True,
        by_team=by_team,
        by_month=by_month,
        user_id=user_id,
        now=now,
    )
    emails = dict(
        get_user_model()
        .objects.filter(pk__in={owner for owner, _team, _month in totals})
        .values_list("pk", "email")
    )
    names = _team_names(team for _owner, team, _month in totals) if by_team else {}
    rows = [
        UserTotals(
            user_id=owner,  # type: ignore[arg-type]  # grouped by user: never None
            email=emails.get(owner, ""),
            totals=t,
            month=month,
            team_id=team,
            team_name=_team_name(names, team) if by_team else "",
        )
        for (owner, team, month), t in totals.items()
    ]
    rows.sort(key=lambda r: (r.month or start, -r.totals.cost_micros, r.user_id, r.team_id or 0))
    return rows


def summary_by_team(
    *,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    by_month: bool = False,
) -> list[TeamTotals]:
    """Totals per team over [start, end), hour-aligned: each call counts for the user's team
    at call time (kept in the summaries, so this holds after the records are purged); calls
    of users in no team make one row with `team_id` None. Sorted by month, then by cost
    (dearest first), then by team id (no team last on a tie)."""
    now = now or clock.now()
    totals = _grouped_totals(
        start=start,
        end=end,
        by_user=False,
        by_team=True,
        by_month=by_month,
        user_id=None,
        now=now,
    )
    names = _team_names(team for _owner, team, _month in totals)
    rows = [
        TeamTotals(team_id=team, name=_team_name(names, team), totals=t, month=month)
        for (_owner, team, month), t in totals.items()
    ]
    rows.sort(
        key=lambda r: (
            r.month or start,
            -r.totals.cost_micros,
            r.team_id is None,
            r.team_id or 0,
        )
    )
    return rows


@dataclass(frozen=True)
class ErrorRate:
    """Calls that failed upstream (status >= 400 or an error type) among all calls."""

    requests: int
    errors: int

    @property
    def percent(self) -> float | None:
        return round(100 * self.errors / self.requests, 2) if self.requests else None


def upstream_error_rates(*, since: Mapping[str, datetime], end: datetime) -> dict[str, ErrorRate]:
    """Error rate of the records started in [since[name], end) for each name, in one query."""
    failed = Q(upstream_status__gte=400) | (Q(error_type__isnull=False) & ~Q(error_type=""))
    aggregates = {}
    for name, start in since.items():
        aggregates[f"{name}_requests"] = Count("id", filter=Q(started_at__gte=start))
        aggregates[f"{name}_errors"] = Count("id", filter=Q(started_at__gte=start) & failed)
    row = UsageRecord.objects.filter(
        started_at__gte=min(since.values()), started_at__lt=end
    ).aggregate(**aggregates)
    return {
        name: ErrorRate(requests=row[f"{name}_requests"], errors=row[f"{name}_errors"])
        for name in since
    }


# --- Sessions -------------------------------------------------------------------------------

SESSION_AGGREGATES = {
    "session_start": Min("started_at"),
    "session_end": Max("started_at"),
    **RECORD_AGGREGATES,
}


def sessions_query(
    *, user_id: int, start: datetime | None = None, end: datetime | None = None
) -> QuerySet:
    """A user's Claude Code sessions (records grouped by `session_id`), newest activity first:
    rows of `session_id`, `session_start` (first call), `session_end` (start of the last call) and
    the RECORD_AGGREGATES over every call of the session. With `start`/`end`, the sessions
    with a call in [start, end), each still with all its calls. One GROUP BY (on the index
    usagerec_user_session_idx)."""
    rows = (
        UsageRecord.objects.filter(user_id=user_id, session_id__isnull=False)
        .values("session_id")
        .annotate(**SESSION_AGGREGATES)
    )
    if start is not None:
        rows = rows.filter(session_end__gte=start)
    if end is not None:
        rows = rows.filter(session_start__lt=end)
    return rows.order_by("-session_end", "-session_id")


def session_models(*, user_id: int, session_ids: Iterable[str]) -> dict[str, list[str]]:
    """The base models each of these sessions called, sorted (one query for a page)."""
    models: dict[str, list[str]] = defaultdict(list)
    rows = (
        UsageRecord.objects.filter(user_id=user_id, session_id__in=list(session_ids))
        .values_list("session_id", "base_model_id")
        .distinct()
        .order_by("session_id", "base_model_id")
    )
    for session_id, model in rows:
        models[session_id].append(model)
    return dict(models)


def session_rows(*, user_id: int, page: Iterable[Mapping]) -> list[dict]:
    """A page of `sessions_query` rows as plain dicts, with `duration_seconds` and `models`."""
    page = list(page)
    models = session_models(user_id=user_id, session_ids=[row["session_id"] for row in page])
    out = []
    for row in page:
        totals = Totals.from_mapping(row, AGG)
        out.append(
            {
                "session_id": row["session_id"],
                "started_at": row["session_start"],
                "ended_at": row["session_end"],
                "duration_seconds": int(
                    (row["session_end"] - row["session_start"]).total_seconds()
                ),
                "totals": totals,
                "models": models.get(row["session_id"], []),
            }
        )
    return out
