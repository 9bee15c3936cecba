"""Relaying a stream: a pump task owns the upstream; the response only drains its queue.

The pump reads Bedrock's bytes, meters a copy and hands what the client should receive to a
queue; when the upstream ends, fails, or the client goes away, the pump's `finally` records
and settles the call. It does not live in the response's generator because Django may drop a
generator mid-`yield` on disconnect without closing it; `RelayResponse.close()` (which Django
always calls) cancels the pump instead.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable

from django.http import StreamingHttpResponse

from gateway import upstream
from gateway.services import Outcome, ProxyCall

logger = logging.getLogger(__name__)

SHUTDOWN = "server shutdown"
_DONE = object()
_ABORT = object()
QUEUE_DEPTH = 64

# Turns the metered events of one upstream chunk into bytes for the client (None = relay
# the chunk's bytes untouched).
Translate = Callable[[bytes, list[dict]], bytes]
# What to send when the upstream fails mid-stream; None = cut the client's connection too, so
# that its parser sees a truncated stream as it would from Bedrock itself.
OnError = Callable[[str, str], bytes | None]


class UpstreamCut(Exception):
    """Raised into the response to drop the client's connection without a clean end."""


_pumps: set[asyncio.Task] = set()
# Pumps cutting their stream (cancelled, or timed out): a shutdown does not cancel them again.
_cutting: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()
RECUT_SECONDS = 0.2


class RelayResponse(StreamingHttpResponse):
    """A streaming response whose close() stops the upstream pump (client disconnect)."""

    def __init__(self, pump: asyncio.Task, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pump = pump
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        # Called once sending ends, however it ended (by Django from a worker thread).
        if not self._pump.done():
            self._loop.call_soon_threadsafe(self._stop_pump)
        super().close()

    def _stop_pump(self) -> None:
        # A pump already cancelled (a shutdown's cut) or cutting is finishing the call: a second
        # cancel would only lose the reason it was cut.
        pump = self._pump
        if not pump.done() and not pump.cancelling() and pump not in _cutting:
            pump.cancel()


async def _pump(
    call: ProxyCall,
    response: upstream.UpstreamResponse,
    meter: upstream.StreamMeter,
    queue: asyncio.Queue,
    translate: Translate | None,
    on_error: OnError,
    put_timeout: float,
) -> None:
    tail: bytes | object | None = b""
    try:
        async for chunk in upstream.iter_raw(response):
            call.mark_first_byte()
            events = meter.feed(chunk)
            out = translate(chunk, events) if translate else chunk
            if out:
                await _put(queue, out, put_timeout)
        outcome = meter.exception[0] if meter.exception else None  # Bedrock's error name
    except (upstream.UpstreamTimeout, upstream.UpstreamUnavailable) as exc:
        timed_out = isinstance(exc, upstream.UpstreamTimeout)
        outcome = Outcome.UPSTREAM_TIMEOUT if timed_out else Outcome.UPSTREAM_CUT
        tail = on_error(outcome, "The upstream stream ended early.")
        if tail is None:
            tail = _ABORT
    except (asyncio.CancelledError, TimeoutError) as exc:
        # The client went away (or stopped reading), or the server is stopping: cut the
        # upstream, count what it generated.
        if (this := asyncio.current_task()) is not None:
            _cutting.add(this)
        shutdown = isinstance(exc, asyncio.CancelledError) and SHUTDOWN in exc.args
        if shutdown:  # the client is still there: it must see the end now, not wait for it
            _end_now(queue, on_error(Outcome.SERVER_SHUTDOWN, "The gateway is shutting down."))
        outcome = Outcome.SERVER_SHUTDOWN if shutdown else Outcome.CLIENT_DISCONNECTED
        # Finishing starts before the first await: a second cancel (the response closing
        # after the shutdown's end was sent) would otherwise stop the pump before it, and the
        # call would go unrecorded.
        finishing = call.finish(meter.result(), outcome)
        try:
            await response.aclose()
        finally:
            await asyncio.shield(finishing)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    call.finish(meter.result(), outcome)  # in its own task: the stream's end does not wait
    for item in (tail,) if tail is _ABORT else (tail, _DONE):
        if item:
            await _put(queue, item, put_timeout)


async def _put(queue: asyncio.Queue, item: object, timeout: float) -> None:
    if not queue.full():  # the common case: no timer to arm for a put that cannot wait
        queue.put_nowait(item)
        return
    # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that lands as
    # the put completes, and a shutdown's cut then went unseen (the call was never recorded).
    async with asyncio.timeout(timeout):
        await queue.put(item)


def _end_now(queue: asyncio.Queue, tail: bytes | None) -> None:
    # Without waiting: what the client has not read yet gives way to the end (64 chunks at most).
    items = (_ABORT,) if tail is None else (tail, _DONE)
    while queue.qsize() > queue.maxsize - len(items):
        queue.get_nowait()
    for item in items:
        queue.put_nowait(item)


async def _drain(queue: asyncio.Queue) -> AsyncIterator[bytes]:
    while True:
        item = await queue.get()
        if item is _DONE:
            return
        if item is _ABORT:
            raise UpstreamCut("the upstream stream was cut")
        yield item


def relay(
    call: ProxyCall,
    response: upstream.UpstreamResponse,
    meter: upstream.StreamMeter,
    *,
    content_type: str,
    headers: dict[str, str],
    translate: Translate | None,
    on_error: OnError,
    put_timeout: float,
) -> RelayResponse:
    """Start the pump and return the response that streams what it relays."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_DEPTH)
    pump = asyncio.create_task(
        _pump(call, response, meter, queue, translate, on_error, put_timeout)
    )
    _pumps.add(pump)
    pump.add_done_callback(_pumps.discard)
    relayed = RelayResponse(pump, _drain(queue), content_type=content_type, headers=headers)
    relayed["Cache-Control"] = "no-cache"
    relayed["X-Accel-Buffering"] = "no"
    return relayed


async def cut_all(timeout: float) -> None:
    """Cut every stream still open (shutdown after the grace period) and wait until each has
    handed its call to recording. A pump that has not begun its cut is cancelled again every
    RECUT_SECONDS: a cancel can be lost inside a library, and a stream that ran on would go
    unrecorded when the process exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pumps = list(_pumps)
    while pumps and (left := deadline - loop.time()) > 0:
        for pump in pumps:
            if pump not in _cutting:
                pump.cancel(SHUTDOWN)
        _, running = await asyncio.wait(pumps, timeout=min(RECUT_SECONDS, left))
        pumps = list(running)
    if pumps:
        logger.error("%d stream(s) did not end at shutdown", len(pumps))
