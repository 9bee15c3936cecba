"""DRF: usage caps. Users manage their own caps; administrators anyone's (with `user`).

A user sees every cap that applies to them (their own and their administrators'), and may
create, change and remove only their own; an administrator's cap answers 403 to them. An
administrator's POST with `user` creates an administrator cap for that user.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from caps.errors import CapStoreUnavailable
from caps.models import CapType, SetBy, UserCapConfig
from caps.services import cap_create, cap_delete, cap_update
from caps.status import cap_status, spend_today_cents
from config import clock
from config.errors import ApiSchema, ErrorDetailSerializer
from config.pagination import ApiPagination
from config.parsers import JSONParser  # DRF's, with a JSON depth limit

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _is_admin(request: Request) -> bool:
    return bool(getattr(request.user, "is_admin", False))


class UserQuerySerializer(serializers.Serializer):
    """`?user=` of the administrators' views: a user id (an ASCII integer in the database's
    range, never a 500)."""

    user = serializers.IntegerField(required=False, min_value=1, max_value=INT64_MAX)


def _user_query(request: Request) -> int | None:
    params = UserQuerySerializer(data=request.query_params)
    params.is_valid(raise_exception=True)
    return params.validated_data.get("user")


def _refuse_user_field(request: Request) -> None:
    if isinstance(request.data, dict) and "user" in request.data and not _is_admin(request):
        # Before validation, whatever the id: a 400 for an unknown one would tell which user
        # ids exist.
        raise exceptions.PermissionDenied("Only administrators set caps for a user.")


class CapInputSerializer(serializers.Serializer):
    cap_type = serializers.ChoiceField(choices=CapType.choices)
    max_requests = serializers.IntegerField(
        min_value=1, max_value=INT32_MAX, required=False, allow_null=True
    )
    max_tokens = serializers.IntegerField(
        min_value=1, max_value=INT64_MAX, required=False, allow_null=True
    )
    max_cost_cents = serializers.IntegerField(
        min_value=1, max_value=INT64_MAX, required=False, allow_null=True
    )
    is_active = serializers.BooleanField(required=False)
    user = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.all(),
        required=False,
        help_text="Administrators only: whose cap this is (an administrator cap).",
    )

    def validate(self, attrs: dict) -> dict:
        limits = ("max_requests", "max_tokens", "max_cost_cents")
        instance = self.instance
        merged = {
            name: attrs[name] if name in attrs else getattr(instance, name, None) for name in limits
        }
        if all(value is None for value in merged.values()):
            raise serializers.ValidationError(
                "Set at least one of max_requests, max_tokens, max_cost_cents."
            )
        return attrs


class CapUpdateSerializer(CapInputSerializer):
    cap_type = serializers.ChoiceField(choices=CapType.choices, required=False)


class CapOutputSerializer(serializers.ModelSerializer):
    user_email = serializers.EmailField(source="user.email", read_only=True)
    enforced = serializers.SerializerMethodField()

    class Meta:
        model = UserCapConfig
        fields = [
            "id",
            "user",
            "user_email",
            "cap_type",
            "set_by",
            "max_requests",
            "max_tokens",
            "max_cost_cents",
            "is_active",
            "enforce_from",
            "enforced",
            "created_at",
            "updated_at",
        ]

    def get_enforced(self, cap: UserCapConfig) -> bool:

        return cap.is_active and (cap.enforce_from is None or cap.enforce_from <= clock.now())


class CapStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    cap_type = serializers.CharField()
    set_by = serializers.CharField()
    current_usage = serializers.DictField(
        help_text="requests, tokens and cost_cents (a decimal) used in the current window"
    )
    in_flight = serializers.DictField(help_text="reserved by calls still running")
    limits = serializers.DictField()
    percentage_used = serializers.FloatField()
    reset_time = serializers.DateTimeField()
    is_exceeded = serializers.BooleanField()
    enforced = serializers.BooleanField()
    enforce_from = serializers.DateTimeField(allow_null=True)


class CapStatusOutSerializer(serializers.Serializer):
    spend_today_cents = serializers.DecimalField(
        max_digits=30,
        decimal_places=4,
        coerce_to_string=False,
        help_text="The user's spend since midnight UTC in cents (four decimals), with or "
        "without a cost cap; calls of models without a known price are not in it.",
    )
    caps = CapStatusSerializer(many=True, help_text="Per active hourly/daily/monthly cap.")


def _service_errors(exc: DjangoValidationError) -> exceptions.ValidationError:
    return exceptions.ValidationError(exc.message_dict)


class CapListCreateView(generics.GenericAPIView):
    """GET: the caps that apply to the caller (administrators: everyone's, `?user=` to filter).
    POST: a new cap — the caller's own, or (administrators, with `user`) an administrator cap."""

    schema = ApiSchema()
    parser_classes = [JSONParser]
    serializer_class = CapOutputSerializer
    pagination_class = ApiPagination

    def get_queryset(self):
        caps = UserCapConfig.objects.select_related("user").order_by("user_id", "cap_type", "id")
        if not _is_admin(self.request):
            return caps.filter(user_id=self.request.user.pk)
        user = _user_query(self.request)
        if user is not None:
            caps = caps.filter(user_id=user)
        return caps

    @extend_schema(
        parameters=[OpenApiParameter("user", int, description="Administrators only")],
        responses=CapOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(CapOutputSerializer(page, many=True).data)

    @extend_schema(request=CapInputSerializer, responses={201: CapOutputSerializer})
    def post(self, request: Request) -> Response:
        _refuse_user_field(request)
        data = CapInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        target = values.pop("user", None)
        set_by = SetBy.ADMIN if target is not None else SetBy.USER
        try:
            cap = cap_create(
                user_id=(target or request.user).pk,
                set_by=set_by,  # type: ignore[arg-type]  # Django's Choices are untyped here
                **values,
            )
        except DjangoValidationError as exc:
            raise _service_errors(exc) from exc
        return Response(CapOutputSerializer(cap).data, status=status.HTTP_201_CREATED)


class CapDetailView(APIView):
    """PUT/PATCH: change a cap (fields given replace, null removes a limit). DELETE: remove it.
    A user's attempt on an administrator's cap is a 403; on someone else's, a 404."""

    schema = ApiSchema()
    parser_classes = [JSONParser]

    def _cap(self, request: Request, pk: int) -> UserCapConfig:
        if _is_admin(request):
            return get_object_or_404(UserCapConfig, pk=pk)
        return get_object_or_404(UserCapConfig, pk=pk, user_id=request.user.pk)

    @extend_schema(request=CapUpdateSerializer, responses={200: CapOutputSerializer})
    def put(self, request: Request, pk: int) -> Response:
        cap = self._cap(request, pk)
        _refuse_user_field(request)
        data = CapUpdateSerializer(instance=cap, data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "user" in changes and changes.pop("user").pk != cap.user_id:
            raise exceptions.ValidationError({"user": ["A cap cannot move to another user."]})
        try:
            cap = cap_update(cap=cap, by_admin=_is_admin(request), **changes)
        except DjangoPermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from exc
        except DjangoValidationError as exc:
            raise _service_errors(exc) from exc
        return Response(CapOutputSerializer(cap).data)

    patch = put

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        cap = self._cap(request, pk)
        try:
            cap_delete(cap=cap, by_admin=_is_admin(request))
        except DjangoPermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class CapStatusView(APIView):
    """GET: today's spend and, per active cap, usage of the current window, limits,
    percentage, reset time, whether it is exceeded and whether it blocks yet (administrators:
    `?user=`)."""

    schema = ApiSchema()

    @extend_schema(
        parameters=[OpenApiParameter("user", int, description="Administrators only")],
        responses={
            200: CapStatusOutSerializer,
            404: OpenApiResponse(ErrorDetailSerializer, description="No such user (`?user=`)"),
            503: OpenApiResponse(ErrorDetailSerializer, description="Counter store unavailable"),
        },
    )
    def get(self, request: Request) -> Response:
        user_id = request.user.pk
        if _is_admin(request) and (target := _user_query(request)) is not None:
            user_id = get_object_or_404(User, pk=target).pk
        try:
            rows = cap_status(user_id=user_id)
        except CapStoreUnavailable as exc:
            return Response({"detail": exc.message}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        out = {"spend_today_cents": spend_today_cents(user_id=user_id), "caps": rows}
        return Response(CapStatusOutSerializer(out).data)
