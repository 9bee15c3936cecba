"""Cost arithmetic and price lookup: pure integer arithmetic over an in-memory price table.

Units. A rate is integer micro-dollars per million tokens (USD/Mtok x 1e6: $3/Mtok is
3_000_000). A call's cost is ``sum(tokens x rate) // 1_000_000`` micro-dollars, computed ONCE
over the whole call (all five token kinds, then the long-prompt multiplier as an exact
fraction): the floor of the exact total, so at most 1 micro-dollar below the exact value per
call, never below zero, never float.

Lookup. Prices are keyed by the base Bedrock model id (`model_base_id` strips an ARN and a
cross-region prefix such as ``us.`` or ``global.``). Among the rows of that model in force at the
call's time (the latest ``effective_from`` <= ``at``, so a price change never rewrites history),
the most specific applicable row wins: region and scope > region > scope > generic. A row with a
scope applies only to calls through a profile of that scope; a row with a region only to calls
served from that AWS region.

Cache. All rows live in one per-process table (a few hundred rows at most), so a lookup is a
dict access and no I/O. The table is checked at most every ``RECHECK_SECONDS`` (1 s) against a
version: a token in Django's cache when it is shared between processes (Redis), else - and
whenever the cache fails - a fingerprint of the table read from the database (one aggregate
query). A write in this process drops the table at once (``price_cache_invalidate``, wired to
ModelPrice's save/delete signals); after its commit the shared token is bumped, so other
processes see the change within ``RECHECK_SECONDS``. A connection holding uncommitted price writes
gets its own table, kept only while exactly those writes are pending, so a rollback (or a
savepoint's) leaves nothing stale.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.core.cache import caches
from django.db import transaction

from config.db import in_db_thread
from costs.money import Price, Usage, model_base_id, model_family

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
VERSION_KEY = "costs:price_table_version"


def priced_base_id(model_id: str) -> str | None:
    """The base id of `model_id` when the price table in memory has a price for it, else None.

    No I/O (safe on the event loop): it reads the table as last loaded, which may be up to
    RECHECK_SECONDS stale, or none yet (then None).
    """
    table = _table
    if table is None:
        return None
    base = model_base_id(model_id)[0]
    return base if base in table.rows else None


# --- The table -------------------------------------------------------------------------------


@dataclass
class PriceTable:
    """All price rows by base model id, with the version they were loaded at."""

    rows: dict[str, tuple[Price, ...]]
    version: object = None
    checked_at: float = field(default=0.0)

    def resolve(
        self, *, base_id: str, scope: str | None, region: str | None, at: datetime
    ) -> Price | None:
        """The most specific row in force at `at` (see module docstring)."""
        if at.tzinfo is None:  # a naive time is UTC, as everywhere in the gateway
            at = at.replace(tzinfo=UTC)
        best: Price | None = None
        best_key: tuple[bool, bool, datetime] | None = None
        for price in self.rows.get(base_id, ()):
            if price.effective_from > at:
                continue
            if price.scope and price.scope != scope:
                continue
            if price.region and price.region != region:
                continue
            key = (bool(price.region), bool(price.scope), price.effective_from)
            if best_key is None or key > best_key:
                best, best_key = price, key
        return best


_table: PriceTable | None = None
_load_lock = threading.Lock()
_local = threading.local()


def _cache():
    return caches["default"]


def _cache_is_shared() -> bool:
    module = type(_cache()).__module__
    return not module.startswith(
        ("django.core.cache.backends.locmem", "django.core.cache.backends.dummy")
    )


def _read_version() -> object:
    if _cache_is_shared():
        try:
            token = _cache().get(VERSION_KEY)
            if token is None:
                _cache().add(VERSION_KEY, uuid.uuid4().hex, timeout=None)
                token = _cache().get(VERSION_KEY)
            if token is not None:
                return ("cache", token)
        except Exception:
            logger.warning("price cache unavailable; checking prices in the database")
    return ("db", _db_fingerprint())


def _db_fingerprint() -> tuple:
    from django.db.models import Count, Max

    from costs.models import ModelPrice

    agg = ModelPrice.objects.aggregate(n=Count("id"), last=Max("updated_at"), top=Max("id"))
    return (agg["n"], agg["last"], agg["top"])


def _load_rows() -> dict[str, tuple[Price, ...]]:
    from costs.models import ModelPrice

    rows: dict[str, list[Price]] = {}
    for row in ModelPrice.objects.all():
        rows.setdefault(row.model_id, []).append(row.to_price())
    return {model_id: tuple(prices) for model_id, prices in rows.items()}


class _CommitBump:
    """The on_commit callback of one price write; while it is pending, the write is not
    committed and only its own connection sees it."""

    def __call__(self) -> None:
        _after_commit()


def _pending_writes() -> tuple:
    """This connection's uncommitted price writes (a savepoint rollback removes some)."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return ()
    return tuple(
        entry[1] for entry in connection.run_on_commit if isinstance(entry[1], _CommitBump)
    )


