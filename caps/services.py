"""Usage caps: reserve before the upstream call, settle after it; cap writes and status.

The proxy calls, per call:

    estimate = estimate_usage(user_id=..., model_id=..., body=...)
    reservation = await cap_reserve(user_id=..., model_id=..., estimate=estimate)  # CapExceeded
    ...                                                   # the upstream call, outside any lock
    await cap_settle(reservation=reservation, actual=usage_or_None)   # on every terminal path

`cap_reserve` is one atomic step in the counter store (caps/store.py) over every window of the
user: it checks each active cap against used + in flight + the estimate and, if all fit, adds
the estimate to in flight. In the same step it limits the user's calls in flight
(`usage_caps.max_in_flight_per_user`) and the "uncovered" ones among them — calls whose worst
case (input estimate + max_tokens) does not fit what is left under a token or cost cap —
(`usage_caps.max_uncovered_in_flight`); either limit answers CallsInFlight (429, Retry-After
1). A live call renews its reservation's lease (`acap_renew`, the proxy's heartbeat).
`cap_settle` moves the actual usage into `used` of the windows where the call started and
takes the reservation out of in flight, again in one step. A call that
never reached the upstream settles with `actual=None`: nothing is counted.

Caps are compared in whole units: requests, tokens (input + output + cache writes), and cost
in micro-dollars (a limit of N cents is N x 10,000 micros).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError, transaction

from caps.estimates import Estimate, estimate_usage, prefixes_remember, worst_case
from caps.models import SetBy, TeamCapConfig, UserCapConfig
from caps.policy import POLICY_OWNER, RECHECK_SECONDS, Policy, policy_load
from caps.rules import MICROS_PER_CENT, NO_LIMIT, CapRule, UserCaps, blocking_limits, caps_load
from caps.store import (
    DatabaseCapStore,
    RedisCapStore,
    ReserveResult,
    StoreDown,
    new_reservation_id,
    run_in_db_thread,
)
from caps.windows import (
    CAP_TYPES,
    SESSION,
    WINDOW_TYPES,
    iso_z,
    reset_time,
    session_key,
    session_ttl,
    window_key,
    window_keys,
    window_start,
    window_ttls,
)
from config import clock
from costs.money import Usage
from costs.pricing import aestimate_cost_micros, estimate_cost_micros

__all__ = [
    "CallsInFlight",
    "CapExceeded",
    "CapHeadroom",
    "CapStoreUnavailable",
    "Reservation",
    "acap_renew",
    "cap_config_changed",
    "cap_create",
    "cap_delete",
    "cap_renew",
    "cap_reserve",
    "cap_reserve_sync",
    "cap_settle",
    "cap_settle_sync",
    "cap_status",
    "cap_store",
    "cap_update",
    "estimate_usage",
    "headroom_headers",
    "spend_today_cents",
    "team_cap_delete",
    "team_cap_set",
    "team_cap_status",
]

logger = logging.getLogger(__name__)

LIMIT_TYPES = ("requests", "tokens", "cost")
LIMIT_FIELDS = ("max_requests", "max_tokens", "max_cost_cents")
_STALE_RETRIES = 3
# A session cap never resets: a day, so that the client stops rather than retries.
SESSION_RETRY_AFTER = 86400

CapStore = RedisCapStore | DatabaseCapStore


# --- Errors and values ---------------------------------------------------------------------------


def _cents(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS_PER_CENT).quantize(Decimal("0.0001"))


def _dollars(micros: int) -> str:
    """$0.036, $10.00: at least cents, up to 1/100 of a cent, rounded down."""
    text = f"{(Decimal(micros) / 1_000_000).quantize(Decimal('0.0001'), rounding=ROUND_DOWN)}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


class CapExceeded(Exception):
    """A cap would be exceeded by this call: the proxy answers 429 with `Retry-After`."""

    def __init__(
        self,
        *,
        cap_type: str,
        limit_type: str,
        current_usage: int | Decimal,
        limit: int | Decimal,
        reset_time: datetime | None,
        retry_after_seconds: int,
        needed: int | Decimal,
        set_by: str = SetBy.USER,
    ) -> None:
        self.cap_type = cap_type
        self.limit_type = limit_type
        self.current_usage = current_usage  # cost: cents as a Decimal, like max_cost_cents
        self.limit = limit
        self.reset_time = reset_time
        self.retry_after_seconds = retry_after_seconds
        self.needed = needed  # this call's estimate, in the same unit
        self.set_by = set_by
        self.message = self._message()
        super().__init__(self.message)

    def _message(self) -> str:
        # The seed's UsageCapError text: "Daily usage cap exceeded: 1000/1000 requests. Resets at …"
        if self.limit_type == "cost":
            to_micros = MICROS_PER_CENT
            usage = f"${_dollars(int(self.current_usage * to_micros))}"
            usage += f"/${_dollars(int(self.limit * to_micros))} cost"
            need = f"${_dollars(int(self.needed * to_micros))}"
        else:
            usage = f"{self.current_usage}/{self.limit} {self.limit_type}"
            need = f"{self.needed} {self.limit_type}"
        if self.cap_type == SESSION:
            # "Session cost cap exceeded: $2.00/$2.00. Start a new session." (never resets)
            text = f"Session cost cap exceeded: {usage.removesuffix(' cost')}"
        else:
            text = f"{self.cap_type.capitalize()} usage cap exceeded: {usage}"
        if self.set_by == "team":
            text = f"Your team's {text[0].lower()}{text[1:]}"
        if self.current_usage < self.limit:
            # Under the limit, but this call's estimate does not fit in what is left.
            text += f" (this request needs about {need})"
        if self.reset_time is None:
            return f"{text}. Start a new session."
        return f"{text}. Resets at {iso_z(self.reset_time)}"

    def body(self) -> dict[str, Any]:
        """The seed's 429 body; a cost's usage and limit are cents (a JSON number)."""

        def number(value: int | Decimal) -> int | float:
            # JSON has one number type; cents keep their 4 decimals of micro-dollars.
            return value if isinstance(value, int) else float(value)

        return {
            "error": self.message,
            "cap_type": self.cap_type,
            "limit_type": self.limit_type,
            "current_usage": number(self.current_usage),
            "limit": number(self.limit),
            "reset_time": None if self.reset_time is None else iso_z(self.reset_time),
            "retry_after_seconds": self.retry_after_seconds,
        }


class CallsInFlight(Exception):
    """Too many of the user's calls in flight at once (`reason` "in_flight"), or too many
    uncovered ones ("uncovered"): the proxy answers 429 with `Retry-After: 1`, no cap named."""

    retry_after_seconds = 1

    def __init__(self, reason: str, limit: int) -> None:
        self.reason = reason
        self.limit = limit
        if reason == "in_flight":
            self.message = (
                f"Too many calls in flight: at most {limit} at once per user. "
                "Retry when one has finished."
            )
        else:
            self.message = (
                f"Too many calls in flight whose max_tokens exceeds what is left under your "
                f"usage caps: at most {limit} at once. Retry when it has finished, or lower "
                "max_tokens."
            )
        super().__init__(self.message)


class CapStoreUnavailable(Exception):
    """The counter store is unreachable and the failure mode says refuse (the proxy: 503)."""

    message = "Usage caps cannot be checked right now (counter store unavailable); try again."


@dataclass(frozen=True)
class CapHeadroom:
    """What is left of one period's caps after this reservation (strictest cap per limit)."""

    cap_type: str
    requests_remaining: int | None
    tokens_remaining: int | None
    cost_micros_remaining: int | None
    reset_time: datetime | None  # None: the session window, which never resets


