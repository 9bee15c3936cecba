"""Database work from async code: off the event loop, and without hoarding connections.

Django keeps one connection per thread. Under ASGI each request runs its thread-sensitive
calls in a thread of its own, so with PostgreSQL's pool a burst of requests checked out one
pooled connection per request thread and kept it: past the pool's size (20) the next call
waited 10 s and failed. `in_db_thread` runs a function off the loop and hands the thread's
connection back to the pool when it returns (cheap: the pool keeps it open). SQLite
connections stay with their thread: opening one costs more than keeping it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

T = TypeVar("T")


def released(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn`, then this thread's pooled connection back to the pool (PostgreSQL)."""

    @functools.wraps(fn)
    def run(*args: object, **kwargs: object) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            # Never inside a transaction (a caller's atomic block, a test's): it is not ours.
            if connection.vendor == "postgresql" and not connection.in_atomic_block:
                connection.close()

    return run


async def in_db_thread(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Await `fn(*args, **kwargs)` run off the event loop (in the request's thread, as
    sync_to_async does by default); its pooled connection is released after."""
    return await sync_to_async(released(fn))(*args, **kwargs)


# One autocommit connection per event loop for the proxy's own statements (its usage
# records), opened on first use and dropped on a connection error.
_loop_connections: dict[int, tuple[asyncio.AbstractEventLoop, psycopg.AsyncConnection]] = {}


def _async_params() -> dict[str, Any]:
    # Django's own connection parameters, less what only its sync cursor and adapters use.
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k not in ("cursor_factory", "context")}


async def aexecute(sql: str, params: list[object]) -> None:
    """Run one statement on this event loop's PostgreSQL connection, in the loop: no thread
    hop, no pool checkout, one round trip. `sql` takes PostgreSQL's own placeholders ($1, $2,
    …: psycopg's raw cursor sends it as is, without parsing it for %s). A connection error
    (psycopg's OperationalError or InterfaceError) drops the connection before it is raised;
    the next call opens another."""
    loop = asyncio.get_running_loop()
    entry = _loop_connections.get(id(loop))
    # A later loop may reuse a closed one's id: its connection is not this loop's.
    conn = entry[1] if entry is not None and entry[0] is loop else None
    if conn is None or conn.closed:
        # As long as a pool checkout may wait (config/settings.py), in whole seconds (libpq).
        wait = max(2, round(min(10, settings.GATEWAY.database.timeout_seconds)))
        conn = await psycopg.AsyncConnection.connect(
            **_async_params(), autocommit=True, connect_timeout=wait
        )
        _loop_connections[id(loop)] = (loop, conn)
    try:
        async with psycopg.AsyncRawCursor(conn) as cursor:
            await cursor.execute(sql, params)
    except (psycopg.OperationalError, psycopg.InterfaceError):
        _loop_connections.pop(id(loop), None)
        await conn.close()
        raise


async def aclose_loop_connection() -> None:
    """Close this event loop's connection (the server is stopping)."""
    loop = asyncio.get_running_loop()
    entry = _loop_connections.pop(id(loop), None)
    if entry is not None and entry[0] is loop:
        await entry[1].close()
