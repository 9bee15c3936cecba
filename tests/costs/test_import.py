"""CSV import of prices (service level): both formats, each kind of bad row, limits."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costs.models import ModelPrice
from costs.money import Usage
from costs.pricing import call_cost_micros
from costs.services import (
    MAX_IMPORT_ROWS,
    OUR_COLUMNS,
    RUST_COLUMNS,
    PriceImportError,
    prices_import_csv,
    prices_import_preview,
)

pytestmark = pytest.mark.django_db

OURS = ",".join(OUR_COLUMNS)
RUST = ",".join(RUST_COLUMNS)
GOOD_ROW = "test.model-a,,,3.75,15,4.6875,7.5,0.375,,,2026-11-01"


def _errors(text: str) -> list[tuple]:
    with pytest.raises(PriceImportError) as info:
        prices_import_csv(text=text)
    return [(error.row, error.field) for error in info.value.errors]


def test_our_format_is_imported_exactly():
    text = (
        f"{OURS},source\n"
        f"{GOOD_ROW},my note\n"
        "global.test.model-b,,,0.10,0.50,0.125,0.20,0.01,100000,5,2026-11-01T12:00:00+01:00,\n"
    )
    result = prices_import_csv(text=text)
    assert (result.format, result.created, result.updated, result.unchanged) == ("gateway", 2, 0, 0)
    a = ModelPrice.objects.get(model_id="test.model-a")
    assert (a.input_rate, a.output_rate, a.cache_write_5m_rate) == (
        3_750_000,
        15_000_000,
        4_687_500,
    )
    assert (a.cache_write_1h_rate, a.cache_read_rate) == (7_500_000, 375_000)
    assert a.effective_from == datetime(2026, 11, 1, tzinfo=UTC)
    assert a.source == "my note"
    b = ModelPrice.objects.get(model_id="test.model-b")
    assert b.scope == "global"  # from the id's prefix
    assert b.effective_from == datetime(2026, 11, 1, 11, 0, tzinfo=UTC)
    assert (b.long_prompt_threshold_tokens, b.long_prompt_multiplier) == (100_000, Decimal(5))
    assert b.cache_read_rate == 10_000


def test_rust_format_is_converted_from_per_thousand_exactly():
    text = (
        f"{RUST}\n"
        "us-east-1,us.anthropic.claude-test-9,Claude Test 9,Anthropic,0.003,0.015,0.0015,0.0075,"
        "0.00375,0.0003,2026-11-01T00:00:00Z\n"
        "eu-west-1,anthropic.claude-test-9,Claude Test 9,Anthropic,0.004,0.02,,,,,1793491200\n"
    )
    result = prices_import_csv(text=text)
    assert (result.format, result.created) == ("rust", 2)
    us = ModelPrice.objects.get(model_id="anthropic.claude-test-9", region="us-east-1")
    assert us.scope == "us"
    assert (us.input_rate, us.output_rate) == (3_000_000, 15_000_000)
    assert (us.cache_write_5m_rate, us.cache_read_rate) == (3_750_000, 300_000)
    assert us.cache_write_1h_rate == 6_000_000  # 2x input: the original had no 1-hour price
    eu = ModelPrice.objects.get(model_id="anthropic.claude-test-9", region="eu-west-1")
    # empty cache prices are derived from input: 5m write 1.25x, read 0.1x
    assert (eu.cache_write_5m_rate, eu.cache_read_rate) == (5_000_000, 400_000)
    assert eu.effective_from == datetime(2026, 11, 1, tzinfo=UTC)  # Unix seconds
    usage = Usage(input_tokens=1_000_000)
    at = datetime(2026, 11, 20, tzinfo=UTC)
    model = "us.anthropic.claude-test-9"
    assert call_cost_micros(model_id=model, usage=usage, at=at, region="us-east-1") == 3_000_000
    eu_model = "eu.anthropic.claude-test-9"
    assert call_cost_micros(model_id=eu_model, usage=usage, at=at, region="eu-west-1") == 4_000_000
    # the us-scoped row does not apply to an eu profile; no row for ap-south-1
    assert call_cost_micros(model_id=eu_model, usage=usage, at=at, region="us-east-1") is None
    assert call_cost_micros(model_id=model, usage=usage, at=at, region="ap-south-1") is None


def test_reimport_upserts_by_model_scope_region_and_date():
    prices_import_csv(text=f"{OURS}\n{GOOD_ROW}\n")
    again = prices_import_csv(text=f"{OURS}\n{GOOD_ROW}\n")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    changed = GOOD_ROW.replace(",3.75,", ",4,")
    result = prices_import_csv(text=f"{OURS}\n{changed}\n")
    assert (result.created, result.updated) == (0, 1)
    assert ModelPrice.objects.get(model_id="test.model-a").input_rate == 4_000_000


def test_preview_says_what_each_row_would_do_and_applies_nothing():
    prices_import_csv(text=f"{OURS}\n{GOOD_ROW}\n")
    other = GOOD_ROW.replace("test.model-a", "test.model-c")
    preview = prices_import_preview(text=f"{OURS}\n{GOOD_ROW}\n{other}\n")
    assert preview.ok
    assert [(row.row, row.action) for row in preview.rows] == [(2, "unchanged"), (3, "create")]
    assert not ModelPrice.objects.filter(model_id="test.model-c").exists()


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("<script>alert(1)</script>,,,1,1,1,1,1,,,2026-11-01", "model_id"),
        ("x'; DROP TABLE costs_modelprice;--,,,1,1,1,1,1,,,2026-11-01", "model_id"),
        ("test.model-z,,,-1,1,1,1,1,,,2026-11-01", "input"),
        ("test.model-z,,,1,abc,1,1,1,,,2026-11-01", "output"),
        ("test.model-z,,,1,1,0.0000001,1,1,,,2026-11-01", "cache_write_5m"),
        ("test.model-z,,,1,1,1,,1,,,2026-11-01", "cache_write_1h"),
        ("test.model-z,,,1,1,1,1,NaN,,,2026-11-01", "cache_read"),
        ("test.model-z,moon,,1,1,1,1,1,,,2026-11-01", "scope"),
        ("eu.test.model-z,us,,1,1,1,1,1,,,2026-11-01", "scope"),
        ("test.model-z,,mars-central-1a,1,1,1,1,1,,,2026-11-01", "region"),
        ("test.model-z,,,1,1,1,1,1,,,yesterday", "effective_from"),
        ("test.model-z,,,1,1,1,1,1,,,", "effective_from"),
        ("test.model-z,,,1,1,1,1,1,100000,,2026-11-01", "long_prompt_multiplier"),
        ("test.model-z,,,1,1,1,1,1,100000,0.5,2026-11-01", "long_prompt_multiplier"),
        ("test.model-z,,,1,1,1,1,1,-5,2,2026-11-01", "long_prompt_threshold_tokens"),
        ("test.model-z,,,1,1,1,1,1,2026-11-01", None),  # too few fields
        (GOOD_ROW, "effective_from"),  # same key as row 2
    ],
)
def test_a_bad_row_rejects_the_whole_file_with_its_row_number(row, field):
    text = f"{OURS}\n{GOOD_ROW}\n{row}\n"
    assert _errors(text) == [(3, field)]
    assert not ModelPrice.objects.filter(model_id__startswith="test.").exists()


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (
            "us-east-1,anthropic.claude-t,T,Anthropic,0.0000000001,0.015,,,,,2026-11-01",
            "input_price",
        ),
        ("us-east-1,anthropic.claude-t,T,Anthropic,0.003,,,,,,2026-11-01", "output_price"),
        (
            "us-east-1,anthropic.claude-t,T,Anthropic,0.003,0.015,-1,,,,2026-11-01",
            "batch_input_price",
        ),
        (
            "us-east-1,anthropic.claude-t,T,Anthropic,0.003,0.015,,,x,,2026-11-01",
            "cache_write_price",
        ),
        ("us-east-1,anthropic.claude-t,T,Anthropic,0.003,0.015,,,,,", "timestamp"),
        ("nowhere,anthropic.claude-t,T,Anthropic,0.003,0.015,,,,,2026-11-01", "region"),
    ],
)
def test_a_bad_rust_row_names_its_column(row, field):
    good = "us-east-1,anthropic.claude-ok,OK,Anthropic,0.003,0.015,,,,,2026-11-01"
    assert _errors(f"{RUST}\n{good}\n{row}\n") == [(3, field)]
    assert (
        not ModelPrice.objects.filter(model_id__startswith="anthropic.claude-")
        .exclude(source__startswith="Anthropic list prices")
        .exists()
    )


def test_every_bad_row_is_reported_not_just_the_first():
    bad = "test.model-z,,,-1,1,1,1,1,,,2026-11-01"
    assert _errors(f"{OURS}\n{bad}\n{GOOD_ROW}\n{bad}\n") == [(2, "input"), (4, "input")]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "model,price\n",
        "model_id,input,output\n",
        f"{OURS},{OUR_COLUMNS[0]}\n",
        f"{RUST},extra\n",
    ],
)
def test_a_wrong_header_is_rejected_with_the_expected_ones(header):
    with pytest.raises(PriceImportError) as info:
        prices_import_csv(text=f"{header}{GOOD_ROW}\n")
    [error] = info.value.errors
    assert error.row == 1
    assert OURS in error.message
    assert RUST in error.message


def test_a_file_with_only_a_header_is_rejected():
    with pytest.raises(PriceImportError) as info:
        prices_import_csv(text=f"{OURS}\n\n")
    assert info.value.errors[0].message == "file has no data rows"


def test_a_file_over_5_mb_is_rejected():
    rows = "\n".join(GOOD_ROW.replace("model-a", f"m{i}") for i in range(110_000))
    text = f"{OURS}\n{rows}\n"
    assert len(text.encode()) > 5 * 1024 * 1024
    with pytest.raises(PriceImportError) as info:
        prices_import_csv(text=text)
    assert [error.message for error in info.value.errors] == ["file is larger than 5 MB"]


def test_a_file_over_50000_rows_is_rejected():
    rows = "\n".join(f"m{i},,,1,1,1,1,1,,,2026-11-01" for i in range(MAX_IMPORT_ROWS + 1))
    with pytest.raises(PriceImportError) as info:
        prices_import_csv(text=f"{OURS}\n{rows}\n")
    assert [error.message for error in info.value.errors] == ["file has more than 50000 rows"]
    assert not ModelPrice.objects.filter(model_id="m0").exists()


def test_markup_in_free_text_is_stored_inertly():
    text = f"{OURS},source\n{GOOD_ROW},<img src=x onerror=alert(1)>\n"
    prices_import_csv(text=text)
    assert ModelPrice.objects.get(model_id="test.model-a").source == "<img src=x onerror=alert(1)>"


def test_header_case_order_and_bom_do_not_matter():
    columns = list(reversed(OUR_COLUMNS))
    values = list(reversed(GOOD_ROW.split(",")))
    text = "\ufeff" + ",".join(c.upper() for c in columns) + "\r\n" + ",".join(values) + "\r\n"
    assert prices_import_csv(text=text).created == 1