@dataclass
class Reservation:
    """An open reservation: settle it exactly once, whatever happens to the call."""

    id: str
    user_id: int
    model_id: str
    started_at: datetime
    keys: tuple[str, str, str]  # hourly, daily, monthly windows where the call started
    requests: int
    tokens: int
    cost_micros: int
    lease_expires_at: datetime
    headroom: list[CapHeadroom]
    # False when the store was unreachable and the failure mode let the call through.
    reserved: bool = True
    # Its worst case (max_tokens) did not fit what was left under a token or cost cap.
    uncovered: bool = False
    region: str | None = None
    prefixes: tuple[tuple[str, str], ...] = ()
    # The call's session window (its Claude Code session's cost counter), if it had one.
    session_key: str | None = None
    settled: bool = False
    store: Any = field(default=None, repr=False, compare=False)
    # The same call's reservation in its team's counters (user_id: the team's owner id).
    team: Reservation | None = None


# --- Stores and the caps cache -------------------------------------------------------------------

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


def cap_config_changed(*, user_id: int) -> None:
    """A cap of this user changed: every process drops its cached caps on its next call.

    The embedded store's version row is written inside the caller's transaction (atomic with
    the change); Redis's version key once that transaction commits.
    """
    embedded = cap_store(embedded=True)
    embedded.set_version(user_id)
    _forget(user_id)

    def publish() -> None:
        _forget(user_id)
        for store in list(_stores.values()):
            if isinstance(store, RedisCapStore):
                try:
                    store.set_version(user_id)
                except StoreDown:
                    logger.warning("cap change for user %s not published: store down", user_id)

    if settings.GATEWAY.redis.url:
        cap_store()  # the configured Redis store gets the version even if not used yet
    transaction.on_commit(publish)


def team_owner(team_id: int) -> int:
    """A team's counters are kept like a user's, under the negative of its id."""
    return -team_id


def _forget(user_id: int) -> None:
    for store in list(_stores.values()):
        if user_id == POLICY_OWNER:
            store.caps_cache.clear()  # every user's cached caps hold the policy's rules
        else:
            store.caps_cache.pop(user_id, None)


def _load_caps(store: CapStore, user_id: int, policy: Policy | None = None) -> UserCaps:
    version = store.version(user_id)
    caps = caps_load(user_id=user_id, version=version, policy=policy)
    store.caps_cache[user_id] = caps
    return caps


def _policy_checked(store: CapStore) -> Policy | None:
    """The cached policy if its version was checked within RECHECK_SECONDS."""
    entry = store.caps_cache.get(POLICY_OWNER)
    if entry is not None and time.monotonic() - entry[1] < RECHECK_SECONDS:
        return entry[0]
    return None


def _policy_at(store: CapStore, version: str) -> Policy:
    entry = store.caps_cache.get(POLICY_OWNER)
    policy = entry[0] if entry is not None and entry[0].version == version else None
    if policy is None:
        policy = policy_load(version=version)
    store.caps_cache[POLICY_OWNER] = (policy, time.monotonic())
    return policy


def _policy(store: CapStore) -> Policy:
    policy = _policy_checked(store)
    if policy is not None:
        return policy
    try:
        version = store.version(POLICY_OWNER)
    except StoreDown:
        return _policy_unchecked(store)
    return _policy_at(store, version)


def _policy_unchecked(store: CapStore) -> Policy:
    # The store is down: the last policy seen, else the database's (not cached: unversioned).
    entry = store.caps_cache.get(POLICY_OWNER)
    return entry[0] if entry is not None else policy_load(version="")


async def _apolicy(store: CapStore) -> Policy:
    policy = _policy_checked(store)
    if policy is not None:
        return policy
    try:
        version = await store.aversion(POLICY_OWNER)
    except StoreDown:
        return await run_in_db_thread(_policy_unchecked, store)
    entry = store.caps_cache.get(POLICY_OWNER)
    if entry is not None and entry[0].version == version:
        store.caps_cache[POLICY_OWNER] = (entry[0], time.monotonic())
        return entry[0]
    return await run_in_db_thread(_policy_at, store, version)


def _cached_caps(store: CapStore, owner: int, policy: Policy) -> UserCaps | None:
    caps = store.caps_cache.get(owner)
    if caps is None or (owner > 0 and caps.policy_version != policy.version):
        return None
    return caps


# --- Reserve and settle --------------------------------------------------------------------------


