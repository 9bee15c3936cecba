"""What the costs app does: edit prices (one by one or from CSV), list models without a price.

CSV import accepts two formats, told apart by the header row (names case-insensitive, any order):

(a) ours, prices in USD per MILLION tokens as decimal strings::

    model_id,scope,region,input,output,cache_write_5m,cache_write_1h,cache_read,
    long_prompt_threshold_tokens,long_prompt_multiplier,effective_from[,source]

    `scope` (global/us/us-gov/eu/apac/jp/au/ca) and `region` (an AWS region) may be empty
    (= any); a prefixed model id (`us.anthropic...`) sets the scope. The two long-prompt
    columns are both empty or both set. `effective_from` is ISO 8601 (a date means 00:00 UTC;
    no offset means UTC).

(b) the Rust original's, prices in USD per THOUSAND tokens::

    region_id,model_id,model_name,provider,input_price,output_price,batch_input_price,
    batch_output_price,cache_write_price,cache_read_price,timestamp

    `region_id` becomes the row's region, `timestamp` (ISO 8601 or Unix seconds) its
    effective_from, `cache_write_price` its 5-minute write rate; the 1-hour write is 2x input
    (Anthropic's rule; the original had no such price). Empty cache prices are derived from
    input (5m write 1.25x, read 0.1x, floored to a whole micro-dollar per Mtok). Batch prices
    are validated but not stored (the gateway does not proxy batches); model_name/provider are
    informative.

Every price converts exactly to integer micro-dollars per Mtok or the row is rejected. Rows are
numbered as lines of the file (the header is row 1). If any row is bad, nothing is applied; a
good file is applied in one transaction, upserting by (model_id, scope, region, effective_from).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction

from costs.defaults import default_rows
from costs.models import ModelPrice
from costs.money import SCOPES, model_base_id, usd_per_ktok_to_micros, usd_per_mtok_to_micros
from costs.pricing import price_cache_invalidate, price_table

RATE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_IMPORT_ROWS = 50_000
MAX_REPORTED_ERRORS = 200
MAX_SOURCE_LENGTH = 1000

OUR_COLUMNS = (
    "model_id",
    "scope",
    "region",
    "input",
    "output",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
    "long_prompt_threshold_tokens",
    "long_prompt_multiplier",
    "effective_from",
)
OUR_OPTIONAL_COLUMNS = ("source",)
RUST_COLUMNS = (
    "region_id",
    "model_id",
    "model_name",
    "provider",
    "input_price",
    "output_price",
    "batch_input_price",
    "batch_output_price",
    "cache_write_price",
    "cache_read_price",
    "timestamp",
)

_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


class PriceError(ValueError):
    """A price value is invalid; `field` names it."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RowError:
    """One reason a CSV file was rejected; row None is about the whole file."""

    row: int | None
    field: str | None
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


