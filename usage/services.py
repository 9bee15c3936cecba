"""Usage metering: record each call, keep live hourly counters, persist and roll up summaries.

Windows and double counting. A call counts in the hour where it started. For each (user,
hour) there are up to two figures: the live counter in the store and the persisted hourly
`UsageSummary` row. Readers use the persisted row when there is one and the live counter
otherwise ("persisted wins"), so the two are never added together. The hourly job computes
each completed hour from the usage records (absolute values, so running it twice or
concurrently writes the same rows), upserts it, and only then deletes the live keys: a crash
between the two steps leaves a key that readers ignore and the next run deletes. A call
recorded after its hour was persisted (a stream from 10:59 to 11:06 recorded at 11:06, after
the 11:05 job) adds itself to the persisted rows in the transaction that inserts it instead
of to a live key; the job also recomputes the last few hours on every run, so a call that
raced the job is folded in at the next run at the latest.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import Count, F, Field, Max, Min, Q, Sum
from django.db.models.functions import TruncHour

from config import clock
from config.db import aexecute, released
from costs.money import Usage, model_base_id
from costs.pricing import call_cost_micros
from usage.models import UsageRecord, UsageSummary
from usage.spool import UNREACHABLE, spool_reject
from usage.store import DatabaseStore, Increment, get_store
from usage.windows import (
    HOUR,
    ceil_hour,
    floor_hour,
    live_window_start,
    period_end,
    period_start,
    summary_key,
    summary_key_parse,
)

logger = logging.getLogger(__name__)

# Recompute this many completed hours on every hourly run (late and raced records).
PERSIST_LOOKBACK_HOURS = 3


@dataclass(frozen=True)
class Totals:
    """A user's (or everyone's) usage over some window; money in micro-dollars."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost_micros: int = 0  # of the calls with a known price
    unknown_cost_requests: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(**{f: getattr(self, f) + getattr(other, f) for f in TOTAL_FIELDS})

    @classmethod
    def from_mapping(cls, values: Mapping[str, int | None], prefix: str = "") -> Totals:
        """From a mapping keyed by field names, each behind `prefix` (AGG for aggregates)."""
        return cls(**{f: int(values.get(prefix + f) or 0) for f in TOTAL_FIELDS})

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in TOTAL_FIELDS}


TOTAL_FIELDS = tuple(f.name for f in fields(Totals))

# Aggregates of UsageRecord rows into Totals' fields, named AGG + field: an annotation named
# like a column would shadow it in the aggregates that follow.
AGG = "agg_"
RECORD_AGGREGATES = {
    AGG + "requests": Count("id"),
    AGG + "input_tokens": Sum("input_tokens"),
    AGG + "output_tokens": Sum("output_tokens"),
    AGG + "cache_write_tokens": Sum(F("cache_write_5m_tokens") + F("cache_write_1h_tokens")),
    AGG + "cache_read_tokens": Sum("cache_read_tokens"),
    AGG + "cost_micros": Sum("cost_micros"),
    AGG + "unknown_cost_requests": Count("id", filter=Q(cost_micros__isnull=True)),
}
SUMMARY_AGGREGATES = {AGG + f: Sum(f) for f in TOTAL_FIELDS}


# --- Attribution ----------------------------------------------------------------------------

# (pattern on the User-Agent, family). First match wins; the set is closed so that the column
# stays groupable.
_FAMILIES = [
    (re.compile(r"^claude-cli/"), "claude-cli"),
    (re.compile(r"^claude-code/"), "claude-cli"),
    (re.compile(r"^(Async)?Anthropic\w*/Python"), "Anthropic/Python"),
    (re.compile(r"^(Async)?Anthropic\w*/JS"), "Anthropic/JS"),
    (re.compile(r"^Boto3/"), "Boto3"),
    (re.compile(r"^Botocore/"), "Botocore"),
    (re.compile(r"^aws-cli/"), "aws-cli"),
    (re.compile(r"^aws-sdk-js"), "aws-sdk-js"),
    (re.compile(r"^curl/"), "curl"),
    (re.compile(r"^python-httpx/"), "httpx"),
    (re.compile(r"^python-requests/"), "requests"),
]


