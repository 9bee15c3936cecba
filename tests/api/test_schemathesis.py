"""Issue 14: every /api operation, fuzzed with schemathesis against the gateway's own OpenAPI
schema — no 500s, every status code documented, every response in its documented shape.

A real gateway process on the test database; schemathesis's CLI in a subprocess, in passes of
its own so that no pass can revoke the credential it runs with:

- admin: every operation except key revocation, as an administrator (API key).
- user: the same as a non-administrator (API key), with schemathesis also generating the
  security parameters (garbage `Authorization` / cookies: the 401s).
- session: the credential operations (/api/keys, /api/token), as an administrator signed in by
  session — the only caller that may create keys and tokens — including DELETE /api/keys/{id}
  (revoking keys never ends a session).
- revoke: DELETE /api/keys/{id} with a throwaway API key and that key's own id: the first
  call revokes it (204), every later one is refused (401).

Bounded (`--max-examples`, one worker, a fixed seed): about a minute on two cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from importlib import import_module
from pathlib import Path

import pytest

from accounts.services import api_key_create, user_get_or_create
from config import clock
from tests.fixtures.servers import free_port, start_gateway

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
SEED = "14"
PASS_TIMEOUT = 150  # seconds: a hard bound on one pass, far above what one takes
CSRF_TOKEN = "schemathesis0csrf0token000000000"  # 32 characters: Django's unmasked form
GATEWAY_ENV = {
    # The fuzzing sends bad credentials on purpose: keep the failed-credential throttle
    # (accounts/throttle.py) out of the way of the good ones.
    "GATEWAY_AUTH__FAILED_AUTH_LIMIT": "1000000",
}


def _session_for(user) -> str:
    """A signed-in session of `user` in the session store, as the dashboard's sign-in makes."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


def _usage_records(user, api_key_id: int) -> None:
    """Rows for the list operations to return (a priced call, and one of an unknown model)."""
    from usage.models import UsageRecord

    now = clock.now()
    common = {
        "user": user,
        "auth_kind": "api_key",
        "route": "anthropic",
        "upstream_status": 200,
        "latency_ms": 120,
        "started_at": now - timedelta(minutes=5),
    }
    UsageRecord.objects.create(
        call_id=uuid.uuid4(),
        api_key_id=api_key_id,
        model_id="us.anthropic.claude-haiku-4-5-20251001-v1:0",
        base_model_id="anthropic.claude-haiku-4-5-20251001-v1:0",
        input_tokens=10,
        output_tokens=20,
        cost_micros=110,
        client_family="curl",
        **common,
    )
    UsageRecord.objects.create(
        call_id=uuid.uuid4(),
        model_id="anthropic.claude-unknown-9",
        base_model_id="anthropic.claude-unknown-9",
        input_tokens=1,
        output_tokens=1,
        cost_micros=None,
        **common,
    )


@pytest.fixture
def api_gateway(transactional_db):
    """The gateway (no upstream needed for /api) with reference data, users, keys and rows."""
    from caps.models import CapType, SetBy
    from caps.services import cap_create
    from costs.services import price_defaults_install
    from gateway.model_defaults import model_aliases_install_defaults

    model_aliases_install_defaults()
    price_defaults_install()
    admin = user_get_or_create(email="fuzz-admin@example.com", admin=True)
    user = user_get_or_create(email="fuzz-user@example.com")
    session_admin = user_get_or_create(email="fuzz-session@example.com", admin=True)
    revoker = user_get_or_create(email="fuzz-revoker@example.com")
    throwaway = api_key_create(user=revoker, name="schemathesis throwaway")
    credentials = {
        "admin": api_key_create(user=admin, name="schemathesis admin").raw,
        "user": api_key_create(user=user, name="schemathesis user").raw,
        "revoke": throwaway.raw,
        "revoke_id": throwaway.api_key.pk,
        "session": _session_for(session_admin),
    }
    user_key = api_key_create(user=user, name="schemathesis records")
    _usage_records(user, user_key.api_key.pk)
    cap_create(user_id=user.pk, set_by=SetBy.USER, cap_type=CapType.DAILY, max_requests=500)
    cap_create(user_id=user.pk, set_by=SetBy.ADMIN, cap_type=CapType.MONTHLY, max_tokens=10**6)
    upstream = f"http://127.0.0.1:{free_port()}"  # nothing listens: /api never calls it
    with start_gateway(upstream_url=upstream, env=GATEWAY_ENV) as server:
        yield server.url, credentials


def _run(url: str, workdir: Path, name: str, *args: str) -> tuple[int, str, float]:
    config = workdir / f"{name}.toml"
    if not config.exists():
        config.write_text("")
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{url}/api/schema",
        "--checks",
        CHECKS,
        "--seed",
        SEED,
        "--workers",
        "1",  # CPython 3.11's ast is not thread-safe: workers > 1 crash hypothesis at times
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        *args,
    ]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=workdir,  # its caches (.schemathesis/, .hypothesis/) stay out of the project
        capture_output=True,
        text=True,
        timeout=PASS_TIMEOUT,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"},
        check=False,
    )
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    print(f"--- schemathesis pass {name!r}: exit {done.returncode} in {elapsed:.1f} s")
    print(_summary(output))
    return done.returncode, output, elapsed


def _summary(output: str) -> str:
    """The failures and errors sections onward (the whole output if there are none)."""
    match = re.search(r"^=+ (ERRORS|FAILURES) =+$", output, flags=re.MULTILINE)
    text = output[match.start() :] if match else output[-3000:]
    return text if len(text) < 40_000 else text[:20_000] + "\n[...]\n" + text[-20_000:]


def test_every_api_operation_survives_schemathesis(api_gateway, tmp_path):
    url, credentials = api_gateway
    (tmp_path / "revoke.toml").write_text(f'[parameters]\n"path.id" = {credentials["revoke_id"]}\n')
    session_headers = [
        "-H",
        f"Cookie: sessionid={credentials['session']}; csrftoken={CSRF_TOKEN}",
        "-H",
        f"X-CSRFToken: {CSRF_TOKEN}",
    ]
    passes = [
        (
            "admin",
            "-H",
            f"X-API-Key: {credentials['admin']}",
            "--exclude-path",
            "/api/keys/{id}",
            "--max-examples",
            "30",
        ),
        (
            "user",
            "-H",
            f"X-API-Key: {credentials['user']}",
            "--exclude-path",
            "/api/keys/{id}",
            "--max-examples",
            "15",
        ),
        (
            "session",
            *session_headers,
            "--include-path-regex",
            "^/api/(keys|token)",
            "--generation-with-security-parameters",
            "false",
            "--max-examples",
            "30",
        ),
        (
            "revoke",
            "-H",
            f"X-API-Key: {credentials['revoke']}",
            "--include-path",
            "/api/keys/{id}",
            "--max-examples",
            "15",
        ),
    ]
    failed, total = [], 0.0
    for name, *args in passes:
        code, output, elapsed = _run(url, tmp_path, name, *args)
        total += elapsed
        if code != 0:
            failed.append(f"pass {name!r} (exit {code}):\n{_summary(output)}")
    print(f"--- schemathesis: {total:.1f} s in all")
    assert not failed, "schemathesis found problems in /api:\n\n" + "\n\n".join(failed)
