import base64
import json

import pytest

from gateway.anthropic import (
    AnthropicError,
    ato_bedrock_count_tokens,
    ato_bedrock_request,
    from_bedrock_count_tokens,
    to_bedrock_count_tokens,
    to_bedrock_request,
)
from tests.fixtures import model_map as model_map_fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_model_map")]
fresh_model_map = model_map_fixtures.fresh_model_map
thread_connections_closed = model_map_fixtures.thread_connections_closed

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def messages_body(**extra):
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
        **extra,
    }


def raises_anthropic(status, error_type, body, headers=None, fragment=""):
    with pytest.raises(AnthropicError) as caught:
        to_bedrock_request(body, headers or {})
    error = caught.value
    assert (error.status, error.type) == (status, error_type)
    assert fragment in error.message
    assert error.body == {"type": "error", "error": {"type": error_type, "message": error.message}}
    return error


def test_it_maps_the_model_and_sets_bedrocks_version_dropping_model_and_stream():
    model_id, body, betas = to_bedrock_request(messages_body(stream=True), {})
    assert model_id == HAIKU
    assert body == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert betas == []


def test_it_passes_every_other_field_through_unchanged():
    extra = {
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Long.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            {"name": "later", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u-1"},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 5,
        "output_config": {"effort": "high"},
        "some_future_field": {"nested": [1, 2]},
    }
    body_in = messages_body(
        messages=[
            {"role": "system", "content": "Claude Code sends these."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
        **extra,
    )
    snapshot = json.loads(json.dumps(body_in))
    _, body, _ = to_bedrock_request(body_in, {})
    for key, value in extra.items():
        assert body[key] == value
    assert body["messages"] == body_in["messages"]
    assert body_in == snapshot  # the caller's dict is not modified


def test_betas_from_headers_become_anthropic_beta_merged_with_the_bodys():
    headers = [
        ("anthropic-beta", "claude-code-20250219, interleaved-thinking-2025-05-14"),
        ("Anthropic-Beta", "context-1m-2025-08-07,claude-code-20250219"),
        ("anthropic-version", "2023-06-01"),
    ]
    _, body, betas = to_bedrock_request(
        messages_body(anthropic_beta=["fine-grained-tool-streaming-2025-05-14"]), headers
    )
    expected = [
        "fine-grained-tool-streaming-2025-05-14",
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "context-1m-2025-08-07",
    ]
    assert betas == expected
    assert body["anthropic_beta"] == expected


def test_betas_are_read_from_django_style_and_bytes_headers():
    _, _, betas = to_bedrock_request(messages_body(), {"Anthropic-Beta": "a-1,b-2"})
    assert betas == ["a-1", "b-2"]
    _, _, betas = to_bedrock_request(messages_body(), [(b"anthropic-beta", b"c-3")])
    assert betas == ["c-3"]
    _, _, betas = to_bedrock_request(messages_body(), {"anthropic-beta": ["d-4", "e-5"]})
    assert betas == ["d-4", "e-5"]


def test_a_clients_anthropic_version_in_the_body_is_replaced():
    _, body, _ = to_bedrock_request(messages_body(anthropic_version="2026-10-21"), {})
    assert body["anthropic_version"] == "bedrock-2023-05-31"


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21", "2023-01-01"])
def test_it_accepts_known_and_dated_anthropic_versions(version):
    model_id, _, _ = to_bedrock_request(messages_body(), {"anthropic-version": version})
    assert model_id == HAIKU


def test_a_missing_anthropic_version_is_fine():
    assert to_bedrock_request(messages_body(), None)[0] == HAIKU


@pytest.mark.parametrize("version", ["latest", "2023-13-01", "06-01-2023", "2019-01-01", ""])
def test_it_rejects_an_invalid_anthropic_version(version):
    raises_anthropic(
        400,
        "invalid_request_error",
        messages_body(),
        {"anthropic-version": version},
        "anthropic-version",
    )


@pytest.mark.parametrize("body", [[], "text", None, 3, [{"model": "x"}]])
def test_a_body_that_is_not_an_object_is_invalid(body):
    raises_anthropic(400, "invalid_request_error", body, fragment="JSON object")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model": None}, "model"),
        ({"model": 3}, "model"),
        ({"model": ""}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": "64"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": {"role": "user"}}, "messages"),
        ({"stream": "yes"}, "stream"),
        ({"anthropic_beta": "a,b"}, "anthropic_beta"),
    ],
)
def test_bad_fields_are_named_in_an_invalid_request_error(change, fragment):
    raises_anthropic(400, "invalid_request_error", messages_body(**change), fragment=fragment)


