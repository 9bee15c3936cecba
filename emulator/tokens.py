"""Deterministic token counting and the in-memory prompt cache.

The rule (documented in the package docstring, relied on by the gateway's tests):

* a piece of text costs ``ceil(len(text) / 4)`` tokens (characters, not bytes);
* each tool definition costs its compact JSON (keys sorted, ``cache_control`` left out);
* ``system`` costs its text (a string, or each text block);
* each message costs 3 tokens plus its content: text and thinking blocks their text,
  ``tool_use`` its name plus its compact input JSON, ``tool_result`` its content (recursively),
  an image 1600 tokens, any other block its compact JSON.

The prompt is read in Anthropic's cache order — tools, system, messages — so "the tokens up to
and including a block with ``cache_control``" is a well-defined prefix.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CacheUsage", "Prompt", "PromptCache", "text_tokens"]

MESSAGE_OVERHEAD = 3
IMAGE_TOKENS = 1600
MAX_BREAKPOINTS = 4
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def text_tokens(text: str) -> int:
    """ceil(characters / 4)."""
    return (len(text) + 3) // 4


def _compact(value: Any) -> str:
    if isinstance(value, dict) and "cache_control" in value:
        value = {k: v for k, v in value.items() if k != "cache_control"}
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return text_tokens(_compact(block))
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return text_tokens(block["text"])
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return text_tokens(block["thinking"])
    if kind == "tool_use":
        return text_tokens(str(block.get("name", ""))) + text_tokens(
            _compact(block.get("input", {}))
        )
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, list):
            return sum(_block_tokens(item) for item in content)
        return _block_tokens(content)
    if kind == "image":
        return IMAGE_TOKENS
    return text_tokens(_compact(block))


def _add_content(add: Callable[[int, Any], None], content: Any) -> None:
    """Add a message's content: a list of blocks, or a single one (usually a plain string)."""
    if isinstance(content, list):
        for block in content:
            add(_block_tokens(block), block)
    elif content is not None:
        add(_block_tokens(content), content)


@dataclass(frozen=True, slots=True)
class _Breakpoint:
    prefix_tokens: int  # tokens up to and including the block carrying cache_control
    piece_count: int  # how many pieces that prefix spans (for hashing it)
    ttl: str


class Prompt:
    """A request's prompt as an ordered list of pieces, with its cache breakpoints."""

    __slots__ = ("breakpoints", "pieces", "total")

    def __init__(self, body: dict[str, Any]) -> None:
        # Each piece is (tokens, the object it came from); objects are hashed only if cached.
        pieces: list[tuple[int, Any]] = []
        breakpoints: list[_Breakpoint] = []
        total = 0

        def add(tokens: int, source: Any, cacheable: bool = True) -> None:
            nonlocal total
            total += tokens
            pieces.append((tokens, source))
            if cacheable and isinstance(source, dict):
                control = source.get("cache_control")
                if isinstance(control, dict):
                    ttl = "1h" if control.get("ttl") == "1h" else "5m"
                    breakpoints.append(_Breakpoint(total, len(pieces), ttl))

        for tool in body.get("tools") or ():
            add(text_tokens(_compact(tool)), tool)
        system = body.get("system")
        if isinstance(system, str):
            add(text_tokens(system), system)
        elif isinstance(system, list):
            for block in system:
                add(_block_tokens(block), block)
        messages = body.get("messages") or ()
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            add(MESSAGE_OVERHEAD, str(message.get("role")), cacheable=False)
            _add_content(add, message.get("content"))
            # Top-level cache_control ("automatic caching") marks the conversation's last block.
            if index == len(messages) - 1 and isinstance(body.get("cache_control"), dict):
                ttl = "1h" if body["cache_control"].get("ttl") == "1h" else "5m"
                breakpoints.append(_Breakpoint(total, len(pieces), ttl))
        self.pieces = pieces
        self.breakpoints = breakpoints
        self.total = total

    def prefix_hashes(self, model: str) -> list[bytes]:
        """One digest per breakpoint, of the model and every piece up to it."""
        digest = hashlib.sha256(model.encode())
        hashes: list[bytes] = []
        done = 0
        for point in self.breakpoints:
            for _tokens, source in self.pieces[done : point.piece_count]:
                digest.update(_compact(source).encode())
                digest.update(b"\x00")
            done = point.piece_count
            hashes.append(digest.copy().digest())
        return hashes


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """How a prompt's tokens split between fresh input, cache writes and cache reads."""

    input_tokens: int
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h


class PromptCache:
    """Prefixes seen recently, per model; an entry lives for its TTL and is renewed on a hit.

    Like Anthropic's cache, a request reads the longest cached prefix ending at one of its
    breakpoints and writes every longer prefix up to its last breakpoint.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: dict[bytes, float] = {}
        self._max_entries = max_entries

    def account(self, prompt: Prompt, model: str, now: float | None = None) -> CacheUsage:
        if not prompt.breakpoints:
            return CacheUsage(input_tokens=prompt.total)
        now = time.monotonic() if now is None else now
        hashes = prompt.prefix_hashes(model)
        entries = self._entries
        hit = -1
        for index in range(len(hashes) - 1, -1, -1):
            expiry = entries.get(hashes[index])
            if expiry is not None and expiry > now:
                hit = index
                break
        read = prompt.breakpoints[hit].prefix_tokens if hit >= 0 else 0
        if hit >= 0:
            entries[hashes[hit]] = now + _TTL_SECONDS[prompt.breakpoints[hit].ttl]
        write = {"5m": 0, "1h": 0}
        covered = read
        for index in range(hit + 1, len(hashes)):
            point = prompt.breakpoints[index]
            write[point.ttl] += point.prefix_tokens - covered
            covered = point.prefix_tokens
            entries[hashes[index]] = now + _TTL_SECONDS[point.ttl]
        if len(entries) > self._max_entries:
            self._evict(now)
        return CacheUsage(
            input_tokens=prompt.total - covered,
            cache_read=read,
            cache_write_5m=write["5m"],
            cache_write_1h=write["1h"],
        )

    def _evict(self, now: float) -> None:
        live = {key: expiry for key, expiry in self._entries.items() if expiry > now}
        if len(live) > self._max_entries // 2:
            # Still full of live entries: keep the newest half (dicts keep insertion order).
            live = dict(list(live.items())[len(live) // 2 :])
        self._entries = live

    def clear(self) -> None:
        self._entries.clear()
