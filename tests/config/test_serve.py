"""`make run`'s server command: web over HTTP and HTTPS, the emulator, jobs, demo sign-in."""

import contextlib
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import httpx2  # the anthropic SDK's own httpx
import pytest

from tests.fixtures.servers import BASE_DIR, free_port, run_process
from tests.fixtures.waiting import wait_for


def test_serve_brings_up_everything_on_the_embedded_default(tmp_path):
    ports = {name: free_port() for name in ("web", "tls", "emulator", "demo")}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GATEWAY_") and key not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        PORT=str(ports["web"]),
        TLS_PORT=str(ports["tls"]),
        GATEWAY_AWS__EMULATOR_PORT=str(ports["emulator"]),
        GATEWAY_AUTH__DEMO_PROVIDER="true",
        GATEWAY_AUTH__DEMO_PROVIDER_PORT=str(ports["demo"]),
        GATEWAY_SERVER__TLS_CERTFILE=str(tmp_path / "cert.pem"),
        GATEWAY_SERVER__TLS_KEYFILE=str(tmp_path / "key.pem"),
    )
    from emulator.certs import generate_self_signed

    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True
    )
    web = f"http://127.0.0.1:{ports['web']}"
    with run_process(
        [sys.executable, "manage.py", "serve", "--no-jobs"], f"{web}/health", env
    ) as process:
        assert httpx.get(f"{web}/health").json() == {"status": "ok"}
        checks = httpx.get(f"{web}/health?check=all", timeout=10)
        assert checks.status_code == 200, checks.text
        assert checks.json()["components"]["aws"]["status"] == "up"  # the emulator answers
        tls = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        secure = httpx.get(f"https://127.0.0.1:{ports['tls']}/health", verify=tls)
        assert secure.status_code == 200
        login = httpx.get(f"{web}/accounts/login/")
        assert "Demo sign-in" in login.text
        discovery = httpx.get(f"http://127.0.0.1:{ports['demo']}/.well-known/openid-configuration")
        assert discovery.json()["issuer"] == f"http://127.0.0.1:{ports['demo']}"
        log = process.log_path.read_text()
    assert f"The gateway is up: {web}" in log
    assert "createapikey" in log
    # Its children (the emulator here) stop with it, however it was stopped.
    emulator_gone = wait_for(lambda: not _listening(ports["emulator"]), timeout=10)
    assert emulator_gone, "the emulator outlived the serve command"


def serve_env(tmp_path, **overrides: str) -> dict[str, str]:
    """The embedded default in its own database, with `overrides`; migrated."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GATEWAY_") and key not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        GATEWAY_SERVER__TLS_AUTOGENERATE="false",
        # One secret for every process of the test (run_process adds the outer environment).
        GATEWAY_SERVER__SECRET_KEY="serve-test-secret-key-that-is-long-enough-0123",
        **overrides,
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True
    )
    return env


@contextlib.contextmanager
def occupied(*ports: int):
    """Hold `ports` as another program would (a port some other process holds stays taken)."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                sock.listen()
        yield


def test_a_second_instance_takes_free_ports_for_the_emulator_and_demo_sign_in(tmp_path):
    web = free_port()
    env = serve_env(tmp_path, PORT=str(web), GATEWAY_AUTH__DEMO_PROVIDER="true")
    url = f"http://127.0.0.1:{web}"
    # The defaults (8100, 8200) are held by someone else: say, the first `make run`.
    with (
        occupied(8100, 8200),
        run_process(
            [sys.executable, "manage.py", "serve", "--no-jobs"], f"{url}/health", env
        ) as process,
    ):
        checks = httpx.get(f"{url}/health?check=aws", timeout=10)
        log = process.log_path.read_text()
        emulator = re.search(r"port 8100 is in use: GATEWAY_AWS__EMULATOR_PORT=(\d+)", log)
        demo = re.search(r"port 8200 is in use: GATEWAY_AUTH__DEMO_PROVIDER_PORT=(\d+)", log)
        assert emulator, log
        assert demo, log
        assert checks.status_code == 200, checks.text  # its own emulator answers, on the new port
        discovery = httpx.get(f"http://127.0.0.1:{demo[1]}/.well-known/openid-configuration")
        assert discovery.json()["issuer"] == f"http://127.0.0.1:{demo[1]}"
    assert wait_for(lambda: not _listening(int(emulator[1])), timeout=10)


