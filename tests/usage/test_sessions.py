"""Claude Code sessions: GET /api/usage/sessions and the dashboard's /sessions page."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from costs.money import Usage

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 25, tzinfo=UTC)
SONNET = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"


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
def sessions(unique_owner, unique_stranger, record):
    """Owner: session A (3 calls, two models, 9:00-9:45), session B (1 call at 11:00), one call
    without a session; the stranger: a call in a session with A's id."""
    a = [
        record_at(record, unique_owner, at(9), session_id="sess-a"),
        record_at(
            record,
            unique_owner,
            at(9.5),
            session_id="sess-a",
            model_id=SONNET,
            usage=Usage(
                input_tokens=10, output_tokens=20, cache_write_5m_tokens=30, cache_read_tokens=40
            ),
        ),
        record_at(record, unique_owner, at(9.75), session_id="sess-a"),
    ]
    b = [record_at(record, unique_owner, at(11), session_id="sess-b")]
    record_at(record, unique_owner, at(10))
    record_at(record, unique_stranger, at(9.2), session_id="sess-a")
    return a, b


def test_sessions_group_the_callers_records_newest_first(unique_owner, sessions):
    a, _b = sessions
    body = client_for(unique_owner).get("/api/usage/sessions").json()
    assert body["count"] == 2
    first, second = body["results"]
    assert first["session_id"] == "sess-b"
    assert first["calls"] == 1
    assert first["duration_seconds"] == 0
    assert second["session_id"] == "sess-a"
    assert second["calls"] == 3  # the stranger's call with the same id is not the owner's
    assert second["started_at"].startswith("2026-11-25T09:00:00")
    assert second["ended_at"].startswith("2026-11-25T09:45:00")
    assert second["duration_seconds"] == 45 * 60
    assert second["input_tokens"] == sum(r.input_tokens for r in a)
    assert second["output_tokens"] == sum(r.output_tokens for r in a)
    assert second["cache_write_tokens"] == 30
    assert second["cache_read_tokens"] == 40
    cost = sum(r.cost_micros for r in a)
    assert cost > 0
    assert second["cost_micros"] == cost
    assert second["cost_cents"] == f"{cost / 10_000:.4f}"
    assert second["unknown_cost_calls"] == 0
    assert second["models"] == sorted({r.base_model_id for r in a})
    assert len(second["models"]) == 2


def test_sessions_range_keeps_whole_sessions_and_paginates(unique_owner, sessions):
    client = client_for(unique_owner)
    body = client.get("/api/usage/sessions", {"from": "2026-11-25T09:30:00Z",
                                              "to": "2026-11-25T10:30:00Z"}).json()  # fmt: skip
    assert [s["session_id"] for s in body["results"]] == ["sess-a"]
    assert body["results"][0]["calls"] == 3  # the session's calls before `from` still count
    body = client.get("/api/usage/sessions", {"from": "2026-11-26"}).json()
    assert body["count"] == 0
    page = client.get("/api/usage/sessions", {"limit": 1, "offset": 1}).json()
    assert page["count"] == 2
    assert [s["session_id"] for s in page["results"]] == ["sess-a"]
    assert client.get("/api/usage/sessions", {"from": "x"}).status_code == 400


def test_sessions_of_another_user_are_for_administrators(
    unique_owner, unique_stranger, admin, sessions
):
    assert (
        client_for(unique_stranger)
        .get("/api/usage/sessions", {"user": unique_owner.pk})
        .status_code
        == 403
    )
    body = client_for(admin).get("/api/usage/sessions", {"user": unique_owner.pk}).json()
    assert [s["session_id"] for s in body["results"]] == ["sess-b", "sess-a"]
    assert client_for(admin).get("/api/usage/sessions", {"user": 10**9}).status_code == 404
    mine = client_for(unique_stranger).get("/api/usage/sessions").json()
    assert [(s["session_id"], s["calls"]) for s in mine["results"]] == [("sess-a", 1)]


def test_sessions_list_is_one_group_by_plus_one_models_query(unique_owner, sessions):
    client = client_for(unique_owner)
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/usage/sessions").status_code == 200
    usage_queries = [q["sql"] for q in queries.captured_queries if "usage_usagerecord" in q["sql"]]
    # count, the page's GROUP BY, the page's models
    assert len(usage_queries) == 3
    assert all("GROUP BY" in sql or "DISTINCT" in sql for sql in usage_queries)


def test_sessions_page_lists_them_server_rendered(unique_owner, sessions):
    page = Client()
    page.force_login(unique_owner)
    response = page.get("/sessions")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'href="/sessions" aria-current="page"' in html
    assert "sess-a" in html
    assert "sess-b" in html
    assert "45 min 00 s" in html
    assert "<script>" not in html
    filtered = page.get("/sessions", {"from": "2026-11-26"}).content.decode()
    assert "sess-a" not in filtered
    assert "No sessions yet" in filtered
    assert (
        "Must be on or after"
        in page.get("/sessions", {"from": "2026-11-26", "to": "2026-11-25"}).content.decode()
    )
