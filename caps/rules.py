"""A user's active caps as the hot path sees them: plain values, cached per process.

The cache holds, per user, the caps and the *version* of that user's cap configuration read
from the counter store when they were loaded. Every cap write stores a new random version
(`cap_config_changed`); each reservation passes its cached version to the store, which
compares it inside the same atomic step (the Lua script, or the embedded transaction) and
answers "stale" on a mismatch, so a warm reservation never touches the database and a cap
change is seen by every process on its next call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings

from caps.windows import WINDOW_TYPES

NO_LIMIT = -1
MICROS_PER_CENT = 10_000
# A cap's limits, in the order of CapRule.limits: (requests, tokens, cents).
LIMIT_FIELDS = ("max_requests", "max_tokens", "max_cost_cents")


def cents(micros: int) -> Decimal:
    """Micro-dollars as cents with four decimals (the unit of `max_cost_cents`)."""
    return (Decimal(micros) / MICROS_PER_CENT).quantize(Decimal("0.0001"))


class Amounts(NamedTuple):
    """What a call counts for against caps: one request, its cap tokens, its cost."""

    requests: int
    tokens: int
    cost_micros: int


@dataclass(frozen=True)
class CapRule:
    """One active cap, as plain values."""

    id: int
    cap_type: str
    set_by: str
    max_requests: int | None
    max_tokens: int | None
    max_cost_cents: int | None
    enforce_from: datetime | None
    # Limits still enforced during the grace period of a tightening (requests, tokens, cents).
    prior: tuple[int | None, int | None, int | None] | None = None

    @property
    def limits(self) -> tuple[int | None, int | None, int | None]:
        return (self.max_requests, self.max_tokens, self.max_cost_cents)

    def enforced_limits(self, now: datetime) -> tuple[int | None, int | None, int | None] | None:
        """The (requests, tokens, cents) limits that block at `now`; None while in grace."""
        if self.enforce_from is None or now >= self.enforce_from:
            return self.limits
        return self.prior


@dataclass(frozen=True)
class UserCaps:
    """A user's active caps and the configuration version they were read at."""

    version: str
    rules: tuple[CapRule, ...]
    # The cap policy's version these rules include (caps.policy); "" for a team.
    policy_version: str = ""

    @property
    def has_cost_cap(self) -> bool:
        """A cost cap of the user's own or set for them (store_failure_mode
        closed_for_cost_caps): the policy's is a safety net for everyone, and a store outage
        must not refuse the whole organisation (its calls are reconciled from the records)."""
        return any(
            rule.max_cost_cents is not None and rule.set_by != "policy" for rule in self.rules
        )


def _min(current: int, candidate: int | None) -> int:
    if candidate is None:
        return current
    return candidate if current == NO_LIMIT else min(current, candidate)


def blocking_limits(rules: tuple[CapRule, ...], now: datetime) -> list[int]:
    """Twelve integers (hourly, daily, monthly, session) x (requests, tokens, cost micros);
    -1 = none (a session cap sets only the cost).

    The strictest enforced limit of each kind per window. With `enforce_caps` off nothing
    blocks (the reservation still counts, and the status still reports).
    """
    limits = [NO_LIMIT] * 12
    if not settings.GATEWAY.usage_caps.enforce_caps:
        return limits
    for rule in rules:
        enforced = rule.enforced_limits(now)
        if enforced is None:
            continue
        base = WINDOW_TYPES.index(rule.cap_type) * 3
        requests, tokens, cents = enforced
        limits[base] = _min(limits[base], requests)
        limits[base + 1] = _min(limits[base + 1], tokens)
        limits[base + 2] = _min(
            limits[base + 2], None if cents is None else cents * MICROS_PER_CENT
        )
    return limits


def rule_of(cap: Any, *, set_by: str | None = None) -> CapRule:
    """The plain rule of a cap row (a user's, a team's or the policy's)."""
    return CapRule(
        id=cap.id or 0,
        cap_type=cap.cap_type,
        set_by=set_by or cap.set_by,
        max_requests=cap.max_requests,
        max_tokens=cap.max_tokens,
        max_cost_cents=cap.max_cost_cents,
        enforce_from=cap.enforce_from,
        prior=(
            None
            if cap.prior_limits is None
            else (
                cap.prior_limits.get("max_requests"),
                cap.prior_limits.get("max_tokens"),
                cap.prior_limits.get("max_cost_cents"),
            )
        ),
    )


def caps_load(*, user_id: int, version: str, policy: Any = None) -> UserCaps:
    """Read an owner's active caps from the database: a user's own and administrator caps,
    plus the policy's (`policy`, caps.policy.Policy) for each period where no administrator
    cap of theirs exists; or, for a team (a negative owner id), the team's caps."""
    from caps.models import TeamCapConfig, UserCapConfig

    if user_id < 0:
        rows = TeamCapConfig.objects.filter(team_id=-user_id, is_active=True)
        return UserCaps(version=version, rules=tuple(rule_of(c, set_by="team") for c in rows))
    rules = [rule_of(cap) for cap in UserCapConfig.objects.filter(user_id=user_id, is_active=True)]
    if policy is None:
        return UserCaps(version=version, rules=tuple(rules))
    replaced = {rule.cap_type for rule in rules if rule.set_by == "admin"}
    rules += [rule for rule in policy.rules if rule.cap_type not in replaced]
    return UserCaps(version=version, rules=tuple(rules), policy_version=policy.version)
