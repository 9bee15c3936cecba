"""The Redis users of the gateway, in this process, on a real three-master Redis Cluster:
clients, counter store, caps store, credential cache and Django's cache — each multi-key step
with keys of users whose hash tags land on different masters."""

from __future__ import annotations

import itertools

import redis.cluster
from django.core.cache.backends.redis import RedisCache

from accounts.credential_cache import RedisCredentialCache, key_entry_name, user_entry_name
from caps.rules import Amounts
from caps.store import (
    RedisCapStore,
    RenewRequest,
    ReserveRequest,
    SettleRequest,
    sentinel_key,
)
from caps.windows import user_tag
from config import redis_clients
from config.cluster_cache import RedisClusterCache
from usage.store import Increment, RedisStore
from usage.windows import summary_key

_ids = itertools.count(9000)


def users_on_distinct_masters(cluster, count: int = 3, tag=user_tag) -> list[int]:
    """User ids whose `{user_N}` keys live on `count` different masters."""
    chosen: dict[int, int] = {}
    for user_id in _ids:
        chosen.setdefault(cluster.node_of(f"{tag(user_id)}:x"), user_id)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError("unreachable")


def test_the_setting_makes_both_clients_cluster_clients(on_cluster):
    client = redis_clients.sync_client(on_cluster.url)
    assert isinstance(client, redis.cluster.RedisCluster)
    assert client.retry.get_retries() == redis_clients.RETRIES
    assert {node.port for node in client.get_primaries()} == set(on_cluster.ports)
    # Timeouts are not retried (a timed-out script may have run); broken connections are.
    assert redis.TimeoutError not in type(client).ERRORS_ALLOW_RETRY
    assert redis.ConnectionError in type(client).ERRORS_ALLOW_RETRY
    # Off, the same URL gives a plain client (as before).
    assert not redis_clients.is_cluster(redis_clients.sync_client(on_cluster.url, cluster=False))


async def test_the_async_client_is_a_cluster_client_per_loop(on_cluster):
    client = redis_clients.async_client(on_cluster.url)
    assert isinstance(client, redis_clients.ThreadedCluster)
    assert redis.TimeoutError not in type(client.sync).ERRORS_ALLOW_RETRY
    assert redis_clients.async_client(on_cluster.url) is client
    await client.set("{probe}:async", 1)
    assert await client.get("{probe}:async") == b"1"


def test_counters_of_users_on_different_masters_move_in_one_call(on_cluster):
    from django.utils import timezone

    users = users_on_distinct_masters(on_cluster, tag=lambda u: summary_key(u, timezone.now()))
    hour = timezone.now()
    keys = [summary_key(u, hour) for u in users]
    assert len({on_cluster.node_of(k) for k in keys}) == 3
    store = RedisStore(on_cluster.url)
    store.incr_many([Increment(key=k, deltas={"requests": 1, "tokens": 10}, ttl=600) for k in keys])
    store.incr_many([Increment(key=k, deltas={"requests": 1, "tokens": 5}, ttl=600) for k in keys])
    assert store.get_many(keys) == {k: {"requests": 2, "tokens": 15} for k in keys}
    # Each key on its own master, with its TTL.
    for key in keys:
        node = on_cluster.node(on_cluster.node_of(key))
        assert node.hget(key, "requests") == b"2"
        assert 0 < node.ttl(key) <= 600

    store.replace_many([Increment(key=k, deltas={"requests": 7}, ttl=300) for k in keys])
    assert store.get_many(keys) == {k: {"requests": 7} for k in keys}
    # scan sees every master's keys; delete removes keys of several slots.
    prefix = "usage_summary:"
    assert set(keys) <= set(store.scan(prefix))
    store.delete(keys)
    assert store.get_many(keys) == {k: {} for k in keys}
    assert not set(keys) & set(store.scan(prefix))


async def test_async_increments_across_masters(on_cluster):
    from django.utils import timezone

    users = users_on_distinct_masters(on_cluster, tag=lambda u: summary_key(u, timezone.now()))
    keys = [summary_key(u, timezone.now()) for u in users]
    store = RedisStore(on_cluster.url)
    await store.aincr_many([Increment(key=k, deltas={"requests": 3}, ttl=60) for k in keys])
    assert await store.aget_many(keys) == {k: {"requests": 3} for k in keys}
    store.delete(keys)


