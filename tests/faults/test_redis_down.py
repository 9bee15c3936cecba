"""Redis down is not an outage, and cap counters heal themselves (issue #13).

A real gateway process on a private redis-server that the tests kill and restart: calls are
served (failure mode open) or refused with a 503 in Anthropic's shape (closed), never a 500;
the first calls after a restart work on connections the restart left stale; and the counters
equal the usage records, calls served while Redis was down included, without `rebuildcaps`.
"""

from __future__ import annotations

from decimal import Decimal

import anthropic
import httpx
import pytest

from accounts.services import api_key_create, user_get_or_create
from caps.services import cap_create
from costs.money import Usage
from tests.fixtures.gateways import gateway_idle
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "claude-haiku-4-5"


def user_with_key(email: str, **limits) -> tuple[int, str]:
    user = user_get_or_create(email=email)
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", **limits)
    return user.pk, api_key_create(user=user, name="faults").raw


def client(gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic", api_key=key, max_retries=0, timeout=15
    )


def call(gateway, key: str) -> None:
    reply = client(gateway, key).messages.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "still there?"}]
    )
    assert reply.usage.output_tokens > 0


def api_get(gateway, key: str, path: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}{path}", headers={"x-api-key": key}, timeout=15)


def own_daily(gateway, key: str) -> dict:
    response = api_get(gateway, key, "/api/usage/caps/status")
    assert response.status_code == 200, response.text
    caps = response.json()["caps"]
    return next(c for c in caps if c["set_by"] == "user" and c["cap_type"] == "daily")


def recorded(user_id: int, count: int) -> dict:
    """What the usage records say, once all `count` calls are recorded, in status units."""
    assert wait_for(lambda: UsageRecord.objects.filter(user_id=user_id).count() == count)
    records = list(UsageRecord.objects.filter(user_id=user_id))
    tokens = sum(
        Usage(
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cache_write_5m_tokens=r.cache_write_5m_tokens,
            cache_write_1h_tokens=r.cache_write_1h_tokens,
        ).cap_tokens
        for r in records
    )
    cost = sum(r.cost_micros for r in records)
    return {"requests": count, "tokens": tokens, "cost_cents": Decimal(cost) / 10_000}


def assert_counters_match_records(gateway, key: str, user_id: int, count: int) -> None:
    usage = own_daily(gateway, key)["current_usage"]
    expected = recorded(user_id, count)
    assert usage["requests"] == expected["requests"]
    assert usage["tokens"] == expected["tokens"]
    assert Decimal(str(usage["cost_cents"])) == expected["cost_cents"]


def test_open_mode_serves_while_redis_is_down_and_counts_it_after_an_empty_restart(
    open_gateway, fresh_redis, reference_data
):
    user_id, key = user_with_key("open@example.com", max_requests=100, max_cost_cents=1000)
    for _ in range(2):
        call(open_gateway, key)
    assert gateway_idle(open_gateway)
    assert_counters_match_records(open_gateway, key, user_id, 2)

    fresh_redis.stop()
    for _ in range(3):
        call(open_gateway, key)  # authenticated from the database, caps fail open
    keys = api_get(open_gateway, key, "/api/keys")
    assert keys.status_code == 200, keys.text
    status = api_get(open_gateway, key, "/api/usage/caps/status")
    assert status.status_code == 503  # counters cannot be read: said so, not a 500
    assert gateway_idle(open_gateway)
    assert UsageRecord.objects.filter(user_id=user_id).count() == 5  # nothing lost

    fresh_redis.start()  # empty: every counter, sentinel and cached credential is gone
    call(open_gateway, key)
    assert gateway_idle(open_gateway)
    # Rebuilt from the records by the first reservation: the 3 calls served while Redis was
    # down are counted, and no one ran rebuildcaps.
    assert_counters_match_records(open_gateway, key, user_id, 6)
    daily = fresh_redis.client().keys(f"usage_cap:{{user_{user_id}}}:daily:*")
    assert len(daily) == 1


def test_a_restart_between_calls_leaves_no_500_and_counters_rebuilt(
    open_gateway, fresh_redis, reference_data
):
    user_id, key = user_with_key("restart@example.com", max_requests=100)
    for _ in range(3):
        call(open_gateway, key)
    assert gateway_idle(open_gateway)
    # A restart with no call in between: every pooled connection of the gateway is stale.
    fresh_redis.stop()
    fresh_redis.start()
    call(open_gateway, key)
    assert api_get(open_gateway, key, "/api/keys").status_code == 200
    assert gateway_idle(open_gateway)
    usage = own_daily(open_gateway, key)
    assert usage["current_usage"]["requests"] == 4
    assert usage["in_flight"]["requests"] == 0
    assert_counters_match_records(open_gateway, key, user_id, 4)


def test_redis_back_with_its_data_counts_the_calls_served_while_it_was_down(
    open_gateway, fresh_redis, reference_data
):
    user_id, key = user_with_key("persisted@example.com", max_requests=100)
    call(open_gateway, key)
    assert gateway_idle(open_gateway)
    fresh_redis.stop(save=True)
    for _ in range(2):
        call(open_gateway, key)
    assert gateway_idle(open_gateway)
    fresh_redis.start(load=True)  # the counters (1 call) and the sentinel are back
    call(open_gateway, key)
    assert gateway_idle(open_gateway)
    assert_counters_match_records(open_gateway, key, user_id, 4)


def test_closed_mode_answers_503_in_anthropic_shape_while_redis_is_down(
    closed_gateway, fresh_redis, reference_data
):
    user_id, key = user_with_key("closed@example.com", max_cost_cents=500)
    call(closed_gateway, key)
    fresh_redis.stop()
    with pytest.raises(anthropic.APIStatusError) as refused:
        call(closed_gateway, key)
    assert refused.value.status_code == 503
    body = refused.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    assert "counter store" in body["error"]["message"]
    assert api_get(closed_gateway, key, "/api/keys").status_code == 200

    fresh_redis.start()
    call(closed_gateway, key)
    assert gateway_idle(closed_gateway)
    assert_counters_match_records(closed_gateway, key, user_id, 2)


def test_closed_mode_serves_the_first_call_after_a_restart_on_stale_connections(
    closed_gateway, fresh_redis, reference_data
):
    user_id, key = user_with_key("stale@example.com", max_cost_cents=500)
    for _ in range(2):
        call(closed_gateway, key)
    assert gateway_idle(closed_gateway)
    # No call in between: the gateway's pooled connections are left open on a dead server,
    # and a failed reservation would be a 503 in this mode. They reconnect on first use.
    fresh_redis.stop()
    fresh_redis.start()
    call(closed_gateway, key)
    assert gateway_idle(closed_gateway)
    assert_counters_match_records(closed_gateway, key, user_id, 3)
