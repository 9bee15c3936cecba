"""The local OpenID Connect provider on its own: discovery, codes, client auth, PKCE, tokens."""

from __future__ import annotations

import base64
import hashlib
import sys
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest

from accounts.demo_idp import DemoIdP
from tests.fixtures.servers import free_port, run_process

REDIRECT = "http://gateway.test/accounts/oidc/demo/login/callback/"


@pytest.fixture
def cli_idp():
    """A private provider of its own whose one client is "cli" (stopped after the test)."""
    provider = DemoIdP(client_id="cli", client_secret="sec").start()
    yield provider
    provider.stop()


def authorize(idp: DemoIdP, email: str = "a@example.com", **extra) -> dict[str, str]:
    params = {
        "client_id": "cli",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email",
        "state": "st4te",
        "login_hint": email,
        "prompt": "none",
        **extra,
    }
    response = httpx.get(f"{idp.url}/authorize", params=params)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return dict(parse_qsl(urlsplit(location).query))


def exchange(idp: DemoIdP, code: str, **extra) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "cli",
        "client_secret": "sec",
        **extra,
    }
    return httpx.post(f"{idp.url}/token", data=data)


def test_discovery_names_every_endpoint(cli_idp):
    config = httpx.get(f"{cli_idp.url}/.well-known/openid-configuration").json()
    assert config["issuer"] == cli_idp.url
    for name in ("authorization", "token", "userinfo"):
        assert config[f"{name}_endpoint"].startswith(cli_idp.url)
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]


def test_code_flow_yields_a_verifiable_id_token_and_userinfo(cli_idp):
    back = authorize(cli_idp, nonce="n0nce")
    assert back["state"] == "st4te"
    tokens = exchange(cli_idp, back["code"]).json()
    jwks = httpx.get(f"{cli_idp.url}/jwks").json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(tokens["id_token"], key, algorithms=["RS256"], audience="cli")
    assert claims["iss"] == cli_idp.url
    assert claims["email"] == "a@example.com"
    assert claims["email_verified"] is True
    assert claims["nonce"] == "n0nce"
    info = httpx.get(
        f"{cli_idp.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.json()["sub"] == claims["sub"]
    assert (
        httpx.get(f"{cli_idp.url}/userinfo", headers={"Authorization": "Bearer x"}).status_code
        == 401
    )


def test_code_is_single_use(cli_idp):
    code = authorize(cli_idp)["code"]
    assert exchange(cli_idp, code).status_code == 200
    again = exchange(cli_idp, code)
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_grant"}


def test_code_expires(cli_idp):
    cli_idp.code_ttl = 0
    code = authorize(cli_idp)["code"]
    assert exchange(cli_idp, code).json() == {"error": "invalid_grant"}


def test_wrong_client_secret_or_redirect_is_refused(cli_idp):
    assert exchange(cli_idp, authorize(cli_idp)["code"], client_secret="nope").status_code == 401
    moved = exchange(cli_idp, authorize(cli_idp)["code"], redirect_uri="http://evil.test/cb")
    assert moved.json() == {"error": "invalid_grant"}


def test_basic_client_authentication_works(cli_idp):
    code = authorize(cli_idp)["code"]
    response = httpx.post(
        f"{cli_idp.url}/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
        auth=("cli", "sec"),
    )
    assert response.status_code == 200


def test_pkce_verifier_must_match(cli_idp):
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {"code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256"}
    bad = exchange(cli_idp, authorize(cli_idp, **params)["code"], code_verifier="w" * 50)
    assert bad.json() == {"error": "invalid_grant"}
    good = exchange(cli_idp, authorize(cli_idp, **params)["code"], code_verifier=verifier)
    assert good.status_code == 200


def test_unknown_client_gets_an_error_page_not_a_redirect(cli_idp):
    response = httpx.get(
        f"{cli_idp.url}/authorize",
        params={"client_id": "other", "redirect_uri": REDIRECT, "response_type": "code"},
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def test_form_escapes_hostile_parameters(cli_idp):
    response = httpx.get(
        f"{cli_idp.url}/authorize",
        params={
            "client_id": "cli",
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "state": '"><script>alert(1)</script>',
            "login_hint": "<b>x</b>",
        },
    )
    assert response.status_code == 200
    assert "<script>" not in response.text
    assert "<b>x</b>" not in response.text


def test_cli_serves_the_provider():
    port = free_port()
    args = [sys.executable, "-m", "accounts.demo_idp", "--port", str(port)]
    args += ["--client-id", "demo", "--client-secret", "demo"]
    url = f"http://127.0.0.1:{port}"
    with run_process(args, f"{url}/health"):
        config = httpx.get(f"{url}/.well-known/openid-configuration").json()
    assert config["issuer"] == url
