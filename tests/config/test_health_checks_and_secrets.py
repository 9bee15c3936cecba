"""Issue #14: /health hardening, secrets out of reprs and debug pages, private data files."""

from __future__ import annotations

import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from config.conf import load_config
from tests.fixtures.servers import run_manage, start_gateway

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def counting_upstream():
    """A real HTTP server standing in for the AWS endpoint, counting the probes it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the signed count-tokens probe
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def aws_at(settings, forget_health_results):
    def point(url: str, **server) -> None:
        gateway = settings.GATEWAY
        settings.GATEWAY = gateway.model_copy(
            update={
                "aws": gateway.aws.model_copy(update={"endpoint_url": url}),
                "server": gateway.server.model_copy(update=server),
            }
        )

    return point


@pytest.mark.django_db
def test_repeated_component_checks_make_one_outbound_call(client, counting_upstream, aws_at):
    url, hits = counting_upstream
    aws_at(url)
    response = client.get("/health?check=" + ",".join(["aws"] * 50))
    assert response.status_code == 200
    assert list(response.json()["components"]) == ["aws"]
    assert client.get("/health?check=aws,all,aws").json()["components"].keys() == {
        "db",
        "cache",
        "aws",
    }
    assert len(hits) == 1  # de-duplicated, then kept for a few seconds


@pytest.mark.django_db
def test_component_checks_need_loopback_or_the_metrics_token(client, counting_upstream, aws_at):
    url, hits = counting_upstream
    aws_at(url, metrics_token=SecretStr("t" * 40))
    assert client.get("/health", REMOTE_ADDR="10.1.2.3").json() == {"status": "ok"}
    refused = client.get("/health?check=aws", REMOTE_ADDR="10.1.2.3")
    assert refused.status_code == 403
    wrong = client.get("/health?check=aws", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer x")
    assert wrong.status_code == 403
    assert hits == []
    allowed = client.get(
        "/health?check=aws", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer " + "t" * 40
    )
    assert allowed.status_code == 200
    assert client.get("/health?check=aws", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/health?check=bogus").status_code == 400


@pytest.mark.django_db(transaction=True)
def test_plain_health_answers_any_host_while_other_pages_check_it(emulator):
    env = {"GATEWAY_SERVER__ALLOWED_HOSTS": "gateway.example.com"}
    with start_gateway(upstream_url=emulator.url, env=env) as gateway:
        probe = httpx.get(f"{gateway.url}/health", headers={"Host": "10.0.0.7:8000"})
        assert probe.status_code == 200
        assert probe.json() == {"status": "ok"}
        other = httpx.get(f"{gateway.url}/api/keys", headers={"Host": "10.0.0.7:8000"})
        assert other.status_code == 400  # Django's DisallowedHost, as before


def test_debug_is_refused_off_loopback_at_start_up():
    result = run_manage(
        "check", env={"GATEWAY_SERVER__DEBUG": "true", "GATEWAY_SERVER__HOST": "10.0.0.5"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: server: debug: true is refused unless server.host is loopback"
    ]
    for host in ("127.0.0.1", "::1", "localhost"):
        load_config({"GATEWAY_SERVER__DEBUG": "true", "GATEWAY_SERVER__HOST": host})


SECRETS = {
    "GATEWAY_AWS__ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE",
    "GATEWAY_AWS__SECRET_ACCESS_KEY": "aws-secret-value-1234567890",
    "GATEWAY_AWS__SESSION_TOKEN": "aws-session-token-value-123",
    "GATEWAY_AWS__BEDROCK_API_KEY": "bedrock-api-key-value-123",
    "GATEWAY_JWT__SIGNING_KEY": "jwt-signing-key-value-0123456789abcdef",
    "GATEWAY_SERVER__SECRET_KEY": "django-secret-key-value-0123456789abcdef",
    "GATEWAY_SERVER__METRICS_TOKEN": "metrics-token-value-123",
    "GATEWAY_AUTH__OIDC__CORP__CLIENT_ID": "corp",
    "GATEWAY_AUTH__OIDC__CORP__SECRET": "oidc-client-secret-value",
    "GATEWAY_AUTH__OIDC__CORP__SERVER_URL": "https://login.example.com",
    "REDIS_URL": "redis://:redis-password-value@127.0.0.1:6379/0",
}
SECRET_VALUES = [v for k, v in SECRETS.items() if k not in ("REDIS_URL",) and "ID" not in k]


def test_secrets_never_appear_in_the_config_repr():
    config = load_config(SECRETS)
    text = repr(config) + str(config)
    for value in [*SECRET_VALUES, "redis-password-value"]:
        assert value not in text
    assert config.aws.secret_access_key.get_secret_value() == "aws-secret-value-1234567890"
    assert config.jwt.signing_key.get_secret_value().startswith("jwt-signing-key")


def test_the_debug_page_never_shows_aws_or_jwt_secrets(rf, settings):
    from django.views.debug import technical_500_response

    settings.DEBUG = True
    settings.GATEWAY = load_config(SECRETS)
    aws = settings.GATEWAY.aws  # a local in the traceback's frame, as in upstream code
    try:
        raise RuntimeError(f"boom {aws.region}")
    except RuntimeError:
        response = technical_500_response(rf.get("/x"), *sys.exc_info())
    page = response.content.decode()
    assert "boom us-east-1" in page
    assert "GATEWAY" in page
    for value in SECRET_VALUES:
        assert value not in page


def test_data_dir_is_private_and_so_are_the_database_and_secret(tmp_path):
    data = tmp_path / "data"
    result = run_manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.db import connection; connection.ensure_connection()",
        env={"GATEWAY_SERVER__DATA_DIR": str(data)},
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "gateway.sqlite3").stat().st_mode) == 0o600


@pytest.fixture
def aws_credentials(settings, forget_health_results):
    from gateway import upstream

    def use(**aws) -> None:
        settings.GATEWAY = settings.GATEWAY.model_copy(
            update={"aws": settings.GATEWAY.aws.model_copy(update=aws)}
        )
        upstream._credentials.cache_clear()
        forget_health_results()

    yield use
    upstream._credentials.cache_clear()


@pytest.mark.django_db
def test_the_aws_check_proves_the_credentials_with_a_signed_call(client, emulator, aws_credentials):
    """Any answer used to count as "up": a wrong secret key went unnoticed."""
    aws_credentials(
        endpoint_url=emulator.url, access_key_id="AKIDEXAMPLE", secret_access_key=SecretStr("no")
    )
    refused = client.get("/health?check=aws")
    assert refused.status_code == 503
    aws = refused.json()["components"]["aws"]
    assert aws["status"] == "down"
    assert aws["error"].startswith("credentials refused")
    assert emulator.url.split("//")[1] not in refused.content.decode()
    aws_credentials(endpoint_url=emulator.url, access_key_id=None, secret_access_key=None)
    accepted = client.get("/health?check=aws")
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["components"]["aws"]["status"] == "up"
