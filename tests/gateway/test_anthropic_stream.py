"""Responses and server-sent events: unit tests, then the real SDK reading what we produce.

The SDK tests serve our bytes from a small local HTTP server to `anthropic.Anthropic`, first
from hand-written Bedrock chunks, then from the Bedrock emulator's real stream (read by boto3).
"""

import json

import anthropic
import pytest
from anthropic._streaming import SSEDecoder
from botocore.exceptions import EventStreamError

from gateway.anthropic import (
    METRICS_KEY,
    SseTranslator,
    anthropic_response_headers,
    to_anthropic_response,
    to_bedrock_request,
)
from tests.fixtures import canned_http
from tests.fixtures import emulator as emulator_fixtures
from tests.fixtures import model_map as model_map_fixtures

canned = canned_http.canned
emulator = emulator_fixtures.emulator
fresh_model_map = model_map_fixtures.fresh_model_map

METRICS = {
    "inputTokenCount": 25,
    "outputTokenCount": 42,
    "invocationLatency": 812,
    "firstByteLatency": 120,
}

# What Bedrock streams for a reply with text and then a tool call (decoded chunk payloads).
BEDROCK_EVENTS = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_bdrk_01ABC",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 25,
                "cache_creation_input_tokens": 10,
                "cache_read_input_tokens": 100,
                "output_tokens": 1,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "me — "}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {
            "type": "tool_use",
            "id": "toolu_bdrk_01XYZ",
            "name": "get_weather",
            "input": {},
        },
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": "Par'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": 'is", "days": 3}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42},
    },
    {"type": "message_stop", METRICS_KEY: METRICS},
]


def parse_sse(data: bytes) -> list[tuple[str, dict]]:
    """Our SSE bytes as (event, data) pairs, read by the SDK's own decoder."""
    return [(sse.event, sse.json()) for sse in SSEDecoder().iter_bytes(iter([data]))]


def translate(events: list[dict], model: str = "claude-haiku-4-5") -> bytes:
    translator = SseTranslator(model)
    return b"".join(translator.feed(event) for event in events)


def test_sse_frames_are_anthropics_format_byte_for_byte():
    translator = SseTranslator("claude-haiku-4-5")
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "é"},
    }
    assert (
        translator.feed(delta)
        == (
            'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            '"delta":{"type":"text_delta","text":"é"}}\n\n'
        ).encode()
    )
    assert translator.ping() == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert translator.error("overloaded_error", "Overloaded") == (
        b'event: error\ndata: {"type":"error","error":'
        b'{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )


def test_message_start_names_the_requested_model_and_is_followed_by_a_ping():
    events = parse_sse(SseTranslator("claude-haiku-4-5").feed(BEDROCK_EVENTS[0]))
    assert [name for name, _ in events] == ["message_start", "ping"]
    message = events[0][1]["message"]
    assert message["model"] == "claude-haiku-4-5"
    assert message["usage"] == BEDROCK_EVENTS[0]["message"]["usage"]
    assert message["id"] == "msg_bdrk_01ABC"
    assert BEDROCK_EVENTS[0]["message"]["model"] == "claude-haiku-4-5-20251001"  # not mutated


def test_every_event_keeps_its_type_and_order_and_message_stop_loses_bedrock_metrics():
    events = parse_sse(translate(BEDROCK_EVENTS))
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[-1][1] == {"type": "message_stop"}
    assert [data for _, data in events[2:-1]] == BEDROCK_EVENTS[1:-1]
    assert METRICS_KEY in BEDROCK_EVENTS[-1]  # the caller's event is left alone


def test_translator_tracks_started_and_finished():
    translator = SseTranslator("m")
    assert not translator.started
    translator.ping()
    assert not translator.started  # a ping before anything else commits nothing
    translator.feed(BEDROCK_EVENTS[0])
    assert translator.started
    assert not translator.finished
    translator.feed(BEDROCK_EVENTS[-1])
    assert translator.finished


def test_an_event_without_a_type_is_refused():
    with pytest.raises(ValueError, match="type"):
        SseTranslator("m").feed({"delta": {}})


@pytest.mark.parametrize(
    ("exception_type", "error_type"),
    [
        ("throttlingException", "rate_limit_error"),
        ("modelStreamErrorException", "api_error"),
        ("internalServerException", "api_error"),
        ("validationException", "invalid_request_error"),
        ("serviceUnavailableException", "overloaded_error"),
        ("modelTimeoutException", "api_error"),
        ("ThrottlingException", "rate_limit_error"),
        ("somethingNewException", "api_error"),
    ],
)
def test_mid_stream_exceptions_become_sse_error_events(exception_type, error_type):
    [(name, data)] = parse_sse(SseTranslator("m").exception(exception_type, "it broke"))
    assert name == "error"
    assert data == {"type": "error", "error": {"type": error_type, "message": "it broke"}}


def test_non_streaming_response_names_the_requested_model_and_keeps_the_rest():
    bedrock = {
        "id": "msg_bdrk_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 0},
    }
    message = to_anthropic_response(bedrock, "claude-haiku-4-5")
    assert message == {**bedrock, "model": "claude-haiku-4-5"}
    assert bedrock["model"] == "claude-haiku-4-5-20251001"
    with_metrics = to_anthropic_response({**bedrock, METRICS_KEY: METRICS}, "x")
    assert METRICS_KEY not in with_metrics


def test_response_headers_carry_the_upstream_request_id():
    assert anthropic_response_headers({"X-Amzn-RequestId": "req-123"}) == {"request-id": "req-123"}
    assert anthropic_response_headers([(b"x-amzn-requestid", b"req-9")]) == {"request-id": "req-9"}
    assert anthropic_response_headers({}) == {}


# --- The real SDK reading our bytes over HTTP ---------------------------------------------------


def sdk(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="SSOK_test", max_retries=0, timeout=10)


def read_texts(stream_manager, seen: list[str]) -> None:
    with stream_manager as stream:
        seen.extend(stream.text_stream)


TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    }
]


