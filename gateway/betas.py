"""Betas the upstream rejects, learned once and dropped from then on.

Bedrock answers a beta it does not serve with `400 invalid beta flag` without naming it, and
each Claude Code release adds betas; Claude Code then re-sends up to 8 times with features
stripped. On such a 400 the gateway asks the upstream about each unknown beta of the call with
a free count-tokens probe, remembers the rejected ones, and retries the call once without them.
Every later call has them stripped before it leaves, so it takes one attempt.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time

from django.core.cache import cache

from gateway import upstream

logger = logging.getLogger(__name__)

_CACHE_KEY = "gateway:rejected-betas"
_CACHE_SECONDS = 7 * 86400
# What other processes learned is picked up at most this often (a cache read per call is a
# round trip the hot path does not need).
SHARE_INTERVAL_SECONDS = 5.0
_rejected: set[str] = set()
_accepted: set[str] = set()
_next_share = 0.0


def rejected() -> set[str]:
    """Betas known to be rejected: this process's, plus any another process shared."""
    global _next_share
    now = time.monotonic()
    if now >= _next_share:
        _next_share = now + SHARE_INTERVAL_SECONDS
        try:
            shared = cache.get(_CACHE_KEY)
        except Exception:  # noqa: BLE001 - a cache outage only costs a relearning
            shared = None
        if shared:
            _rejected.update(shared)
    return _rejected


def is_beta_rejection(status: int, raw: bytes) -> bool:
    return status == 400 and b"invalid beta flag" in raw.lower()


def strip(body: dict, drop: set[str]) -> dict:
    """`body` without the betas in `drop` (the same object when there is nothing to drop)."""
    betas = body.get("anthropic_beta")
    if not isinstance(betas, list) or not drop.intersection(betas):
        return body
    kept = [beta for beta in betas if beta not in drop]
    stripped = {key: value for key, value in body.items() if key != "anthropic_beta"}
    if kept:
        stripped["anthropic_beta"] = kept
    return stripped


def strip_header(value: str | None, drop: set[str]) -> str | None:
    if not value:
        return value
    kept = [beta.strip() for beta in value.split(",") if beta.strip() not in drop]
    return ",".join(kept) or None


async def learn(model_id: str, body: dict) -> set[str]:
    """Probe each beta of `body` not yet known; return the ones the upstream rejects."""
    betas = body.get("anthropic_beta")
    if not isinstance(betas, list):
        return set()
    version = body.get("anthropic_version", "bedrock-2023-05-31")
    for beta in betas:
        if beta in _accepted or beta in _rejected:
            continue
        probe = {
            "anthropic_version": version,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "probe"}],
            "anthropic_beta": [beta],
        }
        payload = json.dumps({"input": {"invokeModel": {"body": _b64(probe)}}}).encode()
        try:
            response = await upstream.open_call(
                model_id, "count-tokens", payload, stream=False, extra_headers={}
            )
            raw = await upstream.read_body(response)
        except (upstream.UpstreamUnavailable, upstream.UpstreamTimeout):
            return set()
        if is_beta_rejection(response.status_code, raw):
            _rejected.add(beta)
        elif response.status_code == 200:
            _accepted.add(beta)
    found = _rejected.intersection(betas)
    if found:
        logger.info("upstream rejects betas %s; dropping them from now on", sorted(found))
        # Sharing is best effort: another process would learn for itself.
        with contextlib.suppress(Exception):
            cache.set(_CACHE_KEY, sorted(_rejected), _CACHE_SECONDS)
    return found


def _b64(body: dict) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()


def forget() -> None:
    """Forget what was learned (tests)."""
    global _next_share
    _rejected.clear()
    _accepted.clear()
    _next_share = 0.0
    cache.delete(_CACHE_KEY)
