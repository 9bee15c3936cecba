"""converse and converse_stream through the real boto3 client."""

import math

import pytest

from tests.fixtures.emulator import bedrock_client

MODEL = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Hello from converse"}]}]


def test_converse_returns_output_usage_and_metrics(bedrock_runtime):
    response = bedrock_runtime.converse(
        modelId=MODEL,
        messages=MESSAGES,
        system=[{"text": "Be brief."}],
        inferenceConfig={"maxTokens": 10, "temperature": 0.5},
    )

    message = response["output"]["message"]
    assert message["role"] == "assistant"
    assert len(message["content"][0]["text"].split()) == 10
    assert response["stopReason"] == "max_tokens"
    input_tokens = math.ceil(len("Be brief.") / 4) + 3 + math.ceil(len("Hello from converse") / 4)
    assert response["usage"] == {
        "inputTokens": input_tokens,
        "outputTokens": 10,
        "totalTokens": input_tokens + 10,
    }
    assert response["metrics"]["latencyMs"] >= 0


def test_converse_and_invoke_give_the_same_words(bedrock_runtime):
    import json

    converse = bedrock_runtime.converse(modelId=MODEL, messages=MESSAGES)
    invoke = bedrock_runtime.invoke_model(
        modelId=MODEL,
        body=json.dumps(
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "Hello from converse"}],
            }
        ),
    )

    text = json.loads(invoke["body"].read())["content"][0]["text"]
    assert converse["output"]["message"]["content"][0]["text"] == text


def test_converse_cache_point_writes_then_reads(bedrock_runtime):
    system = [{"text": "converse cached system " * 10}, {"cachePoint": {"type": "default"}}]

    first = bedrock_runtime.converse(modelId=MODEL, messages=MESSAGES, system=system)
    second = bedrock_runtime.converse(modelId=MODEL, messages=MESSAGES, system=system)

    prefix = math.ceil(len(system[0]["text"]) / 4)
    assert first["usage"]["cacheWriteInputTokens"] == prefix
    assert first["usage"]["cacheDetails"] == [{"ttl": "5m", "inputTokens": prefix}]
    assert second["usage"]["cacheReadInputTokens"] == prefix
    assert second["usage"]["totalTokens"] == (
        second["usage"]["inputTokens"] + prefix + second["usage"]["outputTokens"]
    )


def test_converse_tool_use(bedrock_runtime):
    tool_config = {
        "tools": [
            {
                "toolSpec": {
                    "name": "top_song",
                    "inputSchema": {
                        "json": {
                            "type": "object",
                            "properties": {"sign": {"type": "string"}},
                            "required": ["sign"],
                        }
                    },
                }
            }
        ]
    }
    messages = [{"role": "user", "content": [{"text": "Use a tool for the top song"}]}]

    response = bedrock_runtime.converse(modelId=MODEL, messages=messages, toolConfig=tool_config)

    assert response["stopReason"] == "tool_use"
    tool_use = response["output"]["message"]["content"][0]["toolUse"]
    assert tool_use["name"] == "top_song"
    assert tool_use["input"] == {"sign": "emulated"}


def test_converse_stream_events(bedrock_runtime):
    response = bedrock_runtime.converse_stream(
        modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 5}
    )

    events = list(response["stream"])

    assert events[0] == {"messageStart": {"role": "assistant"}}
    deltas = events[1:6]
    assert all(list(e) == ["contentBlockDelta"] for e in deltas)
    assert all(e["contentBlockDelta"]["contentBlockIndex"] == 0 for e in deltas)
    words = "".join(e["contentBlockDelta"]["delta"]["text"] for e in deltas).split()
    assert len(words) == 5
    assert events[6] == {"contentBlockStop": {"contentBlockIndex": 0}}
    assert events[7] == {"messageStop": {"stopReason": "max_tokens"}}
    metadata = events[8]["metadata"]
    assert metadata["usage"]["outputTokens"] == 5
    assert metadata["usage"]["totalTokens"] == metadata["usage"]["inputTokens"] + 5
    assert metadata["metrics"]["latencyMs"] >= 0
    assert len(events) == 9


def test_converse_stream_tool_use_has_a_block_start(bedrock_runtime):
    tool_config = {"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {}}}}]}
    messages = [{"role": "user", "content": [{"text": "tool time"}]}]

    events = list(
        bedrock_runtime.converse_stream(modelId=MODEL, messages=messages, toolConfig=tool_config)[
            "stream"
        ]
    )

    start = events[1]["contentBlockStart"]
    assert start["start"]["toolUse"]["name"] == "t"
    assert start["start"]["toolUse"]["toolUseId"].startswith("toolu_bdrk_")
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}


def test_converse_stream_mid_stream_error_raises(emulator):
    from botocore.exceptions import EventStreamError

    client = bedrock_client(emulator.url, headers={"x-emulator-stream-error": "throttling"})
    response = client.converse_stream(modelId=MODEL, messages=MESSAGES)

    with pytest.raises(EventStreamError) as caught:
        list(response["stream"])

    assert caught.value.response["Error"]["Code"] == "throttlingException"


def test_converse_without_messages_is_a_validation_error(bedrock_runtime):
    with pytest.raises(bedrock_runtime.exceptions.ValidationException):
        bedrock_runtime.converse(modelId=MODEL, messages=[])
