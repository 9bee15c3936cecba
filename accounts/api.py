"""DRF: the caller's API keys, and JWTs for a signed-in session.

Credentials are minted only from a signed-in session (the dashboard): a request authenticated
by an API key or a JWT may list and revoke keys but never create a key or a token (403). An
administrator, signed in, may create a key for another user (`user`); the audit trail says so.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey, User
from accounts.permissions import CreatesCredentialsFromSession
from accounts.services import (
    GENERIC_AUTH_FAILURE,
    ApiKeyLifetimeError,
    AuthFailed,
    Origin,
    api_key_create,
    api_key_revoke,
    token_pair_create,
    token_refresh,
)
from config import clock
from config.errors import ApiSchema, ErrorDetailSerializer
from config.pagination import ApiPagination
from config.parsers import JSONParser  # DRF's, with a JSON depth limit

# What a key- or token-authenticated POST to /api/keys or /api/token answers, by design.
SESSION_ONLY_403 = OpenApiResponse(
    ErrorDetailSerializer,
    description="Not allowed: keys and tokens are created only from a signed-in session "
    "(the dashboard, CSRF applies); a request authenticated by an API key or a JWT gets this "
    "403. Also (POST /api/keys): `user` given by a non-administrator.",
)


class ApiKeyInputSerializer(serializers.Serializer):
    # DRF's CharField already refuses NUL and lone surrogates (PostgreSQL cannot store them).
    name = serializers.CharField(max_length=100, trim_whitespace=True)
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Absent or null: the configured default lifetime (auth.api_key_default_"
        "lifetime_days), or never. Beyond auth.api_key_max_lifetime_days: a 400.",
    )
    user = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.filter(is_active=True),
        required=False,
        help_text="Administrators only: create the key for this user (audited).",
    )

    def validate_expires_at(self, value):
        if value is not None and value <= clock.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    hint = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "hint", "created_at", "last_used_at", "expires_at", "status"]


class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(read_only=True, help_text="The full key: shown this once only.")

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]


class ApiKeyListCreateView(generics.GenericAPIView):
    """GET: the caller's keys (never the secret). POST: a new key, shown in full once."""

    schema = ApiSchema()
    parser_classes = [JSONParser]
    serializer_class = ApiKeyOutputSerializer
    pagination_class = ApiPagination
    permission_classes = [IsAuthenticated, CreatesCredentialsFromSession]

    def get_queryset(self):
        return ApiKey.objects.filter(user_id=self.request.user.pk).order_by("-created_at", "-id")

    @extend_schema(responses=ApiKeyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ApiKeyOutputSerializer(page, many=True).data)

    @extend_schema(
        request=ApiKeyInputSerializer,
        responses={201: ApiKeyCreatedSerializer, 403: SESSION_ONLY_403},
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.data, dict) and "user" in request.data and not request.user.is_admin:
            # Before validation: a 400 for an unknown id would tell which ids exist.
            raise exceptions.PermissionDenied("Only administrators create keys for a user.")
        data = ApiKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        owner = data.validated_data.get("user") or request.user
        try:
            created = api_key_create(
                user=owner,
                name=data.validated_data["name"],
                expires_at=data.validated_data.get("expires_at"),
                origin=Origin.of(request),
                actor=request.user,
            )
        except ApiKeyLifetimeError as exc:
            raise exceptions.ValidationError({"expires_at": [str(exc)]}) from None
        created.api_key.key = created.raw
        return Response(ApiKeyCreatedSerializer(created.api_key).data, status=201)


class ApiKeyDetailView(APIView):
    """DELETE: revoke one of the caller's keys (someone else's is a 404)."""

    schema = ApiSchema()

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        api_key = get_object_or_404(ApiKey, pk=pk, user_id=request.user.pk)
        api_key_revoke(api_key=api_key, actor=request.user, origin=Origin.of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class TokenRefreshInputSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class TokenObtainView(APIView):
    """POST: an access/refresh pair for the user signed in by session (CSRF applies).

    Only the session may mint tokens: a leaked key or token cannot be turned into more.
    """

    # Every authenticator, so that a key or a JWT is recognised and refused by name (403).
    schema = ApiSchema()
    permission_classes = [IsAuthenticated, CreatesCredentialsFromSession]
    parser_classes = [JSONParser]

    @extend_schema(request=None, responses={200: TokenPairSerializer, 403: SESSION_ONLY_403})
    def post(self, request: Request) -> Response:
        return Response(token_pair_create(user=request.user))


class TokenRefreshView(APIView):
    """POST {refresh}: a new pair; the refresh token used is blacklisted (rotation)."""

    schema = ApiSchema()
    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParser]

    @extend_schema(request=TokenRefreshInputSerializer, responses={200: TokenPairSerializer})
    def post(self, request: Request) -> Response:
        data = TokenRefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            return Response(token_refresh(refresh=data.validated_data["refresh"]))
        except AuthFailed:
            raise exceptions.AuthenticationFailed(GENERIC_AUTH_FAILURE) from None

    def get_authenticate_header(self, request: Request) -> str:
        # A 401 (not DRF's 403 for views without authenticators), like every auth failure.
        return 'Bearer realm="api"'
