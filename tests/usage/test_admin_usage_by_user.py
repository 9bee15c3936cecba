"""Issue 15: spend per user (`/api/admin/usage/summary?group_by=user`) and the chargeback CSV
(`/api/admin/usage/chargeback.csv`), admins only."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db.models import F, Sum
from rest_framework.test import APIClient

from costs.money import Usage
from tests.fixtures.personas import unique_user
from usage import services
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 25, tzinfo=UTC)
SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
FIELDS = ["requests", "input_tokens", "output_tokens", "cache_read_tokens", "cost_micros"]


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def record_at(record, user, started_at, **overrides):
    with time_machine.travel(started_at, tick=False):
        return record(user, started_at=started_at, **overrides)


def record_past(record, user, started_at, **overrides):
    """A call long before the test's now, persisted by the hourly job after its hour."""
    row = record_at(record, user, started_at, **overrides)
    with time_machine.travel(started_at + timedelta(hours=1), tick=False):
        services.summary_persist_hours()
    return row


@pytest.fixture
def spenders(record):
    """Three users over two days: `dear` spends most, `cheap` less, `unpriced` only on a model
    without a price. Some hours are persisted by the hourly job, the rest are live."""
    cheap, dear, unpriced = unique_user(), unique_user(), unique_user()
    record_at(record, cheap, at(-20), usage=Usage(input_tokens=100, output_tokens=10))
    record_at(record, dear, at(-19.5), model_id=SONNET, usage=Usage(input_tokens=5000))
    with time_machine.travel(at(-18.9), tick=False):
        services.summary_persist_hours()
    record_at(record, cheap, at(8.5))
    record_at(record, dear, at(9.5), model_id=SONNET, usage=Usage(input_tokens=20_000))
    record_at(record, dear, at(10.2), usage=Usage(output_tokens=50, cache_read_tokens=9000))
    record_at(record, unpriced, at(10.7), model_id="anthropic.claude-unpriced-1")
    return {"cheap": cheap, "dear": dear, "unpriced": unpriced}


def sums_of_records(user, start, end) -> dict:
    rows = UsageRecord.objects.filter(user=user, started_at__gte=start, started_at__lt=end)
    sums = rows.aggregate(
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cache_read_tokens=Sum("cache_read_tokens"),
        cost_micros=Sum("cost_micros"),
        cache_write_tokens=Sum(F("cache_write_5m_tokens") + F("cache_write_1h_tokens")),
    )
    return {
        **{k: v or 0 for k, v in sums.items()},
        "requests": rows.count(),
        "unknown_cost_requests": rows.filter(cost_micros__isnull=True).count(),
    }


