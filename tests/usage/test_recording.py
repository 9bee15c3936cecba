"""usage_record: one row per call, cost, idempotency, live counters, window attribution."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.db import connections

from accounts.services import api_key_create
from config.db import aclose_loop_connection
from costs.money import Usage
from tests.fixtures.calls import HAIKU, call_for
from tests.fixtures.servers import free_port
from usage import services
from usage.models import UsageRecord
from usage.services import ausage_record, ausage_record_many, client_family, usage_record
from usage.store import RedisStore, get_store
from usage.windows import floor_hour, summary_key

pytestmark = pytest.mark.django_db

T_1059 = datetime(2026, 11, 25, 10, 59, 30, tzinfo=UTC)
HOUR_10 = datetime(2026, 11, 25, 10, tzinfo=UTC)
HOUR_11 = datetime(2026, 11, 25, 11, tzinfo=UTC)


def live(user, hour) -> dict:
    key = summary_key(user.id, hour)
    return get_store().get_many([key])[key]


def test_a_recorded_call_keeps_its_tokens_cost_and_attribution(unique_owner):
    created = api_key_create(user=unique_owner, name="laptop")
    record = usage_record(
        call=call_for(
            unique_owner,
            api_key_id=created.api_key.id,
            auth_kind="api_key",
            route="bedrock.invoke_stream",
            streaming=True,
            usage=Usage(
                input_tokens=1000,
                output_tokens=100,
                cache_write_5m_tokens=2000,
                cache_write_1h_tokens=1000,
                cache_read_tokens=10000,
            ),
            ttfb_ms=80,
            client_family="claude-cli",
            session_id="3f1c",
        )
    )
    stored = UsageRecord.objects.get(pk=record.pk)
    assert stored.model_id == HAIKU
    assert stored.base_model_id == "anthropic.claude-haiku-4-5-20251001-v1:0"
    assert stored.api_key_id == created.api_key.id
    assert (stored.streaming, stored.ttfb_ms, stored.session_id) == (True, 80, "3f1c")
    assert stored.cache_write_tokens == 3000
    # Haiku 4.5: $1 in, $5 out, $1.25 5m write, $2 1h write, $0.10 read per million tokens.
    assert stored.cost_micros == 1000 + 500 + 2500 + 2000 + 1000


def test_a_model_without_a_price_is_recorded_with_unknown_cost(unique_owner, record):
    row = record(unique_owner, model_id="anthropic.claude-unreleased-9")
    assert row.cost_micros is None
    values = live(unique_owner, services.floor_hour(row.started_at))
    assert values["unknown_cost_requests"] == 1
    assert values["cost_micros"] == 0


def test_recording_the_same_call_twice_counts_it_once(unique_owner):
    call = call_for(unique_owner, started_at=datetime.now(UTC))
    assert usage_record(call=call) is not None
    assert usage_record(call=call) is None
    assert UsageRecord.objects.filter(call_id=call.call_id).count() == 1
    values = live(unique_owner, services.floor_hour(call.started_at))
    assert values["requests"] == 1
    assert values["input_tokens"] == 1000


def test_each_call_updates_every_field_of_the_live_hourly_summary(unique_owner, record):
    now = datetime.now(UTC)
    record(unique_owner, started_at=now, usage=Usage(input_tokens=10, output_tokens=20))
    record(
        unique_owner,
        started_at=now,
        usage=Usage(input_tokens=1, output_tokens=2, cache_write_1h_tokens=3, cache_read_tokens=4),
    )
    values = live(unique_owner, services.floor_hour(now))
    assert values == {
        "requests": 2,
        "input_tokens": 11,
        "output_tokens": 22,
        "cache_write_tokens": 3,
        "cache_read_tokens": 4,
        "cost_micros": 110 + 17,  # 10 + 100; 1 + 10 + 6 + 0.4 floored per call
        "unknown_cost_requests": 0,
    }


def test_the_live_key_has_the_configured_ttl(unique_owner, record, settings):
    row = record(unique_owner)
    key = summary_key(unique_owner.id, services.floor_hour(row.started_at))
    store = get_store()
    if isinstance(store, RedisStore):
        ttl = store.client.ttl(key)
    else:
        from usage.models import Counter

        expires = Counter.objects.filter(key=key).values_list("expires_at", flat=True)[0]
        ttl = (expires - datetime.now(UTC)).total_seconds()
    assert settings.GATEWAY.redis.hourly_summary_ttl - 60 < ttl <= 90000


def test_a_call_counts_in_the_hour_where_it_started(unique_owner):
    with time_machine.travel(T_1059, tick=False):
        call = call_for(unique_owner, started_at=T_1059)
    # The stream ends (and is recorded) at 11:06, before the hourly job ran.
    with time_machine.travel(HOUR_11 + timedelta(minutes=6), tick=False):
        usage_record(call=call)
        assert live(unique_owner, HOUR_10)["requests"] == 1
        assert live(unique_owner, HOUR_11) == {}


def test_a_call_recorded_after_its_hour_was_persisted_joins_the_persisted_row(unique_owner, record):
    with time_machine.travel(HOUR_10 + timedelta(minutes=20), tick=False):
        record(unique_owner, started_at=HOUR_10 + timedelta(minutes=20))
    with time_machine.travel(HOUR_11 + timedelta(minutes=5), tick=False):
        services.summary_persist_hours()
    with time_machine.travel(HOUR_11 + timedelta(minutes=6), tick=False):
        usage_record(call=call_for(unique_owner, started_at=T_1059))
        assert live(unique_owner, HOUR_10) == {}
    row = unique_owner.usage_summaries.get(period="hourly", period_start=HOUR_10)
    assert row.requests == 2
    # And the next run (which recomputes from the records) agrees.
    with time_machine.travel(HOUR_11 + timedelta(hours=1, minutes=5), tick=False):
        services.summary_persist_hours()
    row.refresh_from_db()
    assert row.requests == 2


def test_a_counter_failure_leaves_the_row_and_is_logged(unique_owner, monkeypatch, caplog):
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(services, "get_store", lambda: down)
    row = usage_record(call=call_for(unique_owner))
    assert UsageRecord.objects.filter(pk=row.pk).exists()
    assert "live usage counter update failed" in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_the_async_wrapper_records_the_call(unique_owner):
    call = call_for(unique_owner)
    await ausage_record(call=call)
    await ausage_record(call=call)
    count = await UsageRecord.objects.filter(call_id=call.call_id).acount()
    assert count == 1
    # The wrapper ran in the loop's default pool (one idle thread, reused), acount() in
    # asgiref's shared thread: close their connections so that the test database can go.
    await asyncio.get_running_loop().run_in_executor(None, connections.close_all)
    await sync_to_async(connections.close_all)()


@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        ("claude-cli/2.1.332 (external, cli)", "claude-cli"),
        ("Anthropic/Python 2.14.0", "Anthropic/Python"),
        ("AsyncAnthropic/Python 2.14.0", "Anthropic/Python"),
        ("AnthropicBedrock/Python 2.14.0", "Anthropic/Python"),
        ("Anthropic/JS 0.70.0", "Anthropic/JS"),
        ("Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux#6 lang/python#3.11", "Boto3"),
        ("Botocore/1.44.8 ua/2.1", "Botocore"),
        ("curl/8.5.0", "curl"),
        ("python-httpx/0.28.1", "httpx"),
        ("Mozilla/5.0", "other"),
        ("", "other"),
    ],
)
def test_client_family_comes_from_the_user_agent(user_agent, family):
    assert client_family(user_agent) == family


def test_call_ids_are_unique_in_the_database(unique_owner, record):
    call_id = uuid.uuid4()
    record(unique_owner, call_id=call_id)
    assert record(unique_owner, call_id=call_id, model_id="other") is None
    assert UsageRecord.objects.get(call_id=call_id).model_id == HAIKU


def test_a_lost_store_heals_the_live_hours_from_the_records(unique_owner, record):
    """A flushed Redis (or a replaced one) must not show the hours not yet persisted as 0."""
    from config import clock
    from usage.selectors import summary_buckets
    from usage.windows import HOUR, floor_hour

    now = clock.now()
    latest = now - timedelta(minutes=1)  # the hour before now's in the first minute of an hour
    record(unique_owner, started_at=latest)
    record(unique_owner, started_at=now - HOUR)  # a completed hour the hourly job has not persisted

    def requests_by_hour() -> dict:
        buckets = summary_buckets(
            start=floor_hour(now) - HOUR,
            end=floor_hour(now) + HOUR,
            bucket="hourly",
            user_id=unique_owner.pk,
        )
        return {hour: totals.requests for hour, totals in buckets.items() if totals.requests}

    before = requests_by_hour()
    assert sum(before.values()) == 2
    store = get_store()
    # The store loses everything, its sentinel included.
    store.delete([*store.scan("usage_summary:"), services.live_sentinel_key()])
    assert requests_by_hour() == before
    assert get_store().get_many([summary_key(unique_owner.pk, latest)])[
        summary_key(unique_owner.pk, latest)
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_batch_with_a_call_recorded_already_records_each_call_once(unique_owner):
    # On PostgreSQL the proxy's batches are inserted from the event loop on its own connection;
    # a batch the database refuses (one call was written already, by a spool replay) is
    # written one call at a time instead, each once. On SQLite the thread path does it all.
    first, second = (
        call_for(unique_owner, priced=True, cost_micros=1234, usage=Usage(input_tokens=n))
        for n in (10, 20)
    )
    hour = floor_hour(first.started_at)
    before = (await get_store().aget_many([summary_key(unique_owner.id, hour)])).get(
        summary_key(unique_owner.id, hour), {}
    )
    assert await ausage_record_many(calls=[first]) == 1
    assert await ausage_record_many(calls=[first, second]) == 1
    ids = [first.call_id, second.call_id]
    assert await UsageRecord.objects.filter(call_id__in=ids).acount() == 2
    key = summary_key(unique_owner.id, hour)
    after = (await get_store().aget_many([key]))[key]
    assert after.get("input_tokens", 0) - before.get("input_tokens", 0) == 30  # each once
    assert after.get("requests", 0) - before.get("requests", 0) == 2
    await aclose_loop_connection()
    await asyncio.get_running_loop().run_in_executor(None, connections.close_all)
    await sync_to_async(connections.close_all)()
