"""Usage records written in batches: calls that finish within WINDOW_SECONDS of each other
share one insert and one counter update (`usage_record_many`), instead of a thread hop, an
insert and a Redis round trip each. Each caller still waits until its own call is written, so
a finished call is recorded exactly as before, only cheaper under load.

When the database cannot take a batch (down, locked, pool exhausted), the batch goes to the
durable spool (`usage.spool`) instead, and a replay task writes it to the database as soon as
it answers again; a call counts as recorded once it is in either place.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from config.db import released
from gateway import metrics
from usage import spool
from usage.services import CallRecord, ausage_record_many

logger = logging.getLogger(__name__)

# How long the first call of a batch waits for others, and the most a batch holds. 20 ms:
# one client calling back to back (Claude Code, c=1) finishes a call every few milliseconds,
# and sharing an insert and a counter update among them cut the worker's CPU a call by a
# sixth (5 ms: one call a batch). Nothing waits for it: the answer has gone already.
WINDOW_SECONDS = 0.02
MAX_BATCH = 200
# How often a replay retries while the database is still away.
REPLAY_RETRY_SECONDS = 1.0


@released
def _replay() -> int:
    close_old_connections()  # a pool thread: drop a connection that broke while the db was down
    try:
        return spool.spool_replay()
    finally:
        metrics.SPOOL_DEPTH.set(spool.spool_depth())


def _append(calls: list[CallRecord]) -> None:
    spool.spool_append(calls)
    metrics.SPOOL_DEPTH.set(spool.spool_depth())


class Recorder:
    """One per event loop: collects calls and writes them together."""

    def __init__(self) -> None:
        self._pending: list[tuple[CallRecord, asyncio.Future]] = []
        # Batches handed to the database and not yet written or spooled (by id of the list).
        self._writing: dict[int, list[CallRecord]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._replaying: asyncio.Task | None = None

    async def record(self, call: CallRecord) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((call, future))
        if len(self._pending) >= MAX_BATCH:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WINDOW_SECONDS, self._flush)
        await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._write(batch))

    async def _write(self, batch: list[tuple[CallRecord, asyncio.Future]]) -> None:
        calls = [call for call, _ in batch]
        self._writing[id(calls)] = calls
        try:
            await ausage_record_many(calls=calls)
        except Exception as exc:  # whatever failed, the records must survive
            logger.warning("recording %d call(s) failed (%s): spooling them", len(calls), exc)
            try:
                await sync_to_async(_append, thread_sensitive=False)(calls)
            except Exception as spool_exc:  # each waiting call learns of it
                logger.exception("spooling %d usage record(s) failed", len(calls))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(spool_exc)
                return
            self.replay_soon()
        else:
            if spool.spool_pending():  # spooled here or by another process: the db is back
                self.replay_soon()
        finally:
            self._writing.pop(id(calls), None)
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    def spool_unwritten(self) -> None:
        """Shutdown: spool every call waiting for a batch or for the database, now (blocking).
        A batch the database takes after all is skipped by call_id at replay."""
        calls = [call for call, _ in self._pending]
        calls += [call for batch in self._writing.values() for call in batch]
        self._pending, self._writing = [], {}
        if calls:
            _append(calls)

    def replay_soon(self) -> asyncio.Task:
        """Start replaying the spool (once per loop at a time) until it is empty."""
        if self._replaying is None or self._replaying.done():
            self._replaying = asyncio.get_running_loop().create_task(self._replay_until_empty())
        return self._replaying

    @staticmethod
    async def _replay_until_empty() -> None:
        while True:
            try:
                await sync_to_async(_replay, thread_sensitive=False)()
            except Exception as exc:  # still away: try again shortly
                logger.info("spool replay deferred: %s", exc)
            if not spool.spool_pending():
                return
            await asyncio.sleep(REPLAY_RETRY_SECONDS)


_recorders: dict[int, Recorder] = {}


def recorder() -> Recorder:
    loop_id = id(asyncio.get_running_loop())
    found = _recorders.get(loop_id)
    if found is None:
        found = _recorders[loop_id] = Recorder()
    return found
