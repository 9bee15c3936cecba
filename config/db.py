"""Database work from async code: off the event loop, and without hoarding connections.

Django keeps one connection per thread. Under ASGI each request runs its thread-sensitive
calls in a thread of its own, so with PostgreSQL's pool a burst of requests checked out one
pooled connection per request thread and kept it: past the pool's size (20) the next call
waited 10 s and failed. `in_db_thread` runs a function off the loop and hands the thread's
connection back to the pool when it returns (cheap: the pool keeps it open). SQLite
connections stay with their thread: opening one costs more than keeping it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
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
