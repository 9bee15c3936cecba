"""The per-session cost cap (cap_type "session"), at the service level on both stores."""

import time
import uuid
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from caps.errors import CapExceeded
from caps.headroom import headroom_headers
from caps.rebuild import caps_rebuild
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create
from caps.status import cap_status
from caps.windows import session_key, user_tag
from costs.money import Usage
from tests.fixtures.calls import SONNET
from tests.fixtures.cap_store import wipe_redis_user
from usage.models import Counter
from usage.services import CallRecord, usage_record

pytestmark = pytest.mark.django_db

SMALL = Usage(input_tokens=10, output_tokens=10)


def reserve(store, user, session="s1", estimate=SMALL):
    return cap_reserve(
        user_id=user.pk, model_id=SONNET, estimate=estimate, store=store, session_id=session
    )


def spend(store, user, session, micros):
    """One call of the session that cost `micros`."""
    reservation = reserve(store, user, session)
    cap_settle(reservation=reservation, actual=SMALL, cost_micros=micros)


def session_counters(store, user, session) -> dict:
    now = datetime.now(UTC)
    return store.read([session_key(user.pk, session)], now)[0]


def test_session_key_is_hashed_under_the_users_tag():
    key = session_key(42, "7f0c-session")
    assert key.startswith("usage_cap:{user_42}:session:")
    assert len(key.rsplit(":", 1)[1]) == 16
    assert session_key(42, None) is None
    assert session_key(42, "") is None


def test_a_full_session_is_refused_with_the_seeds_body(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=200)
    spend(any_store, user, "s1", 2_000_000)
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, "s1")
    exc = info.value
    assert exc.message == "Session cost cap exceeded: $2.00/$2.00. Start a new session."
    assert exc.body() == {
        "error": exc.message,
        "cap_type": "session",
        "limit_type": "cost",
        "current_usage": 200.0,
        "limit": 200,
        "reset_time": None,
        "retry_after_seconds": 86400,
    }
    # Another session, and a call without a session, still work.
    cap_settle(reservation=reserve(any_store, user, "s2"), actual=SMALL)
    cap_settle(reservation=reserve(any_store, user, None), actual=SMALL)
    assert session_counters(any_store, user, "s1")["cost_micros"] == 2_000_000
    assert session_counters(any_store, user, "s1")["requests"] == 1
    assert session_counters(any_store, user, "s2")["requests"] == 1


def test_a_call_that_does_not_fit_says_what_it_needs(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=200)
    spend(any_store, user, "s1", 1_990_000)
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, "s1", Usage(input_tokens=10_000, output_tokens=1000))
    assert info.value.message == (
        "Session cost cap exceeded: $1.99/$2.00 (this request needs about $0.045). "
        "Start a new session."
    )


def test_the_session_cap_wins_over_a_full_calendar_cap(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_cost_cents=200)
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=100)
    spend(any_store, user, "s1", 2_000_000)
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, "s1")
    assert info.value.cap_type == "session"  # it never resets: Retry-After a day
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, "s2")
    assert info.value.cap_type == "daily"


def test_headroom_and_status(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=200)
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=10)
    reservation = reserve(any_store, user, "s1")
    headers = headroom_headers(reservation)
    assert float(headers["x-gateway-cap-session-cost-cents-remaining"]) < 200
    assert "x-gateway-cap-session-reset" not in headers
    assert "x-gateway-cap-daily-reset" in headers
    cap_settle(reservation=reservation, actual=SMALL)
    assert "x-gateway-cap-session-cost-cents-remaining" not in headroom_headers(
        reserve(any_store, user, None)
    )
    assert [s["cap_type"] for s in cap_status(user_id=user.pk, store=any_store)] == ["daily"]


def test_a_dead_workers_session_reservation_is_released_after_its_lease(
    any_store, make_user, default_prices, settings
):
    caps = settings.GATEWAY.usage_caps.model_copy(update={"reservation_lease_seconds": 1})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    user = make_user()
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=1)
    big = Usage(input_tokens=1000, output_tokens=300)  # 0.75 cents: two do not fit
    reserve(any_store, user, "s1", big)  # never settled
    assert session_counters(any_store, user, "s1")["if_cost_micros"] == 7500
    with pytest.raises(CapExceeded):
        reserve(any_store, user, "s1", big)
    time.sleep(1.1)  # past the 1 s lease in real time: its expiry is the case
    reservation = reserve(any_store, user, "s1", big)
    assert session_counters(any_store, user, "s1")["if_cost_micros"] == 7500
    cap_settle(reservation=reservation, actual=None)
    counters = session_counters(any_store, user, "s1")
    assert counters["if_cost_micros"] == 0
    assert counters.get("cost_micros", 0) == 0


def record(user, session, cost_usage: Usage):
    return usage_record(
        call=CallRecord(
            call_id=uuid.uuid4(), user_id=user.pk, api_key_id=None, auth_kind="jwt",
            model_id=SONNET, route="anthropic.messages", streaming=False, usage=cost_usage,
            upstream_status=200, error_type=None, latency_ms=5, ttfb_ms=None, request_id="r",
            started_at=datetime.now(UTC), client_family="claude-cli", session_id=session,
        )
    )  # fmt: skip


def lose_the_store(user) -> None:
    wipe_redis_user(user.pk)
    Counter.objects.filter(key__startswith=user_tag(user.pk)).delete()


def test_rebuild_restores_the_session_windows(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=1)
    heavy = Usage(input_tokens=1000, output_tokens=500)  # 1.05 cents
    rows = [record(user, "s1", heavy), record(user, "s2", SMALL)]
    lose_the_store(user)
    assert session_counters(any_store, user, "s1").get("cost_micros", 0) == 0
    caps_rebuild(store=any_store)
    assert session_counters(any_store, user, "s1")["cost_micros"] == rows[0].cost_micros
    assert session_counters(any_store, user, "s2")["requests"] == 1
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, "s1")
    assert info.value.cap_type == "session"
    cap_settle(reservation=reserve(any_store, user, "s2"), actual=SMALL)


def test_a_lost_redis_rebuilds_the_session_before_checking(redis_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="session", set_by="user", max_cost_cents=1)
    caps_rebuild(store=redis_store, user_id=user.pk)  # the sentinel exists
    record(user, "s1", Usage(input_tokens=1000, output_tokens=500))
    wipe_redis_user(user.pk)  # Redis restarted empty: no sentinel
    with pytest.raises(CapExceeded) as info:
        reserve(redis_store, user, "s1")  # the script answers `rebuild` first
    assert info.value.cap_type == "session"


def test_session_caps_limit_cost_only(make_user, db):
    user = make_user()
    for field in ("max_requests", "max_tokens"):
        with pytest.raises(ValidationError) as info:
            cap_create(user_id=user.pk, cap_type="session", set_by="user", **{field: 5})
        assert field in info.value.message_dict
    client = APIClient()
    client.force_authenticate(user)
    bad = client.post(
        "/api/usage/caps",
        {"cap_type": "session", "max_cost_cents": 200, "max_requests": 3},
        format="json",
    )
    assert bad.status_code == 400
    assert "max_requests" in bad.json()
    good = client.post(
        "/api/usage/caps", {"cap_type": "session", "max_cost_cents": 200}, format="json"
    )
    assert good.status_code == 201, good.content
    assert good.json()["cap_type"] == "session"
