"""An unreachable counter store (each failure mode), the default caps, the warm hot path."""

import pytest

from caps.errors import CapStoreUnavailable
from caps.reservations import cap_reserve, cap_settle
from caps.services import cap_create
from caps.status import cap_status
from caps.store import _stores, cap_store
from costs.money import Usage
from costs.pricing import price_table
from tests.fixtures.calls import SONNET
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.django_db

SMALL = Usage(input_tokens=10, output_tokens=10)


@pytest.fixture
def dead_redis():
    """A Redis URL on which nothing listens: a real connection failure."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    yield cap_store(url=url)
    _stores.pop(url)


def failure_mode(settings, mode):
    caps = settings.GATEWAY.usage_caps.model_copy(update={"store_failure_mode": mode})
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})


def test_store_down_fails_closed_when_configured(dead_redis, make_user, default_prices, settings):
    failure_mode(settings, "closed")
    user = make_user()
    with pytest.raises(CapStoreUnavailable):
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=dead_redis)


def test_store_down_fails_open_when_configured(dead_redis, make_user, default_prices, settings):
    failure_mode(settings, "open")
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_cost_cents=100)
    reservation = cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=dead_redis)
    assert reservation.reserved is False
    cap_settle(reservation=reservation, actual=SMALL)  # a no-op on the counters
    assert reservation.settled is True


def test_default_mode_fails_closed_only_for_users_with_a_cost_cap(
    dead_redis, make_user, default_prices
):
    spender = make_user()
    cap_create(user_id=spender.pk, cap_type="monthly", set_by="admin", max_cost_cents=500)
    counter = make_user()
    cap_create(user_id=counter.pk, cap_type="daily", set_by="user", max_requests=5)
    with pytest.raises(CapStoreUnavailable):
        cap_reserve(user_id=spender.pk, model_id=SONNET, estimate=SMALL, store=dead_redis)
    reservation = cap_reserve(user_id=counter.pk, model_id=SONNET, estimate=SMALL, store=dead_redis)
    assert reservation.reserved is False


def test_status_with_the_store_down_is_unavailable(dead_redis, make_user):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=5)
    with pytest.raises(CapStoreUnavailable):
        cap_status(user_id=user.pk, store=dead_redis)


def test_a_warm_reservation_does_not_touch_the_database(
    redis_store, make_user, default_prices, django_assert_num_queries
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    cap_settle(
        reservation=cap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=SMALL, store=redis_store
        ),
        actual=SMALL,
    )
    price_table()  # the price table re-validates at most once a second: fresh now
    with django_assert_num_queries(0):
        reservation = cap_reserve(
            user_id=user.pk, model_id=SONNET, estimate=SMALL, store=redis_store
        )
        cap_settle(reservation=reservation, actual=SMALL, cost_micros=180)


def test_a_warm_embedded_reservation_is_one_short_transaction(
    db_store, make_user, default_prices, django_assert_max_num_queries
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=db_store)
    price_table()
    # lock (PostgreSQL), expired leases, counters + version, upsert, lease insert + savepoints
    with django_assert_max_num_queries(8):
        cap_reserve(user_id=user.pk, model_id=SONNET, estimate=SMALL, store=db_store)
