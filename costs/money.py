"""Money for people in Django admin: micro-dollars as `$1.2345`, cents as `$12.34`.

Storage and arithmetic stay integers (micro-dollars, or cents for cap limits); these only
format them for reading.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


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
    if dollars.as_tuple().exponent > -2:
        dollars = dollars.quantize(Decimal("0.01"))
    return f"${dollars:,f}"
