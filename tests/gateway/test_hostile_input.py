"""Hostile input on the proxy's routes, through a real gateway process over raw HTTP: bodies
too large (declared or streamed), JSON nested too deep, bytes that are not UTF-8, header
junk. Every answer is a 4xx in the route family's shape, never a 500, and oversized bodies
are refused before authentication and before the server reads them."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures import raw_http
from tests.fixtures.gateways import MAX_BODY_BYTES

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = "/anthropic/v1/messages"
INVOKE = "/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke"
TEN_GB = 10 * 1024**3


def anthropic_error(response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    return body["error"]["message"]


def bedrock_error(response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-ErrorType"] == error_type
    return response.json()["message"]


def post(stack, path, key=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if key:
        headers.setdefault("authorization", f"Bearer {key}")
    return httpx.post(f"{stack.gateway.url}{path}", headers=headers, timeout=20, **kwargs)


# --- body size: declared -------------------------------------------------------------------


@pytest.mark.parametrize("path", [MESSAGES, INVOKE])
def test_a_declared_10_gb_body_is_refused_at_once_without_being_sent(stack, path):
    response = raw_http.request(
        stack.gateway.port,
        "POST",
        path,
        [("Content-Type", "application/json"), ("Content-Length", str(TEN_GB))],
    )
    assert response.body_bytes_sent == 0
    assert response.status == 413
    assert response.seconds < 2
    body = response.json()
    if path == MESSAGES:
        assert body["type"] == "error"
        assert body["error"]["type"] == "request_too_large"
        assert str(MAX_BODY_BYTES) in body["error"]["message"]
        assert response.headers["request-id"].startswith("req_")
    else:
        assert set(body) == {"message"}
        assert response.headers["x-amzn-errortype"] == "ValidationException"
    assert response.headers["content-type"] == "application/json"


def test_the_413_comes_before_authentication(stack):
    """No credentials at all: a 413, not a 401 (nothing was read to authenticate against)."""
    response = raw_http.request(
        stack.gateway.port,
        "POST",
        MESSAGES,
        [("Content-Length", str(MAX_BODY_BYTES + 1)), ("Expect", "100-continue")],
    )
    assert response.status == 413
    assert response.body_bytes_sent == 0


# --- body size: streamed -------------------------------------------------------------------


@pytest.mark.parametrize("path", [MESSAGES, INVOKE])
def test_a_40_mb_chunked_body_is_cut_off_with_a_413(stack, alice_key, path):
    response = raw_http.request(
        stack.gateway.port,
        "POST",
        path,
        [("Content-Type", "application/json"), ("Authorization", f"Bearer {alice_key}")],
        raw_http.pieces(40 * 1024 * 1024),
        chunked=True,
    )
    assert response.status == 413
    # the server stopped reading near the limit, not after 40 MB
    assert response.body_bytes_sent < 40 * 1024 * 1024
    if path == MESSAGES:
        assert response.json()["error"]["type"] == "request_too_large"
    else:
        assert response.headers["x-amzn-errortype"] == "ValidationException"


def test_a_chunked_body_under_the_limit_is_served(stack, alice_key):
    body = json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES // 2)}],
        }
    ).encode()
    response = raw_http.request(
        stack.gateway.port,
        "POST",
        MESSAGES,
        [("Content-Type", "application/json"), ("Authorization", f"Bearer {alice_key}")],
        [body[i : i + 10_000] for i in range(0, len(body), 10_000)],
        chunked=True,
    )
    assert response.status == 200, response.body[:500]
    assert response.json()["type"] == "message"


# --- JSON nested too deep ------------------------------------------------------------------


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def nested_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


def with_tool(levels: int) -> dict:
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "deep", "description": "d", "input_schema": nested_schema(levels)}],
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages":' + b"[" * 100_000,  # 100,000 opened (the body limit here is 200 KB)
        b'{"messages":' + deep(99_990) + b"}",  # as deep as fits, closed: valid JSON
        b'{"messages":' + b'[{"a":' * 300 + b"1" + b"}]" * 300 + b"}",  # just past the limit
    ],
)
def test_json_nested_too_deep_is_a_400_in_each_family(stack, alice_key, body):
    assert len(body) < MAX_BODY_BYTES
    headers = {"content-type": "application/json"}
    message = anthropic_error(
        post(stack, MESSAGES, alice_key, content=body, headers=dict(headers)),
        400,
        "invalid_request_error",
    )
    assert "nested deeper than 256" in message
    message = bedrock_error(
        post(stack, INVOKE, alice_key, content=body, headers=dict(headers)),
        400,
        "ValidationException",
    )
    assert "nested deeper than 256" in message


def test_a_tool_schema_200_levels_deep_is_served_on_both_families(stack, alice_key):
    body = with_tool(100)  # each level is two JSON objects: 200 levels of nesting, and more
    assert json.dumps(body).count("{") > 200
    response = post(stack, MESSAGES, alice_key, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"

    bedrock_body = {k: v for k, v in body.items() if k != "model"}
    bedrock_body["anthropic_version"] = "bedrock-2023-05-31"
    response = post(stack, INVOKE, alice_key, json=bedrock_body)
    assert response.status_code == 200, response.text


# --- bytes that are not UTF-8, lone surrogates ---------------------------------------------


def test_a_body_that_is_not_utf8_is_a_400_in_each_family(stack, alice_key):
    body = (
        b'{"model":"claude-haiku-4-5","max_tokens":10,'
        b'"messages":[{"role":"user","content":"\xff\xfe"}]}'
    )
    headers = {"content-type": "application/json"}
    message = anthropic_error(
        post(stack, MESSAGES, alice_key, content=body, headers=dict(headers)),
        400,
        "invalid_request_error",
    )
    assert "UTF-8" in message
    bedrock_error(
        post(stack, INVOKE, alice_key, content=body, headers=dict(headers)),
        400,
        "ValidationException",
    )


def test_a_lone_surrogate_escape_is_never_a_500(stack, alice_key):
    body = (
        b'{"model":"claude-haiku-4-5","max_tokens":10,'
        b'"messages":[{"role":"user","content":"\\ud800 alone"}]}'
    )
    headers = {"content-type": "application/json"}
    message = anthropic_error(
        post(stack, MESSAGES, alice_key, content=body, headers=dict(headers)),
        400,
        "invalid_request_error",
    )
    assert "not valid JSON" in message
    bedrock_error(
        post(stack, INVOKE, alice_key, content=body, headers=dict(headers)),
        400,
        "ValidationException",
    )
    # a pair of escapes (how ASCII-only encoders send an emoji) is fine
    paired = body.replace(b"\\ud800", b"\\ud83d\\ude00")
    assert (
        post(stack, MESSAGES, alice_key, content=paired, headers=dict(headers)).status_code == 200
    )


# --- header junk ---------------------------------------------------------------------------


JUNK_HEADERS = [
    ("anthropic-version", "2023-06-01\xe9\xff".encode("latin-1")),
    ("anthropic-version", "é".encode()),
    ("anthropic-version", b"2023-06-01" + b"x" * 8000),
    ("content-type", "application/json\xe9".encode("latin-1")),
    ("content-type", b"application/json; charset=" + b"x" * 8000),
    ("content-type", b"text/plain"),
    ("anthropic-beta", "b\xe9ta".encode("latin-1")),
    ("anthropic-beta", b",".join([b"x" * 50] * 150)),
]


@pytest.mark.parametrize(("name", "value"), JUNK_HEADERS)
@pytest.mark.parametrize("path", [MESSAGES, INVOKE])
def test_header_junk_is_a_4xx_in_the_familys_shape(stack, alice_key, path, name, value):
    payload = json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            **({} if path == MESSAGES else {"anthropic_version": "bedrock-2023-05-31"}),
        }
    ).encode()
    headers = [("Authorization", f"Bearer {alice_key}"), ("Content-Length", str(len(payload)))]
    if name != "content-type":
        headers.append(("Content-Type", "application/json"))
    headers.append((name, value))
    response = raw_http.request(stack.gateway.port, "POST", path, headers, [payload])
    assert response.status < 500, (response.status, response.body[:500])
    if response.status >= 400:
        body = response.json()
        if path == MESSAGES:
            assert body["type"] == "error"
            assert body["error"]["type"]
        else:
            assert "message" in body
            assert response.headers["x-amzn-errortype"]
