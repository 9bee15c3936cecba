"""Betas the upstream rejects are learned once and dropped: later calls take one attempt."""

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

INVOKE = "/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"


def beta_retries(stack) -> float:
    text = httpx.get(f"{stack.gateway.url}/metrics").text
    line = next(row for row in text.splitlines() if row.startswith("gateway_beta_retries_total"))
    return float(line.split()[-1])


def test_a_rejected_beta_is_dropped_after_one_retry_and_never_sent_again(stack, alice_key):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "anthropic_beta": ["claude-code-20250219", "brand-new-beta-2099-01-01"],
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"authorization": f"Bearer {alice_key}"}
    before = beta_retries(stack)
    first = httpx.post(f"{stack.gateway.url}{INVOKE}", json=body, headers=headers, timeout=10)
    assert first.status_code == 200
    assert beta_retries(stack) == before + 1
    second = httpx.post(f"{stack.gateway.url}{INVOKE}", json=body, headers=headers, timeout=10)
    assert second.status_code == 200
    assert beta_retries(stack) == before + 1  # dropped before sending: one attempt


def test_a_request_with_only_accepted_betas_is_not_retried(stack, alice_key):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "anthropic_beta": ["claude-code-20250219"],
        "messages": [{"role": "user", "content": "hi"}],
    }
    before = beta_retries(stack)
    reply = httpx.post(
        f"{stack.gateway.url}{INVOKE}",
        json=body,
        timeout=10,
        headers={"authorization": f"Bearer {alice_key}"},
    )
    assert reply.status_code == 200
    assert beta_retries(stack) == before


def test_metrics_are_refused_off_loopback_without_the_token(client):
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
