"""The emulator's settings: server-wide values, and the knobs a request header may override."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BedrockError

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_ALLOWED_BETAS",
    "DEFAULT_SECRET_KEY",
    "KNOB_HEADERS",
    "TOOL_USE_MODES",
    "Knobs",
    "Settings",
    "knobs_from_headers",
]

# AWS's documented example key pair (the SigV4 test suite's): safe to publish, useless on AWS.
DEFAULT_ACCESS_KEY = "AKIDEXAMPLE"
DEFAULT_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # noqa: S105

DEFAULT_ALLOWED_BETAS: frozenset[str] = frozenset(
    {
        "claude-code-20250219",
        "interleaved-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "fine-grained-tool-streaming-2025-05-14",
        "token-efficient-tools-2025-02-19",
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "prompt-caching-2024-07-31",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "extended-cache-ttl-2025-04-11",
        "output-128k-2025-02-19",
        "tool-examples-2025-10-29",
    }
)


@dataclass(frozen=True, slots=True)
class Knobs:
    """Behaviour a test or benchmark can steer, per server (flags) or per request (headers)."""

    ttfb_ms: float = 0.0  # delay before the response starts
    tokens_per_second: float = 0.0  # pacing of stream deltas; 0 = as fast as possible
    reply_tokens: int = 24  # reply length before max_tokens
    error: str | None = None  # answer this Bedrock error instead (with error_rate: that often)
    error_rate: float = 0.0  # probability of an injected error (ThrottlingException by default)
    stream_error: str | None = None  # send this exception frame mid-stream ...
    stream_error_after: int = 1  # ... after this many events
    cut_after: int | None = None  # close the connection abruptly after this many stream events
    stall_ms: float = 0.0  # pause mid-stream ...
    stall_after: int = 1  # ... after this many events
    tool_use: str = "auto"  # auto (the rule in the README), always or never, when tools are given
    tokens_per_delta: int = 1  # output tokens per text delta of a stream (Bedrock sends several)
    omit_usage: bool = False  # answer without any usage (a model whose usage cannot be read)


def _name(value: str) -> str | None:
    # "none" lets a request switch off an error the server was started with.
    return None if value.lower() in ("", "none") else value


TOOL_USE_MODES = ("auto", "always", "never")


def _tool_use(value: str) -> str:
    mode = value.lower()
    if mode not in TOOL_USE_MODES:
        raise ValueError(value)
    return mode


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(value)
    return value.lower() in ("true", "1")


def _count(value: str) -> int | None:
    return None if value.lower() in ("", "none") else int(value)


# header -> (Knobs field, parser)
KNOB_HEADERS: dict[str, tuple[str, Callable[[str], object]]] = {
    "x-emulator-ttfb-ms": ("ttfb_ms", float),
    "x-emulator-tokens-per-second": ("tokens_per_second", float),
    "x-emulator-reply-tokens": ("reply_tokens", int),
    "x-emulator-error": ("error", _name),
    "x-emulator-error-rate": ("error_rate", float),
    "x-emulator-stream-error": ("stream_error", _name),
    "x-emulator-stream-error-after": ("stream_error_after", int),
    "x-emulator-cut-after": ("cut_after", _count),
    "x-emulator-stall-ms": ("stall_ms", float),
    "x-emulator-stall-after": ("stall_after", int),
    "x-emulator-tool-use": ("tool_use", _tool_use),
    "x-emulator-tokens-per-delta": ("tokens_per_delta", _positive),
    "x-emulator-omit-usage": ("omit_usage", _flag),
}


def knobs_from_headers(base: Knobs, headers: Mapping[str, str]) -> Knobs:
    """``base`` with every ``x-emulator-*`` header applied (a header wins over the flag)."""
    changes: dict[str, Any] = {}
    for header, (name, parse) in KNOB_HEADERS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = parse(raw.strip())
        except ValueError:
            raise BedrockError("ValidationException", f"Invalid {header} header: {raw!r}") from None
        if isinstance(value, int | float) and value < 0:
            raise BedrockError("ValidationException", f"Invalid {header} header: {raw!r}")
        changes[name] = value
    return dataclasses.replace(base, **changes) if changes else base


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the running emulator is configured with."""

    knobs: Knobs = Knobs()
    credentials: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY}
    )
    api_keys: frozenset[str] | None = None  # None: any bearer token is accepted
    allowed_betas: frozenset[str] | None = DEFAULT_ALLOWED_BETAS  # None: any beta passes
    require_auth: bool = True
    require_profiles: bool = False  # reject base ids of models served only via profiles