class PriceImportError(Exception):
    """The CSV file was rejected; nothing was applied."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} error(s) in the price file")
        self.errors = errors


@dataclass(frozen=True)
class PriceData:
    """A validated price row, ready to store (rates in micro-USD per million tokens)."""

    model_id: str
    effective_from: datetime
    input_rate: int
    output_rate: int
    cache_write_5m_rate: int
    cache_write_1h_rate: int
    cache_read_rate: int
    scope: str = ""
    region: str = ""
    long_prompt_threshold_tokens: int | None = None
    long_prompt_multiplier: Decimal | None = None
    source: str = ""

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        return (self.model_id, self.scope, self.region, self.effective_from)

    def values(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PreviewRow:
    row: int
    data: PriceData
    action: str  # "create", "update" or "unchanged"


@dataclass
class ImportPreview:
    """What importing a file would do, or why it cannot."""

    format: str | None
    rows: list[PreviewRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class ImportResult:
    format: str
    created: int
    updated: int
    unchanged: int


# --- Field validation (shared by the API and CSV import) -------------------------------------


def price_model_id_clean(value: str) -> tuple[str, str | None]:
    """A base model id and the scope of its prefix, or PriceError."""
    base, scope = model_base_id(value or "")
    if not _MODEL_ID_RE.match(base):
        raise PriceError(
            "model_id", "must be a Bedrock model id (letters, digits and . _ : - only)"
        )
    return base, scope


def price_data_build(
    *,
    model_id: str,
    scope: str,
    region: str,
    rates: dict[str, int],
    effective_from: datetime,
    long_prompt_threshold_tokens: int | None,
    long_prompt_multiplier: Decimal | None,
    source: str,
) -> PriceData:
    """Cross-field checks on already-typed values; PriceError names the field."""
    base, prefix_scope = price_model_id_clean(model_id)
    scope = scope or ""
    if prefix_scope and scope and prefix_scope != scope:
        raise PriceError("scope", f"model id prefix says {prefix_scope!r} but scope is {scope!r}")
    scope = scope or prefix_scope or ""
    if scope and scope not in SCOPES:
        raise PriceError("scope", f"must be empty or one of {', '.join(SCOPES)}")
    if region and not _REGION_RE.match(region):
        raise PriceError("region", "must be empty or an AWS region such as us-east-1")
    if (long_prompt_threshold_tokens is None) != (long_prompt_multiplier is None):
        raise PriceError(
            "long_prompt_multiplier",
            "long_prompt_threshold_tokens and long_prompt_multiplier go together",
        )
    if long_prompt_threshold_tokens is not None and long_prompt_threshold_tokens <= 0:
        raise PriceError("long_prompt_threshold_tokens", "must be a positive number of tokens")
    if long_prompt_multiplier is not None and not (
        Decimal(1) <= long_prompt_multiplier < Decimal(10000)
        and long_prompt_multiplier == round(long_prompt_multiplier, 4)
    ):
        raise PriceError(
            "long_prompt_multiplier", "must be between 1 and 9999 with at most 4 decimals"
        )
    if effective_from.tzinfo is None:
        effective_from = effective_from.replace(tzinfo=UTC)
    if len(source) > MAX_SOURCE_LENGTH:
        raise PriceError("source", f"must be at most {MAX_SOURCE_LENGTH} characters")
    return PriceData(
        model_id=base,
        scope=scope,
        region=region or "",
        effective_from=effective_from.astimezone(UTC),
        input_rate=rates["input"],
        output_rate=rates["output"],
        cache_write_5m_rate=rates["cache_write_5m"],
        cache_write_1h_rate=rates["cache_write_1h"],
        cache_read_rate=rates["cache_read"],
        long_prompt_threshold_tokens=long_prompt_threshold_tokens,
        long_prompt_multiplier=long_prompt_multiplier,
        source=source,
    )


def parse_datetime_utc(value: str) -> datetime:
    """ISO 8601 date or datetime (no offset = UTC), or Unix seconds; ValueError otherwise."""
    text = value.strip()
    if re.fullmatch(r"\d{9,11}", text):
        return datetime.fromtimestamp(int(text), tz=UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date/time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --- CRUD ------------------------------------------------------------------------------------


def price_create(*, data: PriceData) -> ModelPrice:
    """Add a price row; PriceError if one with the same key exists."""
    try:
        with transaction.atomic():
            return ModelPrice.objects.create(**data.values())
    except IntegrityError:
        raise _key_taken() from None


def price_update(*, price: ModelPrice, data: PriceData) -> ModelPrice:
    """Replace a price row's values; PriceError if its new key belongs to another row."""
    for name, value in data.values().items():
        setattr(price, name, value)
    try:
        with transaction.atomic():
            price.save()
    except IntegrityError:
        raise _key_taken() from None
    return price


def price_delete(*, price: ModelPrice) -> None:
    """Delete a price row (calls recorded at it keep their stored cost)."""
    price.delete()


def _key_taken() -> PriceError:
    return PriceError(
        "effective_from",
        "a price for this model, scope and region from this date already exists",
    )


def price_defaults_install() -> int:
    """Upsert the shipped default prices (CLIENTS.md list); returns the number of rows."""
    rows = default_rows()
    with transaction.atomic():
        for row in rows:
            key = {name: row[name] for name in ("model_id", "scope", "region", "effective_from")}
            values = {name: value for name, value in row.items() if name not in key}
            ModelPrice.objects.update_or_create(**key, defaults=values)
    return len(rows)


def models_without_price(model_ids: Iterable[str], at: datetime) -> list[str]:
    """The given model ids (any form) with no price in force at `at`, in order, once each."""
    table = price_table()
    missing: list[str] = []
    for model_id in dict.fromkeys(model_ids):
        base, scope = model_base_id(model_id)
        if table.resolve(base_id=base, scope=scope, region=None, at=at) is None:
            missing.append(model_id)
    return missing


