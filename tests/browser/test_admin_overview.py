"""The admin overview in a real browser: the daily spend chart draws from the page's data
under the CSP, beside the top spenders, after a few calls."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ADMIN_EMAIL
from tests.browser.test_user_journey import shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_admin_overview_draws_its_chart(live, reference_data, page: Page, screenshots):
    from accounts.services import user_get_or_create
    from config import clock
    from costs.pricing import Usage
    from usage.services import CallRecord, usage_record

    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    sign_in(page, live, ADMIN_EMAIL)
    spender = user_get_or_create(email="big-spender@example.com")
    for tokens in (40_000, 30_000, 1_000):
        usage_record(
            call=CallRecord(
                call_id=uuid.uuid4(), user_id=spender.pk, api_key_id=None, auth_kind="jwt",
                model_id="global.anthropic.claude-sonnet-4-5-20250929-v1:0",
                route="anthropic", streaming=False, usage=Usage(input_tokens=tokens),
                upstream_status=200, error_type=None, latency_ms=300, ttfb_ms=None,
                request_id="", started_at=clock.now(), client_family="claude-cli",
                session_id=None,
            )
        )  # fmt: skip
    page.goto(f"{live.url}/admin/")
    overview = page.locator("#overview")
    expect(overview).to_be_visible()
    expect(page.locator("#top-users")).to_contain_text("big-spender@example.com")
    expect(page.locator("#overview-chart")).to_have_attribute("data-drawn", "true")
    box = page.locator("#overview-chart").bounding_box()
    assert box is not None
    assert box["height"] > 100
    assert box["width"] > 300
    shot(page, screenshots, "15-admin-overview")
    stats = page.locator(".overview-stats")
    assert stats.evaluate("node => getComputedStyle(node).display") == "flex"  # our stylesheet
    assert [p for p in problems if "Content Security Policy" in p or "Error" in p] == []
