"""An unreachable counter store (each failure mode), the default caps, the warm hot path."""

from datetime import UTC, datetime, timedelta

import pytest

from caps.models import UserCapConfig
from caps.services import (
    CapExceeded,
    CapStoreUnavailable,
    _stores,
    cap_create,
    cap_delete,
    cap_reserve_sync,
    cap_settle_sync,
    cap_status,
    cap_store,
    caps_install_defaults,
)
from costs.pricing import Usage, price_table
from tests.caps.conftest import MODEL
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


def test_store_down_fails_closed_when_configured(dead_redis, make_user, prices, settings):
    failure_mode(settings, "closed")
    user = make_user()
    with pytest.raises(CapStoreUnavailable):
        cap_reserve_sync(user_id=user.pk, model_id=MODEL, estimate=SMALL, store=dead_redis)


def test_store_down_fails_open_when_configured(dead_redis, make_user, prices, settings):
    failure_mode(settings, "open")
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_cost_cents=100)
    reservation = cap_reserve_sync(
        user_id=user.pk, model_id=MODEL, estimate=SMALL, store=dead_redis
    )
    assert reservation.reserved is False
    cap_settle_sync(reservation=reservation, actual=SMALL)  # a no-op on the counters
    assert reservation.settled is True


def test_default_mode_fails_closed_only_for_users_with_a_cost_cap(dead_redis, make_user, prices):
    spender = make_user()
    cap_create(user_id=spender.pk, cap_type="monthly", set_by="admin", max_cost_cents=500)
    counter = make_user()
    cap_create(user_id=counter.pk, cap_type="daily", set_by="user", max_requests=5)
    with pytest.raises(CapStoreUnavailable):
        cap_reserve_sync(user_id=spender.pk, model_id=MODEL, estimate=SMALL, store=dead_redis)
    reservation = cap_reserve_sync(
        user_id=counter.pk, model_id=MODEL, estimate=SMALL, store=dead_redis
    )
    assert reservation.reserved is False


def test_status_with_the_store_down_is_unavailable(dead_redis, make_user):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=5)
    with pytest.raises(CapStoreUnavailable):
        cap_status(user_id=user.pk, store=dead_redis)


def test_new_user_gets_the_default_daily_caps_at_once(any_store, make_user, prices):
    from accounts.models import User

    user = User.objects.create_user(username="new@example.com", email="new@example.com")
    [cap] = caps_install_defaults(user=user)
    assert (cap.cap_type, cap.set_by, cap.enforce_from) == ("daily", "admin", None)
    assert (cap.max_requests, cap.max_tokens, cap.max_cost_cents) == (1000, 100000, 1000)
    assert caps_install_defaults(user=user) == []  # once


def test_existing_user_gets_the_defaults_lazily_after_the_grace_period(
    any_store, make_user, prices, settings
):
    caps = settings.GATEWAY.usage_caps.model_copy(
        update={"default_daily_requests": 2, "default_daily_tokens": None}
    )
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    user = make_user(defaults=True)
    now = datetime.now(UTC)
    user.date_joined = now - timedelta(days=30)
    user.save(update_fields=["date_joined"])
    for _ in range(3):
        reservation = cap_reserve_sync(
            user_id=user.pk, model_id=MODEL, estimate=SMALL, store=any_store, now=now
        )
        cap_settle_sync(reservation=reservation, actual=SMALL)
    cap = UserCapConfig.objects.get(user=user)
    assert (cap.set_by, cap.max_requests, cap.max_tokens) == ("admin", 2, None)
    assert cap.enforce_from > now  # grace: it warns first
    with pytest.raises(CapExceeded):
        cap_reserve_sync(
            user_id=user.pk, model_id=MODEL, estimate=SMALL, store=any_store,
            now=now + timedelta(minutes=6),
        )  # fmt: skip


def test_a_user_who_just_joined_gets_the_defaults_lazily_at_once(
    any_store, make_user, prices, settings
):
    caps = settings.GATEWAY.usage_caps.model_copy(
        update={"default_daily_requests": 2, "default_daily_tokens": None}
    )
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    user = make_user(defaults=True)
    for _ in range(2):
        reservation = cap_reserve_sync(
            user_id=user.pk, model_id=MODEL, estimate=SMALL, store=any_store
        )
        cap_settle_sync(reservation=reservation, actual=SMALL)
    assert UserCapConfig.objects.get(user=user).enforce_from is None
    with pytest.raises(CapExceeded):
        cap_reserve_sync(user_id=user.pk, model_id=MODEL, estimate=SMALL, store=any_store)


def test_defaults_an_admin_removed_do_not_come_back(any_store, make_user, prices):
    user = make_user(defaults=True)
    [cap] = caps_install_defaults(user=user, new_user=False)
    cap_delete(cap=cap, by_admin=True)
    cap_reserve_sync(user_id=user.pk, model_id=MODEL, estimate=SMALL, store=any_store)
    assert not UserCapConfig.objects.filter(user=user).exists()


def test_null_defaults_install_no_cap(make_user, settings):
    caps = settings.GATEWAY.usage_caps.model_copy(
        update={
            "default_daily_requests": None,
            "default_daily_tokens": None,
            "default_daily_cost_cents": None,
        }
    )
    settings.GATEWAY = settings.GATEWAY.model_copy(update={"usage_caps": caps})
    user = make_user(defaults=True)
    assert caps_install_defaults(user=user) == []


def test_a_warm_reservation_does_not_touch_the_database(
    redis_store, make_user, prices, django_assert_num_queries
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    cap_settle_sync(
        reservation=cap_reserve_sync(
            user_id=user.pk, model_id=MODEL, estimate=SMALL, store=redis_store
        ),
        actual=SMALL,
    )
    price_table()  # the price table re-validates at most once a second: fresh now
    with django_assert_num_queries(0):
        reservation = cap_reserve_sync(
            user_id=user.pk, model_id=MODEL, estimate=SMALL, store=redis_store
        )
        cap_settle_sync(reservation=reservation, actual=SMALL, cost_micros=180)


def test_a_warm_embedded_reservation_is_one_short_transaction(
    db_store, make_user, prices, django_assert_max_num_queries
):
    user = make_user()
    cap_create(user_id=user.pk, cap_type="daily", set_by="user", max_requests=100)
    cap_reserve_sync(user_id=user.pk, model_id=MODEL, estimate=SMALL, store=db_store)
    price_table()
    # lock (PostgreSQL), expired leases, counters + version, upsert, lease insert + savepoints
    with django_assert_max_num_queries(8):
        cap_reserve_sync(user_id=user.pk, model_id=MODEL, estimate=SMALL, store=db_store)
