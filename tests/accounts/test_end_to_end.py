"""End to end against a gateway process configured by environment alone:
SSO sign-in -> JWT and API key (from the session) -> proxied call -> sign-out revokes the JWT."""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin

import httpx
import pytest

from accounts.models import AuditEvent, User
from tests.fixtures.oidc import PROVIDER_ID
from tests.fixtures.servers import start_gateway

pytestmark = pytest.mark.django_db(transaction=True)


def oidc_env(idp) -> dict[str, str]:
    """What an operator sets to add a generic OpenID Connect provider (here: the demo one)."""
    prefix = f"GATEWAY_AUTH__OIDC__{PROVIDER_ID.upper()}__"
    return {
        f"{prefix}SERVER_URL": idp.url,
        f"{prefix}CLIENT_ID": idp.client_id,
        f"{prefix}SECRET": idp.client_secret,
        f"{prefix}NAME": "Demo sign-in",
        "GATEWAY_AUTH__ADMIN_EMAILS": "chief@example.com",
    }


def csrf_token(browser: httpx.Client) -> str:
    return browser.cookies["csrftoken"]


def sso_sign_in(browser: httpx.Client, gateway_url: str, email: str) -> httpx.Response:
    login_page = browser.get(f"{gateway_url}/accounts/login/")  # sets the CSRF cookie
    assert login_page.status_code == 200
    assert "Demo sign-in" in login_page.text  # the name from the configuration
    start = browser.post(
        f"{gateway_url}/accounts/oidc/{PROVIDER_ID}/login/",
        data={"csrfmiddlewaretoken": csrf_token(browser)},
    )
    assert start.status_code == 302, start.text[:300]
    form = browser.get(start.headers["location"])  # the provider's page
    assert form.status_code == 200
    found = re.findall(r'name="(\w+)" value="([^"]*)"', form.text)
    fields = {name: html.unescape(value) for name, value in found}
    answer = browser.post(
        urljoin(str(form.url), "/authorize"), data={**fields, "email": email, "action": "allow"}
    )
    assert answer.status_code == 302
    callback = answer.headers["location"]
    assert callback.startswith(f"{gateway_url}/accounts/oidc/{PROVIDER_ID}/login/callback/")
    return browser.get(callback)


def test_sso_then_jwt_then_key_then_proxied_call(oidc_provider, emulator, reference_data):
    with (
        start_gateway(upstream_url=emulator.url, env=oidc_env(oidc_provider)) as gateway,
        httpx.Client(timeout=20) as browser,
    ):
        signed_in = sso_sign_in(browser, gateway.url, "chief@example.com")
        assert signed_in.status_code == 302
        assert User.objects.get(email="chief@example.com").is_staff  # admin from config

        pair = browser.post(
            f"{gateway.url}/api/token", headers={"X-CSRFToken": csrf_token(browser)}
        ).json()
        assert set(pair) == {"access", "refresh"}

        with httpx.Client(timeout=20) as cli:  # no cookies: the token alone
            jwt_headers = {"Authorization": f"Bearer {pair['access']}"}
            # A token cannot mint a key (issue #14): only the signed-in session can.
            minted = cli.post(f"{gateway.url}/api/keys", json={"name": "e2e"}, headers=jwt_headers)
            assert minted.status_code == 403, minted.text
            created = browser.post(
                f"{gateway.url}/api/keys",
                json={"name": "e2e"},
                headers={"X-CSRFToken": csrf_token(browser)},
            )
            assert created.status_code == 201, created.text
            key = created.json()["key"]
            call = cli.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                json={
                    "model": "claude-haiku-4-5",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert call.status_code == 200, call.text
            assert call.json()["type"] == "message"
            with_jwt = cli.post(
                f"{gateway.url}/anthropic/v1/messages",
                headers={**jwt_headers, "anthropic-version": "2023-06-01"},
                json={
                    "model": "claude-haiku-4-5",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert with_jwt.status_code == 200, with_jwt.text

            signed_out = browser.post(
                f"{gateway.url}/accounts/logout/",
                data={"csrfmiddlewaretoken": csrf_token(browser)},
            )
            assert signed_out.status_code == 302
            refused = cli.get(f"{gateway.url}/api/keys", headers=jwt_headers)
            assert refused.status_code == 401
            assert cli.get(f"{gateway.url}/api/keys", headers={"X-API-Key": key}).status_code == 200
        assert browser.get(f"{gateway.url}/token").status_code == 302  # session over


def test_local_passwords_work_when_turned_on_within_allowed_domains():
    env = {
        "GATEWAY_AUTH__LOCAL_PASSWORDS": "true",
        "GATEWAY_AUTH__ALLOWED_EMAIL_DOMAINS": "ok.test",
    }
    with (
        start_gateway(upstream_url="http://127.0.0.1:9", env=env) as gateway,
        httpx.Client(timeout=20) as browser,
    ):
        assert browser.get(f"{gateway.url}/accounts/signup/").status_code == 200
        refused = browser.post(
            f"{gateway.url}/accounts/signup/",
            data={
                "csrfmiddlewaretoken": csrf_token(browser),
                "email": "someone@elsewhere.test",
                "password1": "a long enough passphrase 42",
                "password2": "a long enough passphrase 42",
            },
        )
        assert refused.status_code == 200  # the form again, with the error
        assert "may not sign up here" in refused.text
        signup = browser.post(
            f"{gateway.url}/accounts/signup/",
            data={
                "csrfmiddlewaretoken": csrf_token(browser),
                "email": "local@ok.test",
                "password1": "a long enough passphrase 42",
                "password2": "a long enough passphrase 42",
            },
        )
        assert signup.status_code == 302, signup.text[:500]
        browser.post(
            f"{gateway.url}/accounts/logout/", data={"csrfmiddlewaretoken": csrf_token(browser)}
        )
        browser.get(f"{gateway.url}/accounts/login/")
        wrong = browser.post(
            f"{gateway.url}/accounts/login/",
            data={
                "csrfmiddlewaretoken": csrf_token(browser),
                "login": "local@ok.test",
                "password": "wrong",
            },
        )
        assert wrong.status_code == 200
        assert browser.get(f"{gateway.url}/token").status_code == 302
        right = browser.post(
            f"{gateway.url}/accounts/login/",
            data={
                "csrfmiddlewaretoken": csrf_token(browser),
                "login": "local@ok.test",
                "password": "a long enough passphrase 42",
            },
        )
        assert right.status_code == 302
        assert browser.get(f"{gateway.url}/token").status_code == 200
    failure = AuditEvent.objects.get(action="login.failure", target="local@ok.test")
    assert failure.detail["reason"] == "bad password"


def test_demo_provider_switch_signs_anyone_in_through_the_local_provider():
    """What `make run` does: GATEWAY_AUTH__DEMO_PROVIDER=true and the provider on its port."""
    from accounts.demo_idp import DemoIdP

    demo = DemoIdP(client_id="demo", client_secret="demo").start()
    env = {
        "GATEWAY_AUTH__DEMO_PROVIDER": "true",
        "GATEWAY_AUTH__DEMO_PROVIDER_PORT": str(demo.port),
    }
    try:
        with (
            start_gateway(upstream_url="http://127.0.0.1:9", env=env) as gateway,
            httpx.Client(timeout=20) as browser,
        ):
            login_page = browser.get(f"{gateway.url}/accounts/login/")
            assert "Demo sign-in (any e-mail)" in login_page.text
            assert sso_sign_in(browser, gateway.url, "visitor@demo.test").status_code == 302
            assert browser.get(f"{gateway.url}/token").status_code == 200
    finally:
        demo.stop()
