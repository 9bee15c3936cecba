"""The anthropic SDK's AnthropicBedrock client against the emulator, plain and streaming."""

import anthropic
import pytest
from anthropic import AnthropicBedrock

from emulator.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

MODEL = "us.anthropic.claude-opus-5-5"


def test_messages_create(anthropic_client):
    message = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=12,
        system="Be kind.",
        messages=[{"role": "user", "content": "Hello, SDK"}],
    )

    assert message.role == "assistant"
    assert message.model == "claude-opus-5-5"
    assert message.stop_reason == "max_tokens"
    assert len(message.content[0].text.split()) == 12
    assert message.usage.output_tokens == 12
    assert message.usage.input_tokens == 2 + 3 + 3


def test_messages_stream(anthropic_client):
    with anthropic_client.messages.stream(
        model=MODEL,
        max_tokens=8,
        messages=[{"role": "user", "content": "Hello, SDK"}],
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(texts) == 8
    assert final.content[0].text == "".join(texts)
    assert final.usage.output_tokens == 8
    assert final.usage.input_tokens == 3 + 3


def test_arn_model_goes_through_the_sdks_quoting(anthropic_client):
    arn = (
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-sonnet-5"
    )

    message = anthropic_client.messages.create(
        model=arn, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
    )

    assert message.model == "claude-sonnet-5"


def test_beta_header_is_copied_into_the_body_and_checked(anthropic_client):
    ok = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=3,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )

    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client.messages.create(
            model=MODEL,
            max_tokens=3,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"anthropic-beta": "not-a-real-beta-2099-01-01"},
        )

    assert ok.stop_reason == "max_tokens"
    assert "invalid beta flag" in str(caught.value)


def test_sdk_sees_a_throttle_as_a_rate_limit_error(emulator):
    client = AnthropicBedrock(
        base_url=emulator.url,
        aws_access_key=DEFAULT_ACCESS_KEY,
        aws_secret_key=DEFAULT_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
        default_headers={"x-emulator-error": "ThrottlingException"},
    )

    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(
            model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "x"}]
        )
