"""Upstream faults and client disconnects: mapped to each protocol, and recorded exactly once."""

import json

import httpx
import pytest

from tests.fixtures.servers import start_gateway
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 400,
    "messages": [{"role": "user", "content": "a long answer please"}],
}
STREAM = "/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream"
INVOKE = "/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"


def test_client_disconnect_mid_stream_still_records_what_was_generated(stack, alice_key):
    headers = {
        "x-api-key": alice_key,
        "x-emulator-tokens-per-second": "40",
        "x-emulator-reply-tokens": "400",
    }
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "POST",
            f"{stack.gateway.url}/anthropic/v1/messages",
            headers=headers,
            json={**MESSAGE, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        received = 0
        for line in response.iter_lines():
            received += line.startswith("event: content_block_delta")
            if received >= 5:
                break
    record = wait_for(lambda: UsageRecord.objects.first(), timeout=10)
    assert record is not None
    assert record.error_type == "client_disconnected"
    assert record.input_tokens > 0
    assert 5 <= record.output_tokens < 400
    assert UsageRecord.objects.count() == 1


def test_upstream_timeout_is_a_504_in_both_shapes(stack, alice_key):
    headers = {"x-api-key": alice_key, "x-emulator-ttfb-ms": "5000"}
    reply = httpx.post(
        f"{stack.gateway.url}/anthropic/v1/messages", headers=headers, json=MESSAGE, timeout=15
    )
    assert reply.status_code == 504
    assert reply.json()["error"]["type"] == "api_error"
    reply = httpx.post(
        f"{stack.gateway.url}{INVOKE}",
        headers=headers,
        json={**MESSAGE, "anthropic_version": "bedrock-2023-05-31"},
        timeout=15,
    )
    assert reply.status_code == 504
    assert reply.headers["x-amzn-ErrorType"] == "ModelTimeoutException"


def test_upstream_5xx_is_relayed_on_bedrock_and_mapped_on_anthropic(stack, alice_key):
    headers = {"x-api-key": alice_key, "x-emulator-error": "InternalServerException"}
    body = {**MESSAGE, "anthropic_version": "bedrock-2023-05-31"}
    reply = httpx.post(f"{stack.gateway.url}{INVOKE}", headers=headers, json=body, timeout=10)
    assert reply.status_code == 500
    assert reply.headers["x-amzn-ErrorType"].startswith("InternalServerException")
    reply = httpx.post(
        f"{stack.gateway.url}/anthropic/v1/messages", headers=headers, json=MESSAGE, timeout=10
    )
    assert reply.status_code == 502
    assert reply.json()["error"]["type"] == "api_error"
    records = wait_for(lambda: UsageRecord.objects.count() == 2 and UsageRecord.objects.all())
    assert {r.upstream_status for r in records} == {500}


def test_a_connection_cut_mid_stream_is_recorded_with_its_tokens(stack, alice_key):
    headers = {"x-api-key": alice_key, "x-emulator-cut-after": "6"}
    body = {**MESSAGE, "anthropic_version": "bedrock-2023-05-31"}
    with httpx.stream(
        "POST", f"{stack.gateway.url}{STREAM}", headers=headers, json=body, timeout=10
    ) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(response.iter_raw())
    record = wait_for(lambda: UsageRecord.objects.first())
    assert record.error_type == "upstream_cut"
    assert record.input_tokens > 0
    assert record.output_tokens >= 1


def _message(gateway, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/anthropic/v1/messages", headers={"x-api-key": key}, json=MESSAGE, timeout=10
    )


def test_an_unreachable_upstream_is_a_502_and_nothing_is_recorded(alice_key):
    with start_gateway(upstream_url="http://127.0.0.1:9") as gateway:
        reply = _message(gateway, alice_key)
        assert reply.status_code == 502
        assert reply.json()["error"]["type"] == "api_error"
        reply = httpx.post(
            f"{gateway.url}{INVOKE}",
            headers={"x-api-key": alice_key},
            content=json.dumps(MESSAGE),
            timeout=10,
        )
        assert reply.status_code == 502
    assert UsageRecord.objects.count() == 0


def test_an_https_upstream_is_trusted_only_through_the_trust_store(emulator_tls, alice_key):
    # The upstream client verifies Bedrock's certificate against the system's trust store
    # (SSL_CERT_FILE names another, as for OpenSSL): a certificate it does not trust is an
    # unreachable upstream, never an unverified call.
    trusted = {"SSL_CERT_FILE": str(emulator_tls.ca_path)}
    with start_gateway(upstream_url=emulator_tls.url, env=trusted) as gateway:
        reply = _message(gateway, alice_key)
        assert reply.status_code == 200, reply.text
        assert wait_for(lambda: UsageRecord.objects.count() == 1)
    with start_gateway(upstream_url=emulator_tls.url) as gateway:
        assert _message(gateway, alice_key).status_code == 502
    assert UsageRecord.objects.count() == 1
