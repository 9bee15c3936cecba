"""Cost arithmetic and price lookup, each CLIENTS.md price rule pinned with a number."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from costs.models import ModelPrice
from costs.money import (
    Price,
    Usage,
    micros_to_usd_per_mtok,
    model_base_id,
    model_family,
    usd_per_ktok_to_micros,
    usd_per_mtok_to_micros,
)
from costs.pricing import (
    acall_cost_micros,
    aestimate_cost_micros,
    call_cost_micros,
    estimate_cost_micros,
)
from costs.services import models_without_price

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MTOK = 1_000_000
OPUS_5_5 = "us.anthropic.claude-opus-5-5"
SONNET_5_5 = "us.anthropic.claude-sonnet-5-5"
HAIKU_5_5 = "us.anthropic.claude-haiku-5-5"


def cost(model_id, at=NOW, region=None, **tokens):
    return call_cost_micros(model_id=model_id, usage=Usage(**tokens), at=at, region=region)


# --- Usage ----------------------------------------------------------------------------------


def test_usage_cap_tokens_count_cache_writes_but_not_reads():
    usage = Usage(
        input_tokens=10,
        output_tokens=20,
        cache_write_5m_tokens=300,
        cache_write_1h_tokens=4000,
        cache_read_tokens=50000,
    )
    assert usage.cache_write_tokens == 4300
    assert usage.cap_tokens == 10 + 20 + 4300
    assert usage.prompt_tokens == 10 + 4300 + 50000


def test_usages_add_field_by_field():
    total = Usage(1, 2, 3, 4, 5) + Usage(10, 20, 30, 40, 50)
    assert total == Usage(11, 22, 33, 44, 55)


# --- Pure arithmetic --------------------------------------------------------------------------


def _price(**overrides):
    values = {
        "model_id": "m",
        "scope": "",
        "region": "",
        "input": 3_000_000,
        "output": 15_000_000,
        "cache_write_5m": 3_750_000,
        "cache_write_1h": 6_000_000,
        "cache_read": 300_000,
        "effective_from": NOW,
    }
    return Price(**{**values, **overrides})


def test_each_token_kind_is_priced_at_its_own_rate():
    price = _price()
    assert price.cost_micros(Usage(input_tokens=MTOK)) == 3_000_000
    assert price.cost_micros(Usage(output_tokens=MTOK)) == 15_000_000
    assert price.cost_micros(Usage(cache_write_5m_tokens=MTOK)) == 3_750_000
    assert price.cost_micros(Usage(cache_write_1h_tokens=MTOK)) == 6_000_000
    assert price.cost_micros(Usage(cache_read_tokens=MTOK)) == 300_000


def test_cost_is_floored_once_over_the_whole_call():
    price = _price(input=400_000, output=400_000, cache_read=400_000)
    usage = Usage(input_tokens=1, output_tokens=1, cache_read_tokens=1)
    # 0.4 + 0.4 + 0.4 = 1.2 -> 1 micro-dollar; flooring each part would give 0.
    assert price.cost_micros(usage) == 1
    assert price.cost_micros(Usage(input_tokens=2)) == 0


def test_long_prompt_multiplier_is_an_exact_fraction():
    price = _price(long_prompt_threshold_tokens=10, long_prompt_multiplier=Decimal("1.5"))
    assert price.cost_micros(Usage(input_tokens=10)) == 30
    # 11 tokens x 3 = 33 micro-dollars, x 1.5 = 49.5 -> 49
    assert price.cost_micros(Usage(input_tokens=11)) == 49


# --- Units ------------------------------------------------------------------------------------


def test_usd_strings_convert_exactly_both_ways():
    assert usd_per_mtok_to_micros("3.75") == 3_750_000
    assert usd_per_mtok_to_micros("0.000001") == 1
    assert usd_per_ktok_to_micros("0.003") == 3_000_000
    assert usd_per_ktok_to_micros("0.00000125") == 1_250
    assert micros_to_usd_per_mtok(3_750_000) == "3.75"
    assert micros_to_usd_per_mtok(10_000_000) == "10"
    assert micros_to_usd_per_mtok(0) == "0"


@pytest.mark.parametrize("bad", ["0.0000001", "-1", "abc", "NaN", "Infinity", "", "2000000"])
def test_usd_values_that_are_not_exact_micro_dollars_are_refused(bad):
    with pytest.raises(ValueError):  # noqa: PT011 - messages checked in the import tests
        usd_per_mtok_to_micros(bad)


# --- Model ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("us.anthropic.claude-opus-5-5", ("anthropic.claude-opus-5-5", "us")),
        ("global.anthropic.claude-opus-5-5", ("anthropic.claude-opus-5-5", "global")),
        ("apac.anthropic.claude-sonnet-4-6", ("anthropic.claude-sonnet-4-6", "apac")),
        ("anthropic.claude-opus-5-5", ("anthropic.claude-opus-5-5", None)),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-opus-4-7",
            ("anthropic.claude-opus-4-7", "eu"),
        ),
        (
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.anthropic.claude-opus-5-5",
            ("anthropic.claude-opus-5-5", "us"),
        ),
        (
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0",
            ("anthropic.claude-haiku-4-5-20251001-v1:0", None),
        ),
    ],
)
def test_model_base_id_strips_arn_and_prefix(model_id, expected):
    assert model_base_id(model_id) == expected


def test_model_family_reads_old_and_new_names():
    assert model_family("us.anthropic.claude-opus-5-5") == "opus"
    assert model_family("anthropic.claude-3-5-haiku-20241022-v1:0") == "haiku"
    assert model_family("anthropic.claude-fable-5-1") == "fable"
    assert model_family("amazon.nova-pro-v1:0") is None


# --- The shipped defaults, rule by rule (CLIENTS.md) ----------------------------------------


def test_opus_5_5_prices_every_token_kind(default_prices):
    # 1000 x 4 + 500 x 20 + 2000 x 5 + 1000 x 8 + 10000 x 0.20 (USD/Mtok) = 34,000 micro-USD
    assert (
        cost(
            OPUS_5_5,
            input_tokens=1000,
            output_tokens=500,
            cache_write_5m_tokens=2000,
            cache_write_1h_tokens=1000,
            cache_read_tokens=10000,
        )
        == 34_000
    )


def test_opus_5_5_cache_read_is_a_twentieth_of_input(default_prices):
    assert cost(OPUS_5_5, input_tokens=MTOK) == 4_000_000
    assert cost(OPUS_5_5, cache_read_tokens=MTOK) == 200_000


def test_one_hour_cache_writes_cost_more_than_five_minute_ones(default_prices):
    assert cost("us.anthropic.claude-sonnet-4-6", cache_write_5m_tokens=MTOK) == 3_750_000
    assert cost("us.anthropic.claude-sonnet-4-6", cache_write_1h_tokens=MTOK) == 6_000_000


def test_cache_reads_are_not_billed_as_input(default_prices):
    assert cost("us.anthropic.claude-sonnet-4-6", cache_read_tokens=MTOK) == 300_000
    assert cost("us.anthropic.claude-haiku-4-5-20251001-v1:0", cache_read_tokens=MTOK) == 100_000


def test_sonnet_5_5_cache_read_halves_on_2026_10_07(default_prices):
    change = datetime(2026, 10, 7, tzinfo=UTC)
    before = change - timedelta(microseconds=1)
    assert cost(SONNET_5_5, at=before, cache_read_tokens=MTOK) == 200_000
    assert cost(SONNET_5_5, at=change, cache_read_tokens=MTOK) == 100_000
    # the other rates did not change
    assert cost(SONNET_5_5, at=before, input_tokens=MTOK) == 2_000_000
    assert cost(SONNET_5_5, at=change, input_tokens=MTOK) == 2_000_000


def test_haiku_5_5_long_prompt_tier_starts_above_100000_prompt_tokens(default_prices):
    # 100,000 x 0.10 + 1,000 x 0.50 = 10,500 micro-USD
    assert cost(HAIKU_5_5, input_tokens=100_000, output_tokens=1_000) == 10_500
    # one token more: every token x5, output included: (10,000.1 + 500) x 5 = 52,500.5 -> 52,500
    assert cost(HAIKU_5_5, input_tokens=100_001, output_tokens=1_000) == 52_500


def test_haiku_5_5_tier_counts_cache_reads_and_writes_as_prompt(default_prices):
    tokens = {"input_tokens": 50_000, "cache_read_tokens": 30_000, "output_tokens": 2_000}
    # 5,000 + 300 + 20,000 x 0.125 = 2,500 + 1,000 output = 8,800
    assert cost(HAIKU_5_5, cache_write_5m_tokens=20_000, **tokens) == 8_800
    # 100,001 prompt tokens: (5,000 + 300 + 2,500.125 + 1,000) x 5 = 44,000.625 -> 44,000
    assert cost(HAIKU_5_5, cache_write_5m_tokens=20_001, **tokens) == 44_000


def test_global_profiles_cost_ten_percent_less(default_prices):
    usage = {"input_tokens": MTOK}
    assert cost("global.anthropic.claude-opus-5-5", **usage) == 3_600_000
    assert cost("us.anthropic.claude-opus-5-5", **usage) == 4_000_000
    assert cost("eu.anthropic.claude-opus-5-5", **usage) == 4_000_000
    # 100,000 cache reads (at the tier threshold, not above) at 0.009 instead of 0.01
    assert cost("global.anthropic.claude-haiku-5-5", cache_read_tokens=100_000) == 900
    assert cost("us.anthropic.claude-haiku-5-5", cache_read_tokens=100_000) == 1_000


def test_arn_model_ids_are_priced_by_their_profile(default_prices):
    arn = (
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-opus-5-5"
    )
    assert cost(arn, input_tokens=MTOK) == 3_600_000
    encoded = (
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-opus-5-5"
    )
    assert cost(encoded, input_tokens=MTOK) == 4_000_000


def test_every_model_clients_md_lists_has_a_default_price(default_prices):
    listed = [
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-sonnet-4-6",
        "anthropic.claude-opus-4-20250514-v1:0",
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "anthropic.claude-opus-4-5-20251101-v1:0",
        "anthropic.claude-opus-4-6-v1",
        "anthropic.claude-opus-4-7",
        "anthropic.claude-opus-4-8",
        "anthropic.claude-opus-5",
        "anthropic.claude-sonnet-5",
        "anthropic.claude-opus-5-5",
        "anthropic.claude-sonnet-5-5",
        "anthropic.claude-haiku-5-5",
        "anthropic.claude-fable-5-1",
    ]
    for scope in ("", "us.", "global."):
        assert models_without_price([scope + model for model in listed], NOW) == []
    assert cost("us.anthropic.claude-opus-4-1-20250805-v1:0", output_tokens=MTOK) == 75_000_000
    assert cost("us.anthropic.claude-haiku-4-5-20251001-v1:0", output_tokens=MTOK) == 5_000_000
    assert cost("us.anthropic.claude-fable-5-1", input_tokens=MTOK) == 10_000_000


# --- Unknown models ---------------------------------------------------------------------------


def test_unknown_model_has_no_cost_but_an_estimate_at_its_familys_dearest(default_prices):
    usage = Usage(input_tokens=MTOK)
    assert call_cost_micros(model_id="us.anthropic.claude-opus-6", usage=usage, at=NOW) is None
    # dearest opus: Opus 4 / 4.1 at $15 input
    assert estimate_cost_micros(model_id="us.anthropic.claude-opus-6", usage=usage, at=NOW) == (
        15_000_000
    )
    # dearest haiku: Haiku 4.5 at $1 (Haiku 5.5 is 0.10, x5 above 100k = 0.50)
    assert estimate_cost_micros(model_id="anthropic.claude-haiku-6", usage=usage, at=NOW) == (
        1_000_000
    )
    # through a global profile, the dearest global price
    assert estimate_cost_micros(
        model_id="global.anthropic.claude-haiku-6", usage=usage, at=NOW
    ) == (900_000)


def test_unknown_family_is_estimated_at_the_dearest_price_overall(default_prices):
    usage = Usage(output_tokens=MTOK)
    for model_id in ("us.anthropic.claude-mythos-5", "amazon.nova-pro-v1:0"):
        assert call_cost_micros(model_id=model_id, usage=usage, at=NOW) is None
        assert estimate_cost_micros(model_id=model_id, usage=usage, at=NOW) == 75_000_000


def test_known_model_estimate_equals_its_cost(default_prices):
    usage = Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=89)
    assert estimate_cost_micros(model_id=OPUS_5_5, usage=usage, at=NOW) == call_cost_micros(
        model_id=OPUS_5_5, usage=usage, at=NOW
    )


def test_models_without_price_names_only_the_unpriced_ones(default_prices):
    ids = ["us.anthropic.claude-opus-5-5", "anthropic.claude-opus-6", "anthropic.claude-opus-6"]
    assert models_without_price(ids, NOW) == ["anthropic.claude-opus-6"]


# --- Effective dates and specificity -----------------------------------------------------------


def _row(*, effective_from, input_usd, scope="", region="", model_id="test.model-x"):
    return ModelPrice.objects.create(
        model_id=model_id,
        scope=scope,
        region=region,
        input_rate=usd_per_mtok_to_micros(input_usd),
        output_rate=0,
        cache_write_5m_rate=0,
        cache_write_1h_rate=0,
        cache_read_rate=0,
        effective_from=effective_from,
    )


def test_the_price_in_force_at_the_calls_time_applies():
    _row(effective_from=datetime(2026, 1, 1, tzinfo=UTC), input_usd="1")
    _row(effective_from=datetime(2026, 6, 1, tzinfo=UTC), input_usd="2")
    assert cost("test.model-x", at=datetime(2025, 12, 31, tzinfo=UTC), input_tokens=MTOK) is None
    assert cost("test.model-x", at=datetime(2026, 3, 1, tzinfo=UTC), input_tokens=MTOK) == MTOK
    assert cost("test.model-x", at=datetime(2026, 6, 1, tzinfo=UTC), input_tokens=MTOK) == 2 * MTOK


def test_a_naive_call_time_is_taken_as_utc():
    _row(effective_from=datetime(2026, 6, 1, tzinfo=UTC), input_usd="2")
    assert cost("test.model-x", at=datetime(2026, 6, 1), input_tokens=MTOK) == 2 * MTOK
    assert cost("test.model-x", at=datetime(2026, 5, 31, 23, 59), input_tokens=MTOK) is None


def test_region_row_beats_scope_row_beats_generic_row():
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    _row(effective_from=new, input_usd="10")
    _row(effective_from=old, input_usd="8", scope="us")
    _row(effective_from=old, input_usd="7", region="us-west-2")
    _row(effective_from=old, input_usd="6", scope="us", region="us-west-2")
    usage = {"input_tokens": MTOK}
    assert cost("eu.test.model-x", **usage) == 10 * MTOK
    assert cost("us.test.model-x", **usage) == 8 * MTOK
    assert cost("eu.test.model-x", region="us-west-2", **usage) == 7 * MTOK
    assert cost("us.test.model-x", region="us-west-2", **usage) == 6 * MTOK
    assert cost("test.model-x", region="us-east-1", **usage) == 10 * MTOK


async def test_async_lookups_match_the_sync_ones(default_prices):
    usage = Usage(input_tokens=MTOK)
    try:
        # cold: the table is loaded in a worker thread (from the migration's committed rows)
        assert await acall_cost_micros(model_id=OPUS_5_5, usage=usage, at=NOW) == 4_000_000
        # warm: no I/O at all
        assert await aestimate_cost_micros(
            model_id="anthropic.claude-opus-6", usage=usage, at=NOW
        ) == (15_000_000)
    finally:
        # the worker thread's own connection would otherwise hold the test database open
        await sync_to_async(connections.close_all)()
