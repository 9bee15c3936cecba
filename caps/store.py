"""Reserve and settle in the counter store: one Lua script per operation in Redis, one
transaction in the embedded store (the database).

Each window key (hourly, daily, monthly) is a hash with six fields: `requests`, `tokens`,
`cost_micros` (settled use) and `if_requests`, `if_tokens`, `if_cost_micros` (in flight).
Open reservations are recorded with their amounts and a lease expiry (Redis: the hash
`…:reservations` and the sorted set `…:leases`; embedded: `CapLease` rows); every reservation
first releases the user's expired ones, in the same atomic step, so a reservation held by a
dead worker never blocks for longer than its lease.

Both backends answer the same `ReserveResult`; the reservations (caps/reservations.py) decide
nothing here except through the limits they pass in.

Concurrency, in the same atomic step and after the caps check: a user may hold at most
`max_in_flight` open reservations (`busy_in_flight` otherwise), and at most `max_uncovered`
"uncovered" ones (`busy_uncovered`). A reservation is uncovered when its worst case (input
estimate + max_tokens, priced) does not fit some token or cost limit after the window's used
and in-flight worst cases (`if_worst_tokens`, `if_worst_cost_micros`): so a cap is overshot by
at most the uncovered calls in flight, not by every call in flight. Uncovered reservations are
also kept apart (Redis: the sorted set `…:uncovered`; embedded: `CapLease.uncovered`) and leave
with their lease, on settle or expiry. A live call renews its lease (`renew`), so only a dead
worker's reservation expires.

A lost or flushed Redis is detected inside the reservation itself: a user's counters are
trusted only while the user's sentinel key (`{user_42}:sentinel`) exists. It is written when the
user's counters are rebuilt from the usage records, kept alive by every reservation, and gone
with everything else when Redis restarts empty; the reserve script then answers `rebuild`
instead of checking counters that read zero. Every Redis error, of either client, is StoreDown.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction

from caps.models import CapLease
from caps.rules import NO_LIMIT, Amounts
from caps.windows import session_ttl, user_tag, window_keys, window_ttls
from config import clock, redis_clients
from usage.models import Counter

USED = ("requests", "tokens", "cost_micros")
IN_FLIGHT = ("if_requests", "if_tokens", "if_cost_micros")
FIELDS = USED + IN_FLIGHT
# In flight at the calls' worst cases (input estimate + max_tokens, priced): what decides
# whether a new call is "covered" (its worst case fits what is left after them).
IN_FLIGHT_WORST = ("if_worst_tokens", "if_worst_cost_micros")

T = TypeVar("T")


# What a Redis client may raise when the server is down or a connection broke.
REDIS_ERRORS = (redis.RedisError, OSError)


class StoreDown(Exception):
    """The counter store could not be reached (caps/reservations.py applies the failure mode)."""


@dataclass(frozen=True)
class ReserveResult:
    """`status` is ok, denied, busy_in_flight, busy_uncovered, stale or rebuild (the user's
    counters were lost: rebuild them from the usage records, then reserve again); `values`
    holds, per window (hourly, daily, monthly), the six fields *before* this reservation: used
    requests/tokens/cost, in-flight ditto. `uncovered`: the reservation (ok) is uncovered."""

    status: str
    values: tuple[tuple[int, ...], ...] = ()
    uncovered: bool = False


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """One owner's reservation as both stores take it: the owner (a user, or a team as
    `caps.windows.team_owner`), the caps version it was checked against, its amounts, the
    owner's limits and the concurrency bounds."""

    user_id: int
    version: str
    rid: str
    now: datetime
    lease_expires_at: datetime
    estimate: Amounts
    # caps.rules.blocking_limits: (hourly, daily, monthly, session) x (requests, tokens, cost)
    limits: Sequence[int]
    lease_seconds: int
    worst: Amounts | None = None  # the worst case (estimate + max_tokens); None: the estimate
    max_in_flight: int = NO_LIMIT
    max_uncovered: int = NO_LIMIT
    session_key: str | None = None

    @property
    def worst_amounts(self) -> tuple[int, int]:
        """The worst case (tokens, cost) it holds in flight: never below the estimate."""
        worst = self.estimate if self.worst is None else self.worst
        return (
            max(worst.tokens, self.estimate.tokens),
            max(worst.cost_micros, self.estimate.cost_micros),
        )


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """A reservation's end: its in-flight amounts leave, `actual` (None: nothing) is used."""

    user_id: int
    rid: str
    keys: Sequence[str]  # the windows it was reserved in (hourly, daily, monthly)
    actual: Amounts | None
    now: datetime
    session_key: str | None = None


