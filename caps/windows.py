"""Cap windows: UTC calendar hours, days and months, their counter keys and reset times.

Keys follow the seed's format with a Redis Cluster hash tag on the user, so that all of one
user's cap keys (windows, leases, reservations, config version) share a slot and one Lua
script can move them: `usage_cap:{user_42}:hourly:2026-11-25T10`, `…:daily:2026-11-25`,
`…:monthly:2026-11`.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime

from django.conf import settings

from usage.windows import as_utc, period_end, period_start

CAP_TYPES = ("hourly", "daily", "monthly")
# The per-session cost cap's window: one per Claude Code session, no calendar, no reset.
SESSION = "session"
# Window order in reservations and limits: the three calendar windows, then the session's.
WINDOW_TYPES = (*CAP_TYPES, SESSION)


def team_owner(team_id: int) -> int:
    """A team's counters are kept like a user's, under the negative of its id."""
    return -team_id


def user_tag(user_id: int) -> str:
    """The hash tag of an owner's cap keys: a user's, or a team's for a negative id (a team's
    counters are kept like a user's: team_owner)."""
    if user_id < 0:
        return f"{settings.GATEWAY.redis.usage_cap_prefix}{{team_{-user_id}}}"
    return f"{settings.GATEWAY.redis.usage_cap_prefix}{{user_{user_id}}}"


def reset_time(cap_type: str, at: datetime) -> datetime:
    """The end of the window that holds `at` (when its counters start again from zero)."""
    return period_end(cap_type, period_start(cap_type, at))


def window_key(user_id: int, cap_type: str, at: datetime) -> str:
    at = as_utc(at)
    label = {
        "hourly": f"{at:%Y-%m-%dT%H}",
        "daily": f"{at:%Y-%m-%d}",
        "monthly": f"{at:%Y-%m}",
    }[cap_type]
    return f"{user_tag(user_id)}:{cap_type}:{label}"


def window_keys(user_id: int, at: datetime) -> tuple[str, str, str]:
    """Hourly, daily and monthly keys of the windows holding `at`."""
    return _window_keys(user_tag(user_id), as_utc(at).replace(minute=0, second=0, microsecond=0))


# Every call computes its owner's keys: formatted once per owner and hour.
@functools.lru_cache(maxsize=4096)
def _window_keys(tag: str, hour: datetime) -> tuple[str, str, str]:
    return (
        f"{tag}:hourly:{hour:%Y-%m-%dT%H}",
        f"{tag}:daily:{hour:%Y-%m-%d}",
        f"{tag}:monthly:{hour:%Y-%m}",
    )


def session_key(user_id: int, session_id: str | None) -> str | None:
    """The session window of a call: `usage_cap:{user_42}:session:<sha256(id)[:16]>` (the
    user's hash tag: one slot with their other cap keys); None without a session id."""
    if not session_id:
        return None
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:16]
    return f"{user_tag(user_id)}:{SESSION}:{digest}"


def session_ttl() -> int:
    return settings.GATEWAY.redis.session_cap_ttl


def window_ttls() -> tuple[int, int, int]:
    r = settings.GATEWAY.redis
    return (r.hourly_cap_ttl, r.daily_cap_ttl, r.monthly_cap_ttl)


@functools.lru_cache(maxsize=256)  # every answer's headroom headers name the same few resets
def iso_z(at: datetime) -> str:
    return as_utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")
