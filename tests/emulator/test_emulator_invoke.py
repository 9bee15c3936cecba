"""invoke_model through the real boto3 client: replies, usage, caching, tools, validation."""

import json
import math

import pytest

from tests.fixtures.emulator import bedrock_client

MODEL = "us.anthropic.claude-sonnet-4-6"


def invoke(client, body, model=MODEL):
    response = client.invoke_model(modelId=model, body=json.dumps(body))
    return json.loads(response["body"].read()), response["ResponseMetadata"]["HTTPHeaders"]


def body(text="Hello there", **extra):
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def test_invoke_returns_an_anthropic_message_with_bedrock_headers(bedrock_runtime):
    reply, headers = invoke(bedrock_runtime, body())

    assert reply["type"] == "message"
    assert reply["role"] == "assistant"
    assert reply["id"].startswith("msg_bdrk_")
    assert reply["model"] == "claude-sonnet-4-6"
    assert reply["stop_reason"] == "end_turn"
    assert reply["stop_sequence"] is None
    [block] = reply["content"]
    assert block["type"] == "text"
    assert len(block["text"].split()) == 24
    assert reply["usage"] == {
        "input_tokens": 3 + math.ceil(len("Hello there") / 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 24,
    }
    assert headers["content-type"] == "application/json"
    assert len(headers["x-amzn-requestid"]) == 36
    assert headers["x-amzn-bedrock-input-token-count"] == "6"
    assert headers["x-amzn-bedrock-output-token-count"] == "24"
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0
    assert headers["x-amzn-bedrock-cache-read-input-token-count"] == "0"
    assert headers["x-amzn-bedrock-cache-write-input-token-count"] == "0"


def test_reply_is_deterministic_and_depends_on_the_last_user_message(bedrock_runtime):
    first, _ = invoke(bedrock_runtime, body("What is the weather?"))
    again, _ = invoke(bedrock_runtime, body("What is the weather?"))
    other, _ = invoke(bedrock_runtime, body("Something else entirely"))

    assert first["content"] == again["content"]
    assert first["content"] != other["content"]


def test_input_tokens_follow_the_documented_rule(bedrock_runtime):
    system = "You are terse."
    tools = [{"name": "get_time", "description": "Now", "input_schema": {"type": "object"}}]
    request = body("a" * 41, system=system, tools=tools)
    request["messages"].insert(0, {"role": "user", "content": [{"type": "text", "text": "b" * 8}]})
    request["messages"].insert(1, {"role": "assistant", "content": "c" * 5})

    reply, _ = invoke(bedrock_runtime, request)

    tool_json = json.dumps(tools[0], separators=(",", ":"), sort_keys=True)
    expected = (
        math.ceil(len(tool_json) / 4)
        + math.ceil(len(system) / 4)
        + (3 + 2)  # "b" * 8
        + (3 + 2)  # "c" * 5
        + (3 + 11)  # "a" * 41
    )
    assert reply["usage"]["input_tokens"] == expected


def test_reply_length_is_capped_by_max_tokens(bedrock_runtime):
    reply, _ = invoke(bedrock_runtime, body(max_tokens=5))

    assert len(reply["content"][0]["text"].split()) == 5
    assert reply["usage"]["output_tokens"] == 5
    assert reply["stop_reason"] == "max_tokens"


def test_reply_tokens_knob_sets_the_reply_length(emulator):
    client = bedrock_client(emulator.url, headers={"x-emulator-reply-tokens": "3"})

    reply, headers = invoke(client, body())

    assert len(reply["content"][0]["text"].split()) == 3
    assert headers["x-amzn-bedrock-output-token-count"] == "3"
    assert reply["stop_reason"] == "end_turn"


def test_stop_sequence_cuts_the_reply(bedrock_runtime):
    full, _ = invoke(bedrock_runtime, body("Stop me"))
    words = full["content"][0]["text"].split()
    stop = " " + words[3]

    reply, _ = invoke(bedrock_runtime, body("Stop me", stop_sequences=[stop]))

    text = reply["content"][0]["text"]
    assert reply["stop_reason"] == "stop_sequence"
    assert reply["stop_sequence"] == stop
    assert stop not in text
    assert " ".join(words).startswith(text)
    assert reply["usage"]["output_tokens"] <= 4


def test_tools_and_the_word_tool_give_a_tool_use_block(bedrock_runtime):
    tools = [
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

    reply, headers = invoke(bedrock_runtime, body("Use the tool please", tools=tools))

    assert reply["stop_reason"] == "tool_use"
    [block] = reply["content"]
    assert block["type"] == "tool_use"
    assert block["name"] == "get_weather"
    assert block["id"].startswith("toolu_bdrk_")
    assert block["input"] == {"city": "emulated"}
    assert reply["usage"]["output_tokens"] == math.ceil(len('{"city":"emulated"}') / 4)
    assert headers["x-amzn-bedrock-output-token-count"] == str(reply["usage"]["output_tokens"])


def test_tool_choice_any_forces_a_tool_without_the_word(bedrock_runtime):
    tools = [{"name": "a", "input_schema": {"type": "object"}}, {"name": "b", "input_schema": {}}]

    forced, _ = invoke(
        bedrock_runtime, body("hi", tools=tools, tool_choice={"type": "tool", "name": "b"})
    )
    plain, _ = invoke(bedrock_runtime, body("hi", tools=tools))

    assert forced["content"][0]["name"] == "b"
    assert plain["content"][0]["type"] == "text"


def test_thinking_enabled_adds_a_thinking_block_counted_as_output(bedrock_runtime):
    reply, _ = invoke(bedrock_runtime, body(thinking={"type": "enabled", "budget_tokens": 1024}))

    thinking, text = reply["content"]
    assert thinking["type"] == "thinking"
    assert thinking["signature"]
    assert text["type"] == "text"
    words = len(thinking["thinking"].split()) + len(text["text"].split())
    assert reply["usage"]["output_tokens"] == words


def test_claude_code_shaped_body_is_accepted(bedrock_runtime):
    request = {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["claude-code-20250219", "interleaved-thinking-2025-05-14"],
        "max_tokens": 128000,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": "user_abc"},
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "tools": [
            {"name": "Read", "input_schema": {"type": "object"}, "defer_loading": True},
        ],
        "messages": [
            {"role": "system", "content": "Environment: linux"},
            {"role": "user", "content": [{"type": "text", "text": "hi", "extra_field": 1}]},
        ],
        "some_future_field": {"x": 1},
    }

    reply, _ = invoke(bedrock_runtime, request, model="us.anthropic.claude-opus-5-5")

    assert reply["stop_reason"] == "end_turn"


def test_dated_anthropic_version_from_the_sdk_is_accepted(bedrock_runtime):
    reply, _ = invoke(bedrock_runtime, {**body(), "anthropic_version": "2026-10-21"})

    assert reply["type"] == "message"


def test_second_identical_cached_prefix_reads_from_cache(bedrock_runtime):
    system = [
        {
            "type": "text",
            "text": "Long cached instructions. " * 40 + " unique-prefix-1",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    prefix_tokens = math.ceil(len(system[0]["text"]) / 4)

    first, first_headers = invoke(bedrock_runtime, body("first question", system=system))
    second, second_headers = invoke(bedrock_runtime, body("second question", system=system))

    assert first["usage"]["cache_creation_input_tokens"] == prefix_tokens
    assert first["usage"]["cache_creation"]["ephemeral_5m_input_tokens"] == prefix_tokens
    assert first["usage"]["cache_read_input_tokens"] == 0
    assert first["usage"]["input_tokens"] == 3 + math.ceil(len("first question") / 4)
    assert first_headers["x-amzn-bedrock-cache-write-input-token-count"] == str(prefix_tokens)
    assert second["usage"]["cache_read_input_tokens"] == prefix_tokens
    assert second["usage"]["cache_creation_input_tokens"] == 0
    assert second_headers["x-amzn-bedrock-cache-read-input-token-count"] == str(prefix_tokens)


def test_cache_is_per_model(bedrock_runtime):
    system = [{"type": "text", "text": "per model prefix", "cache_control": {"type": "ephemeral"}}]

    invoke(bedrock_runtime, body(system=system), model="us.anthropic.claude-sonnet-4-6")
    other, _ = invoke(bedrock_runtime, body(system=system), model="us.anthropic.claude-opus-4-7")

    assert other["usage"]["cache_read_input_tokens"] == 0
    assert other["usage"]["cache_creation_input_tokens"] > 0


def test_one_hour_cache_writes_are_reported_apart(bedrock_runtime):
    system = [
        {
            "type": "text",
            "text": "x" * 400 + "1h",
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        },
        {"type": "text", "text": "y" * 200 + "5m", "cache_control": {"type": "ephemeral"}},
    ]

    reply, _ = invoke(bedrock_runtime, body(system=system))

    assert reply["usage"]["cache_creation"] == {
        "ephemeral_1h_input_tokens": math.ceil(402 / 4),
        "ephemeral_5m_input_tokens": math.ceil(202 / 4),
    }
    assert reply["usage"]["cache_creation_input_tokens"] == math.ceil(402 / 4) + math.ceil(202 / 4)


def test_growing_conversation_reads_the_old_prefix_and_writes_the_new_part(bedrock_runtime):
    system = [{"type": "text", "text": "s" * 100 + "grow", "cache_control": {"type": "ephemeral"}}]
    turn = {"type": "text", "text": "t" * 40, "cache_control": {"type": "ephemeral"}}
    invoke(bedrock_runtime, body(system=system))

    reply, _ = invoke(
        bedrock_runtime,
        {**body(system=system), "messages": [{"role": "user", "content": [turn]}]},
    )

    assert reply["usage"]["cache_read_input_tokens"] == math.ceil(104 / 4)
    assert reply["usage"]["cache_creation_input_tokens"] == 3 + 10
    assert reply["usage"]["input_tokens"] == 0


def test_model_id_as_inference_profile_arn_works(bedrock_runtime):
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-5-5"

    reply, _ = invoke(bedrock_runtime, body(), model=arn)

    assert reply["model"] == "claude-opus-5-5"


def test_model_id_as_foundation_model_arn_works(bedrock_runtime):
    arn = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0"

    reply, _ = invoke(bedrock_runtime, body(), model=arn)

    assert reply["model"] == "claude-3-5-haiku-20241022"


def test_unknown_model_is_a_validation_error(bedrock_runtime):
    with pytest.raises(bedrock_runtime.exceptions.ValidationException) as caught:
        invoke(bedrock_runtime, body(), model="us.anthropic.claude-nonexistent-9")

    assert caught.value.response["Error"]["Message"] == "The provided model identifier is invalid."
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_malformed_json_is_a_validation_error(bedrock_runtime):
    with pytest.raises(bedrock_runtime.exceptions.ValidationException) as caught:
        bedrock_runtime.invoke_model(modelId=MODEL, body=b"{not json")

    assert "Malformed input request" in caught.value.response["Error"]["Message"]


@pytest.mark.parametrize("missing", ["max_tokens", "messages", "anthropic_version"])
def test_missing_required_key_is_a_validation_error(bedrock_runtime, missing):
    request = body()
    del request[missing]

    with pytest.raises(bedrock_runtime.exceptions.ValidationException) as caught:
        invoke(bedrock_runtime, request)

    assert f"required key [{missing}] not found" in caught.value.response["Error"]["Message"]


def test_beta_outside_the_allow_list_is_rejected(bedrock_runtime):
    with pytest.raises(bedrock_runtime.exceptions.ValidationException) as caught:
        invoke(
            bedrock_runtime,
            body(anthropic_beta=["claude-code-20250219", "brand-new-beta-2027-01-01"]),
        )

    assert caught.value.response["Error"]["Message"] == "invalid beta flag"


def test_five_x_models_reject_a_custom_temperature(bedrock_runtime):
    with pytest.raises(bedrock_runtime.exceptions.ValidationException):
        invoke(bedrock_runtime, body(temperature=0.2), model="global.anthropic.claude-sonnet-5-5")

    reply, _ = invoke(
        bedrock_runtime, body(temperature=1), model="global.anthropic.claude-sonnet-5-5"
    )
    older, _ = invoke(
        bedrock_runtime, body(temperature=0.2), model="us.anthropic.claude-sonnet-4-6"
    )
    assert reply["type"] == older["type"] == "message"


def test_more_than_four_cache_breakpoints_are_rejected(bedrock_runtime):
    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    request = body()
    request["messages"][0]["content"] = [dict(block) for _ in range(5)]

    with pytest.raises(bedrock_runtime.exceptions.ValidationException) as caught:
        invoke(bedrock_runtime, request)

    assert "maximum of 4 blocks" in caught.value.response["Error"]["Message"]


def test_count_tokens_matches_what_invoke_counts(bedrock_runtime):
    system = [{"type": "text", "text": "count me " * 30, "cache_control": {"type": "ephemeral"}}]
    request = body("How many tokens is this?", system=system)
    reply, _ = invoke(bedrock_runtime, request)
    usage = reply["usage"]

    counted = bedrock_runtime.count_tokens(
        modelId=MODEL, input={"invokeModel": {"body": json.dumps(request).encode()}}
    )

    total = (
        usage["input_tokens"]
        + usage["cache_creation_input_tokens"]
        + usage["cache_read_input_tokens"]
    )
    assert counted["inputTokens"] == total


def test_count_tokens_accepts_the_converse_form(bedrock_runtime):
    counted = bedrock_runtime.count_tokens(
        modelId=MODEL,
        input={"converse": {"messages": [{"role": "user", "content": [{"text": "Hello there"}]}]}},
    )

    assert counted["inputTokens"] == 3 + math.ceil(len("Hello there") / 4)
