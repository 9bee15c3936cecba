"""Money as plain values, no Django: token counts (`Usage`), a price row (`Price`) and the
cost of a call at it, rate units, model ids, and money formatted for people.

Storage and arithmetic stay integers (micro-dollars, or cents for cap limits); the formatting
functions only present them. `costs.pricing` (the price table) and `costs.models` both build
on this module, so neither imports the other at module level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from urllib.parse import unquote

MICROS = 1_000_000

# Cross-region inference profile prefixes; a price row's `scope` is one of these.
SCOPES = ("global", "us", "us-gov", "eu", "apac", "jp", "au", "ca")

# "anthropic.claude-opus-5-5" -> opus; "anthropic.claude-3-5-haiku-20241022-v1:0" -> haiku.
_FAMILY_RE = re.compile(r"claude-(?:[\d-]+)?([a-z]+)")


@dataclass(frozen=True)
class Usage:
    """Token counts of one call (or a sum of calls)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Input + cache reads + cache writes: what a long-prompt tier is measured on."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def cap_tokens(self) -> int:
        """Tokens counted by caps: input + output + cache writes (cache reads count toward cost
        only, DESIGN "Tokens in caps")."""
        return self.input_tokens + self.output_tokens + self.cache_write_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens + other.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
        )


@dataclass(frozen=True)
class Price:
    """One price row as the hot path sees it; rates in micro-dollars per million tokens."""

    model_id: str
    scope: str
    region: str
    input: int
    output: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    effective_from: datetime
    long_prompt_threshold_tokens: int | None = None
    long_prompt_multiplier: Decimal | None = None

    def cost_micros(self, usage: Usage) -> int:
        """Cost of one call at this price (floor of the exact total, see module docstring)."""
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_write_5m_tokens * self.cache_write_5m
            + usage.cache_write_1h_tokens * self.cache_write_1h
            + usage.cache_read_tokens * self.cache_read
        )
        if (
            self.long_prompt_threshold_tokens is not None
            and self.long_prompt_multiplier is not None
            and usage.prompt_tokens > self.long_prompt_threshold_tokens
        ):
            # Above the threshold every token of the request, output included, costs more.
            numerator, denominator = self.long_prompt_multiplier.as_integer_ratio()
            return total * numerator // (MICROS * denominator)
        return total // MICROS


# --- Units -----------------------------------------------------------------------------------


def usd_per_mtok_to_micros(value: str | Decimal) -> int:
    """'3.75' (USD per million tokens) -> 3_750_000; ValueError unless exact and >= 0."""
    return _decimal_to_micros(value, scale=MICROS)


def usd_per_ktok_to_micros(value: str | Decimal) -> int:
    """'0.003' (USD per thousand tokens, the Rust original's unit) -> 3_000_000 per Mtok."""
    return _decimal_to_micros(value, scale=1000 * MICROS)


def micros_to_usd_per_mtok(micros: int) -> str:
    """3_750_000 -> '3.75': the exact decimal string, no trailing zeros."""
    return format(Decimal(micros).scaleb(-6).normalize(), "f")


MAX_RATE_MICROS = 10**12  # $1,000,000 per million tokens: anything above is a typo


def _decimal_to_micros(value: str | Decimal, *, scale: int) -> int:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    if number < 0:
        raise ValueError("must not be negative")
    micros = number * scale
    if micros != micros.to_integral_value():
        raise ValueError(f"{value} is not a whole number of micro-dollars per million tokens")
    if micros > MAX_RATE_MICROS:
        raise ValueError("is implausibly large (over $1,000,000 per million tokens)")
    return int(micros)


# --- Model ids -------------------------------------------------------------------------------


def model_base_id(model_id: str) -> tuple[str, str | None]:
    """(base Bedrock model id, inference scope) — strips an ARN (URL-decoded or not) and a
    cross-region prefix: "us.anthropic.claude-opus-5-5" -> ("anthropic.claude-opus-5-5", "us");
    "global.anthropic..." -> (..., "global"); plain id -> (id, None)."""
    text = unquote(model_id.strip())
    if text.startswith("arn:"):
        # arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-...;
        # ...::foundation-model/anthropic.claude-...
        text = text.rsplit("/", 1)[-1]
    head, dot, rest = text.partition(".")
    if dot and head in SCOPES and rest:
        return rest, head
    return text, None


def model_family(model_id: str) -> str | None:
    """'opus', 'sonnet', 'haiku', 'fable', ... or None for a non-Claude id."""
    match = _FAMILY_RE.search(model_base_id(model_id)[0])
    return match.group(1) if match else None


# --- Formatting ------------------------------------------------------------------------------


def micros_usd(micros: int | None) -> str:
    """3_141_593 -> "$3.1416" (four decimals, thousands separated); None -> "unknown"."""
    if micros is None:
        return "unknown"
    dollars = (Decimal(micros) / 1_000_000).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return f"${dollars:,}"


def cents_usd(cents: int | None) -> str:
    """1234 -> "$12.34"; None -> "" (no limit set)."""
    if cents is None:
        return ""
    return f"${(Decimal(cents) / 100).quantize(Decimal('0.01')):,}"


def rate_usd(micros: int) -> str:
    """A rate (micro-dollars per million tokens) as exact dollars, at least two decimals:
    3_750_000 -> "$3.75", 1_250 -> "$0.00125"."""
    dollars = Decimal(micros).scaleb(-6).normalize()
    if int(dollars.as_tuple().exponent) > -2:
        dollars = dollars.quantize(Decimal("0.01"))
    return f"${dollars:,f}"