def _exceeded(
    rules: tuple[CapRule, ...], result: ReserveResult, amounts: tuple[int, int, int], now: datetime
) -> CapExceeded:
    candidates: list[tuple[datetime, int, CapExceeded]] = []
    for rule in rules:
        enforced = rule.enforced_limits(now)
        index = WINDOW_TYPES.index(rule.cap_type)
        if enforced is None or index >= len(result.values):
            continue  # in grace, or a session cap and a call without a session
        window = result.values[index]
        session = rule.cap_type == SESSION
        reset = None if session else reset_time(rule.cap_type, now)
        for j, limit in enumerate(enforced):
            if limit is None:
                continue
            units = limit * MICROS_PER_CENT if j == 2 else limit
            current = window[j] + window[3 + j]
            if current + amounts[j] <= units:
                continue
            exc = CapExceeded(
                cap_type=rule.cap_type,
                limit_type=LIMIT_TYPES[j],
                current_usage=_cents(current) if j == 2 else current,
                limit=limit,
                reset_time=reset,
                retry_after_seconds=SESSION_RETRY_AFTER
                if reset is None
                else max(1, math.ceil((reset - now).total_seconds())),
                needed=_cents(amounts[j]) if j == 2 else amounts[j],
                set_by=rule.set_by,
            )
            # A session never resets: its cap wins (the client must start a new session).
            candidates.append((reset or datetime.max.replace(tzinfo=now.tzinfo), -j, exc))
    # Several caps may be full: the one that resets last is when a retry can succeed.
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _headroom(
    rules: tuple[CapRule, ...], result: ReserveResult, amounts: tuple[int, int, int], now: datetime
) -> list[CapHeadroom]:
    left: dict[str, list[int | None]] = {}
    for rule in rules:
        index = WINDOW_TYPES.index(rule.cap_type)
        if index >= len(result.values):
            continue  # a session cap, and a call without a session
        window = result.values[index]
        slot = left.setdefault(rule.cap_type, [None, None, None])
        for j, limit in enumerate(rule.limits):
            if limit is None:
                continue
            units = limit * MICROS_PER_CENT if j == 2 else limit
            remaining = max(0, units - window[j] - window[3 + j] - amounts[j])
            slot[j] = remaining if slot[j] is None else min(slot[j], remaining)
    return [
        CapHeadroom(
            cap_type,
            *left[cap_type],
            reset_time=None if cap_type == SESSION else reset_time(cap_type, now),
        )
        for cap_type in WINDOW_TYPES
        if cap_type in left
    ]


def _reservation(
    *,
    rid,
    user_id,
    model_id,
    estimate,
    amounts,
    now,
    region,
    headroom,
    store,
    reserved=True,
    uncovered=False,
    session_window=None,
) -> Reservation:
    return Reservation(
        id=rid,
        user_id=user_id,
        model_id=model_id,
        started_at=now,
        keys=window_keys(user_id, now),
        requests=amounts[0],
        tokens=amounts[1],
        cost_micros=amounts[2],
        lease_expires_at=now
        + timedelta(seconds=settings.GATEWAY.usage_caps.reservation_lease_seconds),
        headroom=headroom,
        reserved=reserved,
        uncovered=uncovered,
        region=region,
        prefixes=estimate.prefixes if isinstance(estimate, Estimate) else (),
        session_key=session_window,
        store=store,
    )


def _limit_or_none(value: int | None) -> int:
    return NO_LIMIT if value is None else value


def _reserve_kwargs(*, user_id, caps, rid, now, amounts, worst, session_window) -> dict:
    conf = settings.GATEWAY.usage_caps
    lease = conf.reservation_lease_seconds
    return {
        "user_id": user_id,
        "version": caps.version,
        "rid": rid,
        "now": now,
        "lease_expires_at": now + timedelta(seconds=lease),
        "estimate": amounts,
        "limits": blocking_limits(caps.rules, now),
        "lease_seconds": lease,
        "worst": worst,
        # A team's calls in flight are limited per member, by each member's reservation.
        "max_in_flight": NO_LIMIT if user_id < 0 else _limit_or_none(conf.max_in_flight_per_user),
        "max_uncovered": _limit_or_none(conf.max_uncovered_in_flight),
        "session_key": session_window,
    }


def _fail_closed(has_cost_cap: bool) -> bool:
    if not settings.GATEWAY.usage_caps.enforce_caps:
        return False
    mode = settings.GATEWAY.usage_caps.store_failure_mode
    return mode == "closed" or (mode == "closed_for_cost_caps" and has_cost_cap)


def _has_cost_cap(store: CapStore, user_id: int) -> bool:
    cached = store.caps_cache.get(user_id)
    if cached is not None:
        return cached.has_cost_cap
    try:
        return UserCapConfig.objects.filter(
            user_id=user_id, is_active=True, max_cost_cents__isnull=False
        ).exists()
    except DatabaseError:
        return True  # nothing can be known: treat as the stricter case


@dataclass
class _Attempt:
    """One reservation attempt: what both the async and the sync entry points share."""

    store: CapStore
    user_id: int
    model_id: str
    estimate: Usage
    now: datetime
    region: str | None
    amounts: tuple[int, int, int]
    worst: tuple[int, int, int]
    session_window: str | None = None
    rid: str = field(default_factory=new_reservation_id)

    def reserve_kwargs(self, caps: UserCaps) -> dict[str, Any]:
        return _reserve_kwargs(
            user_id=self.user_id, caps=caps, rid=self.rid, now=self.now, amounts=self.amounts,
            worst=self.worst, session_window=self.session_window,
        )  # fmt: skip

    def _reservation(
        self, *, headroom: list, reserved: bool = True, uncovered: bool = False
    ) -> Reservation:
        return _reservation(
            rid=self.rid, user_id=self.user_id, model_id=self.model_id, estimate=self.estimate,
            amounts=self.amounts, now=self.now, region=self.region, headroom=headroom,
            store=self.store, reserved=reserved, uncovered=uncovered,
            session_window=self.session_window,
        )  # fmt: skip

    def for_team(self, team_id: int) -> _Attempt:
        """The same call's reservation in its team's counters (no session window)."""
        return dataclasses.replace(
            self, user_id=team_owner(team_id), rid=new_reservation_id(), session_window=None
        )

    def unreserved(self, exc: Exception, team_id: int | None) -> Reservation:
        """The store is down and the policy lets the call through: nothing is reserved. The
        call is counted by a rebuild of the user's (and team's) counters from the usage
        records, before this process's next reservation for them that reaches the store."""
        logger.warning("cap store unavailable for user %s: %s", self.user_id, exc)
        self.store.rebuild_pending.add(self.user_id)
        if team_id is not None:
            self.store.rebuild_pending.add(team_owner(team_id))
        return self._reservation(headroom=[], reserved=False)

    def outcome(self, caps: UserCaps, result: Any) -> Reservation:
        if result.status == "denied":
            raise _exceeded(caps.rules, result, self.amounts, self.now)
        conf = settings.GATEWAY.usage_caps
        if result.status == "busy_in_flight":
            raise CallsInFlight("in_flight", conf.max_in_flight_per_user or 0)
        if result.status == "busy_uncovered":
            raise CallsInFlight("uncovered", conf.max_uncovered_in_flight)
        return self._reservation(
            headroom=_headroom(caps.rules, result, self.amounts, self.now),
            uncovered=result.uncovered,
        )