@dataclass(frozen=True, slots=True)
class RenewRequest:
    """A live reservation's new lease expiry."""

    user_id: int
    rid: str
    lease_expires_at: datetime
    lease_seconds: int


def new_version() -> str:
    return secrets.token_hex(8)


def aux_keys(user_id: int) -> tuple[str, str, str]:
    """Leases (sorted set), reservations (hash) and config version keys of a user."""
    tag = user_tag(user_id)
    return (f"{tag}:leases", f"{tag}:reservations", f"{tag}:version")


def uncovered_key(user_id: int) -> str:
    """The user's uncovered reservations (sorted set, scored by lease expiry like `leases`)."""
    return f"{user_tag(user_id)}:uncovered"


def sentinel_key(user_id: int) -> str:
    """Exists while the user's counters in Redis can be trusted (see the module docstring)."""
    return f"{user_tag(user_id)}:sentinel"


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


# --- Redis ---------------------------------------------------------------------------------------

# KEYS: hourly, daily, monthly, leases, reservations, version, sentinel, uncovered
#       [, session window]
# ARGV: now_ms, cached_version, rid, lease_expiry_ms, est requests, est tokens, est cost,
#       ttl h, ttl d, ttl m, 9 limits (window-major; -1 = none), aux ttl,
#       worst tokens, worst cost, max in flight (-1 = none), max uncovered (-1 = none),
#       session ttl, 3 session limits
# A reservation record: {hourly, daily, monthly, est x3, worst x2[, session window]}.
_RESERVE_LUA = """
if redis.call('EXPIRE', KEYS[7], ARGV[10]) == 0 then return {'rebuild'} end
local version = redis.call('GET', KEYS[6]) or ''
if version ~= ARGV[2] then return {'stale'} end
local now = tonumber(ARGV[1])
local inflight = {'if_requests', 'if_tokens', 'if_cost_micros'}
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, rid in ipairs(expired) do
  local rec = redis.call('HGET', KEYS[5], rid)
  if rec then
    local r = cjson.decode(rec)
    local worst = {r[7] or r[5], r[8] or r[6]}
    local held = {r[1], r[2], r[3], r[9]}
    for i = 1, #held do
      if redis.call('EXISTS', held[i]) == 1 then
        for j = 1, 3 do
          if redis.call('HINCRBY', held[i], inflight[j], -r[3 + j]) < 0 then
            redis.call('HSET', held[i], inflight[j], 0)
          end
        end
        if redis.call('HINCRBY', held[i], 'if_worst_tokens', -worst[1]) < 0 then
          redis.call('HSET', held[i], 'if_worst_tokens', 0)
        end
        if redis.call('HINCRBY', held[i], 'if_worst_cost_micros', -worst[2]) < 0 then
          redis.call('HSET', held[i], 'if_worst_cost_micros', 0)
        end
      end
    end
    redis.call('HDEL', KEYS[5], rid)
  end
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) end
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
local est = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local worst = {tonumber(ARGV[21]), tonumber(ARGV[22])}
local win = {KEYS[1], KEYS[2], KEYS[3]}
local ttl = {ARGV[8], ARGV[9], ARGV[10]}
if #KEYS >= 9 then
  win[4] = KEYS[9]
  ttl[4] = ARGV[25]
end
local values = {}
local ok = 1
local uncovered = 0
for i = 1, #win do
  local v = redis.call('HMGET', win[i], 'requests', 'tokens', 'cost_micros',
                       'if_requests', 'if_tokens', 'if_cost_micros',
                       'if_worst_tokens', 'if_worst_cost_micros')
  for j = 1, 8 do v[j] = tonumber(v[j]) or 0 end
  for j = 1, 6 do values[#values + 1] = v[j] end
  for j = 1, 3 do
    local limit = tonumber(ARGV[25 + j])
    if i <= 3 then limit = tonumber(ARGV[10 + (i - 1) * 3 + j]) end
    if limit >= 0 and v[j] + v[3 + j] + est[j] > limit then ok = 0 end
    if limit >= 0 and j > 1 then
      local flying = math.max(v[5 + j], v[3 + j])
      if v[j] + flying + worst[j - 1] > limit then uncovered = 1 end
    end
  end
end
if ok == 0 then return {'denied', values} end
local max_in_flight = tonumber(ARGV[23])
if max_in_flight >= 0 and redis.call('ZCARD', KEYS[4]) >= max_in_flight then
  return {'busy_in_flight', values}
end
local max_uncovered = tonumber(ARGV[24])
if uncovered == 1 and max_uncovered >= 0 and redis.call('ZCARD', KEYS[8]) >= max_uncovered then
  return {'busy_uncovered', values}
end
for i = 1, #win do
  for j = 1, 3 do redis.call('HINCRBY', win[i], inflight[j], est[j]) end
  redis.call('HINCRBY', win[i], 'if_worst_tokens', worst[1])
  redis.call('HINCRBY', win[i], 'if_worst_cost_micros', worst[2])
  redis.call('EXPIRE', win[i], ttl[i])
end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
local record = {KEYS[1], KEYS[2], KEYS[3], est[1], est[2], est[3], worst[1], worst[2]}
if win[4] then record[9] = win[4] end
redis.call('HSET', KEYS[5], ARGV[3], cjson.encode(record))
redis.call('EXPIRE', KEYS[4], ARGV[20])
redis.call('EXPIRE', KEYS[5], ARGV[20])
if uncovered == 1 then
  redis.call('ZADD', KEYS[8], ARGV[4], ARGV[3])
  redis.call('EXPIRE', KEYS[8], ARGV[20])
end
return {'ok', values, uncovered}
"""

