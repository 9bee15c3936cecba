"""The admin overview in a real browser: the daily spend chart draws from the page's data
under the CSP, beside the top spenders, after a few calls."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.browser import ADMIN_EMAIL, shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_admin_overview_draws_its_chart(live, reference_data, page: Page, screenshots):
    from accounts.services import user_get_or_create
    from config import clock
    from costs.money import Usage
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


def test_the_admin_overview_ranks_teams_by_spend(live, reference_data, page: Page, screenshots):
    from django.db.models import Sum

    from accounts.models import Team
    from accounts.services import user_get_or_create, user_team_set
    from caps.reservations import cap_reserve, cap_settle
    from caps.services import team_cap_set
    from config import clock
    from costs.money import Usage, micros_usd
    from usage.models import UsageRecord
    from usage.services import CallRecord, usage_record

    model = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
    small, big = Team.objects.create(name="Small team"), Team.objects.create(name="Big team")
    team_cap_set(team_id=big.pk, cap_type="monthly", max_cost_cents=100_000)
    calls = [
        ("small-1@example.com", small, 20_000),
        ("big-1@example.com", big, 150_000),
        ("big-2@example.com", big, 90_000),
        ("small-2@example.com", small, 10_000),
    ]
    for email, team, tokens in calls:
        user = user_get_or_create(email=email)
        user_team_set(user=user, team=team)
        usage = Usage(input_tokens=tokens)
        # As the proxy does: reserved under the caps (the team's too), recorded, settled.
        reservation = cap_reserve(user_id=user.pk, model_id=model, estimate=usage, team_id=team.pk)
        row = usage_record(
            call=CallRecord(
                call_id=uuid.uuid4(), user_id=user.pk, api_key_id=None, auth_kind="jwt",
                model_id=model, route="anthropic", streaming=False, usage=usage,
                upstream_status=200, error_type=None, latency_ms=300, ttfb_ms=None,
                request_id="", started_at=clock.now(), client_family="claude-cli",
                session_id=None, team_id=team.pk,
            )
        )  # fmt: skip
        cap_settle(reservation=reservation, actual=usage, cost_micros=row.cost_micros)
    spend = dict(
        UsageRecord.objects.values("team_id")
        .annotate(c=Sum("cost_micros"))
        .values_list("team_id", "c")
    )
    assert spend[big.pk] > spend[small.pk] > 0

    sign_in(page, live, ADMIN_EMAIL)
    page.goto(f"{live.url}/admin/")
    rows = page.locator("#top-teams tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Big team")
    expect(rows.nth(0)).to_contain_text(micros_usd(spend[big.pk]))
    expect(rows.nth(0)).to_contain_text("of $1,000.00 monthly")
    expect(rows.nth(1)).to_contain_text("Small team")
    expect(rows.nth(1)).to_contain_text(micros_usd(spend[small.pk]))
    expect(rows.nth(1)).to_contain_text("no team cap")
    shot(page, screenshots, "15-admin-top-teams")
    rows.nth(0).get_by_role("link", name="Big team").click()
    expect(page.locator("#content")).to_contain_text("big-1@example.com")
