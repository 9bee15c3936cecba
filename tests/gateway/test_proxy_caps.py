"""Caps through the real gateway: exact under concurrency (one and two gateway processes), the
429 each client sees, and no reservation left behind on any terminal path."""

import json
from concurrent.futures import ThreadPoolExecutor

import anthropic
import boto3
import httpx
import pytest
from botocore.config import Config

from accounts.services import api_key_create, user_get_or_create
from caps.services import cap_create
from caps.status import cap_status
from tests.fixtures.gateways import GATEWAY_ENV
from tests.fixtures.servers import start_gateway
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "count me"}],
}


def capped_user(reference_data, email="capped@example.com", **limits):
    user = user_get_or_create(email=email)
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", **limits)
    return user, api_key_create(user=user, name="caps").raw


def post_messages(url: str, key: str, body=MESSAGE, headers=None) -> httpx.Response:
    return httpx.post(
        f"{url}/anthropic/v1/messages",
        json=body,
        timeout=30,
        headers={"x-api-key": key, **(headers or {})},
    )


def test_n_request_cap_lets_exactly_n_of_5n_concurrent_calls_through(stack, reference_data):
    n = 5
    _, key = capped_user(reference_data, max_requests=n)
    with ThreadPoolExecutor(max_workers=5 * n) as pool:
        replies = list(pool.map(lambda _: post_messages(stack.gateway.url, key), range(5 * n)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] * n + [429] * (4 * n)
    refused = next(r for r in replies if r.status_code == 429)
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["cap_type"] == "daily"
    assert refused.json()["error"]["limit_type"] == "requests"
    assert wait_for(lambda: UsageRecord.objects.count() == n)
    assert UsageRecord.objects.count() == n


def test_two_gateway_processes_sharing_one_store_stay_exact(stack, reference_data):
    n = 6
    _, key = capped_user(reference_data, max_requests=n)
    with start_gateway(upstream_url=stack.emulator_url, env=GATEWAY_ENV) as second:
        urls = [stack.gateway.url, second.url] * (5 * n // 2)
        with ThreadPoolExecutor(max_workers=5 * n) as pool:
            replies = list(pool.map(lambda url: post_messages(url, key), urls))
    assert sorted(r.status_code for r in replies) == [200] * n + [429] * (4 * n)
    assert wait_for(lambda: UsageRecord.objects.count() == n)


def test_a_token_cap_is_never_exceeded_under_concurrent_load(stack, reference_data):
    limit = 3000
    _user, key = capped_user(reference_data, max_tokens=limit)
    body = {**MESSAGE, "max_tokens": 200}
    # Each call really uses ~210 tokens, so about 14 of the 40 fit.
    full = {"x-emulator-reply-tokens": "200"}
    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(
            pool.map(lambda _: post_messages(stack.gateway.url, key, body, full), range(40))
        )
    assert {r.status_code for r in replies} == {200, 429}
    ok = sum(r.status_code == 200 for r in replies)
    assert wait_for(lambda: UsageRecord.objects.count() == ok), (UsageRecord.objects.count(), ok)
    used = sum(
        r.input_tokens + r.output_tokens + r.cache_write_5m_tokens + r.cache_write_1h_tokens
        for r in UsageRecord.objects.all()
    )
    # The estimate is an upper bound here (fresh prefix, max_tokens under the ceiling): exact.
    assert used <= limit
    assert ok >= 10  # and not so pessimistic that it refuses calls that would have fitted


def test_the_sdk_raises_rate_limit_error_with_the_caps_message(stack, reference_data):
    _, key = capped_user(reference_data, max_requests=1)
    client = anthropic.Anthropic(
        base_url=f"{stack.gateway.url}/anthropic", api_key=key, max_retries=0
    )
    client.messages.create(**MESSAGE)
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        client.messages.create(**MESSAGE)
    message = excinfo.value.body["error"]["message"]
    assert message.startswith("Daily usage cap exceeded: 1/1 requests. Resets at ")
    assert message.endswith("T00:00:00Z")
    assert excinfo.value.response.headers["retry-after"].isdigit()
    error = excinfo.value.body["error"]
    assert error["current_usage"] == 1
    assert error["limit"] == 1
    assert 0 < error["retry_after_seconds"] <= 86400


def test_boto3_raises_throttling_exception_with_the_caps_fields(
    stack_tls, reference_data, monkeypatch
):
    _, key = capped_user(reference_data, max_requests=1)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", key)
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"{stack_tls.gateway.url}/bedrock",
        verify=stack_tls.gateway.ca_path,
        config=Config(retries={"total_max_attempts": 1}),
    )
    body = json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    model = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    client.invoke_model(modelId=model, body=body)
    with pytest.raises(client.exceptions.ThrottlingException) as excinfo:
        client.invoke_model(modelId=model, body=body)
    error = excinfo.value.response
    assert error["Error"]["Message"].startswith("Daily usage cap exceeded: 1/1 requests.")
    assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"].isdigit()


def test_every_terminal_path_settles_its_reservation(stack, reference_data):
    user, key = capped_user(reference_data, max_tokens=50_000)
    url = stack.gateway.url
    body = {**MESSAGE, "max_tokens": 300}
    assert (
        post_messages(url, key, body, {"x-emulator-error": "InternalServerException"}).status_code
        == 502
    )
    assert post_messages(url, key, body, {"x-emulator-ttfb-ms": "5000"}).status_code == 504
    with httpx.stream(
        "POST",
        f"{url}/anthropic/v1/messages",
        timeout=10,
        json={**body, "stream": True},
        headers={"x-api-key": key, "x-emulator-tokens-per-second": "30"},
    ) as reply:
        next(reply.iter_lines())
    with httpx.stream(
        "POST",
        f"{url}/anthropic/v1/messages",
        timeout=10,
        json={**body, "stream": True},
        headers={"x-api-key": key, "x-emulator-cut-after": "4"},
    ) as reply:
        b"".join(reply.iter_raw())
    assert post_messages(url, key, body).status_code == 200

    def settled():
        # Settling and recording are separate steps of the call's finish: wait for both.
        daily = next(s for s in cap_status(user_id=user.pk) if s["set_by"] == "user")
        recorded = UsageRecord.objects.filter(user=user).count() == 5
        return recorded and daily["in_flight"]["requests"] == 0 and daily

    daily = wait_for(settled, timeout=10)
    assert daily, "a reservation was left in flight, or a call was not recorded"
    assert daily["in_flight"] == {"requests": 0, "tokens": 0, "cost_cents": 0}
    records = list(UsageRecord.objects.filter(user=user))
    assert daily["current_usage"]["requests"] == 5
    assert daily["current_usage"]["tokens"] == sum(
        r.input_tokens + r.output_tokens + r.cache_write_5m_tokens + r.cache_write_1h_tokens
        for r in records
    )
    assert daily["current_usage"]["cost_cents"] * 10_000 == sum(r.cost_micros or 0 for r in records)


def test_a_session_cost_cap_stops_that_session_only(stack, reference_data):
    user = user_get_or_create(email="session-capped@example.com")
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=1)
    key = api_key_create(user=user, name="caps").raw
    body = {**MESSAGE, "max_tokens": 500}
    reply = {"x-emulator-reply-tokens": "500"}  # ~0.25 cents a call on Haiku 4.5

    def call(session: str | None) -> httpx.Response:
        headers = dict(reply)
        if session:
            headers["x-claude-code-session-id"] = session
        return post_messages(stack.gateway.url, key, body, headers)

    replies = []
    for _ in range(8):
        replies.append(call("session-one"))
        if replies[-1].status_code != 200:
            break
    assert [r.status_code for r in replies[:-1]] == [200] * (len(replies) - 1)
    assert len(replies) > 2
    refused = replies[-1]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "86400"
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["cap_type"] == "session"
    assert error["limit_type"] == "cost"
    assert error["limit"] == 1
    assert error["reset_time"] is None
    assert error["retry_after_seconds"] == 86400
    assert error["message"].startswith("Session cost cap exceeded: $0.")
    assert error["message"].endswith(
        "/$0.01 (this request needs about $0.0025). Start a new session."
    )
    assert "x-gateway-cap-session-cost-cents-remaining" in replies[0].headers
    # The same session stays refused; a new one, and a call without a session, are served.
    assert call("session-one").status_code == 429
    assert call("session-two").status_code == 200
    assert call(None).status_code == 200
    calls = len(replies) - 1 + 2
    assert wait_for(lambda: UsageRecord.objects.filter(user=user).count() == calls)
    assert UsageRecord.objects.filter(user=user, session_id="session-one").count() == calls - 2