_DONE, _RETRY, _REBUILD = "done", "retry", "rebuild"


class _Retries:
    """What to do after a reserve answer: done (ok / denied), retry with the caps reloaded
    (stale, at most _STALE_RETRIES times), or rebuild the user's lost counters first (once)."""

    def __init__(self, store: CapStore, user_id: int) -> None:
        self.store = store
        self.user_id = user_id
        self.stale = 0
        self.rebuilt = False

    def next(self, result: ReserveResult) -> str:
        if result.status == "rebuild":
            if self.rebuilt:
                raise StoreDown("the user's counters could not be rebuilt")
            self.rebuilt = True
            return _REBUILD
        if result.status == "stale":
            self.stale += 1
            if self.stale >= _STALE_RETRIES:
                raise StoreDown("the user's cap configuration kept changing")
            self.store.caps_cache.pop(self.user_id, None)
            return _RETRY
        return _DONE


def _rebuild_user(store: CapStore, user_id: int, now: datetime, *, lost: bool = False) -> None:
    """Rebuild one user's counters from the usage records: `lost` (the store answered
    `rebuild`: unless a concurrent rebuild already did), or after calls this process served
    while the store was down. StoreDown if the store is still unreachable."""
    caps_rebuild(now=now, store=store, user_id=user_id, only_if_lost=lost)
    store.rebuild_pending.discard(user_id)
    logger.info("cap counters of user %s rebuilt from the usage records", user_id)


def _attempt(
    *, store, user_id, model_id, estimate, now, region, cost, worst_cost, session_id
) -> _Attempt:
    return _Attempt(
        store=store or cap_store(), user_id=user_id, model_id=model_id, estimate=estimate,
        now=now, region=region, amounts=(1, estimate.cap_tokens, cost),
        worst=(1, worst_case(estimate).cap_tokens, worst_cost),
        session_window=session_key(user_id, session_id),
    )  # fmt: skip


async def cap_reserve(
    *,
    user_id: int,
    model_id: str,
    estimate: Usage,
    now: datetime | None = None,
    region: str | None = None,
    store: CapStore | None = None,
    session_id: str | None = None,
    team_id: int | None = None,
) -> Reservation:
    """Check every active cap of the user and reserve the estimate, in one atomic step.

    Raises CapExceeded (429) or CapStoreUnavailable (503, per `store_failure_mode`).
    `session_id` (Claude Code's x-claude-code-session-id): the call also counts in, and is
    checked against, its session's window (the per-session cost cap). `team_id` (the user's
    team): the call is reserved in the team's counters too, against the team's caps.
    """
    now = now or clock.now()
    cost = await aestimate_cost_micros(model_id=model_id, usage=estimate, at=now, region=region)
    worst = worst_case(estimate)
    worst_cost = cost
    if worst is not estimate:
        worst_cost = await aestimate_cost_micros(
            model_id=model_id, usage=worst, at=now, region=region
        )
    attempt = _attempt(
        store=store, user_id=user_id, model_id=model_id, estimate=estimate, now=now,
        region=region, cost=cost, worst_cost=worst_cost, session_id=session_id,
    )  # fmt: skip
    store = attempt.store
    team: Reservation | None = None
    try:
        policy = await _apolicy(store)
        if team_id is not None:
            # The team first, then the user (one slot each on a Redis Cluster): the team's
            # reservation is released if the user's fails, so a team cap is never overshot.
            team_attempt = attempt.for_team(team_id)
            team = team_attempt.outcome(*await _areserve_owner(team_attempt, policy))
        caps, result = await _areserve_owner(attempt, policy)
        reservation = attempt.outcome(caps, result)
    except (StoreDown, DatabaseError) as exc:
        if team is not None:
            await _arelease(team)
        if _fail_closed(await run_in_db_thread(_has_cost_cap, store, user_id)):
            raise CapStoreUnavailable(CapStoreUnavailable.message) from exc
        return attempt.unreserved(exc, team_id)
    except BaseException:
        if team is not None:
            await _arelease(team)
        raise
    return _with_team(reservation, team)


async def _areserve_owner(attempt: _Attempt, policy: Policy) -> tuple[UserCaps, ReserveResult]:
    store, owner = attempt.store, attempt.user_id
    retries = _Retries(store, owner)
    if owner in store.rebuild_pending:
        await run_in_db_thread(_rebuild_user, store, owner, attempt.now)
    while True:
        caps = _cached_caps(store, owner, policy)
        if caps is None:
            caps = await run_in_db_thread(_load_caps, store, owner, policy)
        result = await store.areserve(**attempt.reserve_kwargs(caps))
        step = retries.next(result)
        if step == _REBUILD:
            await run_in_db_thread(_rebuild_user, store, owner, attempt.now, lost=True)
        elif step == _DONE:
            return caps, result


def _reserve_owner(attempt: _Attempt, policy: Policy) -> tuple[UserCaps, ReserveResult]:
    store, owner = attempt.store, attempt.user_id
    retries = _Retries(store, owner)
    if owner in store.rebuild_pending:
        _rebuild_user(store, owner, attempt.now)
    while True:
        caps = _cached_caps(store, owner, policy) or _load_caps(store, owner, policy)
        result = store.reserve(**attempt.reserve_kwargs(caps))
        step = retries.next(result)
        if step == _REBUILD:
            _rebuild_user(store, owner, attempt.now, lost=True)
        elif step == _DONE:
            return caps, result


