"""The jobs on a real Celery worker process with a real Redis broker, on the test database."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.fixtures.waiting import wait_for
from usage.models import UsageSummary
from usage.services import usage_totals
from usage.windows import floor_hour

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


# The worker answers within seconds; it reads and writes the same database as this test.
WORKER = {"timeout": 30.0, "interval": 0.2}
NOT_DONE = "the worker did not finish the task in time"


def test_the_worker_persists_completed_hours(celery_worker, unique_owner, unique_stranger, record):
    two_hours_ago = floor_hour(datetime.now(UTC)) - timedelta(hours=2)
    record(unique_owner, started_at=two_hours_ago + timedelta(minutes=10))
    record(unique_owner, started_at=two_hours_ago + timedelta(minutes=50))
    record(unique_stranger, started_at=two_hours_ago + timedelta(minutes=70))
    celery_worker.send_task("usage.persist_hours")
    rows = wait_for(
        lambda: (
            list(
                UsageSummary.objects.filter(period="hourly")
                .order_by("user_id", "period_start")
                .values_list("user_id", "period_start", "requests")
            )
            if UsageSummary.objects.filter(period="hourly").count() == 2
            else None
        ),
        **WORKER,
    )
    assert rows, NOT_DONE
    assert rows == [
        (unique_owner.id, two_hours_ago, 2),
        (unique_stranger.id, two_hours_ago + timedelta(hours=1), 1),
    ]


def test_the_worker_rolls_up_a_day_and_rebuilds(celery_worker, unique_owner, record):
    # A day of last week: within the retention (a fixed date would age past it).
    day = floor_hour(datetime.now(UTC) - timedelta(days=7)).replace(hour=0)
    for hour in (1, 13, 23):
        record(unique_owner, started_at=day + timedelta(hours=hour, minutes=30))
    celery_worker.send_task("usage.rollup", kwargs={"period": "daily", "start": day.isoformat()})
    daily = wait_for(lambda: UsageSummary.objects.filter(period="daily").first(), **WORKER)
    assert daily, NOT_DONE
    expected = usage_totals(user_id=unique_owner.id, start=day, end=day + timedelta(days=1))
    assert (daily.period_start, daily.requests, daily.input_tokens) == (
        day,
        expected.requests,
        expected.input_tokens,
    )
    UsageSummary.objects.all().delete()
    celery_worker.send_task(
        "usage.rebuild",
        kwargs={"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()},
    )
    assert wait_for(lambda: UsageSummary.objects.filter(period="daily").exists(), **WORKER), (
        NOT_DONE
    )
    assert UsageSummary.objects.filter(period="hourly").count() == 3
    assert UsageSummary.objects.get(period="daily").requests == 3
