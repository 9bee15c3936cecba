"""HTML pages of usage: the dashboard, the records table with filters, and its CSV export.

Figures come from the same selectors as the JSON API (persisted summaries merged with the live
counters); the pages' JavaScript then polls that API to keep them current.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.models import ApiKey
from config import clock
from usage import selectors
from usage.models import UsageRecord
from usage.services import Totals
from usage.windows import period_end, period_start

PAGE_SIZE = 50
EXPORT_BATCH = 1000
RECENT_CALLS = 10
# Spreadsheet programs run a cell starting with one of these as a formula (CSV injection):
# OWASP's list, plus the full-width forms some spreadsheets normalise to their ASCII twins.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


# --- Presentation ---------------------------------------------------------------------------


def usd(micros: int | None) -> str:
    """Micro-dollars for people: cents under a dollar keep four decimals, else two."""
    if micros is None:
        return "unknown"
    dollars = Decimal(micros) / 1_000_000
    places = Decimal("0.01") if abs(dollars) >= 1 else Decimal("0.0001")
    return f"${dollars.quantize(places):,}"


def cap_tokens(totals: Totals) -> int:
    """Tokens as caps count them: input + output + cache writes (cache reads count as cost)."""
    return totals.input_tokens + totals.output_tokens + totals.cache_write_tokens


def _figures(totals: Totals) -> dict:
    return {
        "cost": usd(totals.cost_micros),
        "tokens": cap_tokens(totals),
        "cache_read_tokens": totals.cache_read_tokens,
        "requests": totals.requests,
        "unknown_cost_requests": totals.unknown_cost_requests,
    }


# --- Dashboard ------------------------------------------------------------------------------


@never_cache
@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Spend and tokens today and this month, a chart over time, per model, recent calls."""
    now = clock.now()
    day = period_start("daily", now)
    month = period_start("monthly", now)
    user_id = request.user.pk
    today = selectors.usage_summary(
        user_id=user_id, start=day, end=day + timedelta(days=1), group_by="hour"
    )
    this_month = selectors.usage_summary(
        user_id=user_id, start=month, end=period_end("monthly", month), group_by="day"
    )
    by_model = sorted(this_month.by_model, key=lambda item: -(item[1].cost_micros or 0))
    return render(
        request,
        "dashboard/index.html",
        {
            "today": _figures(today.totals),
            "month": _figures(this_month.totals),
            "day_label": day.strftime("%a %d %b %Y"),
            "month_label": month.strftime("%B %Y"),
            "by_model": [
                {
                    "model": model,
                    "requests": t.requests,
                    "tokens": cap_tokens(t),
                    "cost": usd(t.cost_micros),
                }
                for model, t in by_model
            ],
            "recent": selectors.records_query(user_id=user_id)[:RECENT_CALLS],
            "has_keys": ApiKey.objects.filter(user_id=user_id).exists(),
        },
    )


# --- Records table and export ---------------------------------------------------------------


class UsageFilterForm(forms.Form):
    """The usage page's filters; `from`/`to` are whole UTC days, `to` included."""

    model = forms.ChoiceField(required=False, label="Model")
    key = forms.TypedChoiceField(required=False, label="API key", coerce=int, empty_value=None)
    status = forms.ChoiceField(
        required=False,
        label="Result",
        choices=[("", "Any"), ("success", "Success"), ("error", "Errors")],
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword: declared here so that the query string matches the API's.
        date_input = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
        self.fields["from"] = forms.DateField(required=False, label="From", widget=date_input)
        self.fields["to"] = forms.DateField(required=False, label="To", widget=date_input)
        models = (
            UsageRecord.objects.filter(user=user)
            .values_list("base_model_id", flat=True)
            .distinct()
            .order_by("base_model_id")
        )
        self.fields["model"].choices = [("", "All models"), *((m, m) for m in models)]
        keys = ApiKey.objects.filter(user=user).order_by("-created_at")
        self.fields["key"].choices = [
            ("", "All keys"),
            *((k.pk, f"{k.name} ({k.hint})") for k in keys),
        ]
        self.order_fields(["model", "key", "from", "to", "status"])

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("from"), cleaned.get("to")
        if start and end and end < start:
            self.add_error("to", "Must be on or after the start date.")
        return cleaned

    def query(self, user_id: int):  # a QuerySet of UsageRecord
        data = self.cleaned_data
        return selectors.records_query(
            user_id=user_id,
            model=data.get("model") or None,
            start=_day_start(data.get("from")),
            end=_day_start(data["to"] + timedelta(days=1)) if data.get("to") else None,
            api_key_id=data.get("key"),
            status=data.get("status") or None,
        )


def _day_start(day: date | None) -> datetime | None:
    return datetime.combine(day, time.min, tzinfo=UTC) if day else None


@never_cache
@login_required
@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    """The caller's records, filtered and paginated."""
    form = UsageFilterForm(request.GET, user=request.user)
    page = None
    if form.is_valid():
        paginator = Paginator(form.query(request.user.pk), PAGE_SIZE)
        page = paginator.get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "usage/records.html",
        {"form": form, "page": page, "filter_query": params.urlencode()},
    )