def client_family(user_agent: str) -> str:
    """The client family from a User-Agent (`claude-cli`, `Anthropic/Python`, `Boto3`, ...)."""
    agent = (user_agent or "").strip()
    for pattern, family in _FAMILIES:
        if pattern.search(agent):
            return family
    return "other"


# --- Recording ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRecord:
    """What the proxy knows about one call that reached the upstream."""

    call_id: uuid.UUID
    user_id: int
    api_key_id: int | None
    auth_kind: str
    model_id: str
    route: str
    streaming: bool
    usage: Usage
    upstream_status: int
    error_type: str | None
    latency_ms: int
    ttfb_ms: int | None
    request_id: str
    started_at: datetime
    client_family: str
    session_id: str | None
    team_id: int | None = None  # the user's team at call time
    # The call's cost as the proxy priced it once (`priced`); else priced when recorded.
    cost_micros: int | None = None
    priced: bool = False


def _record_totals(record: UsageRecord) -> Totals:
    return Totals(
        requests=1,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_write_tokens=record.cache_write_tokens,
        cache_read_tokens=record.cache_read_tokens,
        cost_micros=record.cost_micros or 0,
        unknown_cost_requests=1 if record.cost_micros is None else 0,
    )


def _persisted_rows_add(*, user_id: int, started_at: datetime, totals: Totals) -> bool:
    """Add a late call to the persisted rows covering it; False if its hour is not persisted."""
    increments = {f: F(f) + v for f, v in totals.as_dict().items()}
    hourly = UsageSummary.objects.filter(
        user_id=user_id, period="hourly", period_start=floor_hour(started_at)
    )
    if not hourly.update(**increments):
        return False
    coarser = Q()
    for period in ("daily", "weekly", "monthly"):
        coarser |= Q(period=period, period_start=period_start(period, started_at))
    UsageSummary.objects.filter(coarser, user_id=user_id).update(**increments)
    return True


def _record_row(call: CallRecord) -> UsageRecord:
    usage = call.usage
    base_id, _scope = model_base_id(call.model_id)
    return UsageRecord(
        call_id=call.call_id,
        user_id=call.user_id,
        team_id=call.team_id,
        api_key_id=call.api_key_id,
        auth_kind=call.auth_kind,
        model_id=call.model_id,
        base_model_id=base_id,
        route=call.route,
        streaming=call.streaming,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cost_micros=call.cost_micros
        if call.priced
        else call_cost_micros(
            model_id=call.model_id,
            usage=usage,
            at=call.started_at,
            region=settings.GATEWAY.aws.region,
        ),
        upstream_status=call.upstream_status,
        error_type=call.error_type,
        latency_ms=max(0, call.latency_ms),
        ttfb_ms=None if call.ttfb_ms is None else max(0, call.ttfb_ms),
        request_id=(call.request_id or "")[:100],  # the upstream's header: never trust its size
        client_family=call.client_family,
        session_id=call.session_id,
        started_at=call.started_at,
    )


@functools.cache
def _insert_fields() -> tuple[list[Field], str]:
    fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    return fields, f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608 - the model's names


# Rows per INSERT: 24 parameters each stay far below SQLite's and PostgreSQL's limits.
INSERT_CHUNK = 500


def _insert_rows(records: list[UsageRecord]) -> None:
    """The rows in one statement, or in one transaction of statements of INSERT_CHUNK rows.
    Inside a caller's transaction, in a savepoint: a refused row must not abort the caller's
    transaction (the batch then falls back to one row at a time)."""
    if len(records) <= INSERT_CHUNK and not connection.in_atomic_block:
        _insert_chunk(records)
        return
    with transaction.atomic():
        for start in range(0, len(records), INSERT_CHUNK):
            _insert_chunk(records[start : start + INSERT_CHUNK])


def _insert_params(records: list[UsageRecord], *, postgres: bool) -> list:
    fields, _ = _insert_fields()
    return [
        getattr(record, f.attname)
        if postgres
        else f.get_db_prep_save(getattr(record, f.attname), connection)
        for record in records
        for f in fields
    ]


def _insert_sql(rows: int) -> str:
    """The INSERT of `rows` rows with %s placeholders (Django's cursor, on SQLite)."""
    fields, insert = _insert_fields()
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return insert + ", ".join([row] * rows)