def _with_team(reservation: Reservation, team: Reservation | None) -> Reservation:
    """The user's reservation carrying its team's; the headroom is the tighter of the two."""
    if team is None:
        return reservation
    reservation.team = team
    merged: dict[str, CapHeadroom] = {room.cap_type: room for room in reservation.headroom}
    for room in team.headroom:
        mine = merged.get(room.cap_type)
        if mine is None:
            merged[room.cap_type] = room
            continue
        merged[room.cap_type] = CapHeadroom(
            room.cap_type,
            *(_tighter(a, b) for a, b in zip(_room(mine), _room(room), strict=True)),
            reset_time=mine.reset_time,
        )
    reservation.headroom = [merged[t] for t in WINDOW_TYPES if t in merged]
    return reservation


def _room(room: CapHeadroom) -> tuple[int | None, int | None, int | None]:
    return (room.requests_remaining, room.tokens_remaining, room.cost_micros_remaining)


def _tighter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


async def _arelease(team: Reservation) -> None:
    with contextlib.suppress(StoreDown, DatabaseError):
        await _asettle_store(team, None, None)


def _release(team: Reservation) -> None:
    with contextlib.suppress(StoreDown, DatabaseError):
        _settle_store(team, None, None)


def cap_reserve_sync(
    *,
    user_id: int,
    model_id: str,
    estimate: Usage,
    now: datetime | None = None,
    region: str | None = None,
    store: CapStore | None = None,
    session_id: str | None = None,
    team_id: int | None = None,
) -> Reservation:
    """cap_reserve for synchronous callers (jobs, scripts, threads)."""
    now = now or clock.now()
    cost = estimate_cost_micros(model_id=model_id, usage=estimate, at=now, region=region)
    worst = worst_case(estimate)
    worst_cost = cost
    if worst is not estimate:
        worst_cost = estimate_cost_micros(model_id=model_id, usage=worst, at=now, region=region)
    attempt = _attempt(
        store=store, user_id=user_id, model_id=model_id, estimate=estimate, now=now,
        region=region, cost=cost, worst_cost=worst_cost, session_id=session_id,
    )  # fmt: skip
    store = attempt.store
    team: Reservation | None = None
    try:
        policy = _policy(store)
        if team_id is not None:
            team_attempt = attempt.for_team(team_id)
            team = team_attempt.outcome(*_reserve_owner(team_attempt, policy))
        caps, result = _reserve_owner(attempt, policy)
        reservation = attempt.outcome(caps, result)
    except (StoreDown, DatabaseError) as exc:
        if team is not None:
            _release(team)
        if _fail_closed(_has_cost_cap(store, user_id)):
            raise CapStoreUnavailable(CapStoreUnavailable.message) from exc
        return attempt.unreserved(exc, team_id)
    except BaseException:
        if team is not None:
            _release(team)
        raise
    return _with_team(reservation, team)


def _settle_amounts(
    reservation: Reservation, actual: Usage | None, cost_micros: int | None
) -> tuple[int, int, int] | None:
    if actual is None:
        return None
    if cost_micros is None:
        cost_micros = estimate_cost_micros(
            model_id=reservation.model_id,
            usage=actual,
            at=reservation.started_at,
            region=reservation.region,
        )
    return (1, actual.cap_tokens, cost_micros)


async def cap_settle(
    *,
    reservation: Reservation,
    actual: Usage | None,
    cost_micros: int | None = None,
    now: datetime | None = None,
) -> None:
    """Count the call's actual usage in the windows where it started and release its
    reservation, in one step (then the same in its team's). `actual=None`: the call never
    reached the upstream — release only. `cost_micros`: the recorded cost when the caller has
    it (else priced here, unknown models at their family's dearest price). Settling twice is a
    no-op."""
    if not _settling(reservation, actual):
        return
    if actual is not None and cost_micros is None:
        cost_micros = await aestimate_cost_micros(
            model_id=reservation.model_id,
            usage=actual,
            at=reservation.started_at,
            region=reservation.region,
        )
    amounts = _settle_amounts(reservation, actual, cost_micros)
    for held in (reservation, reservation.team):
        if held is None:
            continue
        try:
            await _asettle_store(held, amounts, now)
        except StoreDown as exc:
            # The lease releases the reservation; the usage rebuild restores `used`.
            logger.warning("cap settle failed for owner %s: %s", held.user_id, exc)


def cap_settle_sync(
    *,
    reservation: Reservation,
    actual: Usage | None,
    cost_micros: int | None = None,
    now: datetime | None = None,
) -> None:
    """cap_settle for synchronous callers."""
    if not _settling(reservation, actual):
        return
    amounts = _settle_amounts(reservation, actual, cost_micros)
    for held in (reservation, reservation.team):
        if held is None:
            continue
        try:
            _settle_store(held, amounts, now)
        except StoreDown as exc:
            logger.warning("cap settle failed for owner %s: %s", held.user_id, exc)


def _settling(reservation: Reservation, actual: Usage | None) -> bool:
    """Mark the reservation settled; False if there is nothing (more) to do in the store."""
    if reservation.settled:
        return False
    reservation.settled = True
    if actual is not None:
        prefixes_remember(user_id=reservation.user_id, prefixes=reservation.prefixes)
    # Not reserved (fail-open): the usage records reconcile the counters later.
    return reservation.reserved


def _settle_kwargs(
    held: Reservation, amounts: tuple[int, int, int] | None, now: datetime | None
) -> dict[str, Any]:
    return {
        "user_id": held.user_id,
        "rid": held.id,
        "keys": held.keys,
        "actual": amounts,
        "now": now or clock.now(),
        "session_key": held.session_key,
    }


async def _asettle_store(
    held: Reservation, amounts: tuple[int, int, int] | None, now: datetime | None
) -> None:
    await (held.store or cap_store()).asettle(**_settle_kwargs(held, amounts, now))


def _settle_store(
    held: Reservation, amounts: tuple[int, int, int] | None, now: datetime | None
) -> None:
    (held.store or cap_store()).settle(**_settle_kwargs(held, amounts, now))


def _renew_kwargs(
    reservation: Reservation, held: Reservation, now: datetime | None
) -> dict[str, Any] | None:
    # The call's own reservation decides: a settled call renews neither.
    if reservation.settled or not reservation.reserved:
        return None
    lease = settings.GATEWAY.usage_caps.reservation_lease_seconds
    held.lease_expires_at = (now or clock.now()) + timedelta(seconds=lease)
    return {
        "user_id": held.user_id,
        "rid": held.id,
        "lease_expires_at": held.lease_expires_at,
        "lease_seconds": lease,
    }


