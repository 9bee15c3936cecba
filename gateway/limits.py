"""Limits of the free routes: token counting costs nothing upstream, but it is not unlimited.

`count_tokens` (/anthropic/v1/messages/count_tokens, /bedrock/model/{id}/count-tokens) is
refused while the user is over a request cap (the same 429 as a capped call: a user the caps
have stopped should not keep the upstream busy) and limited per user to
`usage_caps.count_tokens_per_minute` calls per UTC minute, counted in the cache (Redis when
configured, so shared by every process; the embedded default counts per process).
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache

from accounts.authentication import Principal
from caps.errors import CapExceeded, CapStoreUnavailable
from caps.status import cap_status
from config import clock
from config.db import in_db_thread
from gateway.errors import ProxyError

logger = logging.getLogger(__name__)

_KEY = "gateway:count-tokens:{user_id}:{minute}"


async def count_tokens_check(principal: Principal) -> None:
    """Raise ProxyError (429, family shape, Retry-After) when this count_tokens call must wait."""
    now = clock.now()
    await _per_minute(principal.user_id, now)
    await _not_over_request_cap(principal.user_id, now)


async def _per_minute(user_id: int, now) -> None:  # an aware datetime
    limit = settings.GATEWAY.usage_caps.count_tokens_per_minute
    minute = int(now.timestamp() // 60)
    key = _KEY.format(user_id=user_id, minute=minute)
    try:
        await cache.aadd(key, 0, timeout=120)
        used = await cache.aincr(key)
    except Exception:  # counting is free upstream: a cache outage lets it pass
        logger.warning("count_tokens limit not checked: cache unavailable")
        return
    if used > limit:
        retry_after = max(1, math.ceil((minute + 1) * 60 - now.timestamp()))
        raise ProxyError(
            "cap",
            f"Token counting is limited to {limit} calls a minute; retry in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )


async def _not_over_request_cap(user_id: int, now) -> None:
    if not settings.GATEWAY.usage_caps.enforce_caps:
        return
    try:
        status = await in_db_thread(cap_status, user_id=user_id, now=now)
    except CapStoreUnavailable:
        return  # free upstream: nothing to protect while the caps cannot be read
    over = [
        cap
        for cap in status
        if cap["enforced"]
        and cap["limits"]["max_requests"] is not None
        and cap["current_usage"]["requests"] >= cap["limits"]["max_requests"]
    ]
    if not over:
        return
    # The one that resets last is when counting works again.
    cap = max(over, key=lambda c: c["reset_time"])
    retry_after = max(1, math.ceil((cap["reset_time"] - now) / timedelta(seconds=1)))
    exc = CapExceeded(
        cap_type=cap["cap_type"],
        limit_type="requests",
        current_usage=cap["current_usage"]["requests"],
        limit=cap["limits"]["max_requests"],
        reset_time=cap["reset_time"],
        retry_after_seconds=retry_after,
        needed=0,
        set_by=cap["set_by"],
    )
    raise ProxyError(
        "cap", exc.message, extra=exc.body(), headers={"Retry-After": str(retry_after)}
    )
