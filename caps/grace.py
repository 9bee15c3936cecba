"""The grace period of a tightening: a change by an administrator (or to the policy) that makes
a limit stricter blocks only after `usage_caps.grace_period_minutes`, and until then the limits
that blocked before keep blocking. The same rules for a user's, a team's and the policy's caps.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from caps.rules import LIMIT_FIELDS


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


def enforced_now(cap: Any, now: datetime) -> tuple | None:
    """The (requests, tokens, cents) limits a saved cap row blocks with at `now`: its own, or
    during a tightening's grace its prior ones; None when it blocks nothing (inactive, unsaved,
    or in the grace of a cap that had no prior limits)."""
    if not getattr(cap, "is_active", True) or cap.pk is None:
        return None
    if cap.enforce_from is None or now >= cap.enforce_from:
        return (cap.max_requests, cap.max_tokens, cap.max_cost_cents)
    if cap.prior_limits is None:
        return None
    return tuple(cap.prior_limits.get(f) for f in LIMIT_FIELDS)
