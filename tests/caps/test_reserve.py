"""Reserve / settle at the service level, on both stores (Redis and the database)."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from caps.errors import CapExceeded
from caps.headroom import headroom_headers
from caps.models import UserCapConfig
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create, cap_update
from caps.status import cap_status
from caps.store import IN_FLIGHT
from costs.money import Usage
from tests.fixtures.calls import SONNET

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
SMALL = Usage(input_tokens=10, output_tokens=10)


@pytest.fixture(autouse=True)
def _at_t0():
    """The calls of these tests happen at T0, so everything else does too: the stores' TTLs,
    grace periods and leases (the clock ticks on, so leases still expire as seconds pass)."""
    with time_machine.travel(T0):
        yield


def reserve(store, user, estimate=SMALL, now=T0):
    return cap_reserve(user_id=user.pk, model_id=SONNET, estimate=estimate, now=now, store=store)


def call(store, user, estimate=SMALL, actual=None, now=T0):
    reservation = reserve(store, user, estimate, now)
    cap_settle(reservation=reservation, actual=actual or estimate)
    return reservation


def used(store, user, cap_type="daily", now=T0):
    index = ["hourly", "daily", "monthly"].index(cap_type)
    from caps.windows import window_keys

    return store.read([window_keys(user.pk, now)[index]], now)[0]


def test_exceeded_request_cap_names_cap_usage_and_reset(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=3)
    for _ in range(3):
        call(any_store, user)
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user)
    exc = info.value
    assert exc.message == "Daily usage cap exceeded: 3/3 requests. Resets at 2026-11-26T00:00:00Z"
    assert exc.body() == {
        "error": exc.message,
        "cap_type": "daily",
        "limit_type": "requests",
        "current_usage": 3,
        "limit": 3,
        "reset_time": "2026-11-26T00:00:00Z",
        "retry_after_seconds": 13 * 3600 + 30 * 60,
    }


def test_the_cap_that_resets_last_decides_retry_after(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="hourly", set_by="user", max_requests=1)
    cap_create(user_id=user.pk, cap_type="monthly", set_by="user", max_requests=1)
    call(any_store, user, now=datetime(2026, 11, 25, 10, 59, 59, tzinfo=UTC))
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, now=datetime(2026, 11, 25, 10, 59, 59, 700000, tzinfo=UTC))
    # Both are full; the monthly one resets last, so that is when a retry can succeed.
    assert info.value.cap_type == "monthly"
    assert info.value.reset_time == datetime(2026, 12, 1, tzinfo=UTC)
    assert info.value.retry_after_seconds == 5 * 86400 + 13 * 3600 + 1


def test_retry_after_rounds_up_to_the_reset(any_store, make_user, default_prices):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="hourly", set_by="user", max_requests=1)
    call(any_store, user, now=datetime(2026, 11, 25, 10, 59, 59, tzinfo=UTC))
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, now=datetime(2026, 11, 25, 10, 59, 59, 500000, tzinfo=UTC))
    assert info.value.reset_time == datetime(2026, 11, 25, 11, tzinfo=UTC)
    assert info.value.retry_after_seconds == 1
    assert info.value.message.endswith("Resets at 2026-11-25T11:00:00Z")


def test_a_call_the_estimate_of_which_does_not_fit_is_refused_with_what_it_needs(
    any_store, make_user, default_prices
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_tokens=1000)
    call(any_store, user, estimate=Usage(input_tokens=500, output_tokens=400))
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, estimate=Usage(input_tokens=50, output_tokens=51))
    assert info.value.limit_type == "tokens"
    assert info.value.current_usage == 900
    assert "900/1000 tokens (this request needs about 101 tokens)" in info.value.message
    reserve(any_store, user, estimate=Usage(input_tokens=50, output_tokens=50))  # fits exactly


def test_cost_cap_compares_micro_dollars_and_reports_cents(any_store, make_user, default_prices):
    user = make_user()
    # Sonnet 4.6: $3 / $15 per Mtok -> 1000 in + 1000 out = 18,000 micros = 1.8 cents.
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_cost_cents=5)
    est = Usage(input_tokens=1000, output_tokens=1000)
    call(any_store, user, estimate=est)
    call(any_store, user, estimate=est)
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, estimate=est)  # 3.6 + 1.8 > 5 cents
    assert info.value.limit_type == "cost"
    assert info.value.current_usage == Decimal("3.6")
    assert info.value.body()["current_usage"] == 3.6
    assert info.value.limit == 5
    assert "$0.036/$0.05 cost (this request needs about $0.018)" in info.value.message
    reserve(any_store, user, estimate=Usage(input_tokens=1000, output_tokens=700))  # 1.35 fits


def test_the_strictest_of_an_admin_cap_and_the_users_own_applies(
    any_store, make_user, default_prices
):
    user = make_user()
    cap_create(
        user_id=user.pk,
        cap_type="daily",
        set_by="admin",
        max_requests=5,
        now=T0 - timedelta(hours=1),
    )
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=2)
    call(any_store, user)
    call(any_store, user)
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user)
    assert info.value.limit == 2


@pytest.mark.parametrize(
    ("cap_type", "before", "after"),
    [
        (
            "hourly",
            datetime(2026, 11, 25, 10, 59, 59, tzinfo=UTC),
            datetime(2026, 11, 25, 11, tzinfo=UTC),
        ),
        (
            "daily",
            datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC),
            datetime(2026, 11, 26, tzinfo=UTC),
        ),
        (
            "monthly",
            datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
        ),
    ],
)
def test_a_window_starts_from_zero_at_its_utc_boundary(
    any_store, make_user, default_prices, cap_type, before, after
):
    user = make_user()
    cap_create(
        user_id=user.pk,
        cap_type=cap_type,
        set_by="user",
        max_requests=1,
        now=before - timedelta(days=40),
    )
    call(any_store, user, now=before)
    with pytest.raises(CapExceeded):
        reserve(any_store, user, now=before)
    call(any_store, user, now=after)
    assert used(any_store, user, cap_type, now=after)["requests"] == 1


def test_a_call_counts_in_the_window_where_it_started(any_store, make_user, default_prices):
    user = make_user()
    started = datetime(2026, 11, 25, 10, 59, tzinfo=UTC)
    reservation = reserve(any_store, user, now=started)
    # Settled at 11:06: still counted in hour 10, nothing in hour 11.
    cap_settle(reservation=reservation, actual=Usage(input_tokens=7, output_tokens=5))
    assert used(any_store, user, "hourly", now=started)["tokens"] == 12
    assert used(any_store, user, "hourly", now=started + timedelta(minutes=7)) == {}


def test_settle_leaves_no_reservation_behind(any_store, make_user, default_prices):
    user = make_user()
    for actual in (SMALL, None):
        reservation = reserve(any_store, user)
        assert any_store.open_reservations(user.pk) == 1
        cap_settle(reservation=reservation, actual=actual)
        assert any_store.open_reservations(user.pk) == 0
    counters = used(any_store, user)
    assert all(counters.get(f, 0) == 0 for f in IN_FLIGHT)
    # The call that never reached the upstream counted nothing.
    assert counters["requests"] == 1
    assert counters["tokens"] == 20


def test_an_unsettled_reservation_is_released_after_its_lease(
    any_store, make_user, default_prices, settings
):
    caps = settings.GATEWAY.usage_caps.model_copy(update={"reservation_lease_seconds": 1})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    reserve(any_store, user, now=None)  # a worker that died: never settled
    with pytest.raises(CapExceeded):
        reserve(any_store, user, now=None)
    time.sleep(1.1)  # past the 1 s lease in real time: its expiry is the case
    reservation = reserve(any_store, user, now=None)  # the dead one's lease ran out
    assert any_store.open_reservations(user.pk) == 1
    cap_settle(reservation=reservation, actual=SMALL)
    assert any_store.open_reservations(user.pk) == 0


def test_used_counters_equal_the_sum_of_settled_actuals_after_mixed_cycles(
    any_store, make_user, default_prices
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="monthly", set_by="user", max_tokens=10**9)
    total_tokens = total_requests = 0
    open_ones = []
    for i in range(60):
        now = T0 + timedelta(minutes=i)
        reservation = reserve(
            any_store, user, estimate=Usage(input_tokens=100, output_tokens=50), now=now
        )
        open_ones.append(reservation)
        if i % 3 == 0:
            continue  # settle later, interleaved with newer reservations
        for r in open_ones:
            kind = (i + r.started_at.minute) % 4
            actual = (
                None
                if kind == 0
                else Usage(input_tokens=kind * 17, output_tokens=i, cache_read_tokens=5)
            )
            cap_settle(reservation=r, actual=actual)
            if actual is not None:
                total_requests += 1
                total_tokens += actual.cap_tokens
        open_ones = []
    for r in open_ones:
        cap_settle(reservation=r, actual=None)
    counters = used(any_store, user, "monthly")
    assert counters["requests"] == total_requests
    assert counters["tokens"] == total_tokens
    assert all(counters.get(f, 0) == 0 for f in IN_FLIGHT)
    assert any_store.open_reservations(user.pk) == 0


def test_admin_cap_blocks_only_after_the_grace_period_but_shows_at_once(
    any_store, make_user, default_prices
):
    user = make_user()
    call(any_store, user)
    call(any_store, user)
    cap_create(user_id=user.pk, cap_type="daily", set_by="admin", max_requests=2, now=T0)
    call(any_store, user, now=T0 + timedelta(minutes=4))  # grace: 5 minutes by default
    status = cap_status(user_id=user.pk, now=T0 + timedelta(minutes=4), store=any_store)
    assert [(s["is_exceeded"], s["enforced"]) for s in status] == [(True, False)]
    with pytest.raises(CapExceeded):
        reserve(any_store, user, now=T0 + timedelta(minutes=5))


def test_tightened_admin_cap_keeps_its_old_limit_during_the_grace_period(
    any_store, make_user, default_prices
):
    user = make_user()
    cap = cap_create(
        user_id=user.pk,
        cap_type="daily",
        set_by="admin",
        max_requests=3,
        now=T0 - timedelta(hours=1),
    )
    cap_update(cap=cap, by_admin=True, max_requests=1, now=T0)
    for _ in range(3):
        call(any_store, user, now=T0 + timedelta(minutes=1))
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, now=T0 + timedelta(minutes=1))
    assert info.value.limit == 3
    with pytest.raises(CapExceeded) as info:
        reserve(any_store, user, now=T0 + timedelta(minutes=6))
    assert info.value.limit == 1


def test_users_own_cap_applies_at_once(any_store, make_user, default_prices):
    user = make_user()
    call(any_store, user)
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1, now=T0)
    with pytest.raises(CapExceeded):
        reserve(any_store, user)


def test_enforce_off_never_blocks_but_counts_and_reports(
    any_store, make_user, default_prices, settings
):
    caps = settings.GATEWAY.usage_caps.model_copy(update={"enforce_caps": False})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=1)
    for _ in range(3):
        call(any_store, user)
    assert used(any_store, user)["requests"] == 3
    [status] = cap_status(user_id=user.pk, now=T0, store=any_store)
    assert status["is_exceeded"] is True
    assert status["percentage_used"] == 300.0
    assert status["enforced"] is False


def test_a_cap_change_reaches_a_warm_cache_at_once(any_store, make_user, default_prices):
    user = make_user()
    cap = cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=10)
    call(any_store, user)
    call(any_store, user)
    cap_update(cap=cap, by_admin=False, max_requests=2)
    with pytest.raises(CapExceeded):
        reserve(any_store, user)
    UserCapConfig.objects.filter(pk=cap.pk).update(max_requests=1)  # behind the services' back
    cap_update(cap=UserCapConfig.objects.get(pk=cap.pk), by_admin=False, is_active=False)
    call(any_store, user)


def test_headroom_headers_show_what_is_left_after_this_call(any_store, make_user, default_prices):
    user = make_user()
    cap_create(
        user_id=user.pk,
        cap_type="daily",
        set_by="admin",
        max_requests=10,
        max_cost_cents=100,
        now=T0 - timedelta(hours=1),
    )
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=5, max_tokens=1000)
    call(any_store, user)
    reservation = reserve(any_store, user, estimate=Usage(input_tokens=980, output_tokens=0))
    headers = headroom_headers(reservation)
    assert headers == {
        "x-gateway-cap-daily-requests-remaining": "3",
        "x-gateway-cap-daily-tokens-remaining": "0",
        "x-gateway-cap-daily-cost-cents-remaining": "99.6880",
        "x-gateway-cap-daily-reset": "2026-11-26T00:00:00Z",
    }
