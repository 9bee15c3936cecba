"""A new user's whole journey in a real browser, against the live gateway and the emulator:
sign in through SSO, create and copy a key, call models with it, watch the dashboard and cap
bars move, hit a cap, revoke the key; an administrator imports prices from CSV."""

from __future__ import annotations

import re

import anthropic
import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.browser import ADMIN_EMAIL, Live, shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MODEL = "claude-haiku-4-5"
LIVE_TIMEOUT = 15_000  # ms: the pages poll every 5 s


def call(key: str, live: Live, text: str = "hello") -> anthropic.types.Message:
    client = anthropic.Anthropic(base_url=f"{live.url}/anthropic", api_key=key, max_retries=0)
    return client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": text}]
    )


def test_new_user_journey(live, reference_data, page: Page, context, screenshots):
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    # Sign-in page: one button per configured provider, the demo explained.
    page.goto(f"{live.url}/accounts/login/")
    expect(page.get_by_role("heading", name="Sign in to AI Gateway")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in with Demo")).to_be_visible()
    shot(page, screenshots, "01-sign-in")
    sign_in(page, live, "dev@example.com")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("#caps-mini")).to_contain_text("Daily (policy) cap", timeout=LIVE_TIMEOUT)
    shot(page, screenshots, "02-dashboard-empty")

    # Create a key: shown once, with a copy button and snippets that carry it.
    page.get_by_role("link", name="API keys").first.click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"SSOK_[A-Za-z0-9]{32}", key)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    expect(page.locator("#snippet-claude")).to_contain_text(f"AWS_BEARER_TOKEN_BEDROCK={key}")
    expect(page.locator("#snippet-claude")).to_contain_text(f"{live.url}/bedrock")
    page.get_by_role("tab", name="boto3").click()
    expect(page.locator("#snippet-boto3")).to_contain_text("/bedrock")
    shot(page, screenshots, "03-keys-created")
    page.goto(f"{live.url}/keys")  # shown once: a fresh load has only the hint
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.get_by_role("cell", name=f"{key[:9]}****{key[-4:]}")).to_be_visible()

    # Calls show up on the open dashboard without a reload.
    page.goto(f"{live.url}/")
    expect(page.locator('[data-live="today.requests"]').first).to_have_text("0")
    for _ in range(2):
        call(key, live)
    expect(page.locator('[data-live="today.requests"]').first).to_have_text(
        "2", timeout=LIVE_TIMEOUT
    )
    expect(page.locator("#recent-calls tr")).to_have_count(2, timeout=LIVE_TIMEOUT)
    expect(page.locator("#by-model")).to_contain_text("claude-haiku-4-5")
    assert page.locator('[data-live="today.cost"]').first.inner_text() != "$0.0000"
    page.get_by_role("button", name="Month by day").click()
    shot(page, screenshots, "04-dashboard-live")

    # An own cap of 5 requests an hour: the bar moves, warns from 80 %, then the cap is hit.
    page.goto(f"{live.url}/caps")
    page.get_by_label("Period").select_option("hourly")
    page.get_by_label("Max requests").fill("5")
    page.get_by_role("button", name="Add cap").click()
    expect(page.get_by_text("Cap created.")).to_be_visible()
    hourly = page.locator(".cap-card", has_text="Hourly cap").filter(has_text="Your cap")
    expect(hourly.locator(".meter-percent")).to_have_text("40.0%")
    expect(hourly.locator(".meter")).to_have_class(re.compile("meter-ok"))
    call(key, live)
    call(key, live)
    expect(hourly.locator(".meter-percent")).to_have_text("80.0%", timeout=LIVE_TIMEOUT)
    expect(hourly.locator(".meter")).to_have_class(re.compile("meter-warning"))
    expect(hourly.get_by_role("progressbar")).to_have_attribute("value", re.compile(r"^80(\.0)?$"))
    call(key, live)
    with pytest.raises(anthropic.RateLimitError) as refused:
        call(key, live)
    assert refused.value.status_code == 429
    # The page notices the state change by itself and explains it.
    expect(hourly).to_have_class(re.compile("state-exceeded"), timeout=LIVE_TIMEOUT)
    expect(hourly).to_contain_text("Cap reached.")
    expect(hourly).to_contain_text("Calls are refused with 429 until it resets")
    expect(page.locator(".cap-card", has_text="Daily cap")).to_contain_text("Policy for everyone")
    shot(page, screenshots, "05-caps-exceeded")

    # Usage page, filtered, and its export.
    page.get_by_role("link", name="Usage").first.click()
    expect(page.locator("tbody tr")).to_have_count(5)
    page.get_by_label("Result").select_option("success")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("5 calls")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    exported = open(download.value.path()).read().splitlines()  # noqa: SIM115
    assert exported[0].startswith("started_at,model_id")
    assert len(exported) == 6
    shot(page, screenshots, "06-usage")

    # Revoke, with a confirmation step; the next call is a 401.
    page.get_by_role("link", name="API keys").first.click()
    page.get_by_role("link", name="Revoke laptop").click()
    expect(page.get_by_role("heading", name="Revoke “laptop”?")).to_be_visible()
    shot(page, screenshots, "07-revoke-confirm")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("revoked.")).to_be_visible()
    expect(page.locator(".badge", has_text="revoked")).to_be_visible()
    with pytest.raises(anthropic.AuthenticationError):
        call(key, live)
    shot(page, screenshots, "08-keys-revoked")

    page.get_by_role("link", name="Token").click()
    page.get_by_role("button", name="Get a new token").click()
    expect(page.get_by_label("Access token")).not_to_be_empty()
    shot(page, screenshots, "09-token")

    # Half a laptop screen: the layout still works.
    page.set_viewport_size({"width": 700, "height": 900})
    page.goto(f"{live.url}/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    shot(page, screenshots, "10-dashboard-700px")
    page.goto(f"{live.url}/caps")
    shot(page, screenshots, "11-caps-700px")

    # Sign out is a POST; the pages then need signing in again.
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.goto(f"{live.url}/usage")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/usage$"))

    csp_violations = [e for e in console_errors if "Content Security Policy" in e]
    assert csp_violations == []


def test_admin_imports_a_price_csv(live, reference_data, page: Page, screenshots):
    from costs.services import OUR_COLUMNS

    sign_in(page, live, ADMIN_EMAIL)
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("link", name="AI Gateway administration")).to_be_visible()
    shot(page, screenshots, "12-admin-index")

    header = ",".join(OUR_COLUMNS) + ",source"
    row = _price_row(OUR_COLUMNS)
    page.goto(f"{live.url}/admin/costs/modelprice/import-csv/")
    page.set_input_files(
        "input[type=file]",
        files=[
            {
                "name": "prices.csv",
                "mimeType": "text/csv",
                "buffer": f"{header}\n{row},browser test\n".encode(),
            }
        ],
    )
    page.get_by_role("button", name=re.compile("Preview|Upload", re.I)).click()
    expect(page.get_by_text("anthropic.claude-test-9")).to_be_visible()
    shot(page, screenshots, "13-admin-import-preview")
    page.get_by_role("button", name=re.compile("Apply|Import", re.I)).click()
    expect(page.get_by_text(re.compile(r"Imported .* 1 created"))).to_be_visible()
    shot(page, screenshots, "14-admin-import-applied")

    from costs.models import ModelPrice

    assert ModelPrice.objects.filter(model_id="anthropic.claude-test-9").count() == 1


def _price_row(columns: tuple[str, ...]) -> str:
    values = {
        "model_id": "anthropic.claude-test-9",
        "effective_from": "2026-01-01",
        "input": "3",
        "output": "15",
        "cache_write_5m": "3.75",
        "cache_write_1h": "6",
        "cache_read": "0.3",
    }
    return ",".join(values.get(column, "") for column in columns)
