"""/anthropic with the real `anthropic` SDK: plain, streamed, tool use, errors mid-stream."""

import anthropic
import pytest

from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def sdk(stack, key: str, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{stack.gateway.url}/anthropic", api_key=key, max_retries=0, **kwargs
    )


def test_messages_create_answers_in_anthropic_shape(stack, alice_key):
    message = sdk(stack, alice_key).messages.create(
        model="claude-haiku-4-5",
        max_tokens=40,
        messages=[{"role": "user", "content": "Hello, gateway"}],
    )
    assert message.model == "claude-haiku-4-5"
    assert message.content[0].type == "text"
    assert message.usage.input_tokens > 0
    record = wait_for(lambda: UsageRecord.objects.first())
    assert record.route == "anthropic.messages"
    assert record.model_id.endswith("anthropic.claude-haiku-4-5-20251001-v1:0")
    assert record.output_tokens == message.usage.output_tokens
    assert record.client_family == "Anthropic/Python"


def test_x_api_key_header_and_old_version_are_accepted(stack, alice_key):
    import httpx

    response = httpx.post(
        f"{stack.gateway.url}/anthropic/v1/messages",
        headers={"x-api-key": alice_key, "anthropic-version": "2023-06-01"},
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert response.status_code == 200
    assert response.headers["request-id"]
    assert response.json()["type"] == "message"


def test_stream_delivers_server_sent_events_and_records_usage(stack, alice_key):
    client = sdk(stack, alice_key)
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=40,
        messages=[{"role": "user", "content": "Stream to me"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert "content_block_delta" in kinds
    assert kinds[-1] == "message_stop"
    assert final.model == "claude-haiku-4-5"
    record = wait_for(lambda: UsageRecord.objects.first())
    assert record.streaming is True
    assert record.output_tokens == final.usage.output_tokens
    assert record.input_tokens == final.usage.input_tokens


def test_tool_use_round_trips_plain_and_streamed(stack, alice_key):
    client = sdk(stack, alice_key)
    request = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "Use the tool for Paris"}],
    }
    message = client.messages.create(**request)
    assert message.stop_reason == "tool_use"
    tool = next(block for block in message.content if block.type == "tool_use")
    assert tool.name == "get_weather"
    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    streamed = next(block for block in final.content if block.type == "tool_use")
    assert streamed.input == tool.input


def test_an_upstream_error_mid_stream_arrives_as_an_sse_error(stack, alice_key):
    client = sdk(
        stack,
        alice_key,
        default_headers={
            "x-emulator-stream-error": "modelStreamErrorException",
            "x-emulator-stream-error-after": "3",
        },
    )
    stream = client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=40,
        messages=[{"role": "user", "content": "fail midway"}],
    )
    with pytest.raises(anthropic.APIStatusError) as excinfo, stream as events:
        for _ in events:
            pass
    assert excinfo.value.body["error"]["type"] == "api_error"
    record = wait_for(lambda: UsageRecord.objects.first())
    assert record.error_type == "modelStreamErrorException"
    assert record.input_tokens > 0


def test_unknown_model_name_is_not_found(stack, alice_key):
    with pytest.raises(anthropic.NotFoundError):
        sdk(stack, alice_key).messages.create(
            model="claude-imaginary-9",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert UsageRecord.objects.count() == 0


def test_upstream_throttling_becomes_a_rate_limit_error(stack, alice_key):
    client = sdk(stack, alice_key, default_headers={"x-emulator-error": "ThrottlingException"})
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )


def test_models_and_count_tokens(stack, alice_key):
    client = sdk(stack, alice_key)
    first_page = client.models.list(limit=5)
    assert len(first_page.data) == 5
    every = [model.id for model in client.models.list(limit=5)]  # the SDK pages through all
    assert any(name.startswith("claude-haiku-4-5") for name in every)
    assert len(every) == len(set(every)) > 5
    counted = client.messages.count_tokens(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "count me"}]
    )
    assert counted.input_tokens > 0
