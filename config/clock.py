"""The one clock of the product: every instant that is not handed in by a caller comes from here.

Functions that take a `now` use it for everything they do (windows, TTLs, leases) and read
this clock only when none is given; the counter stores never read the time themselves. Tests
move it with `time-machine`, which moves this and everything built on `datetime` and `time`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(UTC)


def timestamp() -> float:
    """The current instant as POSIX seconds (for caches that store plain numbers)."""
    return time.time()
