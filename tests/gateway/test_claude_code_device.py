"""Claude Code without a static key: device tokens through a real gateway, and the shipped
helper (tools/gateway_token.py) as the pinned Claude Code's `apiKeyHelper`, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.test import Client

from accounts.device import (
    device_authorization_create,
    device_authorization_decide,
    device_revoke,
    device_token_exchange,
)
from accounts.models import Device, DeviceToken
from accounts.services import user_deactivate, user_get_or_create
from tests.fixtures.gateways import GATEWAY_ENV, gateway_idle
from tests.fixtures.servers import BASE_DIR, Server, start_gateway
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE = BASE_DIR / "var" / "claude-code" / "node_modules" / ".bin" / "claude"
HELPER = BASE_DIR / "tools" / "gateway_token.py"
# Short enough that the test sees a token expire and the helper refresh it.
SHORT_LIFETIME = 20


def signed_in_device(email: str) -> tuple[object, dict]:
    """A user and the token answer of a device they approved (the services, in-process)."""
    user = user_get_or_create(email=email)
    asked = device_authorization_create(client_id="tests", device_name="test box")
    device_authorization_decide(authorization_id=asked.authorization.pk, user=user, approve=True)
    issued = device_token_exchange(device_code=asked.device_code, client_id="tests")
    return user, issued.as_response()


def messages_call(server: Server, headers: dict) -> httpx.Response:
    return httpx.post(
        f"{server.url}/anthropic/v1/messages",
        headers={"anthropic-version": "2023-06-01", **headers},
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=30,
    )


# --- Device tokens through a real gateway process --------------------------------------------


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_device_tokens_work_on_the_proxy_and_are_metered(stack, reference_data, header):
    user, tokens = signed_in_device(f"device-{header}@example.com")
    token = tokens["access_token"]
    sent = (
        {"authorization": f"Bearer {token}"} if header == "authorization" else {"x-api-key": token}
    )
    response = messages_call(stack.gateway, sent)
    assert response.status_code == 200, response.text
    record = wait_for(lambda: UsageRecord.objects.filter(user=user).first())
    assert record.auth_kind == "device"
    assert record.api_key_id is None


def test_device_tokens_work_on_bedrock(stack, reference_data):
    user, tokens = signed_in_device("device-bedrock@example.com")
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    response = httpx.post(
        f"{stack.gateway.url}/bedrock/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke",
        headers={"authorization": f"Bearer {tokens['access_token']}"},
        json=body,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert wait_for(lambda: UsageRecord.objects.filter(user=user).exists())


def test_revoking_a_device_stops_it_at_once_in_the_gateway(stack, reference_data):
    _, tokens = signed_in_device("device-revoked@example.com")
    auth = {"authorization": f"Bearer {tokens['access_token']}"}
    assert messages_call(stack.gateway, auth).status_code == 200  # warm in the gateway
    device_revoke(device=Device.objects.get(user__email="device-revoked@example.com"))
    response = messages_call(stack.gateway, auth)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_deactivating_the_user_stops_the_device_at_once_in_the_gateway(stack, reference_data):
    user, tokens = signed_in_device("device-deactivated@example.com")
    auth = {"x-api-key": tokens["access_token"]}
    assert messages_call(stack.gateway, auth).status_code == 200
    user_deactivate(user=user)
    assert messages_call(stack.gateway, auth).status_code == 401


def test_the_gateway_serves_the_device_flow(stack, reference_data):
    """The endpoints over real HTTP, form-encoded, as the helper calls them."""
    response = httpx.post(f"{stack.gateway.url}/oauth/device/code", data={"client_id": "x"})
    assert response.status_code == 200
    body = response.json()
    assert body["verification_uri"] == f"{stack.gateway.url}/device"
    polled = httpx.post(
        f"{stack.gateway.url}/oauth/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": body["device_code"],
            "client_id": "x",
        },
    )
    assert polled.status_code == 400
    assert polled.json()["error"] == "authorization_pending"


# --- The helper and the real Claude Code ----------------------------------------------------


@pytest.fixture(scope="module")
def short_gateway(django_db_setup, django_db_blocker, emulator) -> Iterator[Server]:
    """A gateway whose device tokens live SHORT_LIFETIME seconds."""
    env = {**GATEWAY_ENV, "GATEWAY_AUTH__DEVICE_TOKEN_LIFETIME_SECONDS": str(SHORT_LIFETIME)}
    with start_gateway(upstream_url=emulator.url, env=env) as server:
        yield server


def helper_env(home: Path) -> dict[str, str]:
    # No DISPLAY: the helper must not try to open a browser in a test.
    return {"PATH": os.environ["PATH"], "HOME": str(home)}


def approve_when_asked(helper: subprocess.Popen, user, lines: list[str]) -> str:
    """Read the helper's stderr until it shows the code, approve that code in a signed-in
    session (Django's test client, on the same database), and return the code."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = helper.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "enter the code" in line:
            user_code = line.rsplit(" ", 1)[-1].strip()
            browser = Client()
            browser.force_login(user)
            page = browser.post("/device", {"user_code": user_code, "decision": "approve"})
            assert page.status_code == 200, page.content
            return user_code
    raise AssertionError(f"the helper never showed a code: {lines}")


def run_claude(server: Server, home: Path, cwd: Path, prompt: str) -> tuple[int, dict]:
    assert CLAUDE.exists(), f"Claude Code is missing at {CLAUDE}: run `make test` (npm install)"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        # Only the base URL: the credential comes from apiKeyHelper in settings.json.
        "ANTHROPIC_BASE_URL": f"{server.url}/anthropic",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    result = subprocess.run(
        [str(CLAUDE), "-p", prompt, "--output-format", "json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_claude_code_signs_in_with_the_device_flow_and_refreshes(
    short_gateway, reference_data, tmp_path
):
    user = user_get_or_create(email="claude-device@example.com")
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    url = short_gateway.url
    helper_cmd = [sys.executable, str(HELPER), "--url", url, "--no-browser"]

    # 1. First sign-in, in a terminal: the helper shows a code; the user approves it.
    helper = subprocess.Popen(
        [*helper_cmd, "--timeout", "60", "--name", "test laptop"],
        env=helper_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    approve_when_asked(helper, user, lines)
    out, err = helper.communicate(timeout=30)
    assert helper.returncode == 0, (lines, err)
    token = out.strip()
    assert token.startswith("SSOD_")
    assert f"{url}/device" in "".join(lines)
    cache = home / ".cache" / "gateway" / f"127.0.0.1_{short_gateway.port}.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    assert json.loads(cache.read_text())["access_token"] == token
    device = Device.objects.get(user=user)
    assert device.name == "test laptop"

    # 2. Claude Code with apiKeyHelper only: it answers, metered to that user.
    (home / ".claude" / "settings.json").write_text(
        json.dumps(
            {
                "apiKeyHelper": " ".join([*helper_cmd, "--timeout", "5"]),
                "env": {"CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "1000"},
            }
        )
    )
    code, result = run_claude(short_gateway, home, tmp_path, "Say hello")
    assert code == 0, result
    assert result["is_error"] is False
    assert gateway_idle(short_gateway)
    first = list(UsageRecord.objects.filter(user=user))
    assert first
    assert all(r.auth_kind == "device" for r in first)
    assert any(r.client_family == "claude-cli" for r in first)

    # 3. The token expires; the next run's helper refreshes it (no device flow) and it works.
    expires_at = json.loads(cache.read_text())["expires_at"]
    # Past the token's expiry in real time (the gateway process has its own clock).
    time.sleep(max(0.0, expires_at - time.time()) + 0.5)
    assert messages_call(short_gateway, {"x-api-key": token}).status_code == 401
    refresh_before = Device.objects.get(pk=device.pk).refresh_token_hash
    code, result = run_claude(short_gateway, home, tmp_path, "Say hello again")
    assert code == 0, result
    assert result["is_error"] is False
    assert gateway_idle(short_gateway)
    assert Device.objects.get(pk=device.pk).refresh_token_hash != refresh_before
    assert DeviceToken.objects.filter(device=device).count() == 2
    assert Device.objects.filter(user=user).count() == 1
    renewed = json.loads(cache.read_text())["access_token"]
    assert renewed != token
    assert UsageRecord.objects.filter(user=user).count() > len(first)

    # 4. The device is signed out: the token dies at once, and once the cached one is due for
    #    renewal the helper falls back to the device flow (and fails when nobody approves).
    device_revoke(device=device, actor=user)
    assert messages_call(short_gateway, {"x-api-key": renewed}).status_code == 401
    cached = json.loads(cache.read_text())
    cache.write_text(json.dumps({**cached, "expires_at": time.time() - 1}))
    started = time.monotonic()
    result = subprocess.run(
        [*helper_cmd, "--timeout", "3"],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"{url}/device" in result.stderr
    assert "enter the code" in result.stderr
    assert time.monotonic() - started < 15


def test_the_helper_prints_the_cached_token_without_calling_the_gateway(tmp_path):
    """A fresh cached token is printed as is (the gateway is not even reachable here)."""
    home = tmp_path / "home"
    url = "http://127.0.0.1:9"  # discard port: nothing answers
    cache = home / ".cache" / "gateway" / "127.0.0.1_9.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(
        json.dumps(
            {
                "url": url,
                "client_id": "gateway-token",
                "access_token": "SSOD_cached",
                "refresh_token": "SSODR_x",
                "lifetime": 28800,
                "expires_at": time.time() + 3600,
            }
        )
    )
    result = subprocess.run(
        [sys.executable, str(HELPER), "--url", url],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "SSOD_cached\n"
    # An unreachable gateway with nothing usable cached: a clear failure, non-zero.
    cache.write_text(json.dumps({"url": url, "access_token": "x", "expires_at": 0}))
    result = subprocess.run(
        [sys.executable, str(HELPER), "--url", url, "--timeout", "2"],
        env=helper_env(home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot reach" in result.stderr


# --- The status line ------------------------------------------------------------------------

STATUS = BASE_DIR / "tools" / "gateway_status.py"


def write_helper_cache(home: Path, server: Server, tokens: dict) -> None:
    cache = home / ".cache" / "gateway" / f"127.0.0.1_{server.port}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(
        json.dumps(
            {
                "url": server.url,
                "client_id": "tests",
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "lifetime": tokens["expires_in"],
                "expires_at": time.time() + tokens["expires_in"],
            }
        )
    )


def run_status(server: Server, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(STATUS), "--url", server.url],
        env=helper_env(home),
        input=json.dumps({"session_id": "x"}),  # what Claude Code sends; not needed
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_status_line_shows_spend_today_and_the_tightest_cap(stack, reference_data, tmp_path):
    from caps.services import cap_create

    user, tokens = signed_in_device("status-line@example.com")
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=10)
    cap_create(user_id=user.pk, cap_type="monthly", set_by="user", max_requests=1000)
    assert messages_call(stack.gateway, {"x-api-key": tokens["access_token"]}).status_code == 200
    assert gateway_idle(stack.gateway)
    record = wait_for(lambda: UsageRecord.objects.filter(user=user).first())
    home = tmp_path / "home"
    write_helper_cache(home, stack.gateway, tokens)
    result = run_status(stack.gateway, home)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert "\n" not in line
    assert line.startswith(f"gateway ${record.cost_micros / 1_000_000:,.2f} today")
    assert "daily cap 10%" in line
    assert "9 requests left" in line
    assert "resets 00:00 UTC" in line


def test_the_status_line_never_starts_the_device_flow(stack, reference_data, tmp_path):
    from accounts.models import DeviceAuthorization

    result = run_status(stack.gateway, tmp_path / "home")
    assert result.returncode == 0
    assert result.stdout.strip() == "gateway: not signed in (run gateway_token.py)"
    assert not DeviceAuthorization.objects.exists()


def test_the_status_line_warns_from_80_percent(stack, reference_data, tmp_path):
    from caps.services import cap_create

    user, tokens = signed_in_device("status-warn@example.com")
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=5)
    home = tmp_path / "home"
    write_helper_cache(home, stack.gateway, tokens)
    for _ in range(4):
        assert (
            messages_call(stack.gateway, {"x-api-key": tokens["access_token"]}).status_code == 200
        )
    assert gateway_idle(stack.gateway)
    wait_for(lambda: UsageRecord.objects.filter(user=user).count() == 4)
    line = run_status(stack.gateway, home).stdout.strip()
    assert "⚠ daily cap 80%" in line
    assert "1 requests left" in line
    assert "reached" not in line
    assert messages_call(stack.gateway, {"x-api-key": tokens["access_token"]}).status_code == 200
    assert gateway_idle(stack.gateway)
    wait_for(lambda: UsageRecord.objects.filter(user=user).count() == 5)
    line = run_status(stack.gateway, home).stdout.strip()
    assert "⚠ daily cap 100% reached" in line


def test_the_status_line_shows_spend_without_any_cap(stack, reference_data, tmp_path):
    from tests.fixtures.personas import policy_clear

    user, tokens = signed_in_device("status-no-cap@example.com")

    def caps_status() -> dict:
        return httpx.get(
            f"{stack.gateway.url}/api/usage/caps/status",
            headers={"x-api-key": tokens["access_token"]},
            timeout=15,
        ).json()

    policy_clear()  # no cap at all: the gateway sees the policy change within a second
    assert wait_for(lambda: caps_status()["caps"] == [])
    assert messages_call(stack.gateway, {"x-api-key": tokens["access_token"]}).status_code == 200
    assert gateway_idle(stack.gateway)
    records = wait_for(lambda: list(UsageRecord.objects.filter(user=user)))
    status = caps_status()
    assert status["caps"] == []
    cost = records[0].cost_micros
    assert cost > 0
    assert status["spend_today_cents"] == pytest.approx(cost / 10_000)
    home = tmp_path / "home"
    write_helper_cache(home, stack.gateway, tokens)
    line = run_status(stack.gateway, home).stdout.strip()
    assert line == f"gateway ${cost / 1_000_000:,.2f} today"