@functools.lru_cache(maxsize=INSERT_CHUNK)
def _insert_sql_numbered(rows: int) -> str:
    """The INSERT of `rows` rows with PostgreSQL's numbered placeholders, sent as is by
    psycopg's raw cursors (a %s query is parsed on each execute past 50 parameters)."""
    fields, insert = _insert_fields()
    width = len(fields)
    values = (
        "(" + ", ".join(f"${row * width + n}" for n in range(1, width + 1)) + ")"
        for row in range(rows)
    )
    return insert + ", ".join(values)


def _insert_chunk(records: list[UsageRecord]) -> None:
    """One multi-row INSERT, atomic as any single statement. Not the ORM's bulk_create, whose
    per-row work and client-side parameter quoting cost ~1 ms of CPU per record; on
    PostgreSQL the parameters are bound by the server (psycopg's raw cursor adapts UUIDs,
    aware datetimes and the rest itself)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_insert_sql(len(records)), _insert_params(records, postgres=False))
        return
    connection.ensure_connection()
    params = _insert_params(records, postgres=True)
    with connection.wrap_database_errors, psycopg.RawCursor(connection.connection) as cursor:
        cursor.execute(_insert_sql_numbered(len(records)), params)


def _is_late(call: CallRecord, now: datetime) -> bool:
    # Only a call recorded after its start hour ended can find that hour persisted.
    return floor_hour(now) > floor_hour(call.started_at)


def usage_record(*, call: CallRecord, now: datetime | None = None) -> UsageRecord | None:
    """Record one call and count it in its start hour; None if `call_id` was already recorded.

    The row is the source of truth; the live counter is updated only when the row was inserted
    (so a retried recording never counts twice). A counter failure is logged, not raised: the
    hourly job and `usage_rebuild` recompute from the rows.
    """
    record = _record_row(call)
    totals = _record_totals(record)
    late = _is_late(call, now or clock.now())
    try:
        with transaction.atomic():
            record.save(force_insert=True)
            folded = late and _persisted_rows_add(
                user_id=call.user_id, started_at=call.started_at, totals=totals
            )
    except IntegrityError:
        if UsageRecord.objects.filter(call_id=call.call_id).exists():
            return None
        raise
    if not folded:
        _live_add(user_id=call.user_id, hour=floor_hour(call.started_at), totals=totals)
    return record


def usage_record_many(*, calls: list[CallRecord], now: datetime | None = None) -> int:
    """Record several calls with one insert and one counter update (the proxy batches calls
    that finish together); the rules of `usage_record` hold for each. Returns how many rows
    were inserted."""
    now = now or clock.now()
    late = [call for call in calls if _is_late(call, now)]
    current = [call for call in calls if not _is_late(call, now)]
    inserted = sum(usage_record(call=call, now=now) is not None for call in late)
    if not current:
        return inserted
    records = [_record_row(call) for call in current]
    try:
        _insert_rows(records)
    except UNREACHABLE:
        raise  # nothing can be written now: the caller spools the whole batch
    except DatabaseError:
        # One of them was recorded already, or the database refuses one: one at a time, each
        # idempotent on its call_id, so that one bad record never takes another's with it.
        return inserted + sum(_record_one(call, now) for call in current)
    _live_add_many(_live_totals(records))
    return inserted + len(records)


def _live_totals(records: list[UsageRecord]) -> dict[tuple[int, datetime], Totals]:
    totals: dict[tuple[int, datetime], Totals] = {}
    for record in records:
        key = (record.user_id, floor_hour(record.started_at))
        totals[key] = totals.get(key, Totals()) + _record_totals(record)
    return totals


def _record_one(call: CallRecord, now: datetime) -> bool:
    try:
        return usage_record(call=call, now=now) is not None
    except UNREACHABLE:
        raise
    except DatabaseError as exc:
        spool_reject(call, exc)
        return False


def _live_add(*, user_id: int, hour: datetime, totals: Totals) -> None:
    _live_add_many({(user_id, hour): totals})


def _live_increments(totals: Mapping[tuple[int, datetime], Totals]) -> list[Increment]:
    return [
        Increment(
            key=summary_key(user_id, hour),
            deltas=value.as_dict(),
            ttl=settings.GATEWAY.redis.hourly_summary_ttl,
        )
        for (user_id, hour), value in totals.items()
    ]


def _live_add_many(totals: Mapping[tuple[int, datetime], Totals]) -> None:
    increments = _live_increments(totals)
    try:
        get_store().incr_many(increments)
    except Exception:
        # Any failure of the store, not only StoreUnavailable: the rows stand, and the hourly
        # job recomputes these hours from the rows.
        logger.exception("live usage counter update failed for %s", [i.key for i in increments])


async def _alive_add_many(totals: Mapping[tuple[int, datetime], Totals]) -> None:
    """`_live_add_many` for the event loop."""
    increments = _live_increments(totals)
    try:
        await get_store().aincr_many(increments)
    except Exception:
        logger.exception("live usage counter update failed for %s", [i.key for i in increments])


@released
def _usage_record_pooled(call: CallRecord) -> None:
    # Pool threads see no request signals: drop a connection that is broken or past
    # CONN_MAX_AGE ourselves, as Django does around each request.
    close_old_connections()
    usage_record(call=call)


async def ausage_record(*, call: CallRecord) -> None:
    """`usage_record` for async callers (the proxy), in a pool thread off the event loop."""
    await sync_to_async(_usage_record_pooled, thread_sensitive=False)(call)


@released
def _usage_record_many_pooled(calls: list[CallRecord]) -> int:
    close_old_connections()
    return usage_record_many(calls=calls)


async def ausage_record_many(*, calls: list[CallRecord]) -> int:
    """`usage_record_many` for async callers (the proxy). On PostgreSQL, a batch of priced
    calls of the current hour (the proxy's every call, normally) is inserted from the event
    loop on its own connection (`config.db.aexecute`); anything else, or a batch the database
    refuses (a call recorded already, a bad value), takes `usage_record_many` in a pool
    thread, whose rules hold for each call. A connection error is raised: the caller spools
    the batch, as for the thread's."""
    if connection.vendor == "postgresql":
        inserted = await _ainsert_current(calls, now=clock.now())
        if inserted is not None:
            return inserted
    return await sync_to_async(_usage_record_many_pooled, thread_sensitive=False)(calls)


async def _ainsert_current(calls: list[CallRecord], *, now: datetime) -> int | None:
    """How many were inserted, or None when the batch needs `usage_record_many` (whose
    batches of more than INSERT_CHUNK rows are one transaction)."""
    if len(calls) > INSERT_CHUNK or not all(
        call.priced and not _is_late(call, now) for call in calls
    ):
        return None
    records = [_record_row(call) for call in calls]
    try:
        await aexecute(_insert_sql_numbered(len(records)), _insert_params(records, postgres=True))
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error:
        # A row refused (a call_id recorded already, after a spool replay): one at a time.
        return None
    await _alive_add_many(_live_totals(records))
    return len(records)


# --- Aggregates from records ----------------------------------------------------------------


def record_hourly_totals(
    *, start: datetime, end: datetime, user_id: int | None = None
) -> dict[tuple[int, datetime], Totals]:
    """Per (user, hour) totals of the records that started in [start, end)."""
    return {
        slot: totals
        for slot, (totals, _team) in record_hourly_teams(
            start=start, end=end, user_id=user_id
        ).items()
    }


def record_hourly_teams(
    *, start: datetime, end: datetime, user_id: int | None = None
) -> dict[tuple[int, datetime], tuple[Totals, int | None]]:
    """Per (user, hour) totals of the records in [start, end) and the hour's team: the team
    (at call time) of most of the hour's calls, the latest call's on a tie. One row per user
    and hour, as the summaries: a team change within an hour moves the whole hour."""
    rows = UsageRecord.objects.filter(started_at__gte=start, started_at__lt=end)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    rows = (
        rows.annotate(hour=TruncHour("started_at"))
        .values("user_id", "hour", "team_id")
        .annotate(**RECORD_AGGREGATES, last_call=Max("started_at"))
        .order_by()
    )
    out: dict[tuple[int, datetime], tuple[Totals, int | None]] = {}
    rank: dict[tuple[int, datetime], tuple[int, datetime]] = {}
    for row in rows:
        slot = (row["user_id"], floor_hour(row["hour"]))
        totals = Totals.from_mapping(row, AGG)
        weight = (totals.requests, row["last_call"])
        if slot not in out:
            out[slot], rank[slot] = (totals, row["team_id"]), weight
            continue
        previous, team = out[slot]
        if weight > rank[slot]:
            team, rank[slot] = row["team_id"], weight
        out[slot] = (previous + totals, team)
    return out


def usage_totals(*, user_id: int, start: datetime, end: datetime) -> Totals:
    """One user's totals over [start, end) straight from the records (e.g. to rebuild caps)."""
    row = UsageRecord.objects.filter(
        user_id=user_id, started_at__gte=start, started_at__lt=end
    ).aggregate(**RECORD_AGGREGATES)
    return Totals.from_mapping(row, AGG)


def _summaries_upsert(
    *,
    period: str,
    totals: Mapping[tuple[int, datetime], Totals],
    exact_range: tuple | None,
    teams: Mapping[tuple[int, datetime], int | None],
) -> int:
    """Write absolute totals (and the team) per (user, period start); with `exact_range`,
    drop rows outside."""
    rows = [
        UsageSummary(
            user_id=user_id,
            period=period,
            period_start=start,
            team_id=teams.get((user_id, start)),
            **t.as_dict(),
        )
        for (user_id, start), t in sorted(totals.items())
    ]
    with transaction.atomic():
        if rows:
            UsageSummary.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["user", "period", "period_start"],
                update_fields=[*TOTAL_FIELDS, "team", "updated_at"],
            )
        if exact_range is not None:
            stale = [
                pk
                for pk, user_id, start in UsageSummary.objects.filter(
                    period=period,
                    period_start__gte=exact_range[0],
                    period_start__lt=exact_range[1],
                ).values_list("id", "user_id", "period_start")
                if (user_id, start) not in totals
            ]
            UsageSummary.objects.filter(id__in=stale).delete()
    return len(rows)


