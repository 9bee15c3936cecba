"""Only what can be metered is served, and what cannot be read is never counted as nothing:
other model families are refused on /bedrock, a 200 without usage counts at the call's
estimate, and a cut stream counts at least the size of the text it relayed."""

from __future__ import annotations

import anthropic
import httpx
import pytest
from django.conf import settings

from accounts.services import api_key_create, user_get_or_create
from tests.fixtures import servers
from tests.fixtures.gateways import GATEWAY_ENV, gateway_idle
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

NOVA = "amazon.nova-micro-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "Hello there, metering"}],
}


@pytest.fixture
def metered_coder(reference_data):
    """(user, raw API key) of metered@example.com."""
    user = user_get_or_create(email="metered@example.com")
    return user, api_key_create(user=user, name="tests").raw


def invoke(gateway, key, model, *, verb="invoke", **headers) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/bedrock/model/{model}/{verb}",
        headers={"Authorization": f"Bearer {key}", **headers},
        json=BODY,
        timeout=30,
    )


def only_record(user) -> UsageRecord:
    assert wait_for(lambda: UsageRecord.objects.filter(user=user).exists())
    (record,) = UsageRecord.objects.filter(user=user)
    return record


def test_a_model_family_the_gateway_cannot_meter_is_refused(stack, metered_coder):
    user, key = metered_coder
    response = invoke(stack.gateway, key, NOVA)
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "amazon.nova-micro-v1:0" in response.json()["message"]
    assert "anthropic" in response.json()["message"]
    assert gateway_idle(stack.gateway)
    assert not UsageRecord.objects.filter(user=user).exists()


@pytest.fixture
def gateway_serving_amazon(emulator, django_db_setup):
    env = {**GATEWAY_ENV, "GATEWAY_AWS__SERVED_MODEL_FAMILIES": "anthropic,amazon"}
    with servers.start_gateway(upstream_url=emulator.url, env=env) as server:
        yield server


def test_an_allowed_family_whose_usage_cannot_be_read_counts_at_its_estimate(
    gateway_serving_amazon, metered_coder
):
    user, key = metered_coder
    response = invoke(gateway_serving_amazon, key, NOVA)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["outputTokens"] > 0  # Nova's shape, not Anthropic's
    record = only_record(user)
    assert record.output_tokens == BODY["max_tokens"]  # the estimate's output, not 0
    assert record.input_tokens > 0
    assert record.error_type == "usage_unreadable"


@pytest.mark.parametrize("verb", ["invoke", "invoke-with-response-stream"])
def test_a_200_without_usage_counts_at_the_estimate_never_zero(stack, metered_coder, verb):
    user, key = metered_coder
    response = invoke(stack.gateway, key, HAIKU, verb=verb, **{"x-emulator-omit-usage": "true"})
    assert response.status_code == 200
    record = only_record(user)
    assert record.output_tokens == BODY["max_tokens"]
    assert record.input_tokens > 0
    assert record.error_type == "usage_unreadable"
    assert record.cost_micros > 0


def test_a_cut_stream_counts_at_least_the_text_it_relayed(stack, metered_coder):
    user, key = metered_coder
    client = anthropic.Anthropic(
        base_url=f"{stack.gateway.url}/anthropic", api_key=key, max_retries=0
    )
    received: list[str] = []

    def read_until_cut() -> None:
        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=200,
            messages=[{"role": "user", "content": "Tell me a long story"}],
            extra_headers={
                "x-emulator-reply-tokens": "200",
                "x-emulator-tokens-per-delta": "5",
                "x-emulator-cut-after": "12",  # events: start, block start, then 10 deltas
            },
        ) as stream:
            received.extend(stream.text_stream)

    with pytest.raises(anthropic.APIError):
        read_until_cut()
    words = "".join(received).split()
    assert len(received) >= 5
    assert len(words) >= 5 * (len(received) - 1)  # several tokens a delta, as on Bedrock
    record = only_record(user)
    assert record.error_type == "upstream_cut"
    # The emulator's words are one token each; characters / 4 never counts fewer of them.
    assert record.output_tokens >= len(words)
    assert record.output_tokens > len(received)


def test_the_emulator_groups_tokens_per_delta_and_can_omit_usage(emulator):
    secret = settings.GATEWAY.aws  # the gateway's own emulator credentials are the defaults
    assert secret.upstream == "emulator"
    response = httpx.post(
        f"{emulator.url}/model/{HAIKU}/invoke",
        headers={"Authorization": "Bearer any", "x-emulator-omit-usage": "true"},
        json=BODY,
    )
    assert response.status_code == 200
    assert "usage" not in response.json()
    assert "x-amzn-bedrock-output-token-count" not in response.headers
