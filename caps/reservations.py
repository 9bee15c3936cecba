"""Usage caps on the hot path: reserve before the upstream call, settle after it.

The proxy calls, per call:

    estimate = estimate_usage(user_id=..., model_id=..., body=...)
    reservation = await acap_reserve(user_id=..., model_id=..., estimate=estimate)  # CapExceeded
    ...                                                   # the upstream call, outside any lock
    await acap_settle(reservation=reservation, actual=usage_or_None)   # on every terminal path

`acap_reserve` is one atomic step in the counter store (caps/store.py) over every window of the
user: it checks each active cap against used + in flight + the estimate and, if all fit, adds
the estimate to in flight. In the same step it limits the user's calls in flight
(`usage_caps.max_in_flight_per_user`) and the "uncovered" ones among them — calls whose worst
case (input estimate + max_tokens) does not fit what is left under a token or cost cap —
(`usage_caps.max_uncovered_in_flight`); either limit answers CallsInFlight (429, Retry-After
1). A live call renews its reservation's lease (`acap_renew`, the proxy's heartbeat).
`acap_settle` moves the actual usage into `used` of the windows where the call started and
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from caps.cache import apolicy_current, caps_cached, caps_reload, policy_current
from caps.errors import CallsInFlight, CapExceeded, CapStoreUnavailable
from caps.estimates import Estimate, prefixes_remember, worst_case
from caps.headroom import CapHeadroom, headroom_left, headroom_tighter
from caps.models import UserCapConfig
from caps.policy import Policy
from caps.rebuild import owner_rebuild
from caps.rules import (
    MICROS_PER_CENT,
    NO_LIMIT,
    Amounts,
    CapRule,
    UserCaps,
    blocking_limits,
    cents,
)
from caps.store import (
    CapStore,
    RenewRequest,
    ReserveRequest,
    ReserveResult,
    SettleRequest,
    StoreDown,
    cap_store,
    new_reservation_id,
    run_in_db_thread,
)
from caps.windows import SESSION, WINDOW_TYPES, reset_time, session_key, team_owner, window_keys
from config import clock
from costs.money import Usage
from costs.pricing import aestimate_cost_micros, estimate_cost_micros

logger = logging.getLogger(__name__)

LIMIT_TYPES = ("requests", "tokens", "cost")
_STALE_RETRIES = 3
# A session cap never resets: a day, so that the client stops rather than retries.
SESSION_RETRY_AFTER = 86400


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


# --- Reserve -------------------------------------------------------------------------------------


def _exceeded(
    rules: tuple[CapRule, ...], result: ReserveResult, amounts: Amounts, now: datetime
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
                current_usage=cents(current) if j == 2 else current,
                limit=limit,
                reset_time=reset,
                retry_after_seconds=SESSION_RETRY_AFTER
                if reset is None
                else max(1, math.ceil((reset - now).total_seconds())),
                needed=cents(amounts[j]) if j == 2 else amounts[j],
                set_by=rule.set_by,
            )
            # A session never resets: its cap wins (the client must start a new session).
            candidates.append((reset or datetime.max.replace(tzinfo=now.tzinfo), -j, exc))
    # Several caps may be full: the one that resets last is when a retry can succeed.
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _limit_or_none(value: int | None) -> int:
    return NO_LIMIT if value is None else value


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
    amounts: Amounts
    worst: Amounts
    session_window: str | None = None
    rid: str = field(default_factory=new_reservation_id)

    @classmethod
    def of(
        cls, *, store, user_id, model_id, estimate, now, region, cost, worst_cost, session_id
    ) -> _Attempt:
        return cls(
            store=store or cap_store(), user_id=user_id, model_id=model_id, estimate=estimate,
            now=now, region=region, amounts=Amounts(1, estimate.cap_tokens, cost),
            worst=Amounts(1, worst_case(estimate).cap_tokens, worst_cost),
            session_window=session_key(user_id, session_id),
        )  # fmt: skip

    def request(self, caps: UserCaps) -> ReserveRequest:
        conf = settings.GATEWAY.usage_caps
        lease = conf.reservation_lease_seconds
        max_in_flight = _limit_or_none(conf.max_in_flight_per_user)
        return ReserveRequest(
            user_id=self.user_id,
            version=caps.version,
            rid=self.rid,
            now=self.now,
            lease_expires_at=self.now + timedelta(seconds=lease),
            estimate=self.amounts,
            limits=blocking_limits(caps.rules, self.now),
            lease_seconds=lease,
            worst=self.worst,
            # A team's calls in flight are limited per member, by each member's reservation.
            max_in_flight=NO_LIMIT if self.user_id < 0 else max_in_flight,
            max_uncovered=_limit_or_none(conf.max_uncovered_in_flight),
            session_key=self.session_window,
        )

    def _reservation(
        self, *, headroom: list[CapHeadroom], reserved: bool = True, uncovered: bool = False
    ) -> Reservation:
        lease = settings.GATEWAY.usage_caps.reservation_lease_seconds
        return Reservation(
            id=self.rid,
            user_id=self.user_id,
            model_id=self.model_id,
            started_at=self.now,
            keys=window_keys(self.user_id, self.now),
            requests=self.amounts.requests,
            tokens=self.amounts.tokens,
            cost_micros=self.amounts.cost_micros,
            lease_expires_at=self.now + timedelta(seconds=lease),
            headroom=headroom,
            reserved=reserved,
            uncovered=uncovered,
            region=self.region,
            prefixes=self.estimate.prefixes if isinstance(self.estimate, Estimate) else (),
            session_key=self.session_window,
            store=self.store,
        )

    def for_team(self, team_id: int) -> _Attempt:
        """The same call's reservation in its team's counters (no session window)."""
        return dataclasses.replace(
            self, user_id=team_owner(team_id), rid=new_reservation_id(), session_window=None
        )

    def store_down(self, exc: Exception, team_id: int | None, *, has_cost_cap: bool) -> Reservation:
        """The store is down: CapStoreUnavailable if the failure mode says refuse. Else the
        call goes through and nothing is reserved; it is counted by a rebuild of the user's
        (and team's) counters from the usage records, before this process's next reservation
        for them that reaches the store."""
        if _fail_closed(has_cost_cap):
            raise CapStoreUnavailable(CapStoreUnavailable.message) from exc
        logger.warning("cap store unavailable for user %s: %s", self.user_id, exc)
        self.store.rebuild_pending.add(self.user_id)
        if team_id is not None:
            self.store.rebuild_pending.add(team_owner(team_id))
        return self._reservation(headroom=[], reserved=False)

    def outcome(self, caps: UserCaps, result: ReserveResult) -> Reservation:
        if result.status == "denied":
            raise _exceeded(caps.rules, result, self.amounts, self.now)
        conf = settings.GATEWAY.usage_caps
        if result.status == "busy_in_flight":
            raise CallsInFlight("in_flight", conf.max_in_flight_per_user or 0)
        if result.status == "busy_uncovered":
            raise CallsInFlight("uncovered", conf.max_uncovered_in_flight)
        return self._reservation(
            headroom=headroom_left(caps.rules, result, self.amounts, self.now),
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


async def acap_reserve(
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
    attempt = _Attempt.of(
        store=store, user_id=user_id, model_id=model_id, estimate=estimate, now=now,
        region=region, cost=cost, worst_cost=worst_cost, session_id=session_id,
    )  # fmt: skip
    store = attempt.store
    team: Reservation | None = None
    try:
        policy = await apolicy_current(store)
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
        has_cost_cap = await run_in_db_thread(_has_cost_cap, store, user_id)
        return attempt.store_down(exc, team_id, has_cost_cap=has_cost_cap)
    except BaseException:
        if team is not None:
            await _arelease(team)
        raise
    return _with_team(reservation, team)


def cap_reserve(
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
    """acap_reserve for synchronous callers (jobs, scripts, threads)."""
    now = now or clock.now()
    cost = estimate_cost_micros(model_id=model_id, usage=estimate, at=now, region=region)
    worst = worst_case(estimate)
    worst_cost = cost
    if worst is not estimate:
        worst_cost = estimate_cost_micros(model_id=model_id, usage=worst, at=now, region=region)
    attempt = _Attempt.of(
        store=store, user_id=user_id, model_id=model_id, estimate=estimate, now=now,
        region=region, cost=cost, worst_cost=worst_cost, session_id=session_id,
    )  # fmt: skip
    store = attempt.store
    team: Reservation | None = None
    try:
        policy = policy_current(store)
        if team_id is not None:
            team_attempt = attempt.for_team(team_id)
            team = team_attempt.outcome(*_reserve_owner(team_attempt, policy))
        caps, result = _reserve_owner(attempt, policy)
        reservation = attempt.outcome(caps, result)
    except (StoreDown, DatabaseError) as exc:
        if team is not None:
            _release(team)
        return attempt.store_down(exc, team_id, has_cost_cap=_has_cost_cap(store, user_id))
    except BaseException:
        if team is not None:
            _release(team)
        raise
    return _with_team(reservation, team)


async def _areserve_owner(attempt: _Attempt, policy: Policy) -> tuple[UserCaps, ReserveResult]:
    store, owner = attempt.store, attempt.user_id
    retries = _Retries(store, owner)
    if owner in store.rebuild_pending:
        await run_in_db_thread(owner_rebuild, store=store, owner=owner, now=attempt.now)
    while True:
        caps = caps_cached(store, owner, policy)
        if caps is None:
            caps = await run_in_db_thread(caps_reload, store, owner, policy)
        result = await store.areserve(attempt.request(caps))
        step = retries.next(result)
        if step == _REBUILD:
            await run_in_db_thread(
                owner_rebuild, store=store, owner=owner, now=attempt.now, lost=True
            )
        elif step == _DONE:
            return caps, result


def _reserve_owner(attempt: _Attempt, policy: Policy) -> tuple[UserCaps, ReserveResult]:
    store, owner = attempt.store, attempt.user_id
    retries = _Retries(store, owner)
    if owner in store.rebuild_pending:
        owner_rebuild(store=store, owner=owner, now=attempt.now)
    while True:
        caps = caps_cached(store, owner, policy) or caps_reload(store, owner, policy)
        result = store.reserve(attempt.request(caps))
        step = retries.next(result)
        if step == _REBUILD:
            owner_rebuild(store=store, owner=owner, now=attempt.now, lost=True)
        elif step == _DONE:
            return caps, result


def _with_team(reservation: Reservation, team: Reservation | None) -> Reservation:
    """The user's reservation carrying its team's; the headroom is the tighter of the two."""
    if team is None:
        return reservation
    reservation.team = team
    reservation.headroom = headroom_tighter(reservation.headroom, team.headroom)
    return reservation


async def _arelease(team: Reservation) -> None:
    with contextlib.suppress(StoreDown, DatabaseError):
        await _asettle_store(team, None, None)


def _release(team: Reservation) -> None:
    with contextlib.suppress(StoreDown, DatabaseError):
        _settle_store(team, None, None)


# --- Settle --------------------------------------------------------------------------------------


def _holds(reservation: Reservation) -> list[Reservation]:
    """What a call holds in the store: its reservation, then its team's if any."""
    return [held for held in (reservation, reservation.team) if held is not None]


def _settle_amounts(
    reservation: Reservation, actual: Usage | None, cost_micros: int | None
) -> Amounts | None:
    if actual is None:
        return None
    if cost_micros is None:
        cost_micros = estimate_cost_micros(
            model_id=reservation.model_id,
            usage=actual,
            at=reservation.started_at,
            region=reservation.region,
        )
    return Amounts(1, actual.cap_tokens, cost_micros)


async def acap_settle(
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
    for held in _holds(reservation):
        try:
            await _asettle_store(held, amounts, now)
        except StoreDown as exc:
            # The lease releases the reservation; the usage rebuild restores `used`.
            logger.warning("cap settle failed for owner %s: %s", held.user_id, exc)


def cap_settle(
    *,
    reservation: Reservation,
    actual: Usage | None,
    cost_micros: int | None = None,
    now: datetime | None = None,
) -> None:
    """acap_settle for synchronous callers."""
    if not _settling(reservation, actual):
        return
    amounts = _settle_amounts(reservation, actual, cost_micros)
    for held in _holds(reservation):
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


def _settle_request(
    held: Reservation, amounts: Amounts | None, now: datetime | None
) -> SettleRequest:
    return SettleRequest(
        user_id=held.user_id,
        rid=held.id,
        keys=held.keys,
        actual=amounts,
        now=now or clock.now(),
        session_key=held.session_key,
    )


async def _asettle_store(held: Reservation, amounts: Amounts | None, now: datetime | None) -> None:
    await (held.store or cap_store()).asettle(_settle_request(held, amounts, now))


def _settle_store(held: Reservation, amounts: Amounts | None, now: datetime | None) -> None:
    (held.store or cap_store()).settle(_settle_request(held, amounts, now))


# --- Renew ---------------------------------------------------------------------------------------


def _renewals(
    reservation: Reservation, now: datetime | None
) -> Iterator[tuple[Reservation, RenewRequest]]:
    """Each reservation the call holds with its new lease (now + a lease), to renew in turn."""
    # The call's own reservation decides: a settled call renews neither.
    if reservation.settled or not reservation.reserved:
        return
    lease = settings.GATEWAY.usage_caps.reservation_lease_seconds
    for held in _holds(reservation):
        held.lease_expires_at = (now or clock.now()) + timedelta(seconds=lease)
        yield (
            held,
            RenewRequest(
                user_id=held.user_id,
                rid=held.id,
                lease_expires_at=held.lease_expires_at,
                lease_seconds=lease,
            ),
        )


async def acap_renew(*, reservation: Reservation, now: datetime | None = None) -> bool:
    """Extend a live call's reservation (and its team's) by a lease from `now` (the heartbeat
    of a long call: only a dead worker's reservation expires). False when there is nothing to
    renew: settled, never reserved, already released, or the store unreachable (the lease runs
    on)."""
    renewed = False
    for held, request in _renewals(reservation, now):
        try:
            renewed = await (held.store or cap_store()).arenew(request) or renewed
        except StoreDown as exc:
            logger.warning("cap lease renewal failed for owner %s: %s", held.user_id, exc)
    return renewed


def cap_renew(*, reservation: Reservation, now: datetime | None = None) -> bool:
    """acap_renew for synchronous callers."""
    renewed = False
    for held, request in _renewals(reservation, now):
        try:
            renewed = (held.store or cap_store()).renew(request) or renewed
        except StoreDown as exc:
            logger.warning("cap lease renewal failed for owner %s: %s", held.user_id, exc)
    return renewed