def summary_hours_write(*, start: datetime, end: datetime, exact: bool = False) -> int:
    """Persist the hours in [start, end) from the records (absolute values; idempotent).

    `exact` also removes hourly rows in the range that no record supports (for rebuilds).
    """
    hours = record_hourly_teams(start=start, end=end)
    return _summaries_upsert(
        period="hourly",
        totals={slot: totals for slot, (totals, _team) in hours.items()},
        teams={slot: team for slot, (_totals, team) in hours.items()},
        exact_range=(start, end) if exact else None,
    )


# --- Jobs -----------------------------------------------------------------------------------


def summary_persist_hours(*, now: datetime | None = None) -> int:
    """The hourly job: persist completed hours, then delete their live keys; rows written.

    Persists the last PERSIST_LOOKBACK_HOURS completed hours and every completed hour that
    still has a live key (so a job that was down for a while catches up within the keys' TTL).
    """
    now = now or clock.now()
    current = floor_hour(now)
    store = get_store()
    done_keys: list[str] = []
    oldest = current - PERSIST_LOOKBACK_HOURS * HOUR
    for key in store.scan(settings.GATEWAY.redis.usage_summary_prefix):
        parsed = summary_key_parse(key)
        if parsed and parsed[1] < current:
            done_keys.append(key)
            oldest = min(oldest, parsed[1])
    written = summary_hours_write(start=oldest, end=current)
    # Only after the rows are committed: a crash before this line leaves keys readers ignore.
    store.delete(done_keys)
    return written