# KEYS: hourly, daily, monthly (of the reservation's start), leases, reservations, uncovered
#       [, session window]
# ARGV: rid, count (1/0), actual requests, tokens, cost, ttl h, ttl d, ttl m[, session ttl]
_SETTLE_LUA = """
local inflight = {'if_requests', 'if_tokens', 'if_cost_micros'}
local used = {'requests', 'tokens', 'cost_micros'}
local win = {KEYS[1], KEYS[2], KEYS[3]}
local ttl = {ARGV[6], ARGV[7], ARGV[8]}
if #KEYS >= 7 then
  win[4] = KEYS[7]
  ttl[4] = ARGV[9]
end
local rec = redis.call('HGET', KEYS[5], ARGV[1])
if rec then
  local r = cjson.decode(rec)
  local worst = {r[7] or r[5], r[8] or r[6]}
  for i = 1, #win do
    for j = 1, 3 do
      if redis.call('HINCRBY', win[i], inflight[j], -r[3 + j]) < 0 then
        redis.call('HSET', win[i], inflight[j], 0)
      end
    end
    if redis.call('HINCRBY', win[i], 'if_worst_tokens', -worst[1]) < 0 then
      redis.call('HSET', win[i], 'if_worst_tokens', 0)
    end
    if redis.call('HINCRBY', win[i], 'if_worst_cost_micros', -worst[2]) < 0 then
      redis.call('HSET', win[i], 'if_worst_cost_micros', 0)
    end
  end
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
redis.call('ZREM', KEYS[6], ARGV[1])
if ARGV[2] == '1' then
  for i = 1, #win do
    for j = 1, 3 do redis.call('HINCRBY', win[i], used[j], ARGV[2 + j]) end
  end
end
for i = 1, #win do redis.call('EXPIRE', win[i], ttl[i]) end
return rec and 1 or 0
"""

