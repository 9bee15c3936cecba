"""The usage API: own records and summaries, filters, pagination, admin variants, isolation."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.services import api_key_create
from costs.money import Usage
from usage import services

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 25, tzinfo=UTC)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def record_at(record, user, started_at, **overrides):
    with time_machine.travel(started_at, tick=False):
        return record(user, started_at=started_at, **overrides)


@pytest.fixture
def history(unique_owner, unique_stranger, record):
    """The owner's 5 calls over two days (two models, one key, one error); one stranger call."""
    key = api_key_create(user=unique_owner, name="ci").api_key
    record_at(record, unique_owner, at(-20), usage=Usage(input_tokens=100, output_tokens=10))
    with time_machine.travel(at(-18.9), tick=False):
        services.summary_persist_hours()  # the hourly job ran since (it runs every hour)
    record_at(record, unique_owner, at(8.5), api_key_id=key.id, auth_kind="api_key")
    record_at(
        record,
        unique_owner,
        at(9.5),
        model_id="global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        upstream_status=429,
        error_type="ThrottlingException",
        usage=Usage(),
    )
    record_at(record, unique_owner, at(10.2), api_key_id=key.id, auth_kind="api_key")
    record_at(record, unique_owner, at(10.7), model_id="anthropic.claude-unpriced-1")
    record_at(record, unique_stranger, at(10.5), usage=Usage(input_tokens=999_999))
    return key


def test_records_list_only_the_callers_own_newest_first(unique_owner, unique_stranger, history):
    body = client_for(unique_owner).get("/api/usage/records").json()
    assert body["count"] == 5
    starts = [row["started_at"] for row in body["results"]]
    assert starts == sorted(starts, reverse=True)
    assert {row["input_tokens"] for row in body["results"]} != {999_999}
    other = client_for(unique_stranger).get("/api/usage/records").json()
    assert other["count"] == 1
    assert other["results"][0]["input_tokens"] == 999_999


def test_a_record_shows_cost_in_micros_and_usd(unique_owner, history):
    rows = client_for(unique_owner).get("/api/usage/records").json()["results"]
    priced = next(row for row in rows if row["started_at"].startswith("2026-11-24"))
    assert (priced["cost_micros"], priced["cost_usd"]) == (150, "0.000150")
    unpriced = next(row for row in rows if row["base_model_id"] == "anthropic.claude-unpriced-1")
    assert (unpriced["cost_micros"], unpriced["cost_usd"]) == (None, None)


def test_pagination_is_stable_across_pages(unique_owner, record):
    same_moment = at(10)
    for _ in range(7):
        record_at(record, unique_owner, same_moment)
    client = client_for(unique_owner)
    seen = []
    for offset in range(0, 7, 3):
        page = client.get(f"/api/usage/records?limit=3&offset={offset}").json()
        seen += [row["id"] for row in page["results"]]
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("model=anthropic.claude-haiku-4-5-20251001-v1:0", 3),
        ("model=global.anthropic.claude-sonnet-4-5-20250929-v1:0", 1),
        ("from=2026-11-25", 4),
        ("to=2026-11-24", 1),
        ("from=2026-11-25T09:00:00Z&to=2026-11-25T10:30:00Z", 2),
        ("status=429", 1),
        ("status=success", 4),
        ("status=error", 1),
    ],
)
def test_records_filters(unique_owner, history, query, expected):
    assert client_for(unique_owner).get(f"/api/usage/records?{query}").json()["count"] == expected


def test_records_filter_by_key(unique_owner, history):
    body = client_for(unique_owner).get(f"/api/usage/records?key={history.id}").json()
    assert body["count"] == 2
    assert {row["api_key_hint"] for row in body["results"]} == {history.hint}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday", "from"),
        ("to=2026-13-45", "to"),
        ("from=2026-11-25&to=2026-11-20", "to"),
        ("key=abc", "key"),
        ("status=teapot", "status"),
        ("status=700", "status"),
    ],
)
def test_bad_record_filters_are_400_naming_the_field(unique_owner, query, field):
    response = client_for(unique_owner).get(f"/api/usage/records?{query}")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert isinstance(response.json()[field], list)


def test_anonymous_callers_are_refused(history):
    for path in ("/api/usage/records", "/api/usage/summary"):
        assert APIClient().get(path).status_code in (401, 403)


