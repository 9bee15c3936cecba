"""Issue 14: the gateway behind a TLS-terminating proxy (nginx -> gunicorn/uvicorn), in a real
browser and with the real SDK, through https:// only.

With server.public_url set, every form POST passes CSRF (sign-in, key creation, a cap,
revocation, sign-out), the OAuth callback is the public https URL, cookies are Secure, HSTS is
sent and the keys page's snippets name the public URL. Without it, the sign-in POST explains
which setting is missing instead of a bare CSRF 403.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import anthropic
import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.nginx import Deployment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MODEL = "claude-haiku-4-5"
EMAIL = "ops@example.com"


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    # nginx's certificate is self-signed; the SDK below checks it against the test CA.
    return {**browser_context_args, "ignore_https_errors": True}


def call(deployment: Deployment, key: str) -> anthropic.types.Message:
    client = anthropic.Anthropic(
        base_url=f"{deployment.url}/anthropic",
        api_key=key,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(verify=deployment.tls.context()),
    )
    return client.messages.create(
        model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "hello"}]
    )


def test_journey_through_the_tls_proxy(behind_proxy: Deployment, reference_data, page: Page):
    url = behind_proxy.url
    authorize: list[str] = []
    page.on("request", lambda r: authorize.append(r.url) if "/authorize?" in r.url else None)

    # Sign in: the form POST passes CSRF, the provider is told the public https callback.
    page.goto(f"{url}/accounts/login/")
    page.get_by_role("button", name="Sign in with Demo").click()
    page.get_by_label("E-mail").fill(EMAIL)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    (redirect_uri,) = parse_qs(urlsplit(authorize[0]).query)["redirect_uri"]
    assert redirect_uri == f"{url}/accounts/oidc/demo/login/callback/"

    cookies = {c["name"]: c for c in page.context.cookies(url)}
    assert cookies["sessionid"]["secure"]
    assert cookies["csrftoken"]["secure"]
    response = page.goto(f"{url}/keys")
    hsts = response.headers["strict-transport-security"]
    assert hsts == "max-age=31536000"  # a year, no preload, no subdomains by default

    # Create a key; the snippets point clients at the public URL.
    page.get_by_label("Name").fill("deploy")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"SSOK_[A-Za-z0-9]{32}", key)
    expect(page.locator("#snippet-claude")).to_contain_text(f"{url}/bedrock")
    page.get_by_role("tab", name="boto3").click()
    expect(page.locator("#snippet-boto3")).to_contain_text(f'endpoint_url="{url}/bedrock"')

    # Use it through nginx with the SDK, which checks the proxy's certificate.
    message = call(behind_proxy, key)
    assert message.content[0].text

    # A cap: another dashboard form.
    page.goto(f"{url}/caps")
    page.get_by_label("Period").select_option("hourly")
    page.get_by_label("Max requests").fill("100")
    page.get_by_role("button", name="Add cap").click()
    expect(page.get_by_text("Cap created.")).to_be_visible()

    # Revoke it: the next call is refused.
    page.goto(f"{url}/keys")
    page.get_by_role("link", name="Revoke deploy").click()
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("revoked.")).to_be_visible()
    with pytest.raises(anthropic.AuthenticationError):
        call(behind_proxy, key)

    # Sign out (a POST), still on the public URL.
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.goto(f"{url}/usage")
    expect(page).to_have_url(f"{url}/accounts/login/?next=/usage")


def test_sign_in_without_public_url_names_the_setting(
    behind_proxy_unconfigured: Deployment, reference_data, page: Page
):
    url = behind_proxy_unconfigured.url
    page.goto(f"{url}/accounts/login/")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Sign in with Demo").click()
    assert posted.value.status == 403
    expect(page.get_by_role("heading", name="Request refused (CSRF check)")).to_be_visible()
    expect(page.locator("#csrf-setting")).to_have_text(f"GATEWAY_SERVER__PUBLIC_URL={url}")
    expect(page.locator("#csrf-message")).to_contain_text(f"sent from {url}")
    expect(page.locator("#csrf-message")).to_contain_text("saw the request as http://127.0.0.1")


def test_health_answers_any_host_through_the_proxy(behind_proxy: Deployment):
    """Load balancers probe node addresses; other routes still refuse an unknown Host."""
    with httpx.Client(verify=behind_proxy.tls.context()) as client:
        probe = client.get(f"{behind_proxy.url}/health", headers={"Host": "10.0.3.7"})
        other = client.get(f"{behind_proxy.url}/accounts/login/", headers={"Host": "10.0.3.7"})
    assert probe.status_code == 200
    assert probe.json() == {"status": "ok"}
    assert other.status_code == 400
