"""DRF views of usage: a user's own records and summaries, and the admin variants over all."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdminUser  # is_superuser, not is_staff
from config import clock
from config.errors import ApiSchema
from config.pagination import ApiPagination
from usage import selectors
from usage.models import UsageRecord
from usage.services import Totals
from usage.windows import ceil_hour, floor_hour

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
        self.fail("invalid")


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
    user = serializers.IntegerField(required=False, min_value=1, max_value=INT64_MAX)


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

    def user_filter(self, request, params: dict) -> int | None:  # noqa: ANN001
        return request.user.id

    @extend_schema(parameters=[RecordFilterSerializer], responses=RecordSerializer(many=True))
    def get(self, request):  # noqa: ANN001, ANN201
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


class AdminRecordListView(RecordListView):
    """GET /api/admin/usage/records: every user's records; `user` narrows to one."""

    permission_classes = [IsAdminUser]
    filter_serializer = AdminRecordFilterSerializer
    output_serializer = AdminRecordSerializer

    def user_filter(self, request, params: dict) -> int | None:  # noqa: ANN001
        return params.get("user")

    @extend_schema(
        parameters=[AdminRecordFilterSerializer], responses=AdminRecordSerializer(many=True)
    )
    def get(self, request):  # noqa: ANN001, ANN201
        return super().get(request)


class SummaryView(APIView):
    """GET /api/usage/summary: totals, per period, per model and per client for a range."""

    schema = ApiSchema()
    query_serializer = SummaryQuerySerializer

    def user_filter(self, request, params: dict) -> int | None:  # noqa: ANN001
        return request.user.id

    @extend_schema(parameters=[SummaryQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request):  # noqa: ANN001, ANN201
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

    def user_filter(self, request, params: dict) -> int | None:  # noqa: ANN001
        return params.get("user")

    @extend_schema(parameters=[AdminSummaryQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request):  # noqa: ANN001, ANN201
        return super().get(request)


class UnpricedModelsView(APIView):
    """GET /api/admin/usage/unpriced-models: models recorded with an unknown cost."""

    schema = ApiSchema()
    permission_classes = [IsAdminUser]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request):  # noqa: ANN001, ANN201
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
