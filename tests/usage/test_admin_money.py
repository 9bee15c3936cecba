"""Issue 15: money reads as dollars everywhere in admin — micro-dollars as `$1.2345` (usage
records and summaries), rates as dollars per million tokens, cap limits in cents as `$12.34`."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from caps.services import cap_create
from costs.money import Usage, cents_usd, micros_usd, rate_usd
from tests.fixtures.personas import unique_user
from usage import services

pytestmark = pytest.mark.django_db

SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture
def admin_client_(admin) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def test_money_formats():
    assert micros_usd(1_234_500) == "$1.2345"
    assert micros_usd(1_234_567_891_234) == "$1,234,567.8912"
    assert micros_usd(0) == "$0.0000"
    assert micros_usd(None) == "unknown"
    assert cents_usd(1234) == "$12.34"
    assert cents_usd(100_000) == "$1,000.00"
    assert cents_usd(None) == ""
    assert rate_usd(3_750_000) == "$3.75"
    assert rate_usd(1_250) == "$0.00125"
    assert rate_usd(30_000_000) == "$30.00"


def test_usage_records_and_summaries_show_cost_in_dollars(admin_client_, unique_owner, record):
    started = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    with time_machine.travel(started, tick=False):
        row = record(
            unique_owner, started_at=started, model_id=SONNET, usage=Usage(input_tokens=456_789)
        )
    with time_machine.travel(datetime(2026, 11, 25, 10, 5, tzinfo=UTC), tick=False):
        services.summary_persist_hours()
    dollars = micros_usd(row.cost_micros)
    assert dollars.startswith("$1.")
    records = admin_client_.get("/admin/usage/usagerecord/").content.decode()
    assert f'<td class="field-cost">{dollars}</td>' in records
    summaries = admin_client_.get("/admin/usage/usagesummary/").content.decode()
    assert f'<td class="field-cost">{dollars}</td>' in summaries
    unknown = record(unique_owner, model_id="anthropic.claude-unpriced-1")
    assert unknown.cost_micros is None
    records = admin_client_.get("/admin/usage/usagerecord/").content.decode()
    assert '<td class="field-cost">unknown</td>' in records


def test_cap_limits_show_as_dollars(admin_client_):
    user = unique_user()
    cap = cap_create(user_id=user.id, cap_type="daily", set_by="admin", max_cost_cents=1234)
    caps = admin_client_.get("/admin/caps/usercapconfig/").content.decode()
    assert '<td class="field-max_cost">$12.34</td>' in caps
    page = admin_client_.get(f"/admin/accounts/user/{user.pk}/change/").content.decode()
    assert "$12.34" in page
    assert f"/admin/caps/usercapconfig/{cap.pk}/change/" in page
