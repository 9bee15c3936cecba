"""invoke_model_with_response_stream, parsed by botocore's own event stream parser."""

import io
import json
import time

import httpx
import pytest
import urllib3
from botocore.awsrequest import AWSResponse
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import EventStreamError

from tests.fixtures.emulator import bedrock_client

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"


def request_body(text="Stream this", **extra):
    return json.dumps(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": text}],
            **extra,
        }
    )


def stream(client, body=None, model=MODEL):
    response = client.invoke_model_with_response_stream(modelId=model, body=body or request_body())
    return response, [json.loads(event["chunk"]["bytes"]) for event in response["body"]]


def collect(events, into):
    """Append events to ``into`` until the stream ends or raises."""
    for event in events:
        into.append(event)


def test_stream_carries_every_anthropic_event_in_order(bedrock_runtime):
    response, events = stream(bedrock_runtime)

    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    assert len(headers["x-amzn-requestid"]) == 36
    assert response["contentType"] == "application/json"
    types = [e["type"] for e in events]
    assert types == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * 24
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    start = events[0]["message"]
    assert start["role"] == "assistant"
    assert start["model"] == "claude-haiku-4-5-20251001"
    assert start["content"] == []
    assert start["usage"]["input_tokens"] == 3 + 3
    assert start["usage"]["output_tokens"] == 1
    assert start["usage"]["cache_read_input_tokens"] == 0
    assert events[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = events[2:26]
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for d in deltas)
    assert all(len(d["delta"]["text"].split()) == 1 for d in deltas)
    assert events[26] == {"type": "content_block_stop", "index": 0}
    assert events[27]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[27]["usage"] == {"output_tokens": 24}
    metrics = events[28]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == 6
    assert metrics["outputTokenCount"] == 24
    assert metrics["invocationLatency"] >= metrics["firstByteLatency"] >= 0
    assert metrics["cacheReadInputTokenCount"] == 0
    assert metrics["cacheWriteInputTokenCount"] == 0


def test_streamed_text_equals_the_invoke_reply(bedrock_runtime):
    _, events = stream(bedrock_runtime, request_body("same words"))
    plain = json.loads(
        bedrock_runtime.invoke_model(modelId=MODEL, body=request_body("same words"))["body"].read()
    )

    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == plain["content"][0]["text"]


def test_tool_use_streams_input_json_deltas(bedrock_runtime):
    tools = [
        {
            "name": "lookup",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
        }
    ]

    _, events = stream(bedrock_runtime, request_body("call a tool", tools=tools))

    start = events[1]["content_block"]
    assert start["type"] == "tool_use"
    assert start["name"] == "lookup"
    assert start["input"] == {}
    parts = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert parts[0] == ""
    assert json.loads("".join(parts)) == {"query": "emulated"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_stream_reports_cache_usage_in_message_start_and_metrics(bedrock_runtime):
    system = [
        {"type": "text", "text": "stream cache " * 20, "cache_control": {"type": "ephemeral"}}
    ]
    body = request_body(system=system)

    _, first = stream(bedrock_runtime, body)
    _, second = stream(bedrock_runtime, body)

    assert first[0]["message"]["usage"]["cache_creation_input_tokens"] == 65
    assert second[0]["message"]["usage"]["cache_read_input_tokens"] == 65
    assert second[-1]["amazon-bedrock-invocationMetrics"]["cacheReadInputTokenCount"] == 65


@pytest.mark.parametrize(
    "name",
    [
        "throttlingException",
        "modelStreamErrorException",
        "internalServerException",
        "validationException",
        "serviceUnavailableException",
        "modelTimeoutException",
    ],
)
def test_mid_stream_exception_frame_raises_in_botocore(emulator, name):
    client = bedrock_client(
        emulator.url,
        headers={"x-emulator-stream-error": name, "x-emulator-stream-error-after": "3"},
    )
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=request_body())
    received = []

    with pytest.raises(EventStreamError) as caught:
        collect(response["body"], received)

    assert [json.loads(e["chunk"]["bytes"])["type"] for e in received] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert caught.value.response["Error"]["Code"] == name
    assert caught.value.response["Error"]["Message"]


def test_cut_after_closes_the_connection_mid_stream(emulator):
    client = bedrock_client(emulator.url, headers={"x-emulator-cut-after": "2"})
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=request_body())
    received = []

    with pytest.raises(Exception):  # noqa: B017, PT011 (urllib3's protocol error, wrapped or not)
        collect(response["body"], received)

    assert len(received) == 2


def test_pacing_and_ttfb_knobs_slow_the_stream(emulator):
    client = bedrock_client(
        emulator.url,
        headers={
            "x-emulator-ttfb-ms": "100",
            "x-emulator-tokens-per-second": "200",
            "x-emulator-reply-tokens": "20",
        },
    )
    started = time.perf_counter()

    _, events = stream(client)

    elapsed = time.perf_counter() - started
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert elapsed >= 0.1 + 20 / 200 * 0.9
    assert metrics["firstByteLatency"] >= 100
    assert metrics["invocationLatency"] >= 190


def test_stall_knob_pauses_mid_stream(emulator):
    client = bedrock_client(
        emulator.url, headers={"x-emulator-stall-ms": "150", "x-emulator-stall-after": "2"}
    )
    started = time.perf_counter()

    _, events = stream(client)

    assert time.perf_counter() - started >= 0.15
    assert events[-1]["type"] == "message_stop"


@pytest.mark.parametrize("offset", [5, 100, -1])
def test_one_corrupted_byte_fails_botocores_crc_check(emulator, offset):
    client = bedrock_client(emulator.url)

    def corrupt_one_byte(request, **_):
        real = httpx.post(request.url, content=request.body, headers=dict(request.headers.items()))
        data = bytearray(real.content)
        data[offset] ^= 0x01
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(bytes(data)),
            headers=dict(real.headers),
            status=real.status_code,
            preload_content=False,
        )
        return AWSResponse(request.url, real.status_code, dict(real.headers), raw)

    client.meta.events.register(
        "before-send.bedrock-runtime.InvokeModelWithResponseStream", corrupt_one_byte
    )
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=request_body())

    with pytest.raises(ChecksumMismatch):
        list(response["body"])
