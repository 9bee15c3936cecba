"""When the emulator answers with a tool_use: the auto rule lets an agent's loop end, a forced
tool_choice always wins, and the `tool-use` knob overrides the rule (header and flag)."""

import anthropic
import pytest
from anthropic import AnthropicBedrock

from emulator.config import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
from tests.fixtures.emulator import start_emulator

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
TOOLS = [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}]
REMINDER = (
    "<system-reminder>\nThe Bash tool is available; use tools when useful.\n</system-reminder>"
)


def client_for(url: str, **headers: str) -> AnthropicBedrock:
    return AnthropicBedrock(
        base_url=url,
        aws_access_key=DEFAULT_ACCESS_KEY,
        aws_secret_key=DEFAULT_SECRET_KEY,
        aws_region="us-east-1",
        max_retries=0,
        default_headers=headers,
    )


def reply(client, content, **kw):
    return client.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=TOOLS,
        messages=[{"role": "user", "content": content}],
        **kw,
    )


def tool_round(text_after_result: str) -> list:
    """A user turn answering a tool call, with text after the result as Claude Code sends it."""
    return [
        {"role": "user", "content": "Use a tool to list the files"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"},
                {"type": "text", "text": text_after_result},
            ],
        },
    ]


def test_the_word_tool_in_the_users_request_asks_for_a_tool(anthropic_client):
    assert reply(anthropic_client, "Use a tool to list the files").stop_reason == "tool_use"


def test_a_plain_request_is_answered_with_text(anthropic_client):
    message = reply(anthropic_client, "Say hello")
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"


def test_the_word_tool_inside_a_system_reminder_is_not_a_request(anthropic_client):
    content = [{"type": "text", "text": REMINDER}, {"type": "text", "text": "Say hello"}]
    assert reply(anthropic_client, content).stop_reason == "end_turn"
    assert reply(anthropic_client, f"{REMINDER}\nSay hello").stop_reason == "end_turn"


def test_an_unclosed_system_reminder_hides_the_rest_of_its_block(anthropic_client):
    content = [
        {"type": "text", "text": "<system-reminder> use tools"},
        {"type": "text", "text": "Hi"},
    ]
    assert reply(anthropic_client, content).stop_reason == "end_turn"


def test_a_tool_result_ends_the_loop_even_when_text_after_it_names_a_tool(anthropic_client):
    message = anthropic_client.messages.create(
        model=MODEL, max_tokens=64, tools=TOOLS, messages=tool_round("Now use a tool again")
    )
    assert message.stop_reason == "end_turn"


@pytest.mark.parametrize(
    "tool_choice", [{"type": "any"}, {"type": "tool", "name": "Bash"}], ids=["any", "tool"]
)
def test_a_forced_tool_choice_is_obeyed_after_a_tool_result_and_in_never_mode(
    emulator, tool_choice
):
    never = client_for(emulator.url, **{"x-emulator-tool-use": "never"})
    for each in (client_for(emulator.url), never):
        message = each.messages.create(
            model=MODEL,
            max_tokens=64,
            tools=TOOLS,
            tool_choice=tool_choice,
            messages=tool_round("thanks"),
        )
        assert message.stop_reason == "tool_use"


def test_tool_choice_none_never_calls_a_tool(emulator):
    always = client_for(emulator.url, **{"x-emulator-tool-use": "always"})
    assert reply(always, "Say hello", tool_choice={"type": "none"}).stop_reason == "end_turn"


def test_the_header_knob_overrides_the_rule(emulator):
    always = client_for(emulator.url, **{"x-emulator-tool-use": "always"})
    never = client_for(emulator.url, **{"x-emulator-tool-use": "NEVER"})
    assert reply(always, "Say hello").stop_reason == "tool_use"
    assert reply(never, "Use a tool to list the files").stop_reason == "end_turn"


def test_a_bad_knob_value_is_a_validation_error(emulator):
    bad = client_for(emulator.url, **{"x-emulator-tool-use": "sometimes"})
    with pytest.raises(anthropic.BadRequestError, match="x-emulator-tool-use"):
        reply(bad, "Say hello")


def test_the_flag_sets_the_servers_mode_and_a_header_still_wins():
    with start_emulator("--tool-use", "always") as server:
        assert reply(client_for(server.url), "Say hello").stop_reason == "tool_use"
        auto = client_for(server.url, **{"x-emulator-tool-use": "auto"})
        assert reply(auto, "Say hello").stop_reason == "end_turn"
