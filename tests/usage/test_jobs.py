"""The summary jobs: persisting hours, rollups, rebuild, schedules (tasks run eagerly here)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django_celery_beat.models import PeriodicTask

from costs.money import Usage
from usage import selectors, services, tasks
from usage.models import Counter, UsageRecord, UsageSummary
from usage.services import Totals, usage_totals
from usage.store import Increment, get_store
from usage.windows import summary_key

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 25, tzinfo=UTC)  # a Wednesday
H = timedelta(hours=1)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def summary_rows(period: str = "hourly") -> list[tuple]:
    fields = ("user_id", "period_start", *services.TOTAL_FIELDS)
    return list(
        UsageSummary.objects.filter(period=period)
        .order_by("user_id", "period_start")
        .values_list(*fields)
    )


def live_keys() -> list[str]:
    return get_store().scan(settings.GATEWAY.redis.usage_summary_prefix)


def record_at(record, user, started_at: datetime, **overrides):
    """Record a call that started (and is recorded) at `started_at`."""
    with time_machine.travel(started_at, tick=False):
        return record(user, started_at=started_at, **overrides)


@pytest.fixture
def traffic(unique_owner, unique_stranger, record):
    """Calls of two users over hours 8..10 and the current hour 11 of DAY."""
    record_at(record, unique_owner, at(8.1), usage=Usage(input_tokens=100, output_tokens=10))
    record_at(record, unique_owner, at(8.9), usage=Usage(input_tokens=200, cache_read_tokens=1000))
    record_at(
        record, unique_stranger, at(9.5), usage=Usage(input_tokens=5, cache_write_5m_tokens=50)
    )
    record_at(record, unique_owner, at(10.2), model_id="anthropic.claude-unpriced-1")
    record_at(record, unique_owner, at(11.01), usage=Usage(input_tokens=7, output_tokens=7))


def test_the_hourly_job_persists_completed_hours_and_deletes_their_live_keys(
    unique_owner, unique_stranger, traffic
):
    with time_machine.travel(at(11.08), tick=False):
        tasks.persist_hours.delay()
        # The current hour stays live.
        assert live_keys() == [summary_key(unique_owner.id, at(11))]
    persisted = {(row[0], row[1]) for row in summary_rows()}
    assert persisted == {
        (unique_owner.id, at(8)),
        (unique_stranger.id, at(9)),
        (unique_owner.id, at(10)),
    }
    owner_hour_8 = UsageSummary.objects.get(user=unique_owner, period="hourly", period_start=at(8))
    assert (owner_hour_8.requests, owner_hour_8.input_tokens) == (2, 300)
    assert owner_hour_8.cache_read_tokens == 1000
    assert owner_hour_8.cost_micros == 100 + 50 + 200 + 100
    unpriced = UsageSummary.objects.get(user=unique_owner, period="hourly", period_start=at(10))
    assert (unpriced.unknown_cost_requests, unpriced.cost_micros) == (1, 0)
    assert not UsageSummary.objects.filter(period_start=at(11)).exists()


def test_running_the_hourly_job_twice_gives_the_same_rows(traffic):
    with time_machine.travel(at(11.08), tick=False):
        services.summary_persist_hours()
        first = summary_rows()
        ids = sorted(UsageSummary.objects.values_list("id", flat=True))
        services.summary_persist_hours()
    assert summary_rows() == first
    assert sorted(UsageSummary.objects.values_list("id", flat=True)) == ids
    assert len(first) == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_hourly_jobs_give_the_same_rows(unique_owner, unique_stranger, record):
    for hour in (8.5, 9.5, 10.5):
        record_at(record, unique_owner, at(hour))
        record_at(record, unique_stranger, at(hour))
    errors = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            barrier.wait()
            services.summary_persist_hours(now=at(11.1))
        except BaseException as exc:  # asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [row[2] for row in summary_rows()] == [1] * 6


def test_a_crash_between_persisting_and_deleting_never_double_counts(unique_owner, record):
    record_at(record, unique_owner, at(10.5), usage=Usage(input_tokens=100))
    with time_machine.travel(at(11.07), tick=False):
        # The job wrote the row, then died before deleting the live key.
        services.summary_hours_write(start=at(10), end=at(11))
        assert live_keys() == [summary_key(unique_owner.id, at(10))]
        summary = selectors.usage_summary(user_id=unique_owner.id, start=at(0), end=at(12))
        assert (summary.totals.requests, summary.totals.input_tokens) == (1, 100)
        services.summary_persist_hours()
        summary = selectors.usage_summary(user_id=unique_owner.id, start=at(0), end=at(12))
    assert (summary.totals.requests, summary.totals.input_tokens) == (1, 100)
    assert live_keys() == []


def test_a_stream_from_1059_to_1106_counts_once_in_hour_10_whenever_the_job_runs(unique_owner):
    from tests.fixtures.calls import call_for

    with time_machine.travel(at(10 + 59 / 60), tick=False):
        call = call_for(unique_owner, started_at=at(10 + 59 / 60))
    for job_minute in (3, 5, 9):
        UsageRecord.objects.all().delete()
        UsageSummary.objects.all().delete()
        get_store().delete(live_keys())
        call = call_for(unique_owner, started_at=call.started_at)
        moment_recorded = at(11 + 6 / 60)
        with time_machine.travel(at(11 + job_minute / 60), tick=False):
            if job_minute < 6:
                services.summary_persist_hours()
        with time_machine.travel(moment_recorded, tick=False):
            services.usage_record(call=call)
        with time_machine.travel(at(11 + job_minute / 60), tick=False):
            if job_minute >= 6:
                services.summary_persist_hours()
        with time_machine.travel(at(11.5), tick=False):
            summary = selectors.usage_summary(
                user_id=unique_owner.id, start=at(0), end=at(12), group_by="hour"
            )
            by_hour = {start: totals.requests for start, totals in summary.by_period}
        assert by_hour == {at(10): 1}, job_minute
    with time_machine.travel(at(12.1), tick=False):
        services.summary_persist_hours()
    assert summary_rows()[-1][1:3] == (at(10), 1)


def test_rollups_equal_the_sum_of_the_records(unique_owner, unique_stranger, record):
    # Monday 2026-11-23 .. Tuesday 2026-12-01, several calls a day.
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    for day in range(9):
        for hour in (0.2, 9.5, 23.9):
            started = monday + timedelta(days=day, hours=hour)
            record_at(
                record, unique_owner, started, usage=Usage(input_tokens=day + 1, output_tokens=hour)
            )
            record_at(record, unique_stranger, started, usage=Usage(cache_read_tokens=1000 * day))
    with time_machine.travel(datetime(2026, 12, 2, 0, 1, tzinfo=UTC), tick=False):
        for day in range(9):
            services.summary_rollup(period="daily", start=monday + timedelta(days=day))
        services.summary_rollup(period="weekly", start=monday)
        services.summary_rollup(period="monthly", start=datetime(2026, 11, 1, tzinfo=UTC))

    def from_records(user, start, end) -> Totals:
        return usage_totals(user_id=user.id, start=start, end=end)

    def summary(user, period, start) -> Totals:
        row = UsageSummary.objects.get(user=user, period=period, period_start=start)
        return Totals.from_mapping(row.__dict__)

    for user in (unique_owner, unique_stranger):
        for day in range(9):
            start = monday + timedelta(days=day)
            assert summary(user, "daily", start) == from_records(user, start, start + 24 * H)
        week_end = monday + timedelta(days=7)
        assert summary(user, "weekly", monday) == from_records(user, monday, week_end)
        november = datetime(2026, 11, 1, tzinfo=UTC)
        december = datetime(2026, 12, 1, tzinfo=UTC)
        assert summary(user, "monthly", november) == from_records(user, november, december)
    assert summary(unique_owner, "weekly", monday).requests == 21


def test_the_daily_rollup_at_0001_includes_the_last_hour_of_the_day(unique_owner, record):
    record_at(record, unique_owner, at(23.95))
    with time_machine.travel(at(24 + 1 / 60), tick=False):
        tasks.rollup.delay(period="daily")
    row = UsageSummary.objects.get(user=unique_owner, period="daily")
    assert (row.period_start, row.requests) == (DAY, 1)


def test_the_scheduled_rollups_roll_up_the_previous_window(unique_owner, record):
    record_at(record, unique_owner, datetime(2026, 11, 29, 12, tzinfo=UTC))  # a Sunday
    with time_machine.travel(datetime(2026, 11, 30, 0, 5, tzinfo=UTC), tick=False):
        tasks.rollup.delay(period="weekly")
    with time_machine.travel(datetime(2026, 12, 1, 0, 10, tzinfo=UTC), tick=False):
        tasks.rollup.delay(period="monthly")
    starts = dict(
        UsageSummary.objects.exclude(period="hourly").values_list("period", "period_start")
    )
    assert starts == {
        "weekly": datetime(2026, 11, 23, tzinfo=UTC),
        "monthly": datetime(2026, 11, 1, tzinfo=UTC),
    }


def test_a_rebuild_after_losing_the_store_and_summaries_equals_the_original(traffic, unique_owner):
    with time_machine.travel(at(11.5), tick=False):
        services.summary_persist_hours()
        services.summary_rollup(period="daily", start=DAY - 24 * H)
        original_rows = summary_rows()
        original_live = get_store().get_many(live_keys())
        original = selectors.usage_summary(user_id=unique_owner.id, start=at(0), end=at(12))
        # The store is lost (all usage keys gone) and so are the summaries.
        get_store().delete([*live_keys(), services.live_sentinel_key()])
        Counter.objects.all().delete()
        UsageSummary.objects.all().delete()
        # Hours within the live window heal from the records at once, without an operator.
        assert selectors.usage_summary(user_id=unique_owner.id, start=at(0), end=at(12)) == original
        call_command("rebuildusage", "--from", "2026-11-24", "--to", "2026-11-25")
        assert summary_rows() == original_rows
        assert get_store().get_many(live_keys()) == original_live
        assert selectors.usage_summary(user_id=unique_owner.id, start=at(0), end=at(12)) == original


def test_a_rebuild_of_the_current_hour_sets_the_live_counter_absolutely(unique_owner, record):
    record_at(record, unique_owner, at(11.2), usage=Usage(input_tokens=3))
    key = summary_key(unique_owner.id, at(11))
    get_store().incr_many([Increment(key=key, deltas={"requests": 40}, ttl=600)])
    with time_machine.travel(at(11.5), tick=False):
        tasks.rebuild.delay(start=at(11).isoformat(), end=at(12).isoformat())
        assert get_store().get_many([key])[key]["requests"] == 1
        assert get_store().get_many([key])[key]["input_tokens"] == 3


def test_rebuildusage_rejects_bad_dates():
    with pytest.raises(CommandError, match="not an ISO date"):
        call_command("rebuildusage", "--from", "yesterday", "--to", "2026-11-25")
    with pytest.raises(CommandError, match="must be after"):
        call_command("rebuildusage", "--from", "2026-11-25", "--to", "2026-11-20")


def test_the_jobs_are_scheduled_in_celery_beat_and_edits_are_kept():
    tasks_by_name = {t.name: t for t in PeriodicTask.objects.filter(name__startswith="usage:")}
    crons = {
        name: (
            t.task,
            t.crontab.minute,
            t.crontab.hour,
            t.crontab.day_of_week,
            t.crontab.day_of_month,
        )
        for name, t in tasks_by_name.items()
    }
    assert crons["usage: persist completed hours"] == ("usage.persist_hours", "5", "*", "*", "*")
    assert crons["usage: daily summaries"] == ("usage.rollup", "1", "0", "*", "*")
    assert crons["usage: weekly summaries"] == ("usage.rollup", "5", "0", "1", "*")
    assert crons["usage: monthly summaries"] == ("usage.rollup", "10", "0", "*", "1")
    assert tasks_by_name["usage: weekly summaries"].kwargs == '{"period": "weekly"}'
    hourly = tasks_by_name["usage: persist completed hours"]
    hourly.enabled = False
    hourly.save()
    assert services.schedules_install() == 0
    hourly.refresh_from_db()
    assert hourly.enabled is False


def test_the_sweep_task_deletes_expired_embedded_counters():
    from usage.store import DatabaseStore

    DatabaseStore().incr_many([Increment(key="usage_cap:{user_1}:x", deltas={"n": 1}, ttl=1)])
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=5), tick=False):
        swept = tasks.sweep_counters.delay().get()
    expected = 1 if isinstance(get_store(), DatabaseStore) else 0
    assert swept == expected
    assert Counter.objects.count() == 1 - expected
