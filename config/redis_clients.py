"""Redis clients shared by the apps: one sync client per URL, one asyncio client per URL and
event loop (a redis.asyncio client belongs to the loop that created it).

Every client retries a command that failed on a broken connection (a pooled connection that a
Redis restart left stale, or a refused connect) a couple of times with a short backoff, and
pings a connection that sat idle for HEALTH_CHECK_SECONDS before using it. Timeouts are not
retried: a command that timed out may have run, and our scripts are not idempotent.

With ``redis.cluster: true`` (``GATEWAY_REDIS__CLUSTER``) the same two functions return Redis
Cluster clients (``redis.cluster.RedisCluster``, and `ThreadedCluster`, its awaitable face) that
discover the cluster from the one node the URL names. Their retry count and backoff are ours;
a cluster client retries a single command on a broken connection or a cluster that is
re-sharding (MOVED/ASK, CLUSTERDOWN), never on a timeout (see `_NO_TIMEOUT_RETRY`). A
cluster runs a multi-key command or a MULTI/EXEC only on keys of one slot: our keys carry a
``{user_N}`` hash tag, so one user's keys share a slot, and `by_slot` splits the rest.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aredis
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.retry import Retry

T = TypeVar("T")

logger = logging.getLogger(__name__)

_TIMEOUTS = {"socket_timeout": 2, "socket_connect_timeout": 2}
# Retries after the first attempt, and their backoff (20 ms, then 40 ms, at most 100 ms): a
# stale connection heals on the first retry; a Redis that is down costs ~60 ms per command.
RETRIES = 2
BACKOFF = {"base": 0.02, "cap": 0.1}
HEALTH_CHECK_SECONDS = 10
# Connections per event loop. Past this, a caller waits for one (up to the timeout) instead of
# failing: redis.asyncio's default pool raises "Too many connections" under a burst of calls.
ASYNC_POOL_SIZE = 64
_async_clients: dict[
    tuple[str, int, bool], tuple[asyncio.AbstractEventLoop, aredis.Redis | ThreadedCluster]
] = {}

# What a cluster client may retry on its own: not TimeoutError (redis-py's default includes it),
# since a command that timed out may have run (our scripts are not idempotent).
_NO_TIMEOUT_RETRY = (redis.ConnectionError, ClusterDownError, SlotNotCoveredError)


class _SyncCluster(redis.cluster.RedisCluster):
    ERRORS_ALLOW_RETRY = _NO_TIMEOUT_RETRY  # type: ignore[assignment]  # narrower on purpose


# The asyncio face of a cluster runs the sync client's commands in these threads: redis-py
# 8.1's asyncio RedisCluster loses connections under a burst of commands on a fresh client
# ("'NoneType' object has no attribute 'writelines'", a 500 for one call in ten in a
# 30-call burst), while its sync client is solid. A thread hop per command, cluster only.
CLUSTER_THREADS = 32
_cluster_pool = ThreadPoolExecutor(max_workers=CLUSTER_THREADS, thread_name_prefix="redis-cl")


async def _in_thread(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_cluster_pool, functools.partial(fn, *args, **kwargs))


class ThreadedCluster:
    """An awaitable RedisCluster: `await client.get(…)`, `await script(keys=…, args=…)` of
    `register_script`, `pipeline()` whose `execute()` is awaited — each on the sync client."""

    def __init__(self, client: redis.cluster.RedisCluster) -> None:
        self.sync = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.sync, name)

        async def command(*args: object, **kwargs: object) -> Any:
            return await _in_thread(method, *args, **kwargs)

        return command

    def register_script(self, script: str) -> Callable[..., object]:
        registered = self.sync.register_script(script)

        async def run(keys: object = (), args: object = ()) -> object:
            return await _in_thread(registered, keys=keys, args=args)

        return run

    def pipeline(self, transaction: bool = False) -> ThreadedPipeline:
        return ThreadedPipeline(self.sync.pipeline(transaction=transaction))


class ThreadedPipeline:
    """Commands queue at once (as on any pipeline); `await execute()` runs them in a thread."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Callable[..., ThreadedPipeline]:
        method = getattr(self._pipe, name)

        def queue(*args: object, **kwargs: object) -> ThreadedPipeline:
            method(*args, **kwargs)
            return self

        return queue

    async def execute(self) -> list:
        return await _in_thread(self._pipe.execute)