@pytest.mark.parametrize("field", ["model", "max_tokens", "messages"])
def test_missing_required_fields_are_named(field):
    body = messages_body()
    del body[field]
    raises_anthropic(400, "invalid_request_error", body, fragment=f"{field}: Field required")


def test_an_unknown_model_is_a_not_found_error():
    error = raises_anthropic(404, "not_found_error", messages_body(model="claude-nope-1"))
    assert error.message == "model: claude-nope-1"


def test_a_bedrock_id_as_model_passes_through():
    model_id, body, _ = to_bedrock_request(messages_body(model="eu.anthropic.claude-opus-5-5"), {})
    assert model_id == "eu.anthropic.claude-opus-5-5"
    assert "model" not in body


@pytest.mark.usefixtures("thread_connections_closed")
async def test_async_translation_matches_the_sync_one():
    headers = {"anthropic-beta": "x-1"}
    assert await ato_bedrock_request(messages_body(), headers) == to_bedrock_request(
        messages_body(), headers
    )
    with pytest.raises(AnthropicError) as caught:
        await ato_bedrock_request(messages_body(model="claude-nope"), {})
    assert caught.value.status == 404


def decode_count_body(request: dict) -> dict:
    return json.loads(base64.b64decode(request["input"]["invokeModel"]["body"]))


def test_count_tokens_builds_bedrocks_invoke_model_input():
    body_in = {
        "model": "claude-sonnet-4-6",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    model_id, request = to_bedrock_count_tokens(body_in, {"anthropic-beta": "token-efficient-1"})
    assert model_id == "us.anthropic.claude-sonnet-4-6"
    assert set(request) == {"input"}
    assert decode_count_body(request) == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "anthropic_beta": ["token-efficient-1"],
    }


def test_count_tokens_needs_no_max_tokens_but_a_model_and_messages():
    assert to_bedrock_count_tokens({"model": "claude-opus-5", "messages": [{"role": "user"}]})
    for body in [
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "claude-opus-5", "messages": []},
        ["not", "an", "object"],
    ]:
        with pytest.raises(AnthropicError) as caught:
            to_bedrock_count_tokens(body)
        assert caught.value.status == 400
    with pytest.raises(AnthropicError) as caught:
        to_bedrock_count_tokens({"model": "claude-nope", "messages": [{"role": "user"}]})
    assert caught.value.status == 404


@pytest.mark.usefixtures("thread_connections_closed")
async def test_async_count_tokens_matches_the_sync_one():
    body = {"model": "claude-opus-4-6", "messages": [{"role": "user", "content": "x"}]}
    model_id, request = await ato_bedrock_count_tokens(body)
    assert model_id == "us.anthropic.claude-opus-4-6-v1"
    assert (model_id, request) == to_bedrock_count_tokens(body)


def test_count_tokens_response_is_renamed():
    assert from_bedrock_count_tokens({"inputTokens": 1234}) == {"input_tokens": 1234}


@pytest.mark.parametrize("bad", [{}, {"inputTokens": "12"}, {"inputTokens": True}, [], None])
def test_count_tokens_response_without_a_count_is_an_api_error(bad):
    with pytest.raises(AnthropicError) as caught:
        from_bedrock_count_tokens(bad)
    assert (caught.value.status, caught.value.type) == (502, "api_error")