# --- CSV import ------------------------------------------------------------------------------


def prices_import_preview(*, text: str) -> ImportPreview:
    """Parse and validate a price file without applying it; says what each row would do."""
    if len(text) > MAX_IMPORT_BYTES or len(text.encode("utf-8")) > MAX_IMPORT_BYTES:
        return ImportPreview(
            None, errors=[RowError(None, None, f"file is larger than {_mb(MAX_IMPORT_BYTES)}")]
        )
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        return _preview_of(reader)
    except csv.Error as exc:  # a field over csv.field_size_limit(), a broken quote, ...
        message = str(exc)
        if "field limit" in message:
            message = f"has a field longer than {csv.field_size_limit()} characters"
        return ImportPreview(None, errors=[RowError(reader.line_num or 1, None, message)])


def _preview_of(reader) -> ImportPreview:  # a csv.reader
    header = next(reader, None)
    columns = [name.strip().lower() for name in header or []]
    fmt = _detect_format(columns)
    if fmt is None:
        return ImportPreview(None, errors=[RowError(1, None, _header_message(columns))])
    parse = _parse_ours if fmt == "gateway" else _parse_rust

    preview = ImportPreview(fmt)
    seen: dict[tuple, int] = {}
    count = 0
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        row = reader.line_num
        count += 1
        if count > MAX_IMPORT_ROWS:
            preview.errors = [RowError(None, None, f"file has more than {MAX_IMPORT_ROWS} rows")]
            preview.rows = []
            return preview
        if len(record) != len(columns):
            preview.errors.append(
                RowError(row, None, f"has {len(record)} fields, the header has {len(columns)}")
            )
            continue
        try:
            data = parse(dict(zip(columns, (cell.strip() for cell in record), strict=True)))
        except PriceError as exc:
            preview.errors.append(RowError(row, exc.field, exc.message))
            continue
        if data.key in seen:
            preview.errors.append(
                RowError(
                    row,
                    "effective_from",
                    f"same model, scope, region and date as row {seen[data.key]}",
                )
            )
            continue
        seen[data.key] = row
        preview.rows.append(PreviewRow(row, data, "create"))
    if not preview.rows and not preview.errors:
        preview.errors.append(RowError(None, None, "file has no data rows"))
    if preview.errors:
        preview.rows = []
        if len(preview.errors) > MAX_REPORTED_ERRORS:
            more = len(preview.errors) - MAX_REPORTED_ERRORS
            preview.errors = preview.errors[:MAX_REPORTED_ERRORS]
            preview.errors.append(RowError(None, None, f"... and {more} more errors"))
        return preview

    existing = _existing_by_key()
    preview.rows = [
        replace(item, action=_action(existing.get(item.data.key), item.data))
        for item in preview.rows
    ]
    return preview


def prices_import_csv(*, text: str) -> ImportResult:
    """Validate and apply a price file in one transaction; PriceImportError if any row is bad."""
    preview = prices_import_preview(text=text)
    if not preview.ok:
        raise PriceImportError(preview.errors)
    counts = {"create": 0, "update": 0, "unchanged": 0}
    try:
        with transaction.atomic():
            existing = _existing_by_key(lock=True)
            to_create, to_update = [], []
            for item in preview.rows:
                current = existing.get(item.data.key)
                action = _action(current, item.data)
                counts[action] += 1
                if action == "create":
                    to_create.append(ModelPrice(**item.data.values()))
                elif action == "update":
                    for name, value in item.data.values().items():
                        setattr(current, name, value)
                    to_update.append(current)
            ModelPrice.objects.bulk_create(to_create, batch_size=1000)
            ModelPrice.objects.bulk_update(
                to_update, [*_VALUE_FIELDS, "updated_at"], batch_size=1000
            )
            # bulk operations send no signals: invalidate explicitly.
            price_cache_invalidate()
    except IntegrityError:
        raise PriceImportError(
            [RowError(None, None, "prices changed while importing; nothing applied, try again")]
        ) from None
    return ImportResult(
        format=preview.format or "",
        created=counts["create"],
        updated=counts["update"],
        unchanged=counts["unchanged"],
    )


_VALUE_FIELDS = (
    "input_rate",
    "output_rate",
    "cache_write_5m_rate",
    "cache_write_1h_rate",
    "cache_read_rate",
    "long_prompt_threshold_tokens",
    "long_prompt_multiplier",
    "source",
)