def cluster_enabled() -> bool:
    """Whether `redis.cluster` is on (read from Django's settings, so tests can switch it)."""
    from django.conf import settings

    return bool(settings.GATEWAY.redis.cluster)


def is_cluster(client: object) -> bool:
    return isinstance(client, redis.cluster.RedisCluster | ThreadedCluster)


def by_slot(items: Iterable[T], key: Callable[[T], str]) -> list[list[T]]:
    """`items` grouped by the cluster slot of `key(item)`, each group in the original order
    (one MULTI/EXEC per group: a cluster refuses a transaction whose keys span slots)."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(key_slot(key(item).encode()), []).append(item)
    return list(groups.values())


def connection_options(*, asyncio_client: bool = False) -> dict:
    """Connection keyword arguments (timeouts, retry on a broken connection, health checks)."""
    retry_class = AsyncRetry if asyncio_client else Retry
    return {
        **_TIMEOUTS,
        "retry": retry_class(
            ExponentialBackoff(**BACKOFF), RETRIES, supported_errors=(redis.ConnectionError,)
        ),
        "retry_on_error": [redis.ConnectionError],
        "health_check_interval": HEALTH_CHECK_SECONDS,
    }


def _cluster_options(*, asyncio_client: bool = False) -> dict:
    options = connection_options(asyncio_client=asyncio_client)
    # The cluster client owns the retries (its node connections retry nothing); it takes the
    # Retry object for its count and backoff, and no retry_on_error.
    del options["retry_on_error"]
    return options


def sync_client(url: str, cluster: bool | None = None) -> redis.Redis | redis.cluster.RedisCluster:
    """The process's client for `url`: a RedisCluster when `cluster` (default: the setting)."""
    return _sync_client(url, cluster_enabled() if cluster is None else cluster)


@functools.cache
def _sync_client(url: str, cluster: bool) -> redis.Redis | redis.cluster.RedisCluster:
    if cluster:
        return _SyncCluster.from_url(url, **_cluster_options())
    return redis.Redis.from_url(url, **connection_options())


def async_client(url: str, cluster: bool | None = None) -> aredis.Redis | ThreadedCluster:
    """The running loop's client for `url` (a RedisCluster when `cluster`, default: the setting).
    A client is kept with its loop: a later loop that reuses a closed one's id gets its own."""
    cluster = cluster_enabled() if cluster is None else cluster
    loop = asyncio.get_running_loop()
    key = (url, id(loop), cluster)
    entry = _async_clients.get(key)
    if entry is not None and entry[0] is loop:
        return entry[1]
    if cluster:
        cluster_client = cast(redis.cluster.RedisCluster, sync_client(url, cluster=True))
        client: aredis.Redis | ThreadedCluster = ThreadedCluster(cluster_client)
    else:
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=ASYNC_POOL_SIZE,
            timeout=5,
            **connection_options(asyncio_client=True),
        )
        client = aredis.Redis(connection_pool=pool)
    _async_clients[key] = (loop, client)
    return client


_last_warning: dict[str, float] = {}
WARNING_INTERVAL_SECONDS = 10.0


def warn_unavailable(what: str, exc: BaseException) -> None:
    """Log that Redis failed for `what`, at most once per WARNING_INTERVAL_SECONDS per `what`
    (a Redis outage must not write a line per request)."""
    now = time.monotonic()
    if now - _last_warning.get(what, -WARNING_INTERVAL_SECONDS) >= WARNING_INTERVAL_SECONDS:
        _last_warning[what] = now
        logger.warning("redis unavailable for %s (falling back): %s", what, exc)
