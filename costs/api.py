"""Admin-only management API for model prices: CRUD and CSV import.

Prices travel as decimal strings of USD per million tokens ("3.75"), converted exactly to and
from the stored integer micro-dollars per million tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdminUser  # is_superuser, not is_staff
from config.errors import ApiSchema
from config.pagination import ApiPagination
from costs import services
from costs.models import ModelPrice
from costs.money import micros_to_usd_per_mtok, usd_per_mtok_to_micros

RATE_FIELDS = services.RATE_FIELDS


@extend_schema_field(OpenApiTypes.STR)
class UsdPerMtokField(serializers.Field):
    """A rate given as a decimal string (or number) of USD per million tokens."""

    default_error_messages = {"invalid": "{reason}"}

    def to_internal_value(self, data: object) -> int:
        if isinstance(data, bool) or not isinstance(data, str | int):
            # Floats are refused: 0.1 as a float is not 0.1, and money is never float.
            self.fail("invalid", reason='must be a decimal string such as "3.75"')
        try:
            return usd_per_mtok_to_micros(str(data))
        except ValueError as exc:
            return self.fail("invalid", reason=str(exc))  # fail() raises

    def to_representation(self, value: int) -> str:
        return micros_to_usd_per_mtok(value)


class PriceInputSerializer(serializers.Serializer):
    model_id = serializers.CharField(max_length=250)
    scope = serializers.CharField(max_length=8, allow_blank=True, required=False, default="")
    region = serializers.CharField(max_length=32, allow_blank=True, required=False, default="")
    input = UsdPerMtokField()
    output = UsdPerMtokField()
    cache_write_5m = UsdPerMtokField()
    cache_write_1h = UsdPerMtokField()
    cache_read = UsdPerMtokField()
    long_prompt_threshold_tokens = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1
    )
    long_prompt_multiplier = serializers.DecimalField(
        max_digits=8,
        decimal_places=4,
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
    )
    effective_from = serializers.DateTimeField()
    source = serializers.CharField(
        max_length=services.MAX_SOURCE_LENGTH, allow_blank=True, required=False, default=""
    )

    def validate(self, attrs: dict) -> services.PriceData:
        try:
            return services.price_data_build(
                model_id=attrs["model_id"],
                scope=attrs["scope"],
                region=attrs["region"],
                rates={name: attrs[name] for name in RATE_FIELDS},
                effective_from=attrs["effective_from"],
                long_prompt_threshold_tokens=attrs["long_prompt_threshold_tokens"],
                long_prompt_multiplier=attrs["long_prompt_multiplier"],
                source=attrs["source"],
            )
        except services.PriceError as exc:
            raise serializers.ValidationError(
                {exc.field or "non_field_errors": [exc.message]}
            ) from None


class PriceOutputSerializer(serializers.ModelSerializer):
    input = UsdPerMtokField(source="input_rate")
    output = UsdPerMtokField(source="output_rate")
    cache_write_5m = UsdPerMtokField(source="cache_write_5m_rate")
    cache_write_1h = UsdPerMtokField(source="cache_write_1h_rate")
    cache_read = UsdPerMtokField(source="cache_read_rate")
    long_prompt_multiplier = serializers.DecimalField(
        max_digits=8,
        decimal_places=4,
        normalize_output=True,
        coerce_to_string=True,
        allow_null=True,
    )

    class Meta:
        model = ModelPrice
        fields = [
            "id",
            "model_id",
            "scope",
            "region",
            *RATE_FIELDS,
            "long_prompt_threshold_tokens",
            "long_prompt_multiplier",
            "effective_from",
            "source",
            "created_at",
            "updated_at",
        ]


def _as_input(price: ModelPrice) -> dict:
    """A stored row in the input serializer's terms, so PATCH can merge a few fields into it."""
    data = PriceOutputSerializer(price).data
    return {name: data[name] for name in PriceInputSerializer().fields}


