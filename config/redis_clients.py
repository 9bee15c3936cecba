"""Redis clients shared by the apps: one sync client per URL, one asyncio client per URL and
event loop (a redis.asyncio client belongs to the loop that created it)."""

import asyncio
import functools

import redis
import redis.asyncio as aredis

_TIMEOUTS = {"socket_timeout": 2, "socket_connect_timeout": 2}
# Connections per event loop. Past this, a caller waits for one (up to the timeout) instead of
# failing: redis.asyncio's default pool raises "Too many connections" under a burst of calls.
ASYNC_POOL_SIZE = 64
_async_clients: dict[tuple[str, int], aredis.Redis] = {}


@functools.cache
def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, **_TIMEOUTS)


def async_client(url: str) -> aredis.Redis:
    key = (url, id(asyncio.get_running_loop()))
    client = _async_clients.get(key)
    if client is None:
        pool = aredis.BlockingConnectionPool.from_url(
            url, max_connections=ASYNC_POOL_SIZE, timeout=5, **_TIMEOUTS
        )
        client = _async_clients[key] = aredis.Redis(connection_pool=pool)
    return client
