"""Issue 15: the overview on the admin index — spend, the chart, top spenders with their cap
headroom, users near or over a cap, unpriced models, upstream error rates — and an index that
reads as this product (one Accounts section)."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db.models import Sum
from django.test import Client

from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create
from costs.money import Usage, micros_usd
from tests.fixtures.calls import HAIKU
from tests.fixtures.personas import unique_user
from usage import services
from usage.models import UsageRecord

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("forget_cap_caches")]

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"


def record_at(record, user, started_at, *, usage=None, **overrides):
    """One call as the proxy makes it: reserve under the caps, record, settle."""
    usage = usage or Usage(input_tokens=1000, output_tokens=100)
    model_id = overrides.get("model_id", HAIKU)
    with time_machine.travel(started_at, tick=False):
        reservation = cap_reserve(user_id=user.id, model_id=model_id, estimate=usage)
        row = record(user, started_at=started_at, usage=usage, **overrides)
        cap_settle(reservation=reservation, actual=usage, cost_micros=row.cost_micros)
        return row


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def section(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}".*?</(table|div)>', html, flags=re.DOTALL)
    assert match, element_id
    return match.group(0)


def index(user) -> str:
    with time_machine.travel(NOW, tick=False):
        response = client_for(user).get("/admin/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def overview_spenders(record):
    """A big spender, a user at 80 % of a daily request cap, a blocked one, an unpriced model,
    and one upstream error among today's calls; one call earlier this month (persisted)."""
    big, near, blocked = unique_user(), unique_user(), unique_user()
    with time_machine.travel(NOW - timedelta(days=2), tick=False):
        cap_create(user_id=near.id, cap_type="daily", set_by="user", max_requests=5)
        cap_create(user_id=blocked.id, cap_type="daily", set_by="user", max_requests=2)
    record_at(record, big, datetime(2026, 11, 3, 9, tzinfo=UTC), model_id=SONNET)
    with time_machine.travel(datetime(2026, 11, 3, 10, 5, tzinfo=UTC), tick=False):
        services.summary_persist_hours()
    record_at(
        record, big, NOW - timedelta(hours=2), model_id=SONNET, usage=Usage(input_tokens=50_000)
    )
    for minutes in (10, 20, 30, 40):
        record_at(record, near, NOW - timedelta(minutes=minutes))
    record_at(record, blocked, NOW - timedelta(minutes=15))
    record_at(
        record,
        blocked,
        NOW - timedelta(minutes=5),
        model_id="anthropic.claude-unpriced-1",
        upstream_status=500,
        error_type="InternalServerException",
    )
    return {"big": big, "near": near, "blocked": blocked}


def test_the_overview_shows_spend_today_and_this_month(admin, overview_spenders):
    html = index(admin)
    assert html.index('id="overview"') < html.index('id="content-main"')  # first on the page
    today = UsageRecord.objects.filter(started_at__gte=NOW.replace(hour=0, minute=0))
    month = UsageRecord.objects.filter(started_at__gte=datetime(2026, 11, 1, tzinfo=UTC))
    today_cost = today.aggregate(cost=Sum("cost_micros"))["cost"]
    month_cost = month.aggregate(cost=Sum("cost_micros"))["cost"]
    assert month_cost > today_cost > 0
    assert micros_usd(today_cost) in section(html, "spend-today")
    assert micros_usd(month_cost) in section(html, "spend-month")
    assert "7 calls" in html
    assert "8 calls" in html  # the month adds the call of the 3rd


def test_the_overview_chart_has_thirty_days_of_spend(admin, overview_spenders):
    html = index(admin)
    data = re.search(
        r'<script id="overview-chart-data" type="application/json">(.*?)</script>', html
    ).group(1)
    points = json.loads(data)
    assert len(points) == 30
    assert points[-1]["day"] == "2026-11-25"
    assert points[-1]["requests"] == 7
    assert next(p for p in points if p["day"] == "2026-11-03")["requests"] == 1
    assert 'src="/static/js/admin_overview.js"' in html
    assert "<script>" not in html  # no inline script (CSP)


def test_the_top_spender_comes_first_with_their_cap_headroom(admin, overview_spenders):
    top = section(index(admin), "top-users")
    rows = top.split("<tr>")[2:]
    assert overview_spenders["big"].email in rows[0]
    near_row = next(row for row in rows if overview_spenders["near"].email in row)
    assert "daily 80.0 % used" in near_row


def test_users_at_80_percent_of_a_cap_or_blocked_are_listed(admin, overview_spenders):
    near_cap = section(index(admin), "near-cap")
    assert overview_spenders["near"].email in near_cap
    assert overview_spenders["blocked"].email in near_cap
    assert near_cap.index(overview_spenders["blocked"].email) < near_cap.index(
        overview_spenders["near"].email
    )
    assert "blocked" in near_cap.split(overview_spenders["blocked"].email)[1].split("</tr>")[0]
    assert overview_spenders["big"].email not in near_cap


def test_unpriced_models_and_error_rates_are_shown(admin, overview_spenders):
    html = index(admin)
    assert "anthropic.claude-unpriced-1" in section(html, "unpriced-models")
    assert "14.29 %" in section(html, "errors-today")  # 1 of 7 calls today
    assert "1 of 7" in html
    assert "12.5 %" in section(html, "errors-month")  # 1 of 8 this month


def test_the_overview_is_for_gateway_administrators_only(overview_spenders):
    staff = unique_user()
    staff.is_staff = True
    staff.save()
    html = index(staff)
    assert 'id="overview"' not in html
    with time_machine.travel(NOW, tick=False):
        assert Client().get("/admin/").status_code == 302


def test_a_live_counter_that_outlived_its_user_is_no_500(admin):
    """A user deleted this hour leaves a live counter: shown, without caps to read (reading them
    used to create that user's default caps: a foreign-key error, the admin index a 500)."""
    from caps.models import UserCapConfig
    from usage.store import Increment, get_store
    from usage.windows import summary_key

    with time_machine.travel(NOW, tick=False):
        key = summary_key(987654, NOW)
        get_store().incr_many([Increment(key=key, deltas={"requests": 3}, ttl=3600)])
    try:
        index(admin)  # a 200
    finally:
        get_store().delete([key])
    # Nothing written for a user who is not there (a foreign-key error at commit).
    assert not UserCapConfig.objects.filter(user_id=987654).exists()


def test_an_empty_gateway_has_an_overview_too(admin):
    html = index(admin)
    assert "No calls this month yet." in html
    assert "Every model served has a price." in html


def test_the_index_has_one_accounts_section(admin):
    html = index(admin)
    assert html.count(">Accounts</a>") == 1
    for hidden in ("Social accounts", "Email addresses", "Authentication and Authorization"):
        assert hidden not in html
    assert "/admin/accounts/user/" in html


def test_a_users_page_shows_their_sign_in_identities(admin):
    from allauth.socialaccount.models import SocialAccount

    user = unique_user()
    SocialAccount.objects.create(user=user, provider="demo", uid="subject-42")
    page = client_for(admin).get(f"/admin/accounts/user/{user.pk}/change/")
    assert page.status_code == 200
    assert "subject-42" in page.content.decode()