@pytest.mark.parametrize(
    "variable", ["GATEWAY_AWS__EMULATOR_PORT", "GATEWAY_AUTH__DEMO_PROVIDER_PORT", "PORT"]
)
def test_an_explicit_port_in_use_stops_with_one_line_naming_the_variable(tmp_path, variable):
    taken = free_port()
    ports = {
        "PORT": str(free_port()),
        "GATEWAY_AWS__EMULATOR_PORT": str(free_port()),
        "GATEWAY_AUTH__DEMO_PROVIDER_PORT": str(free_port()),
        variable: str(taken),
    }
    env = serve_env(tmp_path, GATEWAY_AUTH__DEMO_PROVIDER="true", **ports)
    with occupied(taken):
        result = subprocess.run(
            [sys.executable, "manage.py", "serve", "--no-jobs"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: port {taken} is in use; set {variable} to a free port"
    assert "Traceback" not in result.stdout + result.stderr


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_health_reports_a_down_upstream_with_503(client, settings, db):
    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={
            "aws": settings.GATEWAY.aws.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})
        }
    )
    response = client.get("/health?check=aws")
    assert response.status_code == 503
    assert response.json()["components"]["aws"]["status"] == "down"
    assert client.get("/health?check=bogus").status_code == 400


def _stream_text(
    url: str,
    key: str,
    tokens_per_second: int,
    tokens: int,
    verify,
    under_way: threading.Event | None = None,
) -> dict:
    """Stream a reply; returns how it ended, what arrived and when (seconds). Sets `under_way`
    once the server has answered."""
    started = time.monotonic()
    outcome = {"text": "", "error": None}
    client = anthropic.Anthropic(
        base_url=f"{url}/anthropic",
        api_key=key,
        max_retries=0,
        http_client=httpx2.Client(verify=verify, timeout=60),
    )
    try:
        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=tokens,
            messages=[{"role": "user", "content": "Tell me a story"}],
            extra_headers={
                "x-emulator-reply-tokens": str(tokens),
                "x-emulator-tokens-per-second": str(tokens_per_second),
            },
        ) as stream:
            if under_way is not None:
                under_way.set()
            for text in stream.text_stream:
                outcome["text"] += text
    except (anthropic.APIError, httpx2.HTTPError) as exc:
        outcome["error"] = type(exc).__name__
    outcome["seconds"] = time.monotonic() - started
    return outcome


def test_sigterm_lets_streams_on_both_listeners_finish_within_the_grace_and_cuts_the_rest(
    tmp_path,
):
    """One shutdown for the two listeners of `make run`: the idle one stopping first must not
    cut the other's streams, and a stream past the grace ends for its client at once."""
    from emulator.certs import generate_self_signed

    cert, key_file = generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")
    web, tls = free_port(), free_port()
    env = serve_env(
        tmp_path,
        PORT=str(web),
        TLS_PORT=str(tls),
        GATEWAY_SERVER__TLS_CERTFILE=str(cert),
        GATEWAY_SERVER__TLS_KEYFILE=str(key_file),
        GATEWAY_SERVER__SHUTDOWN_GRACE_SECONDS="3",
        GATEWAY_AWS__EMULATOR_PORT=str(free_port()),
        GATEWAY_AUTH__DEMO_PROVIDER="false",
    )
    api_key = subprocess.run(
        [sys.executable, "manage.py", "createapikey", "streamer@example.com"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    http_url, https_url = f"http://127.0.0.1:{web}", f"https://127.0.0.1:{tls}"
    trust = ssl.create_default_context(cafile=str(cert))
    with (
        run_process(
            [sys.executable, "manage.py", "serve", "--no-jobs"], f"{http_url}/health", env
        ) as process,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        under_way = [threading.Event() for _ in range(3)]
        short_http = pool.submit(_stream_text, http_url, api_key, 20, 30, True, under_way[0])
        short_https = pool.submit(_stream_text, https_url, api_key, 20, 30, trust, under_way[1])
        long_http = pool.submit(_stream_text, http_url, api_key, 5, 200, True, under_way[2])
        # ~1.5 s, ~1.5 s and ~40 s: SIGTERM once all three are under way.
        assert all(event.wait(10) for event in under_way)
        process.send_signal(signal.SIGTERM)
        short_http, short_https, long_http = (
            short_http.result(timeout=30),
            short_https.result(timeout=30),
            long_http.result(timeout=30),
        )
        assert process.wait(timeout=30) is not None
    for finished in (short_http, short_https):
        assert finished["error"] is None, finished
        assert len(finished["text"].split()) == 30
    assert long_http["error"] is not None
    assert 0 < len(long_http["text"].split()) < 200
    assert long_http["seconds"] < 10, long_http  # the grace (3 s) and then the end, not 30 s
    # Each call is recorded once, the cut one too.
    database = sqlite3.connect(tmp_path / "serve.sqlite3")
    rows = sorted(
        database.execute("SELECT output_tokens, error_type FROM usage_usagerecord").fetchall()
    )
    assert rows[:2] == [(30, None), (30, None)]
    assert len(rows) == 3
    cut_tokens, cut_error = rows[2]
    assert cut_error in ("server_shutdown", "client_disconnected")
    assert cut_tokens >= len(long_http["text"].split())
