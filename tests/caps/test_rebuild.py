"""Cap counters rebuilt from the usage records: a lost counter store loses nothing."""

import uuid
from datetime import UTC, datetime

import pytest

from caps.rebuild import caps_rebuild
from caps.reservations import cap_reserve
from caps.services import cap_create
from caps.status import cap_status
from caps.windows import user_tag, window_key
from costs.money import Usage
from tests.fixtures.calls import SONNET
from tests.fixtures.cap_store import wipe_redis_user
from usage.models import Counter, UsageRecord
from usage.services import CallRecord, usage_record

pytestmark = pytest.mark.django_db


def record(user, model_id: str, usage: Usage) -> UsageRecord:
    return usage_record(
        call=CallRecord(
            call_id=uuid.uuid4(), user_id=user.pk, api_key_id=None, auth_kind="jwt",
            model_id=model_id, route="bedrock.invoke", streaming=False, usage=usage,
            upstream_status=200, error_type=None, latency_ms=5, ttfb_ms=None, request_id="r",
            started_at=datetime.now(UTC), client_family="other", session_id=None,
        )
    )  # fmt: skip


def lose_the_store(user) -> None:
    wipe_redis_user(user.pk)
    Counter.objects.filter(key__startswith=user_tag(user.pk)).delete()


def own_daily(user, store) -> dict:
    return next(s for s in cap_status(user_id=user.pk, store=store) if s["set_by"] == "user")


def test_a_lost_store_is_rebuilt_from_the_records(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    known = Usage(input_tokens=1000, output_tokens=200, cache_write_5m_tokens=50,
                  cache_read_tokens=5000)  # fmt: skip
    rows = [record(user, SONNET, known), record(user, SONNET, known)]
    unknown = record(user, "us.anthropic.claude-sonnet-9-9", Usage(input_tokens=10))
    lose_the_store(user)
    daily_key = window_key(user.pk, "daily", datetime.now(UTC))
    assert any_store.read([daily_key], datetime.now(UTC))[0].get("requests", 0) == 0

    assert caps_rebuild(store=any_store) >= 3  # hourly, daily and monthly windows

    usage = own_daily(user, any_store)["current_usage"]
    assert usage["requests"] == 3
    assert usage["tokens"] == 2 * (1000 + 200 + 50) + 10  # cache reads count toward cost only
    priced = sum(row.cost_micros for row in rows)
    assert unknown.cost_micros is None
    assert usage["cost_cents"] * 10_000 > priced  # the unknown model at its family's dearest


def test_rebuilding_keeps_calls_in_flight(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    record(user, SONNET, Usage(input_tokens=10, output_tokens=10))
    cap_reserve(user_id=user.pk, model_id=SONNET, estimate=Usage(input_tokens=5),
                     store=any_store)  # fmt: skip
    caps_rebuild(store=any_store)
    daily = own_daily(user, any_store)
    assert daily["current_usage"]["requests"] == 1
    assert daily["in_flight"]["requests"] == 1