def csv_safe(value: object) -> object:
    """A cell that a spreadsheet will not run as a formula."""
    # Leading spaces or line feeds are skipped by some spreadsheets before a formula sign.
    if isinstance(value, str) and value.lstrip(" \n").startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


CSV_HEADER = [
    "started_at",
    "model_id",
    "base_model_id",
    "route",
    "streaming",
    "api_key",
    "api_key_name",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "cost_usd",
    "upstream_status",
    "error_type",
    "latency_ms",
    "client_family",
    "session_id",
    "request_id",
]


def _csv_row(record: UsageRecord) -> list:
    cost = (
        None
        if record.cost_micros is None
        else str((Decimal(record.cost_micros) / 1_000_000).quantize(Decimal("0.000001")))
    )
    key = record.api_key
    return [
        record.started_at.isoformat(),
        record.model_id,
        record.base_model_id,
        record.route,
        record.streaming,
        key.hint if key else "",
        key.name if key else "",
        record.input_tokens,
        record.output_tokens,
        record.cache_write_5m_tokens,
        record.cache_write_1h_tokens,
        record.cache_read_tokens,
        cost if cost is not None else "",
        record.upstream_status,
        record.error_type or "",
        record.latency_ms,
        record.client_family,
        record.session_id or "",
        record.request_id,
    ]


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a stream."""

    def write(self, value: str) -> str:
        return value


def csv_lines(records: Iterable[UsageRecord]) -> Iterator[str]:
    """The export, one CSV line at a time (header first)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for record in records:
        yield writer.writerow([csv_safe(cell) for cell in _csv_row(record)])


def _batch_after(rows: QuerySet, last: UsageRecord | None) -> list[UsageRecord]:
    """The next batch in the selector's order (newest first): keyset, so no OFFSET scans."""
    if last is not None:
        rows = rows.filter(
            Q(started_at__lt=last.started_at) | Q(started_at=last.started_at, id__lt=last.pk)
        )
    return list(rows[:EXPORT_BATCH])


async def _csv_stream(rows: QuerySet) -> AsyncIterator[str]:
    # Async, batch by batch: under ASGI a sync iterator would be read whole before sending.
    fetch = sync_to_async(_batch_after)
    yield "".join(csv_lines([]))
    last = None
    while batch := await fetch(rows, last):
        lines = csv_lines(batch)
        next(lines)  # the header, already sent
        yield "".join(lines)
        last = batch[-1]


@login_required
@require_GET
def usage_export_csv(request: HttpRequest) -> HttpResponse:
    """The filtered records as CSV, streamed (the filters of the usage page)."""
    form = UsageFilterForm(request.GET, user=request.user)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in form.errors.items())
        return HttpResponse(errors, status=400, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(
        _csv_stream(form.query(request.user.pk)), content_type="text/csv; charset=utf-8"
    )
    stamp = clock.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="usage-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


# --- Sessions -------------------------------------------------------------------------------


class SessionFilterForm(forms.Form):
    """The sessions page's range: whole UTC days, `to` included (sessions with a call in it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        date_input = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
        self.fields["from"] = forms.DateField(required=False, label="From", widget=date_input)
        self.fields["to"] = forms.DateField(required=False, label="To", widget=date_input)

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("from"), cleaned.get("to")
        if start and end and end < start:
            self.add_error("to", "Must be on or after the start date.")
        return cleaned

    def query(self, user_id: int):  # a values QuerySet of sessions
        data = self.cleaned_data
        return selectors.sessions_query(
            user_id=user_id,
            start=_day_start(data.get("from")),
            end=_day_start(data["to"] + timedelta(days=1)) if data.get("to") else None,
        )


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@never_cache
@login_required
@require_GET
def sessions_page(request: HttpRequest) -> HttpResponse:
    """The caller's Claude Code sessions: calls, tokens, cost and models per session."""
    form = SessionFilterForm(request.GET)
    page = None
    sessions: list[dict] = []
    if form.is_valid():
        paginator = Paginator(form.query(request.user.pk), PAGE_SIZE)
        page = paginator.get_page(request.GET.get("page"))
        for row in selectors.session_rows(user_id=request.user.pk, page=page.object_list):
            totals = row["totals"]
            sessions.append(
                {
                    **row,
                    "duration": _duration(row["duration_seconds"]),
                    "calls": totals.requests,
                    "tokens": cap_tokens(totals),
                    "cache_read_tokens": totals.cache_read_tokens,
                    "cost": usd(totals.cost_micros),
                    "unknown_cost_calls": totals.unknown_cost_requests,
                }
            )
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "usage/sessions.html",
        {"form": form, "page": page, "sessions": sessions, "filter_query": params.urlencode()},
    )