async def acap_renew(*, reservation: Reservation, now: datetime | None = None) -> bool:
    """Extend a live call's reservation (and its team's) by a lease from `now` (the heartbeat
    of a long call: only a dead worker's reservation expires). False when there is nothing to
    renew: settled, never reserved, already released, or the store unreachable (the lease runs
    on)."""
    renewed = False
    for held in (reservation, reservation.team):
        kwargs = None if held is None else _renew_kwargs(reservation, held, now)
        if kwargs is None:
            continue
        try:
            renewed = await (held.store or cap_store()).arenew(**kwargs) or renewed
        except StoreDown as exc:
            logger.warning("cap lease renewal failed for owner %s: %s", held.user_id, exc)
    return renewed


def cap_renew(*, reservation: Reservation, now: datetime | None = None) -> bool:
    """acap_renew for synchronous callers."""
    renewed = False
    for held in (reservation, reservation.team):
        kwargs = None if held is None else _renew_kwargs(reservation, held, now)
        if kwargs is None:
            continue
        try:
            renewed = (held.store or cap_store()).renew(**kwargs) or renewed
        except StoreDown as exc:
            logger.warning("cap lease renewal failed for owner %s: %s", held.user_id, exc)
    return renewed


def headroom_headers(reservation: Reservation) -> dict[str, str]:
    """Response headers with what is left of each period's caps, e.g.
    `x-gateway-cap-daily-requests-remaining: 998`, `…-tokens-remaining`,
    `…-cost-cents-remaining: 812.5000` and `x-gateway-cap-daily-reset: 2026-11-26T00:00:00Z`."""
    headers: dict[str, str] = {}
    for room in reservation.headroom:
        prefix = f"x-gateway-cap-{room.cap_type}"
        if room.requests_remaining is not None:
            headers[f"{prefix}-requests-remaining"] = str(room.requests_remaining)
        if room.tokens_remaining is not None:
            headers[f"{prefix}-tokens-remaining"] = str(room.tokens_remaining)
        if room.cost_micros_remaining is not None:
            headers[f"{prefix}-cost-cents-remaining"] = str(_cents(room.cost_micros_remaining))
        if room.reset_time is not None:
            headers[f"{prefix}-reset"] = iso_z(room.reset_time)
    return headers


# --- Status --------------------------------------------------------------------------------------


def cap_status(
    *, user_id: int, now: datetime | None = None, store: CapStore | None = None
) -> list[dict[str, Any]]:
    """Per cap that applies to the user (their own, an administrator's, the policy's, their
    team's): usage of its current window against its limits (settled usage; calls in flight
    are shown apart; a team cap shows the team's), whether it is exceeded and whether it blocks
    yet (grace)."""
    from accounts.models import User

    store = store or cap_store()
    now = now or clock.now()
    rules = caps_load(user_id=user_id, version="", policy=_policy(store)).rules
    status = _owner_status(store, user_id, rules, now)
    team_id = User.objects.filter(pk=user_id).values_list("team_id", flat=True).first()
    if team_id is not None:
        status += team_cap_status(team_id=team_id, now=now, store=store)
    return status


def team_cap_status(
    *, team_id: int, now: datetime | None = None, store: CapStore | None = None
) -> list[dict[str, Any]]:
    """cap_status of a team's caps (set_by "team"): the members' use together."""
    store = store or cap_store()
    now = now or clock.now()
    owner = team_owner(team_id)
    return _owner_status(store, owner, caps_load(user_id=owner, version="").rules, now)


def _owner_status(
    store: CapStore, owner: int, rules: tuple[CapRule, ...], now: datetime
) -> list[dict[str, Any]]:
    try:
        if owner in store.rebuild_pending:
            _rebuild_user(store, owner, now)
        elif store.needs_rebuild(owner):
            _rebuild_user(store, owner, now, lost=True)
        windows = store.read(list(window_keys(owner, now)), now)
    except StoreDown as exc:
        raise CapStoreUnavailable(CapStoreUnavailable.message) from exc
    status = []
    for rule in rules:
        if rule.cap_type not in CAP_TYPES:
            continue  # a session cap: its usage is per session, shown by its 429 and headers
        window = windows[CAP_TYPES.index(rule.cap_type)]
        used = [window.get(f, 0) for f in ("requests", "tokens", "cost_micros")]
        flying = [window.get(f, 0) for f in ("if_requests", "if_tokens", "if_cost_micros")]
        shares = [
            used[j] / (limit * (MICROS_PER_CENT if j == 2 else 1))
            for j, limit in enumerate(rule.limits)
            if limit is not None
        ]
        status.append(
            {
                "id": rule.id,
                "cap_type": rule.cap_type,
                "set_by": rule.set_by,
                "current_usage": {
                    "requests": used[0],
                    "tokens": used[1],
                    "cost_cents": _cents(used[2]),
                },
                "in_flight": {
                    "requests": flying[0],
                    "tokens": flying[1],
                    "cost_cents": _cents(flying[2]),
                },
                "limits": dict(zip(LIMIT_FIELDS, rule.limits, strict=True)),
                "percentage_used": round(max(shares) * 100, 2),
                "reset_time": reset_time(rule.cap_type, now),
                "is_exceeded": max(shares) >= 1,
                "enforced": rule.enforced_limits(now) == rule.limits
                and settings.GATEWAY.usage_caps.enforce_caps,
                "enforce_from": rule.enforce_from,
            }
        )
    return status


def spend_today_cents(*, user_id: int, now: datetime | None = None) -> Decimal:
    """The user's spend since midnight UTC, in cents with four decimals: today's hours from
    the live usage summaries (persisted hours, else the live counters, else the records when
    the store is down), as on the dashboard. Calls without a known price are not in it."""
    from usage.selectors import summary_buckets

    now = now or clock.now()
    day = window_start("daily", now)
    buckets = summary_buckets(
        start=day, end=reset_time("daily", now), bucket="daily", user_id=user_id, now=now
    )
    return _cents(sum(totals.cost_micros for totals in buckets.values()))