def summary_rollup(*, period: str, start: datetime, now: datetime | None = None) -> int:
    """Build the daily/weekly/monthly rows of the window at `start` from hourly rows.

    Persists the window's completed hours first (the daily job at 00:01 runs before the hourly
    job has persisted 23:00). Absolute values: running it again gives the same rows.
    """
    if period not in ("daily", "weekly", "monthly"):
        raise ValueError(f"cannot roll up period {period!r}")
    now = now or clock.now()
    start = period_start(period, start)
    end = period_end(period, start)
    summary_hours_write(start=start, end=min(end, floor_hour(now)))
    return _rollup_from_hours(period=period, start=start)


def _rollup_from_hours(*, period: str, start: datetime) -> int:
    """Write the `period` rows of the window at `start` from the hourly rows alone; the team of
    a user's row is the team of most of the window's calls (the latest hour's on a tie)."""
    rows = (
        UsageSummary.objects.filter(
            period="hourly", period_start__gte=start, period_start__lt=period_end(period, start)
        )
        .values("user_id", "team_id")
        .annotate(**SUMMARY_AGGREGATES, last_hour=Max("period_start"))
        .order_by()
    )
    totals: dict[tuple[int, datetime], Totals] = {}
    teams: dict[tuple[int, datetime], int | None] = {}
    rank: dict[tuple[int, datetime], tuple[int, datetime]] = {}
    for row in rows:
        slot = (row["user_id"], start)
        part = Totals.from_mapping(row, AGG)
        weight = (part.requests, row["last_hour"])
        totals[slot] = totals.get(slot, Totals()) + part
        if slot not in rank or weight > rank[slot]:
            teams[slot], rank[slot] = row["team_id"], weight
    return _summaries_upsert(
        period=period, totals=totals, teams=teams, exact_range=(start, start + HOUR)
    )