class CsvParser(BaseParser):
    """A text/csv body, at most MAX_IMPORT_BYTES."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(services.MAX_IMPORT_BYTES + 1) if stream else b""
        if len(raw) > services.MAX_IMPORT_BYTES:
            raise _TooLarge()
        return raw


class _TooLarge(ParseError):
    default_detail = "file is larger than 5 MB"


def _bad_request(field: str | None, message: str, row: int | None = None) -> Response:
    return Response(
        {"errors": [{"row": row, "field": field, "message": message}]},
        status=status.HTTP_400_BAD_REQUEST,
    )


_IMPORT_RESULT = inline_serializer(
    "PriceImportResult",
    {
        "format": serializers.CharField(),
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
    },
)
_IMPORT_ERRORS = inline_serializer(
    "PriceImportErrors",
    {
        "errors": inline_serializer(
            "PriceImportRowError",
            {
                "row": serializers.IntegerField(allow_null=True),
                "field": serializers.CharField(allow_null=True),
                "message": serializers.CharField(),
            },
            many=True,
        )
    },
)


class PriceFilterSerializer(serializers.Serializer):
    # A CharField: a NUL or a lone surrogate is a 400, not a 500 from PostgreSQL.
    model_id = serializers.CharField(
        required=False, allow_blank=True, max_length=250, help_text="base model id"
    )


class PriceListApi(APIView):
    """GET: all price rows (filter: ?model_id=); POST: add one."""

    schema = ApiSchema()
    permission_classes = [IsAdminUser]
    pagination_class = ApiPagination

    @extend_schema(
        operation_id="costs_list",
        parameters=[PriceFilterSerializer],
        responses=PriceOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        params = PriceFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        queryset = ModelPrice.objects.all()
        if model_id := params.validated_data.get("model_id"):
            queryset = queryset.filter(model_id=model_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(PriceOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="costs_create",
        request=PriceInputSerializer,
        responses={201: PriceOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = PriceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            price = services.price_create(data=serializer.validated_data)
        except services.PriceError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from None
        return Response(PriceOutputSerializer(price).data, status=status.HTTP_201_CREATED)


class PriceDetailApi(APIView):
    """GET / PUT / PATCH / DELETE one price row."""

    schema = ApiSchema()
    permission_classes = [IsAdminUser]

    @extend_schema(operation_id="costs_retrieve", responses=PriceOutputSerializer)
    def get(self, request: Request, price_id: int) -> Response:
        return Response(PriceOutputSerializer(get_object_or_404(ModelPrice, pk=price_id)).data)

    @extend_schema(
        operation_id="costs_update", request=PriceInputSerializer, responses=PriceOutputSerializer
    )
    def put(self, request: Request, price_id: int) -> Response:
        return self._update(request, price_id, partial=False)

    @extend_schema(
        operation_id="costs_partial_update",
        request=PriceInputSerializer(partial=True),
        responses=PriceOutputSerializer,
    )
    def patch(self, request: Request, price_id: int) -> Response:
        return self._update(request, price_id, partial=True)

    @extend_schema(operation_id="costs_destroy", responses={204: None})
    def delete(self, request: Request, price_id: int) -> Response:
        services.price_delete(price=get_object_or_404(ModelPrice, pk=price_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, price_id: int, *, partial: bool) -> Response:
        price = get_object_or_404(ModelPrice, pk=price_id)
        if not isinstance(request.data, Mapping):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        data = {**_as_input(price), **dict(request.data.items())} if partial else request.data
        serializer = PriceInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        try:
            price = services.price_update(price=price, data=serializer.validated_data)
        except services.PriceError as exc:
            raise serializers.ValidationError({exc.field: [exc.message]}) from None
        return Response(PriceOutputSerializer(price).data)


class PriceImportApi(APIView):
    """POST a CSV file (multipart field `file`, or a text/csv body): all rows or none."""

    schema = ApiSchema()
    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, CsvParser]

    @extend_schema(
        operation_id="costs_import",
        request={
            "multipart/form-data": inline_serializer(
                "PriceImportUpload", {"file": serializers.FileField()}
            ),
            "text/csv": OpenApiTypes.STR,
        },
        responses={200: _IMPORT_RESULT, 400: _IMPORT_ERRORS},
    )
    def post(self, request: Request) -> Response:
        try:
            raw = self._read(request)
        except _TooLarge as exc:
            return _bad_request(None, str(exc.detail))
        if raw is None:
            return _bad_request("file", "send the CSV as multipart field 'file' or as text/csv")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return _bad_request("file", "file is not UTF-8 text")
        try:
            result = services.prices_import_csv(text=text)
        except services.PriceImportError as exc:
            return Response(
                {"errors": [error.as_dict() for error in exc.errors]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(
            {
                "format": result.format,
                "created": result.created,
                "updated": result.updated,
                "unchanged": result.unchanged,
            }
        )

    @staticmethod
    def _read(request: Request) -> bytes | None:
        data = request.data
        if isinstance(data, bytes):
            return data
        upload = request.FILES.get("file")
        if upload is None:
            return None
        if upload.size > services.MAX_IMPORT_BYTES:
            raise _TooLarge()
        return upload.read()