def test_the_sdk_accumulates_our_stream_including_tool_input_and_usage(canned):
    canned.answer(translate(BEDROCK_EVENTS), content_type="text/event-stream")
    with sdk(canned.url).messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS,
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(texts) == "Let me — "
    assert message.model == "claude-haiku-4-5"
    assert message.id == "msg_bdrk_01ABC"
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.text == "Let me — "
    assert (tool.type, tool.id, tool.name) == ("tool_use", "toolu_bdrk_01XYZ", "get_weather")
    assert tool.input == {"city": "Paris", "days": 3}
    assert message.usage.input_tokens == 25
    assert message.usage.output_tokens == 42
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.cache_creation_input_tokens == 10


def test_the_sdk_raises_on_our_error_event_after_the_first_bytes(canned):
    translator = SseTranslator("claude-haiku-4-5")
    body = b"".join(translator.feed(event) for event in BEDROCK_EVENTS[:4])
    body += translator.exception("serviceUnavailableException", "Bedrock is overloaded")
    canned.answer(body, content_type="text/event-stream")
    seen = []
    stream = sdk(canned.url).messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        read_texts(stream, seen)
    assert seen == ["Let ", "me — "]
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Bedrock is overloaded"},
    }


def test_the_sdk_parses_our_non_streaming_response(canned):
    bedrock = {
        "id": "msg_bdrk_02",
        "type": "message",
        "role": "assistant",
        "model": "claude-opus-5-5",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }
    canned.answer(json.dumps(to_anthropic_response(bedrock, "claude-opus-5-5")).encode())
    message = sdk(canned.url).messages.create(
        model="claude-opus-5-5",
        max_tokens=10,
        messages=[{"role": "user", "content": "x"}],
        tools=TOOLS,
    )
    assert message.model == "claude-opus-5-5"
    assert message.content[0].input == {"city": "Oslo"}
    assert message.usage.output_tokens == 7


# --- From the emulator's real stream to the SDK --------------------------------------------------


def emulator_sse(emulator_url: str, body: dict, knobs: dict[str, str] | None = None) -> bytes:
    """Translate an Anthropic request, stream it from the emulator with boto3, translate back."""
    model_id, invoke_body, _ = to_bedrock_request(body, {"anthropic-version": "2023-06-01"})
    client = emulator_fixtures.bedrock_client(emulator_url, headers=knobs)
    response = client.invoke_model_with_response_stream(
        modelId=model_id, body=json.dumps(invoke_body)
    )
    translator = SseTranslator(body["model"])
    out = []
    try:
        for event in response["body"]:
            out.append(translator.feed(json.loads(event["chunk"]["bytes"])))
    except EventStreamError as error:
        out.append(translator.exception(error.response["Error"]["Code"], str(error)))
    return b"".join(out)


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_model_map")
def test_the_sdk_reads_the_emulators_tool_stream_translated(emulator, canned):
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Use the tool for the weather in Paris"}],
        "tools": TOOLS,
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    canned.answer(emulator_sse(emulator.url, body), content_type="text/event-stream")
    with sdk(canned.url).messages.stream(**body) as stream:
        message = stream.get_final_message()
    assert message.model == "claude-sonnet-4-6"
    assert message.stop_reason == "tool_use"
    [tool] = [block for block in message.content if block.type == "tool_use"]
    assert tool.name == "get_weather"
    assert isinstance(tool.input, dict)
    assert "city" in tool.input
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_model_map")
def test_the_sdk_sees_the_emulators_mid_stream_throttling_as_an_error_event(emulator, canned):
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Tell me a story"}],
    }
    knobs = {"x-emulator-stream-error": "throttlingException", "x-emulator-stream-error-after": "3"}
    sse = emulator_sse(emulator.url, body, knobs)
    assert parse_sse(sse)[0][0] == "message_start"
    canned.answer(sse, content_type="text/event-stream")
    with pytest.raises(anthropic.APIStatusError) as caught:
        read_texts(sdk(canned.url).messages.stream(**body), [])
    assert caught.value.body["error"]["type"] == "rate_limit_error"