def summary_rollup_previous(*, period: str, now: datetime | None = None) -> int:
    """Roll up the last completed `period` window (what the scheduled jobs run)."""
    now = now or clock.now()
    current = period_start(period, now)
    previous = period_start(period, current - timedelta(seconds=1))
    return summary_rollup(period=period, start=previous, now=now)


def counters_sweep() -> int:
    """Delete expired rows of the embedded store; 0 with Redis (it expires keys itself)."""
    store = get_store()
    return store.sweep() if isinstance(store, DatabaseStore) else 0


# name -> (task, kwargs, crontab: minute, hour, day_of_week, day_of_month)
SCHEDULES = {
    "usage: persist completed hours": ("usage.persist_hours", {}, ("5", "*", "*", "*")),
    "usage: daily summaries": ("usage.rollup", {"period": "daily"}, ("1", "0", "*", "*")),
    "usage: weekly summaries": ("usage.rollup", {"period": "weekly"}, ("5", "0", "1", "*")),
    "usage: monthly summaries": ("usage.rollup", {"period": "monthly"}, ("10", "0", "*", "1")),
    "usage: sweep expired counters": ("usage.sweep_counters", {}, ("*/15", "*", "*", "*")),
    "usage: purge records past retention": ("usage.purge_records", {}, ("30", "2", "*", "*")),
    "accounts: refresh identities": ("accounts.refresh_identities", {}, ("20", "*", "*", "*")),
    "accounts: purge expired device sign-ins": (
        "accounts.purge_device_authorizations",
        {},
        ("40", "3", "*", "*"),
    ),
}


def schedules_install(*, apps=None) -> int:  # a migration's app registry
    """Register the usage jobs in django-celery-beat; existing entries (maybe edited) are kept.

    Returns how many were created. `apps` is a migration's registry when run from one.
    """
    if apps is None:
        from django_celery_beat.models import CrontabSchedule, PeriodicTask
    else:
        CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    created = 0
    for name, (task, kwargs, (minute, hour, day_of_week, day_of_month)) in SCHEDULES.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_week=day_of_week,
            day_of_month=day_of_month,
            month_of_year="*",
            timezone="UTC",
        )
        PeriodicTask.objects.create(
            name=name, task=task, crontab=crontab, kwargs=json.dumps(kwargs)
        )
        created += 1
    return created


# --- Retention ------------------------------------------------------------------------------

# Records deleted per statement: each delete is its own short transaction, so a purge of
# millions of rows never holds its locks (or bloats one transaction) for minutes.
PURGE_BATCH = 10_000


class RetentionError(ValueError):
    """A rebuild asked for a period whose records are (or may be) purged."""


def retention_cutoff(*, now: datetime) -> datetime | None:
    """The start of the oldest day whose records are kept (`usage.retention_days` before
    `now`, at midnight UTC so that whole hours and days go together); None keeps everything."""
    days = settings.GATEWAY.usage.retention_days
    if days is None:
        return None
    return period_start("daily", now - timedelta(days=days))