def _existing_by_key(*, lock: bool = False) -> dict[tuple, ModelPrice]:
    queryset = ModelPrice.objects.all()
    if lock:
        queryset = queryset.select_for_update()
    return {
        (price.model_id, price.scope, price.region, price.effective_from): price
        for price in queryset
    }


def _action(current: ModelPrice | None, data: PriceData) -> str:
    if current is None:
        return "create"
    values = data.values()
    if all(getattr(current, name) == values[name] for name in _VALUE_FIELDS):
        return "unchanged"
    return "update"


def _detect_format(columns: list[str]) -> str | None:
    names = set(columns)
    if len(names) != len(columns):
        return None
    if set(OUR_COLUMNS) <= names <= set(OUR_COLUMNS + OUR_OPTIONAL_COLUMNS):
        return "gateway"
    if names == set(RUST_COLUMNS):
        return "rust"
    return None


def _header_message(columns: list[str]) -> str:
    return (
        f"unrecognised header {','.join(columns) or '(empty file)'!s}; expected either "
        f"{','.join(OUR_COLUMNS)}[,source] (USD per million tokens) or "
        f"{','.join(RUST_COLUMNS)} (USD per thousand tokens)"
    )


def _mb(size: int) -> str:
    return f"{size // (1024 * 1024)} MB"


def _rate(record: dict, column: str, convert, field_name: str | None = None) -> int:
    value = record[column]
    if value == "":
        raise PriceError(field_name or column, "is required")
    try:
        return convert(value)
    except ValueError as exc:
        raise PriceError(field_name or column, str(exc)) from None


def _optional_int(record: dict, column: str) -> int | None:
    value = record[column]
    if value == "":
        return None
    if not re.fullmatch(r"\d{1,15}", value):
        raise PriceError(column, f"{value!r} is not a whole number of tokens")
    return int(value)


def _optional_decimal(record: dict, column: str) -> Decimal | None:
    value = record[column]
    if value == "":
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise PriceError(column, f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise PriceError(column, f"{value!r} is not a finite number")
    return number


def _datetime(record: dict, column: str) -> datetime:
    value = record[column]
    if value == "":
        raise PriceError(column, "is required")
    try:
        return parse_datetime_utc(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise PriceError(column, str(exc)) from None


def _parse_ours(record: dict) -> PriceData:
    rates = {name: _rate(record, name, usd_per_mtok_to_micros) for name in RATE_FIELDS}
    return price_data_build(
        model_id=record["model_id"],
        scope=record["scope"].lower(),
        region=record["region"].lower(),
        rates=rates,
        effective_from=_datetime(record, "effective_from"),
        long_prompt_threshold_tokens=_optional_int(record, "long_prompt_threshold_tokens"),
        long_prompt_multiplier=_optional_decimal(record, "long_prompt_multiplier"),
        source=record.get("source", "") or "Imported from CSV",
    )


def _parse_rust(record: dict) -> PriceData:
    input_rate = _rate(record, "input_price", usd_per_ktok_to_micros, "input_price")
    output_rate = _rate(record, "output_price", usd_per_ktok_to_micros, "output_price")
    for column in ("batch_input_price", "batch_output_price"):
        if record[column]:
            _rate(record, column, usd_per_ktok_to_micros)
    write_5m = (
        _rate(record, "cache_write_price", usd_per_ktok_to_micros)
        if record["cache_write_price"]
        else input_rate * 5 // 4
    )
    read = (
        _rate(record, "cache_read_price", usd_per_ktok_to_micros)
        if record["cache_read_price"]
        else input_rate // 10
    )
    name = " ".join(part for part in (record["provider"], record["model_name"]) if part)
    return price_data_build(
        model_id=record["model_id"],
        scope="",
        region=record["region_id"].lower(),
        rates={
            "input": input_rate,
            "output": output_rate,
            "cache_write_5m": write_5m,
            "cache_write_1h": input_rate * 2,
            "cache_read": read,
        },
        effective_from=_datetime(record, "timestamp"),
        long_prompt_threshold_tokens=None,
        long_prompt_multiplier=None,
        source=f"Imported from the Rust original's CSV ({name[:200]})"
        if name
        else "Imported from the Rust original's CSV",
    )