def test_a_team_cap_is_shared_across_members_and_two_gateways(stack, reference_data):
    """Three members of one team, two gateway processes, 5N calls: exactly N pass; each
    record carries the team; the refusal names the team's cap."""
    from datetime import timedelta

    from accounts.models import Team
    from caps.services import team_cap_set
    from config import clock

    n = 6
    team = Team.objects.create(name="Mobile")
    keys = []
    for i in range(3):
        user = user_get_or_create(email=f"mobile{i}@example.com")
        user.team = team
        user.save(update_fields=["team"])
        keys.append(api_key_create(user=user, name="team").raw)
    # Set an hour ago: a new cap waits for the grace period.
    team_cap_set(
        team_id=team.pk, cap_type="daily", max_requests=n, now=clock.now() - timedelta(hours=1)
    )
    with start_gateway(upstream_url=stack.emulator_url, env=GATEWAY_ENV) as second:
        calls = [(url, keys[i % 3]) for i, url in enumerate([stack.gateway.url, second.url] * 15)]
        with ThreadPoolExecutor(max_workers=15) as pool:
            replies = list(pool.map(lambda c: post_messages(*c), calls))
    assert sorted(r.status_code for r in replies) == [200] * n + [429] * (30 - n)
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json()["error"]["message"].startswith("Your team's daily usage cap exceeded")
    assert wait_for(lambda: UsageRecord.objects.count() == n)
    assert set(UsageRecord.objects.values_list("team_id", flat=True)) == {team.pk}
