"""Throttles for failed credentials: the API and proxy (per client address), and Django admin's
password sign-in (per user and per address).

API and proxy: more than `auth.failed_auth_limit` failed credentials (API key or JWT) from one
client address within a fixed window of `auth.failed_auth_window_seconds` -> 429 for the rest of
that window. Only failures touch the counter (one cache add + incr); a genuine credential that
merely expired does not count, so developers behind one NAT whose tokens expire together do not
lock each other out. Once a process has seen an address go over the limit it remembers it until
the window ends (a dict look-up, no I/O), and refuses that address's requests before verifying
anything; a request with a good credential from an address this process has not seen blocked
does no extra work at all.

Counters live in the Django cache: Redis when `redis.url` is set (shared by every process),
else the per-process local-memory cache (embedded mode: each process counts on its own).

The client address is REMOTE_ADDR, or the last X-Forwarded-For entry (the one our own proxy
appended) when `server.public_url` says the gateway sits behind one. Loopback is not exempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.dispatch import Signal

from accounts.services import AuthFailed
from config import clock

# Sent once per request refused for failed credentials; gateway.metrics counts them.
# Keyword arguments: family ("api", "anthropic" or "bedrock").
auth_throttled = Signal()

THROTTLED_MESSAGE = "Too many failed credentials from your address; retry after {seconds} s."
ADMIN_LOGIN_THROTTLED = (
    "Too many failed sign-in attempts for this account or from this address. "
    "Try again in {minutes} minutes."
)
MAX_ADDRESS = 64  # an IPv6 address with a zone id fits; a forged header is cut short
_MAX_REMEMBERED = 10_000

# Addresses this process saw go over the limit -> the end of that window (epoch seconds).
_blocked: dict[str, float] = {}


@dataclass
class AuthThrottled(Exception):
    """Refused: too many failed credentials from this address in this window."""

    retry_after: int

    def __str__(self) -> str:
        return THROTTLED_MESSAGE.format(seconds=self.retry_after)


def client_address(meta: dict) -> str:
    """The client's address for counting: REMOTE_ADDR, or behind our proxy (server.public_url
    set) the last X-Forwarded-For entry, which that proxy appended (earlier ones are the
    client's to forge)."""
    if getattr(settings.GATEWAY.server, "public_url", None):
        forwarded = meta.get("HTTP_X_FORWARDED_FOR", "").rsplit(",", 1)[-1].strip()
        if forwarded:
            return forwarded[:MAX_ADDRESS]
    return (meta.get("REMOTE_ADDR") or "unknown")[:MAX_ADDRESS]


def _window() -> tuple[str, float, float, int]:
    """(this window's key suffix, its end, now, the counter's time to live)."""
    size = settings.GATEWAY.auth.failed_auth_window_seconds
    now = clock.timestamp()
    index = int(now // size)
    end = (index + 1) * size
    return str(index), end, now, math.ceil(end - now) + 1


def _retry_after(end: float, now: float) -> int:
    return max(1, math.ceil(end - now))


def check(address: str) -> None:
    """AuthThrottled if this process knows the address is over the limit (no I/O)."""
    if not _blocked:
        return
    end = _blocked.get(address)
    if end is None:
        return
    now = clock.timestamp()
    if end > now:
        raise AuthThrottled(_retry_after(end, now))
    _blocked.pop(address, None)


def _over(address: str, count: int, end: float, now: float) -> None:
    if count > settings.GATEWAY.auth.failed_auth_limit:
        if len(_blocked) >= _MAX_REMEMBERED:
            _blocked.clear()  # bounded: a flood of addresses costs a re-count, not memory
        _blocked[address] = end
        raise AuthThrottled(_retry_after(end, now))


def failure(address: str, exc: AuthFailed) -> None:
    """Count one failed credential; AuthThrottled once the address is over the limit."""
    if exc.expired:
        return
    suffix, end, now, ttl = _window()
    key = f"authfail:{address}:{suffix}"
    cache.add(key, 0, ttl)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, ttl)
        count = 1
    _over(address, count, end, now)


async def afailure(address: str, exc: AuthFailed) -> None:
    """Async twin of failure (the proxy)."""
    if exc.expired:
        return
    suffix, end, now, ttl = _window()
    key = f"authfail:{address}:{suffix}"
    await cache.aadd(key, 0, ttl)
    try:
        count = await cache.aincr(key)
    except ValueError:
        await cache.aset(key, 1, ttl)
        count = 1
    _over(address, count, end, now)


# --- Django admin's password sign-in ---------------------------------------------------------


def _admin_keys(username: str, address: str) -> list[str]:
    return [f"adminlogin:user:{username.strip().lower()[:254]}", f"adminlogin:addr:{address}"]


def admin_login_blocked(username: str, address: str) -> bool:
    """Whether this user or this address has used up its failed admin sign-ins."""
    auth = settings.GATEWAY.auth
    now = clock.timestamp()
    return any(
        state["count"] >= auth.admin_login_failure_limit
        and now - state["since"] < auth.admin_login_window_seconds
        for state in cache.get_many(_admin_keys(username, address)).values()
    )


def admin_login_failed(username: str, address: str) -> None:
    """Count one failed admin sign-in against the user and the address. The window starts at
    the first failure and is judged by our clock (the cache's TTL only cleans up after it):
    later failures do not extend it."""
    window = settings.GATEWAY.auth.admin_login_window_seconds
    now = clock.timestamp()
    for key in _admin_keys(username, address):
        state = cache.get(key)
        if state is None or now - state["since"] >= window:
            state = {"since": now, "count": 0}
        state["count"] += 1
        cache.set(key, state, max(1, math.ceil(state["since"] + window - now)))


def admin_login_minutes() -> int:
    return math.ceil(settings.GATEWAY.auth.admin_login_window_seconds / 60)
