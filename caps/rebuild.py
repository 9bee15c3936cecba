"""Cap counters rebuilt from the usage records (the source of truth): after the counter store
was lost (`manage.py rebuildcaps`, or a reservation that finds an owner's sentinel gone), and
after calls a process let through while the store was down (caps/reservations.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from caps.rules import Amounts
from caps.store import CapStore, cap_store
from caps.windows import (
    CAP_TYPES,
    reset_time,
    session_key,
    session_ttl,
    team_owner,
    window_key,
    window_ttls,
)
from config import clock
from costs.money import Usage
from costs.pricing import estimate_cost_micros
from usage.models import UsageRecord
from usage.windows import period_start

logger = logging.getLogger(__name__)


def _record_amounts(record: Any) -> Amounts:
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
    return Amounts(1, usage.cap_tokens, cost)


def _sessions_used(*, now: datetime, user_id: int | None) -> dict[tuple[int, str], list[int]]:
    """Per (user, session) still live (a call within the session window's TTL): the use of
    all the session's calls, however old."""
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
    store = store or cap_store()
    now = now or clock.now()
    bounds = [(period_start(t, now), reset_time(t, now)) for t in CAP_TYPES]
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
    entries: list[tuple[str, Amounts, int]] = [
        (window_key(user, cap_type, now), _amounts(used.get((user, i))), ttl)
        for user in sorted(users)
        for i, (cap_type, ttl) in enumerate(zip(CAP_TYPES, window_ttls(), strict=True))
    ]
    entries += [
        (key, _amounts(totals), session_ttl())
        for (user, session), totals in sorted(sessions.items())
        if (key := session_key(user, session)) is not None
    ]
    if entries:
        store.set_used(entries, now, rebuilt_users=sorted(users), only_if_lost=only_if_lost)
    return len(entries)


def owner_rebuild(*, store: CapStore, owner: int, now: datetime, lost: bool = False) -> None:
    """Rebuild one owner's counters from the usage records: `lost` (the store answered
    `rebuild`: unless a concurrent rebuild already did), or after calls this process served
    while the store was down. StoreDown if the store is still unreachable."""
    caps_rebuild(now=now, store=store, user_id=owner, only_if_lost=lost)
    store.rebuild_pending.discard(owner)
    logger.info("cap counters of user %s rebuilt from the usage records", owner)


def _amounts(totals: list[int] | tuple[int, ...] | None) -> Amounts:
    requests, tokens, cost_micros = totals or (0, 0, 0)
    return Amounts(requests, tokens, cost_micros)
