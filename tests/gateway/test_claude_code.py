"""Claude Code itself (pinned from npm by `make test`) pointed at the gateway's /bedrock."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from accounts.services import api_key_create, user_get_or_create
from caps.services import cap_create
from tests.fixtures.gateways import gateway_idle
from tests.fixtures.servers import BASE_DIR
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE = BASE_DIR / "var" / "claude-code" / "node_modules" / ".bin" / "claude"


def run_claude(stack, tmp_path: Path, prompt: str, **env: str) -> tuple[int, dict]:
    assert CLAUDE.exists(), f"Claude Code is missing at {CLAUDE}: run `make test` (npm install)"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "ANTHROPIC_BEDROCK_BASE_URL": f"{stack.gateway.url}/bedrock",
        "AWS_REGION": "us-east-1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        **env,
    }
    result = subprocess.run(
        [str(CLAUDE), "-p", prompt, "--output-format", "json"],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout)


def new_key(email: str) -> tuple[object, str]:
    user = user_get_or_create(email=email)
    return user, api_key_create(user=user, name="claude-code").raw


def test_claude_code_with_a_bearer_key_works_and_is_metered(stack, reference_data, tmp_path):
    user, key = new_key("coder@example.com")
    code, result = run_claude(stack, tmp_path, "Say hello", AWS_BEARER_TOKEN_BEDROCK=key)
    assert code == 0, result
    assert result["is_error"] is False
    records = wait_for(
        lambda: list(UsageRecord.objects.filter(user=user, route="bedrock.invoke_stream"))
    )
    assert len(records) == 1
    record = records[0]
    assert record.client_family == "claude-cli"
    assert record.session_id == result["session_id"]
    assert record.cache_write_5m_tokens == result["usage"]["cache_creation_input_tokens"]
    assert record.output_tokens == result["usage"]["output_tokens"]
    # Claude Code's own list-price arithmetic agrees with ours to the micro-dollar.
    model_cost = next(iter(result["modelUsage"].values()))["costUSD"]
    assert record.cost_micros == round(model_cost * 1_000_000)


@pytest.mark.parametrize("mode", ["bearer", "header"])
@pytest.mark.parametrize(
    "model",
    [None, "us.anthropic.claude-haiku-4-5-20251001-v1:0", "us.anthropic.claude-sonnet-4-6"],
    ids=["default-model", "haiku-4-5", "sonnet-4-6"],
)
def test_say_hello_ends_in_a_few_calls_on_every_model(stack, reference_data, tmp_path, model, mode):
    """The emulator must not trap Claude Code in a tool loop (it once answered tool_use to the
    word "tool" in Claude Code's own system reminders, 5,000 calls in 4 minutes)."""
    user, key = new_key(f"hello-{mode}-{model or 'default'}@example.com")
    auth = (
        {"AWS_BEARER_TOKEN_BEDROCK": key}
        if mode == "bearer"
        else {"CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1", "ANTHROPIC_CUSTOM_HEADERS": f"X-API-Key: {key}"}
    )
    if model:
        auth["ANTHROPIC_MODEL"] = model
    code, result = run_claude(stack, tmp_path, "Say hello", **auth)
    assert code == 0, result
    assert result["is_error"] is False
    assert gateway_idle(stack.gateway)
    records = UsageRecord.objects.filter(user=user)
    assert 1 <= records.count() <= 5, list(records.values_list("route", "model_id"))
    if model:
        assert records.filter(model_id=model).exists()


def test_claude_code_with_the_key_in_a_custom_header(stack, reference_data, tmp_path):
    _, key = new_key("header@example.com")
    code, result = run_claude(
        stack,
        tmp_path,
        "Hello from header mode",
        CLAUDE_CODE_SKIP_BEDROCK_AUTH="1",
        ANTHROPIC_CUSTOM_HEADERS=f"X-API-Key: {key}",
    )
    assert code == 0, result
    assert result["is_error"] is False


def test_claude_code_shows_which_cap_stopped_it(stack, reference_data, tmp_path):
    user, key = new_key("capped-coder@example.com")
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    code, result = run_claude(
        stack,
        tmp_path,
        "Hello",
        CLAUDE_CODE_SKIP_BEDROCK_AUTH="1",
        ANTHROPIC_CUSTOM_HEADERS=f"X-API-Key: {key}",
    )
    assert code == 0, result
    code, result = run_claude(
        stack,
        tmp_path,
        "Hello again",
        CLAUDE_CODE_SKIP_BEDROCK_AUTH="1",
        ANTHROPIC_CUSTOM_HEADERS=f"X-API-Key: {key}",
    )
    assert code == 1
    assert result["is_error"] is True
    assert "Daily usage cap exceeded: 1/1 requests. Resets at" in result["result"]
    assert UsageRecord.objects.filter(user=user).count() == 1