def by_user(admin, query: str) -> dict:
    with time_machine.travel(at(11.5), tick=False):
        response = client_for(admin).get(f"/api/admin/usage/summary?group_by=user&{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_spend_per_user_is_sorted_dearest_first(admin, spenders):
    body = by_user(admin, "from=2026-11-24&to=2026-11-25")
    order = [row["user_id"] for row in body["by_user"]]
    assert order == [spenders["dear"].id, spenders["cheap"].id, spenders["unpriced"].id]
    assert body["by_user"][0]["email"] == spenders["dear"].email
    costs = [row["cost_micros"] for row in body["by_user"]]
    assert costs == sorted(costs, reverse=True)
    assert body["group_by"] == "user"


def test_each_users_totals_equal_the_sum_of_their_records(admin, spenders):
    body = by_user(admin, "from=2026-11-24&to=2026-11-25")
    start, end = DAY - timedelta(days=1), DAY + timedelta(days=1)
    for row in body["by_user"]:
        user = next(u for u in spenders.values() if u.id == row["user_id"])
        expected = sums_of_records(user, start, end)
        assert {k: row[k] for k in expected} == expected
    dear = body["by_user"][0]
    assert dear["cost_cents"] == f"{dear['cost_micros'] / 10_000:.4f}"
    unpriced = body["by_user"][-1]
    assert (unpriced["cost_micros"], unpriced["unknown_cost_requests"]) == (0, 1)


def test_spend_per_user_adds_up_to_the_daily_summary(admin, spenders):
    per_user = by_user(admin, "from=2026-11-24&to=2026-11-25")
    with time_machine.travel(at(11.5), tick=False):
        daily = client_for(admin).get(
            "/api/admin/usage/summary?group_by=day&from=2026-11-24&to=2026-11-25"
        )
    totals = daily.json()["totals"]
    assert per_user["totals"] == totals
    for field in FIELDS:
        assert sum(row[field] for row in per_user["by_user"]) == totals[field]


def test_spend_per_user_counts_only_the_range(admin, spenders):
    body = by_user(admin, "from=2026-11-25T09:00:00Z&to=2026-11-25T10:00:00Z")
    assert [(row["user_id"], row["requests"]) for row in body["by_user"]] == [
        (spenders["dear"].id, 1)
    ]
    assert by_user(admin, "from=2026-11-20&to=2026-11-23")["by_user"] == []


def test_spend_per_user_narrows_to_one_user(admin, spenders):
    body = by_user(admin, f"from=2026-11-24&to=2026-11-25&user={spenders['cheap'].id}")
    assert [row["user_id"] for row in body["by_user"]] == [spenders["cheap"].id]
    assert body["by_user"][0]["requests"] == 2


def test_spend_per_user_is_for_admins_only(unique_owner, spenders):
    response = client_for(unique_owner).get("/api/admin/usage/summary?group_by=user")
    assert response.status_code == 403
    # The caller's own summary has no per-user grouping.
    own = client_for(unique_owner).get("/api/usage/summary?group_by=user")
    assert own.status_code == 400
    assert list(own.json()) == ["group_by"]


def test_an_unknown_group_by_is_400(admin):
    response = client_for(admin).get("/api/admin/usage/summary?group_by=project")
    assert response.status_code == 400
    assert list(response.json()) == ["group_by"]


# --- Chargeback CSV -------------------------------------------------------------------------


def chargeback(admin, query: str = ""):
    with time_machine.travel(at(11.5), tick=False):
        return client_for(admin).get(f"/api/admin/usage/chargeback.csv?{query}")


def test_chargeback_has_one_row_per_user_per_month(admin, record):
    alice, bob = unique_user(), unique_user()
    record_past(record, alice, datetime(2026, 10, 3, 9, tzinfo=UTC))
    record_past(record, alice, datetime(2026, 10, 30, 9, tzinfo=UTC))
    record_past(record, bob, datetime(2026, 10, 31, 23, 30, tzinfo=UTC), model_id=SONNET)
    record_at(record, alice, at(9), model_id=SONNET, usage=Usage(input_tokens=9000))
    record_at(record, bob, at(10))
    response = chargeback(admin, "from=2026-10-01&to=2026-11-30")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["month"], row["email"], row["requests"]) for row in rows] == [
        ("2026-10", bob.email, "1"),  # Sonnet: dearer than Alice's two Haiku calls
        ("2026-10", alice.email, "2"),
        ("2026-11", alice.email, "1"),
        ("2026-11", bob.email, "1"),
    ]
    for row in rows:
        user = alice if row["email"] == alice.email else bob
        month = datetime.strptime(row["month"], "%Y-%m").replace(tzinfo=UTC)
        end = (month + timedelta(days=32)).replace(day=1)
        expected = sums_of_records(user, month, end)
        assert row["cost_usd"] == f"{expected['cost_micros'] / 1_000_000:.6f}"
        assert int(row["input_tokens"]) == expected["input_tokens"]
        assert row["user_id"] == str(user.id)


def test_chargeback_defaults_to_last_month_and_this_one(admin, record):
    user = unique_user()
    record_past(record, user, datetime(2026, 9, 30, 12, tzinfo=UTC))
    record_past(record, user, datetime(2026, 10, 15, 12, tzinfo=UTC))
    record_at(record, user, at(9))
    rows = list(csv.DictReader(io.StringIO(chargeback(admin).content.decode())))
    assert [row["month"] for row in rows] == ["2026-10", "2026-11"]


def test_chargeback_guards_cells_against_formulas(admin, record):
    sneaky = unique_user()
    sneaky.email = "=HYPERLINK(evil)@example.com"
    sneaky.save()
    record_at(record, sneaky, at(9))
    text = chargeback(admin, "from=2026-11-01&to=2026-11-30").content.decode()
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["email"] == "'=HYPERLINK(evil)@example.com"


def test_chargeback_is_for_admins_only_and_checks_its_range(unique_owner, admin):
    assert client_for(unique_owner).get("/api/admin/usage/chargeback.csv").status_code == 403
    bad = chargeback(admin, "from=2026-11-30&to=2026-11-01")
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"
    assert chargeback(admin, "from=2020-01-01&to=2026-11-01").status_code == 400
