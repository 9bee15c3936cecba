"""The spool: a durable journal of usage records that the database could not take.

When the database is unreachable or locked (PostgreSQL down, SQLite busy past its timeout, a
pool exhausted) a call that reached Bedrock must still be recorded exactly once. Its record is
appended to `<data_dir>/spool/usage-records.jsonl` and fsynced before the call counts as
recorded; `spool_replay` writes the journal to the database (idempotent on `call_id`, so a
replay cut short and run again never counts twice) and empties it. The proxy replays as soon
as the database answers again and at start-up. Every process of one deployment shares the
data directory; an exclusive `flock` serializes appends and replays between them.

A record the database refuses for itself (not for being unreachable) is moved to
`rejected.jsonl` beside the journal and logged, so that it can neither block the journal nor
be lost silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError

from costs.money import Usage

logger = logging.getLogger(__name__)

JOURNAL = "usage-records.jsonl"
REJECTED = "rejected.jsonl"
# Errors that say "the database cannot take anything now" (as opposed to "not this record").
UNREACHABLE = (OperationalError, InterfaceError)
REPLAY_BATCH = 200


def spool_dir() -> Path:
    return Path(settings.VAR_DIR) / "spool"


def _encode(call: object) -> str:
    data = asdict(call)  # type: ignore[call-overload]
    data["call_id"] = str(data["call_id"])
    data["started_at"] = data["started_at"].isoformat()
    return json.dumps(data, separators=(",", ":"))


def _decode(line: str):  # a CallRecord; imported late to keep usage.services free
    from usage.services import CallRecord

    data = json.loads(line)
    data["call_id"] = uuid.UUID(data["call_id"])
    data["started_at"] = datetime.fromisoformat(data["started_at"])
    data["usage"] = Usage(**data["usage"])
    return CallRecord(**data)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[int]:
    folder = spool_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def _append(name: str, lines: Sequence[str]) -> None:
    data = "".join(f"{line}\n" for line in lines).encode()
    with _locked(name) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)


def spool_append(calls: Sequence[object]) -> None:
    """Append records to the journal, durably (fsynced) before returning."""
    _append(JOURNAL, [_encode(call) for call in calls])
    logger.warning("database unavailable: %d usage record(s) spooled to disk", len(calls))


def spool_reject(call: object, error: Exception) -> None:
    """Keep a record the database refused (never raised again): an operator looks at it."""
    logger.error("usage record %s refused by the database (%s); kept in %s", call, error, REJECTED)
    _append(REJECTED, [_encode(call)])


def spool_depth() -> int:
    """How many records wait in the journal."""
    try:
        with (spool_dir() / JOURNAL).open("rb") as journal:
            return sum(1 for _ in journal)
    except FileNotFoundError:
        return 0


def spool_pending() -> bool:
    """Cheaply (one stat): whether anything waits in the journal."""
    try:
        return (spool_dir() / JOURNAL).stat().st_size > 0
    except FileNotFoundError:
        return False


def spool_replay() -> int:
    """Write the journal to the database and empty it; returns the rows inserted.

    Raises OperationalError / InterfaceError while the database is still unreachable; the
    journal then stays as it was (what was written already is skipped next time by call_id).
    """
    from usage.services import usage_record_many

    with _locked(JOURNAL) as fd:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        lines = b"".join(chunks).decode(errors="replace").splitlines()
        calls = []
        for line in lines:
            try:
                calls.append(_decode(line))
            except (ValueError, TypeError, KeyError):
                # A torn last line of a process killed mid-append: that call was not yet
                # acknowledged as recorded, so it was not spooled either.
                logger.error("skipping an unreadable spool line: %.200r", line)
        inserted = 0
        for start in range(0, len(calls), REPLAY_BATCH):
            inserted += usage_record_many(calls=calls[start : start + REPLAY_BATCH])
        os.ftruncate(fd, 0)
        os.fsync(fd)
    if lines:
        logger.warning("replayed %d spooled usage record(s), %d new", len(lines), inserted)
    return inserted