def test_cap_counters_of_several_users_are_set_in_one_step_each(on_cluster):
    """set_used (rebuildcaps) writes users on different masters, each user's counters with its
    sentinel."""
    users = users_on_distinct_masters(on_cluster)
    store = RedisCapStore(on_cluster.url)
    entries = [(f"{user_tag(u)}:daily:2026-11-25", (1, 2, 3), 600) for u in users]
    store.set_used(entries, now=None, rebuilt_users=users)
    for user_id, (key, _, _) in zip(users, entries, strict=True):
        assert store.client.hgetall(key) == {
            b"requests": b"1",
            b"tokens": b"2",
            b"cost_micros": b"3",
        }
        assert not store.needs_rebuild(user_id)
        assert store.client.exists(sentinel_key(user_id))


def test_every_key_of_a_users_cap_scripts_carries_the_users_tag():
    """The reservation, settle and renew scripts run on one slot: every key they name (or store
    in a reservation record) has the user's hash tag."""
    from datetime import UTC, datetime

    from redis.crc import key_slot

    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    keys, _ = RedisCapStore._reserve_args(
        ReserveRequest(
            user_id=42,
            version="v",
            rid="r",
            now=now,
            lease_expires_at=now,
            estimate=Amounts(1, 1, 1),
            limits=[-1] * 9,
            lease_seconds=60,
        )
    )
    settle, _ = RedisCapStore._settle_args(
        SettleRequest(user_id=42, rid="r", keys=keys[:3], actual=None, now=now)
    )
    renew, _ = RedisCapStore._renew_args(
        RenewRequest(user_id=42, rid="r", lease_expires_at=now, lease_seconds=60)
    )
    every = [*keys, *settle, *renew, sentinel_key(42)]
    assert all("{user_42}" in key for key in every)
    assert len({key_slot(key.encode()) for key in every}) == 1


def test_credential_entries_on_different_masters_are_revoked_together(on_cluster):
    cache = RedisCredentialCache(on_cluster.url)
    names = [key_entry_name(f"hash{i}") for i in range(12)] + [user_entry_name(7)]
    assert len({on_cluster.node_of(name) for name in names}) > 1
    for name in names:
        cache.set(name, {"gen": 0, "user_id": 7}, ttl=60)
    assert all(cache.get(name) for name in names)
    generation = cache.generation()
    cache.bump()
    cache.delete(names)
    assert not any(cache.get(name) for name in names)
    assert cache.generation() == generation + 1
    # A load that raced with the revocation is undone.
    cache.set_unless_moved(names[0], {"gen": generation}, ttl=60)
    assert cache.get(names[0]) is None
    cache.set(names[1], {"gen": 0}, ttl=60)
    cache.clear()
    assert cache.get(names[1]) is None
    assert cache.generation() == 0


def test_djangos_cache_on_the_cluster(on_cluster):
    cache = RedisClusterCache(on_cluster.url, {"KEY_PREFIX": "t"})
    assert isinstance(cache, RedisCache)
    assert isinstance(cache._cache.get_client(), redis.cluster.RedisCluster)
    data = {f"k{i}": {"v": i} for i in range(20)}
    cache.set_many(data, timeout=60)
    assert len({on_cluster.node_of(f"t:1:{k}") for k in data}) > 1  # spans masters
    assert cache.get_many([*data, "missing"]) == data
    assert cache.add("n", 0, timeout=60)
    assert not cache.add("n", 5, timeout=60)
    assert cache.incr("n") == 1
    assert cache.incr("n", 2) == 3
    cache.delete_many(list(data))
    assert cache.get_many(list(data)) == {}
    cache.set("gone", 1, timeout=60)
    cache.clear()
    assert cache.get("gone") is None
    assert cache.get("n") is None


async def test_async_reads_on_a_fresh_client(on_cluster, redis_cluster):
    """A non-transactional pipeline (aget_many) is the first command of a new loop's client."""
    key = "usage_summary:{user_1}:hourly:2026-11-25T10"
    redis_cluster.client().hset(key, "requests", 4)
    store = RedisStore(on_cluster.url)
    assert await store.aget_many([key]) == {key: {"requests": 4}}
    store.delete([key])