# --- Cap writes ----------------------------------------------------------------------------------


def _grace() -> timedelta:
    return timedelta(minutes=settings.GATEWAY.usage_caps.grace_period_minutes)


def _stricter(new: int | None, old: int | None) -> bool:
    return new is not None and (old is None or new < old)


def grace_apply(cap: Any, was_enforced: tuple | None, now: datetime, *, by_admin: bool) -> None:
    """Set `enforce_from`/`prior_limits` of a cap row (a user's, a team's or the policy's)
    after a change.

    A change by an administrator (or to the policy) that makes any limit stricter than what
    blocks today starts blocking after the grace period, and until then the limits that
    blocked before keep blocking. A user's own caps, and changes that only loosen, apply at
    once.
    """
    active = getattr(cap, "is_active", True)
    new = (cap.max_requests, cap.max_tokens, cap.max_cost_cents) if active else None
    tightened = new is not None and (
        was_enforced is None or any(_stricter(n, o) for n, o in zip(new, was_enforced, strict=True))
    )
    if by_admin and tightened and _grace():
        cap.enforce_from = now + _grace()
        cap.prior_limits = (
            None if was_enforced is None else dict(zip(LIMIT_FIELDS, was_enforced, strict=True))
        )
    else:
        cap.enforce_from = None
        cap.prior_limits = None


def _apply_grace(cap: UserCapConfig, was_enforced: tuple | None, now: datetime) -> None:
    if was_enforced is None and cap.set_by == SetBy.ADMIN:
        # A user's first administrator cap of a period replaces the policy's: what blocked
        # until now is the policy's limit.
        was_enforced = _policy_enforced(cap.cap_type, now)
    grace_apply(cap, was_enforced, now, by_admin=cap.set_by == SetBy.ADMIN)


def _policy_enforced(cap_type: str, now: datetime) -> tuple | None:
    rule = policy_load(version="").rule(cap_type)
    return None if rule is None else rule.enforced_limits(now)


def _enforced_now(cap: Any, now: datetime) -> tuple | None:
    if not cap.is_active or cap.pk is None:
        return None
    if cap.enforce_from is None or now >= cap.enforce_from:
        return (cap.max_requests, cap.max_tokens, cap.max_cost_cents)
    if cap.prior_limits is None:
        return None
    return tuple(cap.prior_limits.get(f) for f in LIMIT_FIELDS)


def _validate(cap: UserCapConfig) -> None:
    errors: dict[str, list[str]] = {}
    if cap.cap_type not in WINDOW_TYPES:
        errors["cap_type"] = [f'"{cap.cap_type}" is not a valid choice.']
    _validate_limits(cap, errors)