def price_table() -> PriceTable:
    """The current table: in memory, re-validated at most every RECHECK_SECONDS."""
    global _table
    pending = _pending_writes()
    if pending:
        return _provisional_table(pending)
    table = _table
    now = time.monotonic()
    if table is not None and now - table.checked_at < RECHECK_SECONDS:
        return table
    with _load_lock:
        table = _table
        version = _read_version()
        if table is not None and table.version == version:
            table.checked_at = now
            return table
        _table = PriceTable(rows=_load_rows(), version=version, checked_at=now)
        return _table


def _provisional_table(pending: tuple) -> PriceTable:
    """The table as seen by a transaction that wrote prices: kept for this thread only, and
    only while exactly the same writes are pending (no new write, no rollback)."""
    held = getattr(_local, "provisional", None)
    if held is not None and held[0] == pending:
        return held[1]
    table = PriceTable(rows=_load_rows(), version=None, checked_at=time.monotonic())
    _local.provisional = (pending, table)
    return table


def price_table_needs_check() -> bool:
    """True when the next lookup will touch the cache or database (for async callers)."""
    table = _table
    return table is None or time.monotonic() - table.checked_at >= RECHECK_SECONDS


def price_cache_invalidate() -> None:
    """Drop this process's table now; bump the shared version once the write commits."""
    global _table
    _table = None
    transaction.on_commit(_CommitBump())


def _after_commit() -> None:
    global _table
    _table = None
    if _cache_is_shared():
        try:
            _cache().set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
        except Exception:
            # Other processes fall back on the database fingerprint only while the cache is
            # down; once it is back they compare tokens again and this one is still new to them.
            logger.warning("price cache unavailable; other processes may see the change late")


# --- Lookups ---------------------------------------------------------------------------------


def price_get(*, model_id: str, at: datetime, region: str | None = None) -> Price | None:
    """The price in force for a call to `model_id` (any form: prefixed, ARN) at `at`."""
    base, scope = model_base_id(model_id)
    return price_table().resolve(base_id=base, scope=scope, region=region, at=at)


def call_cost_micros(
    *, model_id: str, usage: Usage, at: datetime, region: str | None = None
) -> int | None:
    """Cost in integer micro-dollars, or None when no price is known (cost unknown)."""
    return _call_cost(price_table(), model_id, usage, at, region)


def estimate_cost_micros(
    *, model_id: str, usage: Usage, at: datetime, region: str | None = None
) -> int:
    """Like call_cost_micros, but an unknown model is priced at the dearest known price of its
    family (opus/sonnet/haiku/fable/...; dearest overall if no family matches) — caps use it.
    With no price at all in the table it is 0."""
    return _estimate(price_table(), model_id, usage, at, region)


async def aprice_table() -> PriceTable:
    """price_table() for async code: no I/O while warm, a thread hop when a check is due."""
    table = _table
    if table is None or time.monotonic() - table.checked_at >= RECHECK_SECONDS:
        table = await in_db_thread(price_table)
    return table


async def acall_cost_micros(
    *, model_id: str, usage: Usage, at: datetime, region: str | None = None
) -> int | None:
    """call_cost_micros for async code (the proxy's views)."""
    return _call_cost(await aprice_table(), model_id, usage, at, region)


async def aestimate_cost_micros(
    *, model_id: str, usage: Usage, at: datetime, region: str | None = None
) -> int:
    """estimate_cost_micros for async code (the proxy's views)."""
    return _estimate(await aprice_table(), model_id, usage, at, region)


def _call_cost(
    table: PriceTable, model_id: str, usage: Usage, at: datetime, region: str | None
) -> int | None:
    base, scope = model_base_id(model_id)
    price = table.resolve(base_id=base, scope=scope, region=region, at=at)
    return None if price is None else price.cost_micros(usage)


def _estimate(
    table: PriceTable, model_id: str, usage: Usage, at: datetime, region: str | None
) -> int:
    base, scope = model_base_id(model_id)
    price = table.resolve(base_id=base, scope=scope, region=region, at=at)
    if price is not None:
        return price.cost_micros(usage)
    family = model_family(base)
    candidates = [known for known in table.rows if family and model_family(known) == family]
    costs = [
        price.cost_micros(usage)
        for base_id in candidates or table.rows
        if (price := table.resolve(base_id=base_id, scope=scope, region=region, at=at))
    ]
    return max(costs, default=0)