def _retention_check(*, start: datetime, now: datetime) -> None:
    cutoff = retention_cutoff(now=now)
    if cutoff is not None and start < cutoff:
        raise RetentionError(
            f"cannot rebuild from {start:%Y-%m-%dT%H:%M}: records before "
            f"{cutoff:%Y-%m-%d} are past the retention (usage.retention_days="
            f"{settings.GATEWAY.usage.retention_days}) and may be purged, so a rebuild would "
            f"overwrite their summaries with what is left; rebuild from {cutoff:%Y-%m-%d} on"
        )


def _rollup_windows(*, start: datetime, end: datetime) -> list[tuple[str, datetime]]:
    """Every (period, window start) of the daily, weekly and monthly windows touching
    [start, end)."""
    windows = []
    for period in ("daily", "weekly", "monthly"):
        window = period_start(period, start)
        while window < end:
            windows.append((period, window))
            window = period_end(period, window)
    return windows


def _rollups_cover(*, start: datetime, end: datetime) -> bool:
    """Whether every record in [start, end) is counted in the summaries: an hourly row per
    (user, hour) with at least the records' calls, and a daily, weekly and monthly row for
    each user in each window holding its calls."""
    expected = record_hourly_totals(start=start, end=end)
    hourly = {
        (user, hour): requests
        for user, hour, requests in UsageSummary.objects.filter(
            period="hourly", period_start__gte=start, period_start__lt=end
        ).values_list("user_id", "period_start", "requests")
    }
    if any(hourly.get(slot, -1) < totals.requests for slot, totals in expected.items()):
        return False
    for period in ("daily", "weekly", "monthly"):
        needed = {(user, period_start(period, hour)) for user, hour in expected}
        if not needed:
            continue
        windows = {window for _user, window in needed}
        have = set(
            UsageSummary.objects.filter(period=period, period_start__in=windows).values_list(
                "user_id", "period_start"
            )
        )
        if not needed <= have:
            return False
    return True


def records_purge(*, now: datetime | None = None, batch: int = PURGE_BATCH) -> int:
    """The nightly job: delete the records older than the retention cut-off; rows deleted.

    At most a month at a time (oldest first): the hours of the records are written again
    from them and their days, weeks and months rolled up again (absolute values, as the jobs
    do, so a rollup the jobs missed exists before its records go), then checked, and only
    then are the records deleted, in batches of `batch` ids. If the summaries of a month do
    not cover its records, the purge stops there and logs it: those records stay until a run
    that finds them covered. Summaries are never deleted.
    """
    now = now or clock.now()
    cutoff = retention_cutoff(now=now)
    if cutoff is None:
        return 0
    deleted = 0
    while True:
        oldest = (
            UsageRecord.objects.filter(started_at__lt=cutoff)
            .order_by()
            .aggregate(oldest=Min("started_at"))["oldest"]
        )
        if oldest is None:
            return deleted
        start = period_start("daily", oldest)
        end = min(period_end("monthly", period_start("monthly", start)), cutoff)
        # The hours of the records about to go (from them, as the hourly job does), then every
        # day, week and month holding them (from the hourly rows: the rest of a window is
        # what the jobs wrote). All long over, so nothing here races the hourly job; a nightly
        # run reads one day of records.
        summary_hours_write(start=start, end=end)
        for period, window in _rollup_windows(start=start, end=end):
            _rollup_from_hours(period=period, start=window)
        if not _rollups_cover(start=start, end=end):
            logger.error(
                "usage purge: the summaries of %s..%s do not cover its records; kept them",
                f"{start:%Y-%m-%d}",
                f"{end:%Y-%m-%d}",
            )
            return deleted
        deleted += _records_delete(start=start, end=end, batch=batch)
        logger.info("usage purge: deleted the records of %s..%s", start, end)


def _records_delete(*, start: datetime, end: datetime, batch: int) -> int:
    deleted = 0
    rows = UsageRecord.objects.filter(started_at__gte=start, started_at__lt=end).order_by()
    while ids := list(rows.values_list("id", flat=True)[:batch]):
        # No cascades or signals on UsageRecord: Django deletes with one statement.
        count, _ = UsageRecord.objects.filter(id__in=ids).delete()
        deleted += count
    return deleted


