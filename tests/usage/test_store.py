"""The counter store: atomic multi-key increments, TTLs and expiry, on both implementations."""

import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from usage.models import Counter
from usage.store import DatabaseStore, Increment, RedisStore, StoreUnavailable, get_store

THREADS = 8
ROUNDS = 40


def hammer(store, keys: list[str]) -> None:
    """THREADS threads x ROUNDS incr_many calls, each moving every key by 1 and 2."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(ROUNDS):
                store.incr_many(
                    [Increment(key=k, deltas={"requests": 1, "tokens": 2}, ttl=600) for k in keys]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def key(n: int) -> str:
    return f"usage_summary:{{user_{n}}}:hourly:2026-11-25T10"


@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_on_the_configured_store_give_exact_totals(backend_name):
    store = get_store()
    assert isinstance(store, RedisStore if backend_name == "redis" else DatabaseStore)
    keys = [key(9001), key(9002)]
    store.delete(keys)
    hammer(store, keys)
    values = store.get_many(keys)
    expected = {"requests": THREADS * ROUNDS, "tokens": 2 * THREADS * ROUNDS}
    assert values == {keys[0]: expected, keys[1]: expected}
    store.delete(keys)


@pytest.mark.django_db(transaction=True)
def test_concurrent_updates_on_the_database_store_give_exact_totals():
    store = DatabaseStore()
    keys = [key(1), key(2)]
    hammer(store, keys)
    expected = {"requests": THREADS * ROUNDS, "tokens": 2 * THREADS * ROUNDS}
    assert store.get_many(keys) == {keys[0]: expected, keys[1]: expected}


def test_concurrent_updates_on_redis_give_exact_totals(own_redis):
    keys = [key(1), key(2)]
    hammer(own_redis, keys)
    expected = {"requests": THREADS * ROUNDS, "tokens": 2 * THREADS * ROUNDS}
    assert own_redis.get_many(keys) == {keys[0]: expected, keys[1]: expected}


def test_redis_keys_get_the_ttl_and_vanish_after_it(own_redis):
    own_redis.incr_many([Increment(key=key(1), deltas={"requests": 1}, ttl=1)])
    assert 0 < own_redis.client.ttl(key(1)) <= 1
    own_redis.incr_many([Increment(key=key(2), deltas={"requests": 1}, ttl=90000)])
    assert 89990 < own_redis.client.ttl(key(2)) <= 90000
    time.sleep(1.2)  # past the 1 s TTL: Redis's own expiry is the case
    assert own_redis.get_many([key(1), key(2)]) == {key(1): {}, key(2): {"requests": 1}}
    own_redis.incr_many([Increment(key=key(1), deltas={"requests": 5}, ttl=60)])
    assert own_redis.get_many([key(1)]) == {key(1): {"requests": 5}}


@pytest.mark.django_db
def test_database_rows_expire_like_redis_keys_and_restart_from_the_new_delta():
    store = DatabaseStore()
    store.incr_many([Increment(key=key(1), deltas={"requests": 3, "tokens": 9}, ttl=60)])
    assert store.get_many([key(1)]) == {key(1): {"requests": 3, "tokens": 9}}
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        assert store.get_many([key(1)]) == {key(1): {}}
        assert store.scan("usage_summary:") == []
        store.incr_many([Increment(key=key(1), deltas={"requests": 1}, ttl=60)])
        assert store.get_many([key(1)]) == {key(1): {"requests": 1}}


@pytest.mark.django_db
def test_a_new_increment_refreshes_the_ttl_of_the_whole_hash():
    store = DatabaseStore()
    store.incr_many([Increment(key=key(1), deltas={"requests": 1, "tokens": 1}, ttl=60)])
    with time_machine.travel(timezone.now() + timedelta(seconds=50)):
        store.incr_many([Increment(key=key(1), deltas={"requests": 1}, ttl=60)])
    with time_machine.travel(timezone.now() + timedelta(seconds=100)):
        assert store.get_many([key(1)]) == {key(1): {"requests": 2, "tokens": 1}}


@pytest.mark.django_db
def test_sweep_deletes_only_expired_rows():
    store = DatabaseStore()
    store.incr_many(
        [
            Increment(key=key(1), deltas={"requests": 1}, ttl=10),
            Increment(key=key(2), deltas={"requests": 1}, ttl=1000),
        ]
    )
    with time_machine.travel(timezone.now() + timedelta(seconds=11)):
        assert store.sweep() == 1
    assert list(Counter.objects.values_list("key", flat=True)) == [key(2)]


@pytest.mark.django_db
def test_replace_many_sets_absolute_values_on_the_database_store():
    store = DatabaseStore()
    store.incr_many([Increment(key=key(1), deltas={"requests": 7, "tokens": 7}, ttl=60)])
    store.replace_many([Increment(key=key(1), deltas={"requests": 2}, ttl=60)])
    assert store.get_many([key(1)]) == {key(1): {"requests": 2}}


def test_replace_many_sets_absolute_values_on_redis(own_redis):
    own_redis.incr_many([Increment(key=key(1), deltas={"requests": 7, "tokens": 7}, ttl=60)])
    own_redis.replace_many([Increment(key=key(1), deltas={"requests": 2}, ttl=60)])
    assert own_redis.get_many([key(1)]) == {key(1): {"requests": 2}}
    assert 0 < own_redis.client.ttl(key(1)) <= 60


def test_scan_on_redis_treats_braces_literally(own_redis):
    own_redis.incr_many(
        [
            Increment(key=key(1), deltas={"requests": 1}, ttl=60),
            Increment(key="usage_cap:{user_1}:daily:2026-11-25", deltas={"requests": 1}, ttl=60),
        ]
    )
    assert own_redis.scan("usage_summary:{user_1}") == [key(1)]


def test_an_unreachable_redis_raises_store_unavailable():
    from tests.fixtures.servers import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable):
        store.incr_many([Increment(key=key(1), deltas={"requests": 1}, ttl=60)])
