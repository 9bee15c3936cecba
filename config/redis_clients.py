"""Redis clients shared by the apps: one sync client per URL, one asyncio client per URL and
event loop (a redis.asyncio client belongs to the loop that created it).

Every client retries a command that failed on a broken connection (a pooled connection that a
Redis restart left stale, or a refused connect) a couple of times with a short backoff, and
pings a connection that sat idle for HEALTH_CHECK_SECONDS before using it. Timeouts are not
retried: a command that timed out may have run, and our scripts are not idempotent.
"""

import asyncio
import functools
import logging
import time

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

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
_async_clients: dict[tuple[str, int], aredis.Redis] = {}


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


@functools.cache
def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, **connection_options())


def async_client(url: str) -> aredis.Redis:
    key = (url, id(asyncio.get_running_loop()))
    client = _async_clients.get(key)
    if client is None:
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=ASYNC_POOL_SIZE,
            timeout=5,
            **connection_options(asyncio_client=True),
        )
        client = _async_clients[key] = aredis.Redis(connection_pool=pool)
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