# A live call's heartbeat: move its lease's expiry (and that of its uncovered mark), if the
# lease is still there (settled or released reservations are not revived).
# KEYS: leases, reservations, uncovered  ARGV: rid, lease_expiry_ms, aux ttl
_RENEW_LUA = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
"""


# Rebuild one user's lost counters, unless another rebuild already did (its sentinel is back):
# concurrent first reservations after a flush all see `rebuild`, and a second rebuild would
# overwrite what the calls admitted after the first one have settled since.
# KEYS: sentinel, window keys…  ARGV: sentinel ttl, then per window: requests, tokens, cost, ttl
_REBUILD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #KEYS do
  local a = (i - 2) * 4
  redis.call('HSET', KEYS[i], 'requests', ARGV[a + 2], 'tokens', ARGV[a + 3],
             'cost_micros', ARGV[a + 4])
  redis.call('EXPIRE', KEYS[i], ARGV[a + 5])
end
redis.call('SET', KEYS[1], 1, 'EX', ARGV[1])
return 1
"""


def _decode_values(raw: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
    flat = [int(v) for v in raw]
    return tuple(tuple(flat[i * 6 : i * 6 + 6]) for i in range(len(flat) // 6))


def _session_limits(limits: Sequence[int]) -> list[int]:
    """The session window's three limits (after the calendar windows' nine), if given."""
    return list(limits[9:12]) if len(limits) >= 12 else [NO_LIMIT] * 3


class RedisCapStore:
    """Caps in Redis: one EVALSHA per reserve and per settle (the scripts are cached by SHA)."""

    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis_clients.sync_client(url)
        self._async: dict[int, tuple[Any, ...]] = {}
        self._reserve = self.client.register_script(_RESERVE_LUA)
        self._settle = self.client.register_script(_SETTLE_LUA)
        self._rebuild = self.client.register_script(_REBUILD_LUA)
        self._renew = self.client.register_script(_RENEW_LUA)
        self.caps_cache: dict[int, Any] = {}
        # Users whose calls this process served unreserved (store down, failure mode open):
        # their counters are rebuilt from the usage records before their next reservation.
        self.rebuild_pending: set[int] = set()

    def _aclient(self) -> tuple[aredis.Redis, Any, Any]:
        entry = self._aentry()
        return entry[0], entry[1], entry[2]

    def _aentry(self) -> tuple[aredis.Redis, Any, Any, Any, Any]:
        # redis.asyncio clients belong to one event loop.
        loop = asyncio.get_running_loop()
        entry = self._async.get(id(loop))
        if entry is None or entry[3] is not loop:
            client = redis_clients.async_client(self.url)
            entry = (
                client,
                client.register_script(_RESERVE_LUA),
                client.register_script(_SETTLE_LUA),
                loop,
                client.register_script(_RENEW_LUA),
            )
            self._async[id(loop)] = entry
        return entry[0], entry[1], entry[2], entry[3], entry[4]

    @staticmethod
    def _reserve_args(r: ReserveRequest) -> tuple[list[str], list[Any]]:
        keys = [
            *window_keys(r.user_id, r.now),
            *aux_keys(r.user_id),
            sentinel_key(r.user_id),
            uncovered_key(r.user_id),
        ]
        if r.session_key:
            keys.append(r.session_key)
        args = [
            _ms(r.now),
            r.version,
            r.rid,
            _ms(r.lease_expires_at),
            *r.estimate,
            *window_ttls(),
            *r.limits[:9],
            r.lease_seconds + 3600,
            *r.worst_amounts,
            r.max_in_flight,
            r.max_uncovered,
            session_ttl(),
            *_session_limits(r.limits),
        ]
        return keys, args

    @staticmethod
    def _result(raw: list[Any]) -> ReserveResult:
        status = raw[0].decode() if isinstance(raw[0], bytes) else raw[0]
        if status in ("stale", "rebuild"):
            return ReserveResult(status)
        uncovered = len(raw) > 2 and int(raw[2]) == 1
        return ReserveResult(status, _decode_values(raw[1]), uncovered)

    @staticmethod
    def _settle_args(r: SettleRequest) -> tuple[list[str], list[Any]]:
        # `now` is unused: Redis runs TTLs on its own clock, and settling has no lease to date.
        leases, reservations, _ = aux_keys(r.user_id)
        count = 0 if r.actual is None else 1
        amounts = r.actual or (0, 0, 0)
        keys = [*r.keys, leases, reservations, uncovered_key(r.user_id)]
        args = [r.rid, count, *amounts, *window_ttls()]
        if r.session_key:
            keys.append(r.session_key)
            args.append(session_ttl())
        return keys, args

    @staticmethod
    def _renew_args(r: RenewRequest) -> tuple[list[str], list[Any]]:
        leases, reservations, _ = aux_keys(r.user_id)
        keys = [leases, reservations, uncovered_key(r.user_id)]
        return keys, [r.rid, _ms(r.lease_expires_at), r.lease_seconds + 3600]

    def renew(self, request: RenewRequest) -> bool:
        """Move an open reservation's lease expiry; False if it is no longer open."""
        keys, args = self._renew_args(request)
        try:
            return bool(self._renew(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    async def arenew(self, request: RenewRequest) -> bool:
        keys, args = self._renew_args(request)
        script = self._aentry()[4]
        try:
            return bool(await script(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def uncovered_reservations(self, user_id: int) -> int:
        try:
            return int(self.client.zcard(uncovered_key(user_id)))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def reserve(self, request: ReserveRequest) -> ReserveResult:
        keys, args = self._reserve_args(request)
        try:
            return self._result(self._reserve(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    async def areserve(self, request: ReserveRequest) -> ReserveResult:
        keys, args = self._reserve_args(request)
        _, script, _ = self._aclient()
        try:
            return self._result(await script(keys=keys, args=args))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def settle(self, request: SettleRequest) -> None:
        keys, args = self._settle_args(request)
        try:
            self._settle(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    async def asettle(self, request: SettleRequest) -> None:
        keys, args = self._settle_args(request)
        _, _, script = self._aclient()
        try:
            await script(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def version(self, user_id: int) -> str:
        try:
            raw = self.client.get(aux_keys(user_id)[2])
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc
        return raw.decode() if isinstance(raw, bytes) else raw or ""

    async def aversion(self, user_id: int) -> str:
        client, _, _ = self._aclient()
        try:
            raw = await client.get(aux_keys(user_id)[2])
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc
        return raw.decode() if isinstance(raw, bytes) else raw or ""

    def set_version(self, user_id: int) -> None:
        try:
            self.client.set(aux_keys(user_id)[2], new_version(), ex=30 * 86400)
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def read(self, keys: Sequence[str], now: datetime) -> list[dict[str, int]]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            raw = pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc
        return [{k.decode(): int(v) for k, v in item.items()} for item in raw]

    def open_reservations(self, user_id: int) -> int:
        try:
            return int(self.client.hlen(aux_keys(user_id)[1]))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def needs_rebuild(self, user_id: int) -> bool:
        """Whether the user's counters were lost (no sentinel): rebuild before reading them."""
        try:
            return not self.client.exists(sentinel_key(user_id))
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc

    def set_used(
        self,
        entries: Sequence[tuple[str, Amounts, int]],
        now: datetime,
        rebuilt_users: Sequence[int] = (),
        only_if_lost: bool = False,
    ) -> None:
        """Set windows' settled use (key, used, ttl) in one step; in-flight fields stay. The
        sentinels of `rebuilt_users` are written in the same step: their counters are whole.
        `only_if_lost` (one user): write nothing if the user's sentinel exists again."""
        sentinel_ttl = window_ttls()[2]
        if only_if_lost:
            (user_id,) = rebuilt_users
            args: list[Any] = [sentinel_ttl]
            for _, used, ttl in entries:
                args += [*used, ttl]
            keys = [sentinel_key(user_id), *(key for key, _, _ in entries)]
            try:
                self._rebuild(keys=keys, args=args)
            except REDIS_ERRORS as exc:
                raise StoreDown(str(exc)) from exc
            return
        # (key, used, ttl); used None = a sentinel. On a Redis Cluster a MULTI/EXEC holds keys
        # of one slot: one per user there (a user's counters and sentinel share its tag).
        ops: list[tuple[str, Amounts | None, int]] = [
            *entries,
            *((sentinel_key(u), None, sentinel_ttl) for u in rebuilt_users),
        ]
        groups = [ops]
        if redis_clients.is_cluster(self.client):
            groups = redis_clients.by_slot(ops, lambda op: op[0])
        try:
            for group in groups:
                pipe = self.client.pipeline(transaction=True)
                for key, settled, ttl in group:
                    if settled is None:
                        pipe.set(key, 1, ex=ttl)
                    else:
                        pipe.hset(key, mapping=dict(zip(USED, settled, strict=True)))
                        pipe.expire(key, ttl)
                pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreDown(str(exc)) from exc


# --- Embedded (database) -------------------------------------------------------------------------

# The hot path's database work (the embedded store, a cold caps cache) runs in a small pool of
# our own rather than asgiref's executors, so that its connections can be closed on demand.
_POOL_SIZE = 4
_pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="caps-db")


def _in_thread(fn: Callable[..., T], args: tuple, kw: dict[str, Any]) -> T:
    # Each pool thread keeps its connection (opening one per call would dominate the embedded
    # store's latency), dropping it only once it has failed.
    if connection.connection is not None and connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()
    return fn(*args, **kw)


async def run_in_db_thread(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run a blocking database function in the caps pool (never on the event loop)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, _in_thread, fn, args, kw)


def close_db_thread_connections() -> None:
    """Close the pool threads' connections (each thread takes exactly one of these tasks);
    tests call it before the test database is dropped."""
    barrier = threading.Barrier(_POOL_SIZE)

    def close() -> None:
        barrier.wait(timeout=10)
        connections.close_all()

    for future in [_pool.submit(close) for _ in range(_POOL_SIZE)]:
        future.result()


# Same on SQLite and PostgreSQL. An expired row restarts from the delta, as an expired Redis
# key would; the expiry of every field of a key moves together (EXPIRE applies to a hash).
_UPSERT = (
    "INSERT INTO usage_counter (key, field, value, expires_at) VALUES {rows} "
    "ON CONFLICT (key, field) DO UPDATE SET "
    "value = CASE WHEN usage_counter.expires_at <= %s THEN excluded.value "
    "ELSE usage_counter.value + excluded.value END, "
    "expires_at = excluded.expires_at"
)
# Releasing in-flight amounts never drives a counter below zero.
_RELEASE = (
    "UPDATE usage_counter SET value = CASE WHEN value > %s THEN value - %s ELSE 0 END "
    "WHERE key = %s AND field = %s AND expires_at > %s"
)
# Namespace of the PostgreSQL advisory locks that serialize one user's reservations.
_LOCK_NAMESPACE = 0x43415053 << 32


class DatabaseCapStore:
    """Caps in the database: each reserve / settle is one transaction over Counter rows.

    SQLite runs every transaction IMMEDIATE (settings), so reservations serialize on its write
    lock; on PostgreSQL the transaction first takes an advisory lock on the user, so concurrent
    reservations of one user serialize too (and those of different users do not). The async
    methods run the transaction in the caps thread pool (`run_in_db_thread`).
    """

    name = "database"

    def __init__(self) -> None:
        self.caps_cache: dict[int, Any] = {}
        # Users whose calls this process served unreserved (store down, failure mode open):
        # their counters are rebuilt from the usage records before their next reservation.
        self.rebuild_pending: set[int] = set()

    @staticmethod
    def _lock(user_id: int) -> None:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_NAMESPACE + user_id])

    @staticmethod
    def _upsert(rows: list[tuple[str, str, int, datetime]], now: datetime) -> None:
        placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
        params: list[Any] = [value for row in rows for value in row]
        with connection.cursor() as cursor:
            cursor.execute(_UPSERT.format(rows=placeholders), [*params, now])

    @staticmethod
    def _release(keys: Sequence[str], amounts: Sequence[int], now: datetime) -> None:
        """Take a lease's amounts out of in flight: (requests, tokens, cost, worst tokens,
        worst cost)."""
        params = [
            (amount, amount, key, field, now)
            for key in keys
            for field, amount in zip(IN_FLIGHT + IN_FLIGHT_WORST, amounts, strict=True)
            if amount
        ]
        if params:
            with connection.cursor() as cursor:
                cursor.executemany(_RELEASE, params)

    def _read(self, keys: Sequence[str], now: datetime) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {key: {} for key in keys}
        rows = Counter.objects.filter(key__in=list(keys), expires_at__gt=now)
        for key, name, value in rows.values_list("key", "field", "value"):
            result[key][name] = value
        return result

    def reserve(self, request: ReserveRequest) -> ReserveResult:
        r = request
        user_id, now, estimate, session_key = r.user_id, r.now, r.estimate, r.session_key
        keys = _with_session(window_keys(user_id, now), session_key)
        ttls = _ttls(session_key)
        limits = [*r.limits[:9], *_session_limits(r.limits)]
        version_key = aux_keys(user_id)[2]
        worst_amounts = r.worst_amounts
        try:
            with transaction.atomic():
                self._lock(user_id)
                expired = list(
                    CapLease.objects.filter(user_id=user_id, expires_at__lte=now).values_list(
                        "id",
                        "started_at",
                        "requests",
                        "tokens",
                        "cost_micros",
                        "worst_tokens",
                        "worst_cost_micros",
                        "session_key",
                    )
                )
                for _, started_at, *amounts, held_session in expired:
                    held = _with_session(window_keys(user_id, started_at), held_session)
                    self._release(held, amounts, now)
                if expired:
                    CapLease.objects.filter(id__in=[row[0] for row in expired]).delete()
                current = self._read([*keys, version_key], now)
                if str(current[version_key].get("v", "")) != r.version:
                    return ReserveResult("stale")
                values = tuple(tuple(current[key].get(f, 0) for f in FIELDS) for key in keys)
                uncovered = False
                for i, (key, window) in enumerate(zip(keys, values, strict=True)):
                    for j in range(3):
                        limit = limits[i * 3 + j]
                        if limit == NO_LIMIT:
                            continue
                        if window[j] + window[3 + j] + estimate[j] > limit:
                            return ReserveResult("denied", values)
                        if j > 0:
                            worst_flying = current[key].get(IN_FLIGHT_WORST[j - 1], 0)
                            flying = max(worst_flying, window[3 + j])
                            uncovered |= window[j] + flying + worst_amounts[j - 1] > limit
                open_leases = CapLease.objects.filter(user_id=user_id)
                if r.max_in_flight != NO_LIMIT and open_leases.count() >= r.max_in_flight:
                    return ReserveResult("busy_in_flight", values)
                if (
                    uncovered
                    and r.max_uncovered != NO_LIMIT
                    and open_leases.filter(uncovered=True).count() >= r.max_uncovered
                ):
                    return ReserveResult("busy_uncovered", values)
                deltas = (0, 0, 0, *estimate, *worst_amounts)
                rows = [
                    (key, field, delta, now + timedelta(seconds=ttl))
                    for key, ttl in zip(keys, ttls, strict=True)
                    for field, delta in zip(FIELDS + IN_FLIGHT_WORST, deltas, strict=True)
                ]
                self._upsert(rows, now)
                CapLease.objects.create(
                    id=r.rid,
                    user_id=user_id,
                    started_at=now,
                    expires_at=r.lease_expires_at,
                    requests=estimate.requests,
                    tokens=estimate.tokens,
                    cost_micros=estimate.cost_micros,
                    worst_tokens=worst_amounts[0],
                    worst_cost_micros=worst_amounts[1],
                    uncovered=uncovered,
                    session_key=session_key,
                )
                return ReserveResult("ok", values, uncovered)
        except DatabaseError as exc:
            raise StoreDown(str(exc)) from exc

    async def areserve(self, request: ReserveRequest) -> ReserveResult:
        return await run_in_db_thread(self.reserve, request)

    def settle(self, request: SettleRequest) -> None:
        user_id, rid, actual, now = request.user_id, request.rid, request.actual, request.now
        session_key = request.session_key
        keys = _with_session(request.keys, session_key)
        try:
            with transaction.atomic():
                self._lock(user_id)
                lease = (
                    CapLease.objects.filter(id=rid)
                    .values_list(
                        "requests", "tokens", "cost_micros", "worst_tokens", "worst_cost_micros"
                    )
                    .first()
                )
                if lease is not None:
                    self._release(keys, lease, now)
                    CapLease.objects.filter(id=rid).delete()
                deltas = (0, 0, 0) if actual is None else tuple(actual)
                rows = [
                    (key, field, delta, now + timedelta(seconds=ttl))
                    for key, ttl in zip(keys, _ttls(session_key), strict=True)
                    for field, delta in zip(FIELDS, (*deltas, 0, 0, 0), strict=True)
                ]
                self._upsert(rows, now)
        except DatabaseError as exc:
            raise StoreDown(str(exc)) from exc

    async def asettle(self, request: SettleRequest) -> None:
        await run_in_db_thread(self.settle, request)

    def renew(self, request: RenewRequest) -> bool:
        """Move an open reservation's lease expiry; False if it is no longer open."""
        user_id = request.user_id
        try:
            with transaction.atomic():
                self._lock(user_id)
                return bool(
                    CapLease.objects.filter(id=request.rid, user_id=user_id).update(
                        expires_at=request.lease_expires_at
                    )
                )
        except DatabaseError as exc:
            raise StoreDown(str(exc)) from exc

    async def arenew(self, request: RenewRequest) -> bool:
        return await run_in_db_thread(self.renew, request)

    def uncovered_reservations(self, user_id: int) -> int:
        return CapLease.objects.filter(user_id=user_id, uncovered=True).count()

    def version(self, user_id: int) -> str:
        try:
            row = self._read([aux_keys(user_id)[2]], _far_past())
        except DatabaseError as exc:
            raise StoreDown(str(exc)) from exc
        value = next(iter(row.values())).get("v")
        return "" if value is None else str(value)

    async def aversion(self, user_id: int) -> str:
        return await run_in_db_thread(self.version, user_id)

    def set_version(self, user_id: int) -> None:
        # Inside the cap write's own transaction when there is one: atomic with the change. The
        # version never expires in practice: its TTL is the store's clock plus ten years.
        now = clock.now()
        Counter.objects.update_or_create(
            key=aux_keys(user_id)[2],
            field="v",
            defaults={
                "value": int(new_version(), 16) >> 1,
                "expires_at": now + timedelta(days=3650),
            },
        )

    def read(self, keys: Sequence[str], now: datetime) -> list[dict[str, int]]:
        try:
            current = self._read(keys, now)
        except DatabaseError as exc:
            raise StoreDown(str(exc)) from exc
        return [current[key] for key in keys]

    def open_reservations(self, user_id: int) -> int:
        return CapLease.objects.filter(user_id=user_id).count()

    def needs_rebuild(self, user_id: int) -> bool:
        # The counters live in the same database as the usage records: they are lost together.
        return False

    def set_used(
        self,
        entries: Sequence[tuple[str, Amounts, int]],
        now: datetime,
        rebuilt_users: Sequence[int] = (),
        only_if_lost: bool = False,
    ) -> None:
        """Set windows' settled use (key, used, ttl) in one transaction; in flight stays."""
        try:
            with transaction.atomic():
                for key, used, ttl in entries:
                    for name, value in zip(USED, used, strict=True):
                        Counter.objects.update_or_create(
                            key=key,
                            field=name,
                            defaults={"value": value, "expires_at": now + timedelta(seconds=ttl)},
                        )
        except DatabaseError as exc:
            raise StoreDown(str(exc)) from exc


def _with_session(keys: Sequence[str], session_key: str | None) -> tuple[str, ...]:
    """The windows a reservation holds: hourly, daily, monthly, then its session's if any."""
    return (*keys, session_key) if session_key else tuple(keys)


def _ttls(session_key: str | None) -> tuple[int, ...]:
    return (*window_ttls(), session_ttl()) if session_key else window_ttls()


def _far_past() -> datetime:

    return datetime(1970, 1, 1, tzinfo=UTC)


def new_reservation_id() -> str:
    return secrets.token_hex(16)


# --- The configured store ------------------------------------------------------------------------

CapStore = RedisCapStore | DatabaseCapStore

_stores: dict[str, CapStore] = {}


def cap_store(*, url: str | None = None, embedded: bool = False) -> CapStore:
    """The configured cap store (Redis when REDIS_URL is set, else the database), or an
    explicit one (`url=` a Redis URL, `embedded=True` the database) — one per process each."""
    if not embedded and url is None:
        url = settings.GATEWAY.redis.url
    key = "embedded" if embedded or not url else url
    store = _stores.get(key)
    if store is None:
        store = DatabaseCapStore() if key == "embedded" else RedisCapStore(key)
        _stores[key] = store
    return store


def open_stores() -> list[CapStore]:
    """The stores this process has opened (each holds its own caps cache)."""
    return list(_stores.values())
