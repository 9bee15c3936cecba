"""What is left under the caps after a reservation: per period, the strictest cap's remaining
requests, tokens and cost (the tighter of the user's and the team's), sent to the client as
`x-gateway-cap-*` response headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from caps.rules import MICROS_PER_CENT, Amounts, CapRule, cents
from caps.store import ReserveResult
from caps.windows import SESSION, WINDOW_TYPES, iso_z, reset_time

if TYPE_CHECKING:
    from caps.reservations import Reservation


@dataclass(frozen=True)
class CapHeadroom:
    """What is left of one period's caps after this reservation (strictest cap per limit)."""

    cap_type: str
    requests_remaining: int | None
    tokens_remaining: int | None
    cost_micros_remaining: int | None
    reset_time: datetime | None  # None: the session window, which never resets


def headroom_left(
    rules: tuple[CapRule, ...], result: ReserveResult, amounts: Amounts, now: datetime
) -> list[CapHeadroom]:
    """Per period with a cap: what is left after the store's values before this reservation
    (`result`) and this reservation's `amounts`."""
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
            slot[j] = _tighter(slot[j], remaining)
    return [
        CapHeadroom(
            cap_type,
            *_triple(left[cap_type]),
            reset_time=None if cap_type == SESSION else reset_time(cap_type, now),
        )
        for cap_type in WINDOW_TYPES
        if cap_type in left
    ]


def headroom_tighter(mine: list[CapHeadroom], team: list[CapHeadroom]) -> list[CapHeadroom]:
    """The user's and the team's headroom in one: per period and limit, the tighter."""
    merged: dict[str, CapHeadroom] = {room.cap_type: room for room in mine}
    for room in team:
        own = merged.get(room.cap_type)
        if own is None:
            merged[room.cap_type] = room
            continue
        merged[room.cap_type] = CapHeadroom(
            room.cap_type,
            *_triple([_tighter(a, b) for a, b in zip(_room(own), _room(room), strict=True)]),
            reset_time=own.reset_time,
        )
    return [merged[t] for t in WINDOW_TYPES if t in merged]


def _room(room: CapHeadroom) -> tuple[int | None, int | None, int | None]:
    return (room.requests_remaining, room.tokens_remaining, room.cost_micros_remaining)


def _triple(values: list[int | None]) -> tuple[int | None, int | None, int | None]:
    requests, tokens, cost_micros = values
    return requests, tokens, cost_micros


def _tighter(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


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
            headers[f"{prefix}-cost-cents-remaining"] = str(cents(room.cost_micros_remaining))
        if room.reset_time is not None:
            headers[f"{prefix}-reset"] = iso_z(room.reset_time)
    return headers