def test_the_summary_has_totals_and_breakdowns_by_day_model_and_client(unique_owner, history):
    with time_machine.travel(at(11.5), tick=False):
        body = (
            client_for(unique_owner).get("/api/usage/summary?from=2026-11-24&to=2026-11-25").json()
        )
    assert body["totals"]["requests"] == 5
    assert body["totals"]["input_tokens"] == 100 + 3 * 1000
    assert body["totals"]["cost_micros"] == 150 + 2 * 1500
    assert body["totals"]["cost_usd"] == "0.003150"
    assert body["totals"]["unknown_cost_requests"] == 1
    assert [(p["period_start"][:10], p["requests"]) for p in body["by_period"]] == [
        ("2026-11-24", 1),
        ("2026-11-25", 4),
    ]
    models = {m["model"]: m["requests"] for m in body["by_model"]}
    assert models == {
        "anthropic.claude-haiku-4-5-20251001-v1:0": 3,
        "anthropic.claude-sonnet-4-5-20250929-v1:0": 1,
        "anthropic.claude-unpriced-1": 1,
    }
    assert body["by_client"] == [
        {"client_family": "Anthropic/Python", **body["totals"]},
    ]


def test_the_summary_merges_persisted_hours_and_live_counters_without_double_counting(
    unique_owner, history, record
):
    client = client_for(unique_owner)
    query = "/api/usage/summary?from=2026-11-25&to=2026-11-25&group_by=hour"
    with time_machine.travel(at(10.9), tick=False):
        before = client.get(query).json()
    with time_machine.travel(at(11.1), tick=False):
        services.summary_persist_hours()
        after_persist = client.get(query).json()
    # A call now shows up at once, from the live counter.
    record_at(record, unique_owner, at(11.2))
    with time_machine.travel(at(11.3), tick=False):
        live = client.get(query).json()
    assert before["totals"] == after_persist["totals"]
    assert before["totals"]["requests"] == 4
    assert live["totals"]["requests"] == 5
    assert [(p["period_start"][11:13], p["requests"]) for p in live["by_period"]] == [
        ("08", 1),
        ("09", 1),
        ("10", 2),
        ("11", 1),
    ]


def test_bad_summary_queries_are_400(unique_owner):
    client = client_for(unique_owner)
    assert list(client.get("/api/usage/summary?group_by=year").json()) == ["group_by"]
    assert list(client.get("/api/usage/summary?from=2020-01-01&to=2026-01-01").json()) == ["to"]


def test_admin_variants_are_forbidden_to_non_admins(unique_owner, history):
    client = client_for(unique_owner)
    for path in (
        "/api/admin/usage/records",
        "/api/admin/usage/summary",
        "/api/admin/usage/unpriced-models",
    ):
        assert client.get(path).status_code == 403


def test_admins_see_everyone_or_one_user(admin, unique_owner, unique_stranger, history):
    client = client_for(admin)
    assert client.get("/api/admin/usage/records").json()["count"] == 6
    body = client.get(f"/api/admin/usage/records?user={unique_stranger.id}").json()
    assert body["count"] == 1
    assert body["results"][0]["user_email"] == unique_stranger.email
    with time_machine.travel(at(11.5), tick=False):
        everyone = client.get("/api/admin/usage/summary?from=2026-11-24&to=2026-11-25").json()
        one = client.get(
            f"/api/admin/usage/summary?from=2026-11-24&to=2026-11-25&user={unique_owner.id}"
        ).json()
    assert everyone["totals"]["requests"] == 6
    assert everyone["totals"]["input_tokens"] == 100 + 3000 + 999_999
    assert one["totals"]["requests"] == 5


def test_admins_see_which_models_lack_a_price(admin, history):
    body = client_for(admin).get("/api/admin/usage/unpriced-models").json()
    assert [(row["model"], row["requests"], row["priced_now"]) for row in body["results"]] == [
        ("anthropic.claude-unpriced-1", 1, False)
    ]


def test_the_records_list_runs_a_fixed_number_of_queries(
    unique_owner, history, record, django_assert_max_num_queries
):
    for _ in range(20):
        record_at(record, unique_owner, at(10))
    client = client_for(unique_owner)
    with django_assert_max_num_queries(2):
        assert client.get("/api/usage/records?limit=25").status_code == 200
