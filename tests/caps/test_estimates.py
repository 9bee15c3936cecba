"""The reservation's estimate: an upper bound of what the emulator counts, prefix memory."""

import pytest

from caps.estimates import estimate_usage, prefixes_remember
from emulator.tokens import Prompt, PromptCache
from tests.fixtures.calls import SONNET

pytestmark = pytest.mark.django_db


BODIES = [
    {"max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]},
    {"max_tokens": 100, "messages": [{"role": "user", "content": ""}]},
    {"max_tokens": 100, "messages": [{"role": "user", "content": "é" * 4001}]},
    {
        "max_tokens": 300,
        "system": "You are terse. " * 40,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a" * 37}]},
            {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
            {"role": "user", "content": [{"type": "text", "text": 'c\n"quoted"' * 9}]},
        ],
    },
    {
        "max_tokens": 500,
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "system": [
            {
                "type": "text",
                "text": "x" * 5000,
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm " * 50, "signature": "sig"},
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "sunny"},
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": "iVBORw0KGgo=",
                                },
                            },
                        ],
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "text", "text": "and now?", "cache_control": {"type": "ephemeral"}},
                ],
            },
        ],
    },
]


@pytest.mark.parametrize("body", BODIES)
def test_input_estimate_is_an_upper_bound_of_the_emulators_count(body):
    estimate = estimate_usage(user_id=1, model_id=SONNET, body=body)
    counted = PromptCache().account(Prompt(body), SONNET)
    assert estimate.input_tokens + estimate.cache_write_tokens + estimate.cache_read_tokens >= (
        counted.input_tokens + counted.cache_write + counted.cache_read
    )
    # Fresh prefixes are cache writes in both; the cap tokens bound the emulator's.
    assert estimate.input_tokens + estimate.cache_write_tokens >= (
        counted.input_tokens + counted.cache_write
    )
    # ...and not by much: within the JSON framing of each piece.
    assert (
        estimate.input_tokens + estimate.cache_write_tokens
        <= 3 * counted.input_tokens + 3 * counted.cache_write + 2000
    )


def test_output_estimate_is_max_tokens_up_to_the_ceiling(settings):
    body = {"max_tokens": 128000, "messages": [{"role": "user", "content": "hi"}]}
    assert estimate_usage(user_id=1, model_id=SONNET, body=body).output_tokens == 8192
    body["max_tokens"] = 50
    assert estimate_usage(user_id=1, model_id=SONNET, body=body).output_tokens == 50
    caps = settings.GATEWAY.usage_caps.model_copy(update={"output_estimate_ceiling": 1000})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    body["max_tokens"] = 128000
    assert estimate_usage(user_id=1, model_id=SONNET, body=body).output_tokens == 1000


def test_a_prefix_this_user_sent_recently_is_estimated_as_a_cache_read():
    body = BODIES[4]
    first = estimate_usage(user_id=7, model_id=SONNET, body=body)
    assert first.cache_read_tokens == 0
    assert first.cache_write_1h_tokens > 5000 // 4
    prefixes_remember(user_id=7, prefixes=first.prefixes)
    second = estimate_usage(user_id=7, model_id=SONNET, body=body)
    assert second.cache_read_tokens == first.cache_write_tokens
    assert second.cache_write_tokens == 0
    assert second.cap_tokens < first.cap_tokens
    # Another user, or another model, has no such prefix.
    assert estimate_usage(user_id=8, model_id=SONNET, body=body).cache_read_tokens == 0
    other_model = "us.anthropic.claude-opus-5-5"
    assert estimate_usage(user_id=7, model_id=other_model, body=body).cache_read_tokens == 0


def test_a_longer_conversation_reads_the_remembered_part_and_writes_the_rest():
    system = [{"type": "text", "text": "s" * 4000, "cache_control": {"type": "ephemeral"}}]
    short = {"max_tokens": 10, "system": system, "messages": [{"role": "user", "content": "q1"}]}
    first = estimate_usage(user_id=9, model_id=SONNET, body=short)
    prefixes_remember(user_id=9, prefixes=first.prefixes)
    longer = {
        "max_tokens": 10,
        "system": system,
        "messages": [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q2" * 100, "cache_control": {"type": "ephemeral"}}
                ],
            },
        ],
    }
    second = estimate_usage(user_id=9, model_id=SONNET, body=longer)
    assert second.cache_read_tokens == first.cache_write_tokens
    assert second.cache_write_5m_tokens > 50
