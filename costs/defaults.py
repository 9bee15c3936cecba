"""The shipped default prices: Anthropic's list prices for Claude on Bedrock (CLIENTS.md).

Used by the data migration and by `price_defaults_install()`. Rates are USD per million tokens
(input, output, 5-minute cache write, 1-hour cache write, cache read); every model gets a
generic row and a `global` scope row at 10% less. Defaults are effective from 2024-01-01 so
that every call is priced (a model is never called before it exists); dated changes get their
own rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

SINCE = datetime(2024, 1, 1, tzinfo=UTC)
SOURCE = "Anthropic list prices as published late 2026 (CLIENTS.md)"
GLOBAL_SOURCE = (
    "Anthropic list prices as published late 2026; AWS global cross-Region inference page "
    "(global profiles 10% below geographic)"
)
DERIVED = "; cache rates not published, derived: 5m write 1.25x, 1h write 2x, read 0.1x input"


@dataclass(frozen=True)
class DefaultPrice:
    model_id: str
    input: str
    output: str
    cache_write_5m: str
    cache_write_1h: str
    cache_read: str
    effective_from: datetime = SINCE
    long_prompt_threshold_tokens: int | None = None
    long_prompt_multiplier: int | None = None
    note: str = ""


_SONNET_4 = ("3", "15", "3.75", "6", "0.30")
_OPUS_4_5 = ("5", "25", "6.25", "10", "0.50")
_OPUS_4 = ("15", "75", "18.75", "30", "1.50")

LIST_PRICES: tuple[DefaultPrice, ...] = (
    DefaultPrice("anthropic.claude-haiku-4-5-20251001-v1:0", "1", "5", "1.25", "2", "0.10"),
    DefaultPrice("anthropic.claude-sonnet-4-20250514-v1:0", *_SONNET_4),
    DefaultPrice("anthropic.claude-sonnet-4-5-20250929-v1:0", *_SONNET_4),
    DefaultPrice("anthropic.claude-sonnet-4-6", *_SONNET_4),
    DefaultPrice("anthropic.claude-opus-4-20250514-v1:0", *_OPUS_4),
    DefaultPrice("anthropic.claude-opus-4-1-20250805-v1:0", *_OPUS_4),
    DefaultPrice("anthropic.claude-opus-4-5-20251101-v1:0", *_OPUS_4_5),
    DefaultPrice("anthropic.claude-opus-4-6-v1", *_OPUS_4_5),
    DefaultPrice("anthropic.claude-opus-4-7", *_OPUS_4_5),
    DefaultPrice("anthropic.claude-opus-4-8", *_OPUS_4_5),
    DefaultPrice("anthropic.claude-opus-5", *_OPUS_4_5),
    DefaultPrice("anthropic.claude-opus-5-5", "4", "20", "5", "8", "0.20"),
    DefaultPrice("anthropic.claude-sonnet-5", "2", "10", "2.5", "4", "0.20", note=DERIVED),
    DefaultPrice(
        "anthropic.claude-sonnet-5-5",
        *("2", "10", "2.5", "4", "0.20"),
        note="; cache writes derived (1.25x / 2x input); cache read 0.20 before 2026-10-07",
    ),
    DefaultPrice(
        "anthropic.claude-sonnet-5-5",
        *("2", "10", "2.5", "4", "0.10"),
        effective_from=datetime(2026, 10, 7, tzinfo=UTC),
        note="; cache writes derived (1.25x / 2x input); cache read 0.10 since 2026-10-07",
    ),
    DefaultPrice(
        "anthropic.claude-haiku-5-5",
        *("0.10", "0.50", "0.125", "0.20", "0.01"),
        long_prompt_threshold_tokens=100_000,
        long_prompt_multiplier=5,
        note="; 5x on every token above 100,000 prompt tokens",
    ),
    DefaultPrice("anthropic.claude-fable-5-1", "10", "50", "12.5", "20", "1", note=DERIVED),
    DefaultPrice(
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        *("0.80", "4", "1", "1.6", "0.08"),
        note="; Claude 3.5 Haiku (legacy list price, not in CLIENTS.md)",
    ),
)

GLOBAL_DISCOUNT = Decimal("0.9")


def default_rows() -> list[dict]:
    """ModelPrice field values for every default row (generic and global scope)."""
    from costs.money import usd_per_mtok_to_micros

    rows = []
    for price in LIST_PRICES:
        rates = {
            name: usd_per_mtok_to_micros(getattr(price, name))
            for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
        }
        for scope, factor, source in (("", 1, SOURCE), ("global", GLOBAL_DISCOUNT, GLOBAL_SOURCE)):
            row = {
                "model_id": price.model_id,
                "scope": scope,
                "region": "",
                "effective_from": price.effective_from,
                "long_prompt_threshold_tokens": price.long_prompt_threshold_tokens,
                "long_prompt_multiplier": price.long_prompt_multiplier,
                "source": source + price.note,
            }
            for name, micros in rates.items():
                scaled = micros * factor
                if scaled != int(scaled):
                    raise ValueError(f"{price.model_id} {name}: global rate is not exact")
                row[f"{name}_rate"] = int(scaled)
            rows.append(row)
    return rows
