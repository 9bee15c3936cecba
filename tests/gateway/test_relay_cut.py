"""A shutdown's cut of a stream is never lost: the relay's queue put yields to it even when
the put completes in the same turn of the loop (asyncio.wait_for in Python 3.11 swallowed such
a cancel, the stream ran on, and the call was never recorded)."""

import asyncio

import pytest

from gateway import streaming


def test_a_cut_landing_as_the_put_completes_is_not_swallowed():
    async def race() -> asyncio.Task:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait(b"unread")
        put = asyncio.create_task(streaming._put(queue, b"next", timeout=10))
        await asyncio.sleep(0)  # the put waits on the full queue
        queue.get_nowait()  # the client reads: the put can complete...
        put.cancel(streaming.SHUTDOWN)  # ...in the same turn as the shutdown's cut
        await asyncio.wait([put])
        return put

    put = asyncio.run(race())
    assert put.cancelled()


def test_a_put_the_client_never_makes_room_for_times_out():
    async def stuck() -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait(b"unread")
        await streaming._put(queue, b"next", timeout=0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(stuck())
