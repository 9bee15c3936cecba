"""Issue #14, gateway side: bounded betas, metric labels, 502 bodies, count_tokens limits.

Real gateway processes over HTTP in front of the real emulator."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest

from accounts.services import api_key_create, user_get_or_create
from caps.services import cap_create
from tests.fixtures.gateways import GATEWAY_ENV, gateway_idle
from tests.fixtures.servers import start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-6"
INVOKE = "/bedrock/model/{model}/invoke"
# What Claude Code sends (CLIENTS.md): a handful of well-formed betas.
CLAUDE_CODE_BETAS = [
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
    "context-1m-2025-08-07",
    "token-efficient-tools-2025-02-19",
]


def invoke_body(betas=None, text="hi") -> dict:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": text}],
    }
    if betas is not None:
        body["anthropic_beta"] = betas
    return body


def invoke(url: str, key: str, model: str, body: dict, headers=None) -> httpx.Response:
    return httpx.post(
        url + INVOKE.format(model=model.replace(":", "%3A")),
        json=body,
        timeout=15,
        headers={"authorization": f"Bearer {key}", **(headers or {})},
    )


def metric(url: str, prefix: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    lines = [row for row in text.splitlines() if row.startswith(prefix)]
    return sum(float(line.split()[-1]) for line in lines)


# --- 1. betas ----------------------------------------------------------------------------------


def test_too_many_betas_are_a_400_in_each_family_shape_and_never_probed(stack, alice_key):
    url = stack.gateway.url
    junk = [f"fake-beta-{n}" for n in range(25)]
    retries = metric(url, "gateway_beta_retries_total")
    reply = invoke(url, alice_key, HAIKU, invoke_body(junk))
    assert reply.status_code == 400
    assert reply.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "16" in reply.json()["message"]
    reply = httpx.post(
        f"{url}/anthropic/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": invoke_body()["messages"]},
        headers={"x-api-key": alice_key, "anthropic-beta": ",".join(junk)},
        timeout=15,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert metric(url, "gateway_beta_retries_total") == retries  # nothing sent upstream


@pytest.mark.parametrize(
    "beta", ["UPPER-case-beta", "x" * 65, "nul\x00beta", "semi;colon", "-leading-dash"]
)
def test_a_beta_not_shaped_like_one_is_a_400(stack, alice_key, beta):
    reply = invoke(stack.gateway.url, alice_key, HAIKU, invoke_body(["claude-code-20250219", beta]))
    assert reply.status_code == 400
    assert reply.headers["x-amzn-ErrorType"] == "ValidationException"


def test_claude_codes_betas_pass(stack, alice_key):
    headers = {"anthropic-beta": ",".join(CLAUDE_CODE_BETAS)}
    reply = invoke(stack.gateway.url, alice_key, HAIKU, invoke_body(CLAUDE_CODE_BETAS), headers)
    assert reply.status_code == 200, reply.text


def test_a_rejection_is_remembered_per_base_model(stack, alice_key):
    url = stack.gateway.url
    beta = f"per-model-beta-{time.time_ns()}"
    before = metric(url, "gateway_beta_retries_total")
    assert invoke(url, alice_key, HAIKU, invoke_body([beta])).status_code == 200
    assert metric(url, "gateway_beta_retries_total") == before + 1
    # The same base model through another profile: already known, one attempt.
    assert invoke(url, alice_key, "global." + HAIKU[3:], invoke_body([beta])).status_code == 200
    assert metric(url, "gateway_beta_retries_total") == before + 1
    # Another model is asked about it (Bedrock serves betas per model).
    assert invoke(url, alice_key, SONNET, invoke_body([beta])).status_code == 200
    assert metric(url, "gateway_beta_retries_total") == before + 2


def test_remembered_rejections_are_bounded_oldest_evicted(
    emulator, settings, db, forget_learned_betas
):
    from gateway import betas, upstream

    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={
            "aws": settings.GATEWAY.aws.model_copy(
                update={"endpoint_url": emulator.url, "upstream": "emulator"}
            )
        }
    )
    names = [f"bounded-beta-{n:03d}" for n in range(betas.MAX_REMEMBERED + 20)]

    async def learn_all() -> None:
        for start in range(0, len(names), betas.MAX_BETAS):
            chunk = names[start : start + betas.MAX_BETAS]
            found = await betas.learn(HAIKU, invoke_body(chunk))
            assert found == set(chunk)  # each probed once and rejected by the emulator
        await upstream.close_pool()

    asyncio.run(learn_all())
    assert betas.remembered() == betas.MAX_REMEMBERED
    known = betas.rejected(HAIKU)
    assert names[0] not in known  # the oldest went first
    assert names[-1] in known
    assert betas.rejected(SONNET) == set()  # per base model


# --- 3. metric labels --------------------------------------------------------------------------


def test_metric_labels_carry_priced_base_ids_or_other(stack, alice_key):
    url = stack.gateway.url
    assert invoke(url, alice_key, HAIKU, invoke_body()).status_code == 200
    made_up = f"us.anthropic.claude-madeup-{time.time_ns()}"
    assert invoke(url, alice_key, made_up, invoke_body()).status_code == 400  # reached upstream
    assert gateway_idle(stack.gateway)
    text = httpx.get(f"{url}/metrics").text
    requests = [r for r in text.splitlines() if r.startswith("gateway_requests_total{")]
    assert any('model="anthropic.claude-haiku-4-5-20251001-v1:0"' in r for r in requests), requests
    assert any('model="other"' in r and 'status="400"' in r for r in requests)
    assert "claude-madeup" not in text
    assert 'model="us.' not in text  # never the client's raw id


# --- 4. 502 bodies -----------------------------------------------------------------------------


def test_a_502_never_names_the_upstream_host_and_the_log_does(alice_key):
    with start_gateway(upstream_url="http://127.0.0.1:9") as gateway:
        replies = [
            httpx.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": alice_key},
                json={
                    "model": "claude-haiku-4-5",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                timeout=10,
            ),
            invoke(gateway.url, alice_key, HAIKU, invoke_body()),
            httpx.post(
                f"{gateway.url}/anthropic/v1/messages/count_tokens",
                headers={"x-api-key": alice_key},
                json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
                timeout=10,
            ),
        ]
        for reply in replies:
            assert reply.status_code == 502
            assert "127.0.0.1" not in reply.text
            assert ":9" not in reply.text
            assert "unreachable" in reply.text
        log = gateway.process.log_path.read_text(errors="replace")
        assert "127.0.0.1:9" in log  # the detail stays server-side


# --- 6. count_tokens ---------------------------------------------------------------------------


def count_tokens(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/anthropic/v1/messages/count_tokens",
        headers={"x-api-key": key},
        json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "count"}]},
        timeout=10,
    )


def bedrock_count_tokens(url: str, key: str) -> httpx.Response:
    body = {k: v for k, v in invoke_body().items() if k != "max_tokens"}
    return httpx.post(
        url + f"/bedrock/model/{HAIKU.replace(':', '%3A')}/count-tokens",
        headers={"authorization": f"Bearer {key}"},
        json={
            "input": {"invokeModel": {"body": base64.b64encode(json.dumps(body).encode()).decode()}}
        },
        timeout=10,
    )


def test_count_tokens_is_limited_per_user_per_minute(alice_key, emulator, reference_data):
    env = {**GATEWAY_ENV, "GATEWAY_USAGE_CAPS__COUNT_TOKENS_PER_MINUTE": "3"}
    with start_gateway(upstream_url=emulator.url, env=env) as gateway:
        if time.time() % 60 > 55:  # keep the calls inside one minute: wait for the next one
            time.sleep(60 - time.time() % 60 + 0.2)
        assert [count_tokens(gateway.url, alice_key).status_code for _ in range(2)] == [200] * 2
        assert bedrock_count_tokens(gateway.url, alice_key).status_code == 200
        refused = count_tokens(gateway.url, alice_key)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        refused = bedrock_count_tokens(gateway.url, alice_key)
        assert refused.status_code == 429
        assert refused.headers["x-amzn-ErrorType"] == "ThrottlingException"
        # Another user has their own budget.
        bob = user_get_or_create(email="bob-counts@example.com")
        bob_key = api_key_create(user=bob, name="t").raw
        assert count_tokens(gateway.url, bob_key).status_code == 200


def test_count_tokens_is_refused_while_over_a_request_cap(stack, reference_data):
    user = user_get_or_create(email="one-request@example.com")
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    key = api_key_create(user=user, name="t").raw
    url = stack.gateway.url
    assert count_tokens(url, key).status_code == 200
    assert invoke(url, key, HAIKU, invoke_body()).status_code == 200
    assert gateway_idle(stack.gateway)
    refused = count_tokens(url, key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert (error["cap_type"], error["limit_type"], error["limit"]) == ("daily", "requests", 1)
    assert "Daily usage cap exceeded: 1/1 requests" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    refused = bedrock_count_tokens(url, key)
    assert refused.status_code == 429
    assert refused.headers["x-amzn-ErrorType"] == "ThrottlingException"
