"""DRF views of usage: a user's own records and summaries, and the admin variants over all."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdminUser  # is_superuser, not is_staff
from config import clock
from config.errors import ApiSchema, ErrorDetailSerializer
from config.pagination import ApiPagination
from usage import selectors
from usage.models import UsageRecord
from usage.services import Totals
from usage.views import csv_safe
from usage.windows import HOUR, ceil_hour, floor_hour, period_start

MAX_SUMMARY_DAYS = 400
# The moments a range may name: whole hours and a bare date's next day stay representable
# (datetime's years 1-9999), so no arithmetic on them overflows (a 500).
MIN_MOMENT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_MOMENT = datetime(9000, 1, 1, tzinfo=UTC)
INT64_MAX = 2**63 - 1


def cost_usd(micros: int | None) -> str | None:
    """Micro-dollars as an exact decimal string with six places; None stays None."""
    if micros is None:
        return None
    return str((Decimal(micros) / 1_000_000).quantize(Decimal("0.000001")))


def cost_cents(micros: int) -> str:
    """Micro-dollars as exact cents with four places (derived from the sum, never rounded per
    call)."""
    return str((Decimal(micros) / 10_000).quantize(Decimal("0.0001")))


# --- Input ----------------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class MomentField(serializers.Field):
    """An ISO date or datetime (UTC if no offset). As an end, a bare date includes that day."""

    default_error_messages = {
        "invalid": "Enter an ISO date (YYYY-MM-DD) or datetime (YYYY-MM-DDTHH:MM[:SS][Z]).",
        "range": "Enter a moment between 1900 and 9000.",
    }

    def __init__(self, *, end: bool = False, **kwargs) -> None:
        self.end = end
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> datetime:
        text = str(data).strip()
        # A bare date first: parse_datetime would take "2026-11-25" as midnight.
        try:
            day = parse_date(text)
            moment = None if day else parse_datetime(text)
        except ValueError:
            self.fail("invalid")
        if moment is None and day is None:
            self.fail("invalid")
        if moment is None:
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            moment = moment + timedelta(days=1) if self.end and day.year < 9999 else moment
        try:
            moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except OverflowError:  # an offset that moves year 1 or 9999 out of range
            self.fail("range")
        if not MIN_MOMENT <= moment <= MAX_MOMENT:
            self.fail("range")
        return moment

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class RangeSerializer(serializers.Serializer):
    """`from` / `to` (keywords in Python, hence declared in get_fields)."""

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = MomentField(required=False)
        fields["to"] = MomentField(required=False, end=True)
        return fields

    def validate(self, attrs: dict) -> dict:
        start, end = attrs.get("from"), attrs.get("to")
        if start is not None and end is not None and end <= start:
            raise serializers.ValidationError({"to": ["Must be after 'from'."]})
        return attrs


@extend_schema_field(OpenApiTypes.STR)
class StatusField(serializers.Field):
    default_error_messages = {"invalid": "Enter an HTTP status (100-599), 'success' or 'error'."}

    def to_internal_value(self, data: object) -> int | str:
        text = str(data).strip().lower()
        if text in ("success", "error"):
            return text
        if text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
            return int(text)
        return self.fail("invalid")  # fail() raises


class RecordFilterSerializer(RangeSerializer):
    model = serializers.CharField(required=False, max_length=300)
    key = serializers.IntegerField(required=False, min_value=1, max_value=INT64_MAX)
    status = StatusField(required=False)


class AdminRecordFilterSerializer(RecordFilterSerializer):
    user = serializers.IntegerField(required=False, min_value=1, max_value=INT64_MAX)


class SummaryQuerySerializer(RangeSerializer):
    group_by = serializers.ChoiceField(
        choices=["hour", "day", "week", "month"], required=False, default="day"
    )

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        now = clock.now()
        end = attrs.get("to") or now
        start = attrs.get("from") or (
            floor_hour(now).replace(hour=0) - timedelta(days=29)
            if "to" not in attrs
            else end - timedelta(days=30)
        )
        if end <= start:
            raise serializers.ValidationError({"from": ["Must be before 'to'."]})
        if end - start > timedelta(days=MAX_SUMMARY_DAYS):
            raise serializers.ValidationError(
                {"to": [f"The range may span at most {MAX_SUMMARY_DAYS} days."]}
            )
        # Summaries are hourly: the range widens to whole hours.
        attrs["start"], attrs["end"] = floor_hour(start), ceil_hour(end)
        return attrs


class AdminSummaryQuerySerializer(SummaryQuerySerializer):
    group_by = serializers.ChoiceField(
        choices=["hour", "day", "week", "month", "user", "team"],
        required=False,
        default="day",
        help_text="`user`: one row per user (`by_user`), dearest first, instead of periods; "
        "`team`: one row per team (`by_team`, the team at call time; `team_id` null for users "
        "in no team), dearest first.",
    )
    user = serializers.IntegerField(required=False, min_value=1, max_value=INT64_MAX)


class ChargebackQuerySerializer(SummaryQuerySerializer):
    """`from` (default: the first day of last month) and `to` (default: now)."""

    group_by = serializers.ChoiceField(
        choices=["user", "team"],
        required=False,
        default="user",
        help_text="`user`: a row per user, team and month; `team`: a row per team and month.",
    )

    def validate(self, attrs: dict) -> dict:
        if "from" not in attrs:
            last_month = period_start("monthly", period_start("monthly", clock.now()) - HOUR)
            attrs["from"] = min(last_month, attrs["to"] - HOUR) if "to" in attrs else last_month
        return super().validate(attrs)


# --- Output ---------------------------------------------------------------------------------


class RecordSerializer(serializers.ModelSerializer):
    cache_write_tokens = serializers.IntegerField(read_only=True)
    cost_usd = serializers.SerializerMethodField()
    api_key_hint = serializers.SerializerMethodField()

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "call_id",
            "api_key",
            "api_key_hint",
            "auth_kind",
            "model_id",
            "base_model_id",
            "route",
            "streaming",
            "input_tokens",
            "output_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_write_tokens",
            "cache_read_tokens",
            "cost_micros",
            "cost_usd",
            "upstream_status",
            "error_type",
            "latency_ms",
            "ttfb_ms",
            "request_id",
            "client_family",
            "session_id",
            "started_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_cost_usd(self, record: UsageRecord) -> str | None:
        return cost_usd(record.cost_micros)

    def get_api_key_hint(self, record: UsageRecord) -> str | None:
        return record.api_key.hint if record.api_key_id else None


class AdminRecordSerializer(RecordSerializer):
    user_email = serializers.EmailField(source="user.email", read_only=True)

    class Meta(RecordSerializer.Meta):
        fields = ["user", "user_email", *RecordSerializer.Meta.fields]
        read_only_fields = fields


def totals_out(totals: Totals) -> dict:
    return {**totals.as_dict(), "cost_usd": cost_usd(totals.cost_micros)}


class TotalsOut(serializers.Serializer):
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    cost_micros = serializers.IntegerField(help_text="Of the calls with a known price.")
    cost_usd = serializers.CharField(help_text="cost_micros as an exact decimal.")
    unknown_cost_requests = serializers.IntegerField()


class PeriodTotalsOut(TotalsOut):
    period_start = serializers.DateTimeField()


class ModelTotalsOut(TotalsOut):
    model = serializers.CharField()


class ClientTotalsOut(TotalsOut):
    client_family = serializers.CharField()


class UserTotalsOut(TotalsOut):
    user_id = serializers.IntegerField()
    email = serializers.CharField()
    cost_cents = serializers.CharField(help_text="cost_micros in cents, four decimals.")


class TeamTotalsOut(TotalsOut):
    team_id = serializers.IntegerField(allow_null=True, help_text="Null: users in no team.")
    name = serializers.CharField()
    cost_cents = serializers.CharField(help_text="cost_micros in cents, four decimals.")


class AdminSummaryOut(serializers.Serializer):
    """By period, model and client; or, with `group_by=user` / `team`, by user / team alone."""

    group_by = serializers.CharField()
    totals = TotalsOut()
    by_period = PeriodTotalsOut(many=True, required=False)
    by_model = ModelTotalsOut(many=True, required=False)
    by_client = ClientTotalsOut(many=True, required=False)
    by_user = UserTotalsOut(many=True, required=False, help_text="Dearest first.")
    by_team = TeamTotalsOut(many=True, required=False, help_text="Dearest first.")

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField()
        fields["to"] = serializers.DateTimeField()
        return fields


def team_totals_out(row: selectors.TeamTotals) -> dict:
    return {
        "team_id": row.team_id,
        "name": row.name,
        **totals_out(row.totals),
        "cost_cents": cost_cents(row.totals.cost_micros),
    }


def user_totals_out(row: selectors.UserTotals) -> dict:
    return {
        "user_id": row.user_id,
        "email": row.email,
        **totals_out(row.totals),
        "cost_cents": cost_cents(row.totals.cost_micros),
    }


class SessionQuerySerializer(RangeSerializer):
    """`from`/`to`: the sessions with a call in the range (each with all its calls);
    `user`: administrators only, whose sessions (default: the caller's)."""

    user = serializers.IntegerField(
        required=False, min_value=1, max_value=INT64_MAX, help_text="Administrators only."
    )


class SessionSerializer(serializers.Serializer):
    session_id = serializers.CharField(help_text="Claude Code's x-claude-code-session-id.")
    started_at = serializers.DateTimeField(help_text="When its first call started.")
    ended_at = serializers.DateTimeField(help_text="When its last call started.")
    duration_seconds = serializers.IntegerField()
    calls = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    cost_micros = serializers.IntegerField(help_text="Of the calls with a known price.")
    cost_cents = serializers.CharField(help_text="cost_micros in cents, four decimals.")
    unknown_cost_calls = serializers.IntegerField()
    models = serializers.ListField(child=serializers.CharField(), help_text="Base model ids.")


def session_out(row: dict) -> dict:
    t: Totals = row["totals"]
    return {
        "session_id": row["session_id"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "duration_seconds": row["duration_seconds"],
        "calls": t.requests,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cache_write_tokens": t.cache_write_tokens,
        "cache_read_tokens": t.cache_read_tokens,
        "cost_micros": t.cost_micros,
        "cost_cents": cost_cents(t.cost_micros),
        "unknown_cost_calls": t.unknown_cost_requests,
        "models": row["models"],
    }


class RecordPagination(ApiPagination):
    default_limit = 50
    max_limit = 500


# --- Views ----------------------------------------------------------------------------------


class RecordListView(APIView):
    """GET /api/usage/records: the caller's own records, newest first."""

    schema = ApiSchema()
    pagination_class = RecordPagination
    filter_serializer = RecordFilterSerializer
    output_serializer = RecordSerializer

    def user_filter(self, request, params: dict) -> int | None:
        return request.user.id

    @extend_schema(parameters=[RecordFilterSerializer], responses=RecordSerializer(many=True))
    def get(self, request):
        params = self.filter_serializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        rows = selectors.records_query(
            user_id=self.user_filter(request, data),
            model=data.get("model"),
            start=data.get("from"),
            end=data.get("to"),
            api_key_id=data.get("key"),
            status=data.get("status"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(self.output_serializer(page, many=True).data)


class SessionListView(APIView):
    """GET /api/usage/sessions: the caller's Claude Code sessions (records grouped by
    `session_id`), most recently active first; administrators: `?user=ID`."""

    schema = ApiSchema()
    pagination_class = RecordPagination

    @extend_schema(
        parameters=[SessionQuerySerializer],
        responses={
            200: SessionSerializer(many=True),
            404: OpenApiResponse(ErrorDetailSerializer, description="No such user (`?user=`)"),
        },
    )
    def get(self, request):
        params = SessionQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        user_id = request.user.id
        if data.get("user") is not None and data["user"] != user_id:
            if not getattr(request.user, "is_admin", False):
                raise exceptions.PermissionDenied(
                    "Only administrators see another user's sessions."
                )
            user_id = get_object_or_404(get_user_model(), pk=data["user"]).pk
        rows = selectors.sessions_query(user_id=user_id, start=data.get("from"), end=data.get("to"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self)
        out = [session_out(row) for row in selectors.session_rows(user_id=user_id, page=page)]
        return paginator.get_paginated_response(SessionSerializer(out, many=True).data)


class AdminRecordListView(RecordListView):
    """GET /api/admin/usage/records: every user's records; `user` narrows to one."""

    permission_classes = [IsAdminUser]
    filter_serializer = AdminRecordFilterSerializer
    output_serializer = AdminRecordSerializer

    def user_filter(self, request, params: dict) -> int | None:
        return params.get("user")

    @extend_schema(
        parameters=[AdminRecordFilterSerializer], responses=AdminRecordSerializer(many=True)
    )
    def get(self, request):
        return super().get(request)


class SummaryView(APIView):
    """GET /api/usage/summary: totals, per period, per model and per client for a range."""

    schema = ApiSchema()
    query_serializer = SummaryQuerySerializer

    def user_filter(self, request, params: dict) -> int | None:
        return request.user.id

    @extend_schema(parameters=[SummaryQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        params = self.query_serializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        summary = selectors.usage_summary(
            user_id=self.user_filter(request, data),
            start=data["start"],
            end=data["end"],
            group_by=data["group_by"],
        )
        return Response(
            {
                "from": summary.start.isoformat(),
                "to": summary.end.isoformat(),
                "group_by": data["group_by"],
                "totals": totals_out(summary.totals),
                "by_period": [
                    {"period_start": start.isoformat(), **totals_out(totals)}
                    for start, totals in summary.by_period
                ],
                "by_model": [
                    {"model": model, **totals_out(totals)} for model, totals in summary.by_model
                ],
                "by_client": [
                    {"client_family": family, **totals_out(totals)}
                    for family, totals in summary.by_client
                ],
            }
        )


class AdminSummaryView(SummaryView):
    """GET /api/admin/usage/summary: over every user, or one with `user`."""

    permission_classes = [IsAdminUser]
    query_serializer = AdminSummaryQuerySerializer

    def user_filter(self, request, params: dict) -> int | None:
        return params.get("user")

    @extend_schema(parameters=[AdminSummaryQuerySerializer], responses=AdminSummaryOut)
    def get(self, request):
        params = self.query_serializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        if data["group_by"] == "team":
            teams = selectors.summary_by_team(start=data["start"], end=data["end"])
            return Response(
                {
                    "from": data["start"].isoformat(),
                    "to": data["end"].isoformat(),
                    "group_by": "team",
                    "totals": totals_out(sum((row.totals for row in teams), Totals())),
                    "by_team": [team_totals_out(row) for row in teams],
                }
            )
        if data["group_by"] != "user":
            return super().get(request)
        rows = selectors.summary_by_user(
            start=data["start"], end=data["end"], user_id=data.get("user")
        )
        return Response(
            {
                "from": data["start"].isoformat(),
                "to": data["end"].isoformat(),
                "group_by": "user",
                "totals": totals_out(sum((row.totals for row in rows), Totals())),
                "by_user": [user_totals_out(row) for row in rows],
            }
        )


class JsonUnlessCsv(BaseContentNegotiation):
    """Errors are JSON whatever the client accepts; the CSV itself is a plain response."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


CHARGEBACK_HEADER = [
    "month",
    "user_id",
    "email",
    "team",
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "cost_usd",
    "unknown_cost_requests",
]


CHARGEBACK_TEAM_HEADER = ["month", "team_id", "team", *CHARGEBACK_HEADER[4:]]


class ChargebackCsvView(APIView):
    """GET /api/admin/usage/chargeback.csv: spend per user per month, for chargeback."""

    schema = ApiSchema()
    permission_classes = [IsAdminUser]
    content_negotiation_class = JsonUnlessCsv

    @extend_schema(
        operation_id="admin_usage_chargeback_csv",
        parameters=[ChargebackQuerySerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="One row per user, team and month (`YYYY-MM`), months in order, "
                "dearest first; a month cut by the range counts only the part inside it. A "
                "call counts for the user's team at call time (`(no team)`: none), so a user "
                "who changed team has a row per team. `group_by=team`: one row per team and "
                "month.",
            )
        },
    )
    def get(self, request):
        params = ChargebackQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        out = io.StringIO()
        writer = csv.writer(out)
        if data["group_by"] == "team":
            writer.writerow(CHARGEBACK_TEAM_HEADER)
            rows = selectors.summary_by_team(start=data["start"], end=data["end"], by_month=True)
            heads = [[f"{row.month:%Y-%m}", row.team_id, row.name] for row in rows]
        else:
            writer.writerow(CHARGEBACK_HEADER)
            rows = selectors.summary_by_user(
                start=data["start"], end=data["end"], by_month=True, by_team=True
            )
            heads = [[f"{row.month:%Y-%m}", row.user_id, row.email, row.team_name] for row in rows]
        for head, row in zip(heads, rows, strict=True):
            t = row.totals
            cells = [
                *head,
                t.requests,
                t.input_tokens,
                t.output_tokens,
                t.cache_write_tokens,
                t.cache_read_tokens,
                cost_usd(t.cost_micros),
                t.unknown_cost_requests,
            ]
            writer.writerow([csv_safe(cell) for cell in cells])
        response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
        name = f"chargeback-{data['start']:%Y%m%d}-{data['end']:%Y%m%d}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response


class UnpricedModelsView(APIView):
    """GET /api/admin/usage/unpriced-models: models recorded with an unknown cost."""

    schema = ApiSchema()
    permission_classes = [IsAdminUser]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):
        rows = selectors.unpriced_models()
        return Response(
            {
                "results": [
                    {
                        "model": row["base_model_id"],
                        "requests": row["requests"],
                        "input_tokens": row["input_tokens"],
                        "output_tokens": row["output_tokens"],
                        "first_seen": row["first_seen"].isoformat(),
                        "last_seen": row["last_seen"].isoformat(),
                        "priced_now": row["priced_now"],
                    }
                    for row in rows
                ]
            }
        )
