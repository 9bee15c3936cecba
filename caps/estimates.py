"""The estimate a reservation holds: what the call will most likely count (DESIGN "Estimates").

Output: ``min(max_tokens, usage_caps.output_estimate_ceiling)`` — Claude Code asks for 128,000
on every call, which would block it under any everyday token cap.

Input: the prompt is read in the upstream's cache order (tools, system, messages) as pieces,
and each piece is estimated at ``ceil(len(its compact JSON) / 4)`` characters-per-token, plus 3
per message and at least 1,600 per image. A piece's JSON is never shorter than the text the
upstream (and the local emulator) counts in it — the quotes, keys and type names around a text
come on top — so for the emulator's rule (``ceil(chars / 4)`` per text piece, 3 per message,
1,600 per image) the input estimate is an upper bound, piece by piece. Against real Bedrock it
is close for English prose (about 4 characters a token) and an under-estimate for dense text
such as CJK; the overshoot that can cause is bounded below.

Cache: the tokens up to a ``cache_control`` breakpoint count as a cache read when this user
sent the same prefix to the same model within the prefix's lifetime (5 minutes, or 1 hour for
``ttl: "1h"``), else as a cache write; tokens after the last breakpoint are plain input. The
prefixes a user sent are remembered when the call settles (so a refused or failed call
remembers nothing): in this process, and in Django's cache when that is shared (Redis), so
another worker sees them too.

Overshoot bound. The reservation holds the estimate, but the store also keeps each call's
worst case (``worst_case``: the input estimate with ``max_tokens`` of output) in flight, and a
call whose worst case does not fit what is left under a token or cost cap after the calls in
flight is "uncovered": at most ``usage_caps.max_uncovered_in_flight`` (1) of those run at once
per user (caps/store.py). So ``max_tokens`` beyond the ceiling overshoots a cap by at most one
call's (actual - what was left), not by every call in flight. What the worst case cannot see —
the prefix tokens of a remembered prefix the upstream had evicted, and the tokenizer's excess
over 4 chars/token on real Bedrock — still adds up over the calls in flight.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache

from costs.money import Usage

MESSAGE_OVERHEAD = 3
IMAGE_TOKENS = 1600
_TTL = {"5m": 300, "1h": 3600}
_LOCAL_MAX = 50_000
_local: dict[str, float] = {}
_local_lock = threading.Lock()


@dataclass(frozen=True)
class Estimate(Usage):
    """A Usage that also carries the prompt's cache prefixes (hash, ttl) to remember once
    the call has reached the upstream."""

    prefixes: tuple[tuple[str, str], ...] = ()
    # The request's max_tokens: the call's worst case outputs this many (see `worst_case`).
    max_output_tokens: int = field(default=0, compare=False)


def worst_case(estimate: Usage) -> Usage:
    """The most the call can count: its input estimate with `max_tokens` of output. A plain
    Usage (no max_tokens known) is its own worst case."""
    most = getattr(estimate, "max_output_tokens", 0)
    if most <= estimate.output_tokens:
        return estimate
    return replace(estimate, output_tokens=most)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _piece_tokens(piece: Any) -> int:
    text = _compact(piece)
    tokens = (len(text) + 3) // 4
    if isinstance(piece, dict) and piece.get("type") == "image":
        return max(tokens, IMAGE_TOKENS)
    if isinstance(piece, dict) and piece.get("type") == "tool_result":
        content = piece.get("content")
        if isinstance(content, list):
            images = sum(1 for c in content if isinstance(c, dict) and c.get("type") == "image")
            tokens += images * IMAGE_TOKENS
    return tokens


def _ttl_of(piece: Any) -> str | None:
    if isinstance(piece, dict):
        control = piece.get("cache_control")
        if isinstance(control, dict):
            return "1h" if control.get("ttl") == "1h" else "5m"
    return None


def _pieces(body: dict[str, Any]) -> list[tuple[Any, bool]]:
    """(piece, counts as a new message) in cache order: tools, system, message contents."""
    pieces: list[tuple[Any, bool]] = [(tool, False) for tool in body.get("tools") or ()]
    system = body.get("system")
    if isinstance(system, list):
        pieces += [(block, False) for block in system]
    elif system:
        pieces.append((system, False))
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list) and content:
            pieces.append((content[0], True))
            pieces += [(block, False) for block in content[1:]]
        else:
            pieces.append((content if content is not None else "", True))
    return pieces


def _prefix_key(user_id: int, digest: str) -> str:
    return f"caps:prefix:{user_id}:{digest}"


def _remembered(user_id: int, digests: list[str]) -> set[str]:
    now = time.monotonic()
    found = {d for d in digests if _local.get(_prefix_key(user_id, d), 0) > now}
    missing = [d for d in digests if d not in found]
    if missing and settings.GATEWAY.redis.url:
        try:
            hits = cache.get_many([_prefix_key(user_id, d) for d in missing])
        except Exception:  # a cache outage only makes the estimate larger
            hits = {}
        found |= {d for d in missing if _prefix_key(user_id, d) in hits}
    return found


def prefixes_remember(*, user_id: int, prefixes: tuple[tuple[str, str], ...]) -> None:
    """Remember that this user's prompt prefixes reached the upstream (now in its cache)."""
    if not prefixes:
        return
    now = time.monotonic()
    with _local_lock:
        if len(_local) > _LOCAL_MAX:
            for key in [k for k, expiry in _local.items() if expiry <= now]:
                del _local[key]
            if len(_local) > _LOCAL_MAX:
                _local.clear()
        for digest, ttl in prefixes:
            _local[_prefix_key(user_id, digest)] = now + _TTL[ttl]
    if settings.GATEWAY.redis.url:
        try:
            for ttl in {ttl for _, ttl in prefixes}:
                cache.set_many(
                    {_prefix_key(user_id, d): 1 for d, t in prefixes if t == ttl}, timeout=_TTL[ttl]
                )
        except Exception:  # noqa: S110 - losing a hint only makes estimates larger
            pass


