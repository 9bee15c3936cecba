"""Bad input on the proxy's routes, over raw HTTP: clear errors in each family's shape."""

import httpx
import pytest

from tests.fixtures.gateways import MAX_BODY_BYTES
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}
INVOKE = "/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"


def post(stack, path, key=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if key:
        headers.setdefault("authorization", f"Bearer {key}")
    return httpx.post(f"{stack.gateway.url}{path}", headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer SSOK_doesnotexist00000000000000000000"},
        {"x-api-key": "not-a-key"},
        {"authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.bad-signature"},
    ],
)
def test_bad_credentials_get_the_same_401_on_both_families(stack, reference_data, headers):
    anthropic_reply = post(stack, "/anthropic/v1/messages", json=MESSAGE, headers=dict(headers))
    bedrock_reply = post(stack, INVOKE, json=MESSAGE, headers=dict(headers))
    assert anthropic_reply.status_code == 401
    assert anthropic_reply.json()["error"]["type"] == "authentication_error"
    assert bedrock_reply.status_code == 401
    assert bedrock_reply.headers["x-amzn-ErrorType"] == "UnrecognizedClientException"
    assert set(bedrock_reply.json()) == {"message"}
    assert anthropic_reply.json()["error"]["message"] == bedrock_reply.json()["message"]


def test_malformed_json_is_a_400_in_each_shape(stack, alice_key):
    for path in ("/anthropic/v1/messages", INVOKE):
        reply = post(
            stack,
            path,
            alice_key,
            content="{not json",
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 400
    assert reply.headers["x-amzn-ErrorType"] == "ValidationException"


def test_wrong_content_type_is_a_415(stack, alice_key):
    reply = post(
        stack,
        "/anthropic/v1/messages",
        alice_key,
        content="hello",
        headers={"content-type": "text/plain"},
    )
    assert reply.status_code == 415
    assert reply.json()["type"] == "error"


def test_oversize_body_is_a_413_and_never_reaches_bedrock(stack, alice_key):
    big = {**MESSAGE, "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]}
    reply = post(stack, "/anthropic/v1/messages", alice_key, json=big)
    assert reply.status_code == 413
    assert reply.json()["error"]["type"] == "request_too_large"
    reply = post(stack, INVOKE, alice_key, json=big)
    assert reply.status_code == 413
    assert UsageRecord.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]},
        {"model": "claude-haiku-4-5", "max_tokens": -1, "messages": []},
        {"model": 42, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    ],
)
def test_invalid_messages_requests_are_invalid_request_errors(stack, alice_key, body):
    reply = post(stack, "/anthropic/v1/messages", alice_key, json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "hostile",
    ["claude'; DROP TABLE accounts_user; --", "<script>alert(1)</script>", "../../etc/passwd"],
)
def test_hostile_model_names_are_refused_without_echoing_markup(stack, alice_key, hostile):
    reply = post(stack, "/anthropic/v1/messages", alice_key, json={**MESSAGE, "model": hostile})
    assert reply.status_code in (400, 404)
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.json()["type"] == "error"


def test_get_on_a_post_route_is_refused_as_json(stack, alice_key):
    reply = httpx.get(
        f"{stack.gateway.url}/anthropic/v1/messages", headers={"x-api-key": alice_key}
    )
    assert reply.status_code == 405
    assert reply.json()["type"] == "error"


def test_unknown_paths_answer_json(stack):
    reply = httpx.get(f"{stack.gateway.url}/bedrock/nowhere")
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/json")