@dataclass(frozen=True)
class RebuildResult:
    hourly_rows: int
    rollup_rows: int
    live_keys: int


def usage_rebuild(*, start: datetime, end: datetime, now: datetime | None = None) -> RebuildResult:
    """Recompute summaries and live counters of [start, end) from the records.

    Completed hours become exact hourly rows (their live keys are deleted); the daily, weekly
    and monthly windows that the range touches and that are over are rolled up again; the
    current hour's live counters are set to the records' totals. So losing the store loses
    nothing. Calls recorded while the current hour is rebuilt may be missing from its live
    counter until the hour is persisted (from the records) by the hourly job.

    Raises RetentionError when `start` is before the retention cut-off: the records there are
    purged (or about to be), and a rebuild would overwrite their summaries with zeros.
    """
    now = now or clock.now()
    _retention_check(start=floor_hour(start), now=now)
    current = floor_hour(now)
    start = floor_hour(start)
    end = min(ceil_hour(end), current + HOUR)
    completed_end = min(end, current)
    hourly_rows = 0
    if start < completed_end:
        hourly_rows = summary_hours_write(start=start, end=completed_end, exact=True)
    rollup_rows = 0
    for period in ("daily", "weekly", "monthly"):
        window = period_start(period, start)
        while window < completed_end:
            window_end = period_end(period, window)
            if window_end <= current:
                rollup_rows += summary_rollup(period=period, start=window, now=now)
            window = window_end
    live_keys = _live_rebuild(start=start, end=end, current=current, now=now)
    return RebuildResult(hourly_rows=hourly_rows, rollup_rows=rollup_rows, live_keys=live_keys)


def live_sentinel_key() -> str:
    """A key that lives as long as the store keeps its data: gone means the live counters were
    lost (a flushed or replaced Redis). Outside the summary keys' prefix, so scans skip it."""
    return f"{settings.GATEWAY.redis.usage_summary_prefix.rstrip(':')}_sentinel"


def live_heal(*, now: datetime) -> int:
    """Rebuild the live counters of every hour not yet persisted from the records, then mark
    the store whole (the sentinel). Called by readers that find the sentinel gone, so that a
    flushed store heals without an operator. Returns the keys written."""
    store = get_store()
    start, current = live_window_start(now), floor_hour(now)
    cutoff = retention_cutoff(now=now)
    if cutoff is not None and start < cutoff:
        # Only with a counter TTL longer than the retention: purged hours have no live keys
        # to rebuild (and their summaries are persisted).
        start = cutoff
    persisted = set(
        UsageSummary.objects.filter(
            period="hourly", period_start__gte=start, period_start__lte=current
        ).values_list("user_id", "period_start")
    )
    ttl = settings.GATEWAY.redis.hourly_summary_ttl
    values = [
        Increment(key=summary_key(user_id, hour), deltas=totals.as_dict(), ttl=ttl)
        for (user_id, hour), totals in record_hourly_totals(start=start, end=current + HOUR).items()
        if (user_id, hour) not in persisted
    ]
    if values:
        store.replace_many(values)
    store.replace_many([Increment(key=live_sentinel_key(), deltas={"whole": 1}, ttl=SENTINEL_TTL)])
    logger.warning("live usage counters were lost; %d rebuilt from the records", len(values))
    return len(values)


# Ten years: the sentinel goes only with the store's data.
SENTINEL_TTL = 10 * 365 * 86400


def _live_rebuild(*, start: datetime, end: datetime, current: datetime, now: datetime) -> int:
    store = get_store()
    in_range = []
    for key in store.scan(settings.GATEWAY.redis.usage_summary_prefix):
        parsed = summary_key_parse(key)
        if parsed and start <= parsed[1] < end:
            in_range.append(key)
    # Completed hours are persisted rows now; the current hour's keys are set afresh.
    store.delete(in_range)
    if not (start <= current < end):
        return 0
    ttl = settings.GATEWAY.redis.hourly_summary_ttl
    totals = record_hourly_totals(start=current, end=current + HOUR)
    values = [
        Increment(key=summary_key(user_id, hour), deltas=t.as_dict(), ttl=ttl)
        for (user_id, hour), t in totals.items()
    ]
    if values:
        store.replace_many(values)
    return len(values)