def estimate_usage(*, user_id: int, model_id: str, body: dict[str, Any]) -> Estimate:
    """The reservation's estimate for one call (see the module docstring for the bound)."""
    ceiling = settings.GATEWAY.usage_caps.output_estimate_ceiling
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        max_tokens = ceiling
    output = min(max_tokens, ceiling)

    digest = hashlib.sha256(model_id.encode())
    total = 0
    breakpoints: list[tuple[int, str, str]] = []  # (tokens so far, digest, ttl)
    for piece, new_message in _pieces(body):
        tokens = _piece_tokens(piece) + (MESSAGE_OVERHEAD if new_message else 0)
        total += tokens
        digest.update(_compact(piece).encode())
        digest.update(b"\x00")
        ttl = _ttl_of(piece)
        if ttl:
            breakpoints.append((total, digest.hexdigest(), ttl))
    top = body.get("cache_control")
    if isinstance(top, dict) and body.get("messages"):
        breakpoints.append((total, digest.hexdigest() + "+auto", _ttl_of(body) or "5m"))
    if not breakpoints:
        return Estimate(input_tokens=total, output_tokens=output, max_output_tokens=max_tokens)

    remembered = _remembered(user_id, [d for _, d, _ in breakpoints])
    hit = max((i for i, (_, d, _) in enumerate(breakpoints) if d in remembered), default=-1)
    read = breakpoints[hit][0] if hit >= 0 else 0
    writes = {"5m": 0, "1h": 0}
    covered = read
    for tokens, _, ttl in breakpoints[hit + 1 :]:
        writes[ttl] += tokens - covered
        covered = tokens
    return Estimate(
        input_tokens=total - covered,
        output_tokens=output,
        cache_read_tokens=read,
        cache_write_5m_tokens=writes["5m"],
        cache_write_1h_tokens=writes["1h"],
        prefixes=tuple((d, ttl) for _, d, ttl in breakpoints),
        max_output_tokens=max_tokens,
    )