def _validate_limits(cap: Any, errors: dict[str, list[str]] | None = None) -> None:
    errors = {} if errors is None else errors
    if cap.cap_type == SESSION:
        for name in ("max_requests", "max_tokens"):
            if getattr(cap, name) is not None:
                errors[name] = ["A session cap limits cost only: set max_cost_cents alone."]
    for name in LIMIT_FIELDS:
        value = getattr(cap, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            errors[name] = ["Ensure this value is greater than or equal to 1."]
    if all(getattr(cap, name) is None for name in LIMIT_FIELDS):
        errors["non_field_errors"] = [
            "Set at least one of max_requests, max_tokens, max_cost_cents."
        ]
    if errors:
        raise ValidationError(errors)


def _save(cap: UserCapConfig) -> UserCapConfig:
    _validate(cap)
    try:
        with transaction.atomic():
            cap.save()
            cap_config_changed(user_id=cap.user_id)
    except IntegrityError as exc:
        owner = "an administrator" if cap.set_by == SetBy.ADMIN else "you"
        raise ValidationError(
            {"cap_type": [f"A {cap.cap_type} cap set by {owner} already exists for this user."]}
        ) from exc
    return cap


def cap_create(
    *,
    user_id: int,
    cap_type: str,
    set_by: str,
    max_requests: int | None = None,
    max_tokens: int | None = None,
    max_cost_cents: int | None = None,
    is_active: bool = True,
    now: datetime | None = None,
) -> UserCapConfig:
    """Create a cap (an administrator's starts blocking after the grace period)."""
    now = now or clock.now()
    cap = UserCapConfig(
        user_id=user_id,
        cap_type=cap_type,
        set_by=set_by,
        max_requests=max_requests,
        max_tokens=max_tokens,
        max_cost_cents=max_cost_cents,
        is_active=is_active,
    )
    _apply_grace(cap, None, now)
    return _save(cap)


def cap_update(
    *, cap: UserCapConfig, by_admin: bool, now: datetime | None = None, **changes: Any
) -> UserCapConfig:
    """Change a cap's limits, type or activity; users cannot touch an administrator's cap."""
    if cap.set_by == SetBy.ADMIN and not by_admin:
        raise PermissionDenied("This cap was set by an administrator; you cannot change it.")
    now = now or clock.now()
    was_enforced = _enforced_now(cap, now)
    for name, value in changes.items():
        if name not in (*LIMIT_FIELDS, "is_active", "cap_type"):
            raise ValueError(f"unknown cap field {name}")
        setattr(cap, name, value)
    _apply_grace(cap, was_enforced, now)
    return _save(cap)


def cap_delete(*, cap: UserCapConfig, by_admin: bool) -> None:
    """Remove a cap; users cannot remove an administrator's cap."""
    if cap.set_by == SetBy.ADMIN and not by_admin:
        raise PermissionDenied("This cap was set by an administrator; you cannot remove it.")
    with transaction.atomic():
        cap.delete()
        cap_config_changed(user_id=cap.user_id)


def caps_set_active(*, caps: list[UserCapConfig], active: bool) -> int:
    """Activate or deactivate caps (Django admin's bulk actions); returns how many changed."""
    changed = 0
    for cap in caps:
        if cap.is_active != active:
            cap_update(cap=cap, by_admin=True, is_active=active)
            changed += 1
    return changed


def cap_save(*, cap: UserCapConfig, now: datetime | None = None) -> UserCapConfig:
    """Save a cap edited as a whole by an administrator (Django admin), with the grace rules."""
    now = now or clock.now()
    before = UserCapConfig.objects.filter(pk=cap.pk).first() if cap.pk else None
    _apply_grace(cap, None if before is None else _enforced_now(before, now), now)
    saved = _save(cap)
    if before is not None and before.user_id != cap.user_id:
        cap_config_changed(user_id=before.user_id)
    return saved


def cap_delete_many(*, caps: list[UserCapConfig]) -> None:
    """Remove caps as an administrator (Django admin's bulk delete)."""
    for cap in caps:
        cap_delete(cap=cap, by_admin=True)


def team_cap_set(
    *,
    team_id: int,
    cap_type: str,
    max_requests: int | None = None,
    max_tokens: int | None = None,
    max_cost_cents: int | None = None,
    is_active: bool = True,
    now: datetime | None = None,
) -> TeamCapConfig:
    """Create or change a team's cap of one period; a tightening blocks after the grace
    period (until then the limits that blocked before keep blocking)."""
    now = now or clock.now()
    if cap_type not in CAP_TYPES:
        raise ValidationError({"cap_type": [f'"{cap_type}" is not hourly, daily or monthly.']})
    with transaction.atomic():
        cap = (
            TeamCapConfig.objects.select_for_update().filter(team_id=team_id, cap_type=cap_type)
        ).first() or TeamCapConfig(team_id=team_id, cap_type=cap_type)
        was_enforced = _enforced_now(cap, now)
        cap.max_requests, cap.max_tokens, cap.max_cost_cents = (
            max_requests,
            max_tokens,
            max_cost_cents,
        )
        cap.is_active = is_active
        _validate_limits(cap)
        grace_apply(cap, was_enforced, now, by_admin=True)
        cap.save()
        cap_config_changed(user_id=team_owner(team_id))
    return cap


def team_cap_delete(*, cap: TeamCapConfig) -> None:
    """Remove a team's cap (at once: removing only loosens)."""
    with transaction.atomic():
        cap.delete()
        cap_config_changed(user_id=team_owner(cap.team_id))


# --- Rebuild ------------------------------------------------------------------------------------


def _record_amounts(record: Any) -> tuple[int, int, int]:
    """A usage record as settle counted it: 1 request, cap tokens, cost (an unknown price at
    its family's dearest)."""
    usage = Usage(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_write_5m_tokens=record.cache_write_5m_tokens,
        cache_write_1h_tokens=record.cache_write_1h_tokens,
        cache_read_tokens=record.cache_read_tokens,
    )
    cost = record.cost_micros
    if cost is None:
        cost = estimate_cost_micros(model_id=record.model_id, usage=usage, at=record.started_at)
    return (1, usage.cap_tokens, cost)


def _sessions_used(*, now: datetime, user_id: int | None) -> dict[tuple[int, str], list[int]]:
    """Per (user, session) still live (a call within the session window's TTL): the use of
    all the session's calls, however old."""
    from usage.models import UsageRecord

    recent = UsageRecord.objects.filter(
        session_id__isnull=False,
        started_at__gte=now - timedelta(seconds=session_ttl()),
        started_at__lt=now + timedelta(hours=1),
    )
    if user_id is not None:
        recent = recent.filter(user_id=user_id)
    live = set(recent.values_list("user_id", "session_id").distinct())
    used: dict[tuple[int, str], list[int]] = {}
    if not live:
        return used
    calls = UsageRecord.objects.filter(session_id__in={session for _, session in live})
    if user_id is not None:
        calls = calls.filter(user_id=user_id)
    for record in calls.iterator():
        slot = (record.user_id, record.session_id)
        if slot not in live:
            continue
        totals = used.setdefault(slot, [0, 0, 0])
        for j, amount in enumerate(_record_amounts(record)):
            totals[j] += amount
    return used


def caps_rebuild(
    *,
    now: datetime | None = None,
    store: CapStore | None = None,
    user_id: int | None = None,
    only_if_lost: bool = False,
) -> int:
    """Recompute settled use in the current hourly, daily and monthly windows from the usage
    records (the source of truth), e.g. after the counter store was lost: of every user with
    records this month and of their teams, or of `user_id` only (a user, or a team as
    team_owner(team_id): its three windows, zeros included); and the
    session windows of the sessions with a call within `redis.session_cap_ttl` (all their
    calls). Calls in
    flight keep their reservations; the rebuilt users' sentinels are written in the same step
    (caps/store.py); `only_if_lost` (with `user_id`): unless its sentinel is back. Returns
    how many windows were written."""
    from usage.models import UsageRecord

    store = store or cap_store()
    now = now or clock.now()
    bounds = [(window_start(t, now), reset_time(t, now)) for t in CAP_TYPES]
    records = UsageRecord.objects.filter(
        started_at__gte=min(start for start, _ in bounds),
        started_at__lt=max(end for _, end in bounds),
    )
    if user_id is not None and user_id < 0:
        records = records.filter(team_id=-user_id)
    elif user_id is not None:
        records = records.filter(user_id=user_id)
    used: dict[tuple[int, int], list[int]] = {}
    users: set[int] = set() if user_id is None else {user_id}
    for record in records.iterator():
        amounts = _record_amounts(record)
        # A call counts for its user and for the team the user was in when it was made.
        owners = [record.user_id]
        if record.team_id is not None:
            owners.append(team_owner(record.team_id))
        for owner in owners:
            if user_id is not None and owner != user_id:
                continue
            users.add(owner)
            for i, (start, end) in enumerate(bounds):
                if start <= record.started_at < end:
                    totals = used.setdefault((owner, i), [0, 0, 0])
                    for j in range(3):
                        totals[j] += amounts[j]
    sessions = (
        {} if user_id is not None and user_id < 0 else _sessions_used(now=now, user_id=user_id)
    )
    users.update(user for user, _ in sessions)
    entries = [
        (window_key(user, cap_type, now), tuple(used.get((user, i), (0, 0, 0))), ttl)
        for user in sorted(users)
        for i, (cap_type, ttl) in enumerate(zip(CAP_TYPES, window_ttls(), strict=True))
    ]
    entries += [
        (session_key(user, session), tuple(totals), session_ttl())
        for (user, session), totals in sorted(sessions.items())
    ]
    if entries:
        store.set_used(entries, now, rebuilt_users=sorted(users), only_if_lost=only_if_lost)
    return len(entries)
