"""Failed credentials on /api and the proxy: over `auth.failed_auth_limit` from one address
within the window -> 429 in the family's shape, with Retry-After, counted in /metrics.

Through Django's test client (the proxy's async views too); the counter is the Django cache.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client

from accounts.services import api_key_create, token_pair_create

pytestmark = pytest.mark.django_db

LIMIT = 3
WINDOW = 60
# The start of a window (a multiple of WINDOW seconds): every test runs inside one window.
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
BAD_KEY = "SSOK_" + "x" * 32
MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture(autouse=True)
def throttle_config(settings, forget_throttle_blocks):
    auth = settings.GATEWAY.auth.model_copy(
        update={"failed_auth_limit": LIMIT, "failed_auth_window_seconds": WINDOW}
    )
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"auth": auth})
    cache.clear()
    with time_machine.travel(T0 + timedelta(seconds=10), tick=False) as traveller:
        yield traveller
    cache.clear()


def server_config(settings, **values):
    server = settings.GATEWAY.server.model_copy(update=values)
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"server": server})


def api_get(client, credential: str, **extra):
    return client.get("/api/keys", HTTP_AUTHORIZATION=f"Bearer {credential}", **extra)


def anthropic_post(client, credential: str, **extra):
    return client.post(
        "/anthropic/v1/messages",
        json.dumps(MESSAGE),
        content_type="application/json",
        HTTP_X_API_KEY=credential,
        HTTP_ANTHROPIC_VERSION="2023-06-01",
        **extra,
    )


def bedrock_post(client, credential: str, **extra):
    return client.post(
        "/bedrock/model/anthropic.claude-haiku-4-5-20251001-v1:0/invoke",
        json.dumps({"anthropic_version": "bedrock-2023-05-31", **MESSAGE}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {credential}",
        **extra,
    )


def metric_value(family: str) -> float:
    from gateway.metrics import AUTH_THROTTLED

    return AUTH_THROTTLED.labels(family=family)._value.get()


def test_api_answers_429_with_retry_after_after_the_limit(client, owner):
    for _ in range(LIMIT):
        assert api_get(client, BAD_KEY).status_code == 401
    before = metric_value("api")
    refused = api_get(client, BAD_KEY)
    assert refused.status_code == 429
    assert set(refused.json()) == {"detail"}
    assert refused["Retry-After"] == "50"  # the rest of the window (10 s in)
    assert metric_value("api") == before + 1
    # For the rest of the window even a good credential from this address is refused...
    good = api_key_create(user=owner, name="k").raw
    assert api_get(client, good).status_code == 429
    # ... and the next window starts afresh.
    with time_machine.travel(T0 + timedelta(seconds=WINDOW + 1), tick=False):
        assert api_get(client, good).status_code == 200


def test_anthropic_route_answers_its_rate_limit_error(client):
    for _ in range(LIMIT):
        response = anthropic_post(client, BAD_KEY)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    before = metric_value("anthropic")
    refused = anthropic_post(client, BAD_KEY)
    assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert refused["Retry-After"] == "50"
    assert metric_value("anthropic") == before + 1


def test_bedrock_route_answers_throttling_exception(client):
    for _ in range(LIMIT):
        assert bedrock_post(client, BAD_KEY).status_code == 401
    refused = bedrock_post(client, BAD_KEY)
    assert refused.status_code == 429
    assert refused["x-amzn-ErrorType"] == "ThrottlingException"
    assert set(refused.json()) == {"message"}
    assert refused["Retry-After"] == "50"


def test_failures_on_api_and_proxy_share_one_count_per_address(client):
    api_get(client, BAD_KEY)
    anthropic_post(client, BAD_KEY)
    bedrock_post(client, BAD_KEY)
    assert api_get(client, BAD_KEY).status_code == 429


def test_loopback_is_not_exempt_and_other_addresses_are_unaffected(client):
    for _ in range(LIMIT + 1):
        api_get(client, BAD_KEY, REMOTE_ADDR="127.0.0.1")
    assert api_get(client, BAD_KEY, REMOTE_ADDR="127.0.0.1").status_code == 429
    assert api_get(client, BAD_KEY, REMOTE_ADDR="10.0.0.7").status_code == 401


def test_expired_genuine_credentials_do_not_count(client, owner, throttle_config):
    """Developers behind one NAT whose tokens expire together do not lock each other out."""
    access = token_pair_create(user=owner)["access"]
    expired_key = api_key_create(user=owner, name="old", expires_at=T0 + timedelta(seconds=20)).raw
    throttle_config.move_to(T0 + timedelta(hours=1, seconds=30))  # both expired now
    for _ in range(LIMIT * 5):
        assert api_get(client, access).status_code == 401
        assert anthropic_post(client, expired_key).status_code == 401
    fresh = token_pair_create(user=owner)["access"]
    assert api_get(client, fresh).status_code == 200


def test_forwarded_for_counts_only_behind_a_configured_public_url(
    client, settings, forget_throttle_blocks
):
    # Without server.public_url X-Forwarded-For is the client's to forge: REMOTE_ADDR counts.
    for n in range(LIMIT + 1):
        api_get(client, BAD_KEY, HTTP_X_FORWARDED_FOR=f"10.9.9.{n}")
    assert api_get(client, BAD_KEY, HTTP_X_FORWARDED_FOR="10.9.9.99").status_code == 429

    cache.clear()
    forget_throttle_blocks()
    server_config(settings, public_url="https://gateway.example.com")
    # Behind our proxy: the entry it appended (the last) is the client; earlier ones are forged.
    for _ in range(LIMIT + 1):
        api_get(client, BAD_KEY, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.5")
    assert api_get(client, BAD_KEY, HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
    assert api_get(client, BAD_KEY, HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 401


def test_successes_do_not_count(client, owner):
    good = api_key_create(user=owner, name="k").raw
    for _ in range(LIMIT * 3):
        assert api_get(client, good).status_code == 200
    assert api_get(client, BAD_KEY).status_code == 401


def test_a_second_process_learns_the_block_from_the_shared_count(client, forget_throttle_blocks):
    """Another process (modelled by forgetting this one's memory) refuses at its first failure:
    the count lives in the cache, not in the process."""
    for _ in range(LIMIT + 1):
        api_get(client, BAD_KEY)
    forget_throttle_blocks()
    assert api_get(Client(), BAD_KEY).status_code == 429
