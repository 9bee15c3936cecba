"""Betas the upstream rejects, learned once and dropped from then on.

Bedrock answers a beta it does not serve with `400 invalid beta flag` without naming it, and
each Claude Code release adds betas; Claude Code then re-sends up to 8 times with features
stripped. On such a 400 the gateway asks the upstream about each unknown beta of the call with
a free count-tokens probe, remembers the rejected ones, and retries the call once without them.
Every later call has them stripped before it leaves, so it takes one attempt.

Betas are client input, so everything here is bounded: a call may carry at most `MAX_BETAS`
betas of the shape `BETA_SHAPE` (a 400 in the route family's shape otherwise, as Bedrock would
answer), and what is learned is kept per (base model, beta) - a beta Bedrock refuses for one
model may be served for another - in at most `MAX_REMEMBERED` entries, oldest evicted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable

from django.core.cache import cache

from costs.money import model_base_id
from gateway import upstream
from gateway.errors import ProxyError

logger = logging.getLogger(__name__)

# Claude Code sends about ten, all like `interleaved-thinking-2025-05-14`.
MAX_BETAS = 16
MAX_BETA_LENGTH = 64
BETA_SHAPE = re.compile(r"[a-z0-9][a-z0-9-]*")
# (base model, beta) pairs remembered as rejected (and, apart, as accepted), per process and
# in the shared cache.
MAX_REMEMBERED = 256

_CACHE_KEY = "gateway:rejected-betas:v2"
_CACHE_SECONDS = 7 * 86400
# What other processes learned is picked up at most this often (a cache read per call is a
# round trip the hot path does not need).
SHARE_INTERVAL_SECONDS = 5.0


class _Bounded:
    """An insertion-ordered set of (base model, beta) pairs holding at most MAX_REMEMBERED."""

    def __init__(self) -> None:
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add(self, pair: tuple[str, str]) -> None:
        self._pairs[pair] = None
        self._pairs.move_to_end(pair)
        while len(self._pairs) > MAX_REMEMBERED:
            self._pairs.popitem(last=False)

    def __contains__(self, pair: object) -> bool:
        return pair in self._pairs

    def __len__(self) -> int:
        return len(self._pairs)

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def merge_under(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Take in `pairs` (another process's, oldest first) as older than what is held here,
        so a pair this process evicted comes back only while there is room for it."""
        merged: OrderedDict[tuple[str, str], None] = OrderedDict.fromkeys(pairs)
        for pair in self._pairs:
            merged[pair] = None
            merged.move_to_end(pair)
        while len(merged) > MAX_REMEMBERED:
            merged.popitem(last=False)
        self._pairs = merged

    def betas_of(self, base: str) -> set[str]:
        return {beta for model, beta in self._pairs if model == base}

    def clear(self) -> None:
        self._pairs.clear()


_rejected = _Bounded()
_accepted = _Bounded()
_next_share = 0.0


def _base(model_id: str) -> str:
    return model_base_id(model_id)[0]


def check(body_betas: object, header: str | None = None) -> None:
    """Refuse (ProxyError 400) a call whose betas are too many or not shaped like betas."""
    betas: list[str] = []
    if isinstance(body_betas, list):
        betas += [beta for beta in body_betas if isinstance(beta, str)]
    if header:
        betas += [beta.strip() for beta in header.split(",") if beta.strip()]
    unique = set(betas)
    if len(unique) > MAX_BETAS:
        raise ProxyError("invalid", f"Too many betas: at most {MAX_BETAS} per request.")
    for beta in unique:
        if len(beta) > MAX_BETA_LENGTH or not BETA_SHAPE.fullmatch(beta):
            raise ProxyError(
                "invalid",
                f"Invalid beta flag: betas are lowercase letters, digits and '-', "
                f"at most {MAX_BETA_LENGTH} characters.",
            )


def _pull_shared() -> None:
    global _next_share
    now = time.monotonic()
    if now < _next_share:
        return
    _next_share = now + SHARE_INTERVAL_SECONDS
    try:
        shared = cache.get(_CACHE_KEY)
    except Exception:  # a cache outage only costs a relearning
        shared = None
    if not isinstance(shared, list):
        return
    _rejected.merge_under(
        (str(entry[0]), str(entry[1]))
        for entry in shared[-MAX_REMEMBERED:]
        if isinstance(entry, list | tuple) and len(entry) == 2
    )


def rejected(model_id: str) -> set[str]:
    """Betas known to be rejected for this model: this process's, plus any another shared."""
    _pull_shared()
    return _rejected.betas_of(_base(model_id))


def remembered() -> int:
    """How many (model, beta) rejections this process holds (bounded by MAX_REMEMBERED)."""
    return len(_rejected)


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


def _unknown(base: str, betas: Iterable[object]) -> list[str]:
    out: list[str] = []
    for beta in betas:
        if not isinstance(beta, str) or beta in out:
            continue
        if len(beta) > MAX_BETA_LENGTH or not BETA_SHAPE.fullmatch(beta):
            continue  # never probed: `check` refuses such calls before they get here
        if (base, beta) in _accepted or (base, beta) in _rejected:
            continue
        out.append(beta)
    return out[:MAX_BETAS]


async def learn(model_id: str, body: dict) -> set[str]:
    """Probe each beta of `body` not yet known; return the ones the upstream rejects."""
    global _next_share
    betas = body.get("anthropic_beta")
    if not isinstance(betas, list):
        return set()
    base = _base(model_id)
    version = body.get("anthropic_version", "bedrock-2023-05-31")
    for beta in _unknown(base, betas):
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
            _rejected.add((base, beta))
        elif response.status_code == 200:
            _accepted.add((base, beta))
    found = _rejected.betas_of(base).intersection(betas)
    if found:
        logger.info(
            "upstream rejects betas %s for %s; dropping them from now on", sorted(found), base
        )
        # Sharing is best effort: another process would learn for itself.
        with contextlib.suppress(Exception):
            _next_share = 0.0
            _pull_shared()  # keep what other processes shared meanwhile
            cache.set(_CACHE_KEY, [list(pair) for pair in _rejected.pairs()], _CACHE_SECONDS)
    return found


def _b64(body: dict) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()
