"""server.public_url: what it derives (configuration and Django settings), and the CSRF
failure that names it. The same behaviour through a real proxy: test_behind_tls_proxy.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import Client

from config.conf import BASE_DIR, ConfigError, load_config

PUBLIC = "GATEWAY_SERVER__PUBLIC_URL"


def test_allowed_hosts_default_to_loopback():
    server = load_config({}).server
    assert server.allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]
    assert server.public_url is None
    assert server.effective_allowed_hosts == ["127.0.0.1", "localhost", "[::1]"]
    assert server.effective_csrf_trusted_origins == []


def test_public_url_adds_its_host_and_origin():
    server = load_config(
        {
            PUBLIC: "HTTPS://Gateway.Example.com:443/",
            "GATEWAY_SERVER__ALLOWED_HOSTS": "internal.example.net",
            "GATEWAY_SERVER__CSRF_TRUSTED_ORIGINS": "https://other.example.com",
        }
    ).server
    assert server.public_url == "https://gateway.example.com"
    assert server.public_https
    assert server.effective_allowed_hosts == ["internal.example.net", "gateway.example.com"]
    assert server.effective_csrf_trusted_origins == [
        "https://other.example.com",
        "https://gateway.example.com",
    ]


@pytest.mark.parametrize(
    ("value", "public_url", "host"),
    [
        ("https://gw.example.com:8443", "https://gw.example.com:8443", "gw.example.com"),
        ("http://10.0.0.5:80", "http://10.0.0.5", "10.0.0.5"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443", "[2001:db8::1]"),
        ("", None, None),
    ],
)
def test_public_url_forms(value, public_url, host):
    server = load_config({PUBLIC: value}).server
    assert server.public_url == public_url
    assert server.public_host == host


@pytest.mark.parametrize(
    "value",
    [
        "gateway.example.com",
        "ftp://gateway.example.com",
        "https://gw.example.com/prefix",
        "https://",
    ],
)
def test_bad_public_url_names_the_variable(value):
    with pytest.raises(ConfigError, match=rf"server\.public_url: .*\(from {PUBLIC}\)"):
        load_config({PUBLIC: value})


def _django_settings(env: dict[str, str]) -> dict:
    """The settings a server process started with `env` gets (a fresh interpreter)."""
    names = [
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "SECURE_PROXY_SSL_HEADER",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_PRELOAD",
        "ACCOUNT_DEFAULT_HTTP_PROTOCOL",
    ]
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    ours = tuple(
        f"GATEWAY_SERVER__{name}"
        for name in ("PUBLIC_URL", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "HSTS_")
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    output = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def test_settings_behind_an_https_proxy():
    assert _django_settings({PUBLIC: "https://gateway.example.com"}) == {
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "[::1]", "gateway.example.com"],
        "CSRF_TRUSTED_ORIGINS": ["https://gateway.example.com"],
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_PRELOAD": False,
        "ACCOUNT_DEFAULT_HTTP_PROTOCOL": "https",
    }


def test_settings_without_public_url_trust_no_proxy_header():
    assert _django_settings({}) == {
        "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "[::1]"],
        "CSRF_TRUSTED_ORIGINS": [],
        "SECURE_PROXY_SSL_HEADER": None,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_PRELOAD": False,
        "ACCOUNT_DEFAULT_HTTP_PROTOCOL": "http",
    }


@pytest.mark.django_db
def test_csrf_failure_page_names_the_setting():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/logout/", HTTP_ORIGIN="https://gateway.example.com")
    assert response.status_code == 403
    page = response.content.decode()
    assert "GATEWAY_SERVER__PUBLIC_URL=https://gateway.example.com" in page
    assert "sent from https://gateway.example.com" in page
    assert "saw the request as http://testserver" in page


@pytest.mark.django_db
def test_csrf_failure_on_the_api_is_json(django_user_model):
    user = django_user_model.objects.create_user(username="u", email="u@example.com")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/keys", {"name": "x"}, HTTP_ORIGIN="https://gateway.example.com")
    assert response.status_code == 403
    body = response.json()
    assert body["setting"] == "GATEWAY_SERVER__PUBLIC_URL"
    assert "set GATEWAY_SERVER__PUBLIC_URL to https://gateway.example.com" in body["detail"]


@pytest.mark.django_db
def test_csrf_failure_with_public_url_set_names_the_trusted_origins(settings):
    server = settings.GATEWAY.server.model_copy(
        update={"public_url": "https://gateway.example.com"}
    )
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"server": server})
    response = Client(enforce_csrf_checks=True).post(
        "/accounts/logout/", HTTP_ORIGIN="https://evil.example.net"
    )
    assert response.status_code == 403
    page = response.content.decode()
    assert "not this gateway&#x27;s public URL (https://gateway.example.com)" in page
    assert "GATEWAY_SERVER__CSRF_TRUSTED_ORIGINS=https://evil.example.net" in page
