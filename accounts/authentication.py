"""The one authentication layer: the proxy and the management API both come through here.

A credential arrives as ``Authorization: Bearer <X>`` or ``X-API-Key: <X>``. An ``X`` starting
with ``SSOD_`` is a device access token (accounts.device); one starting with the configured
prefix (``SSOK_``) is an API key; anything else is tried as a simplejwt access token. Every
failure raises ``AuthFailed`` with one generic message, so that a client never learns which
part of a secret was close.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts import throttle
from accounts.device import adevice_token_authenticate, device_token_authenticate, is_device_token
from accounts.models import User
from accounts.services import (
    GENERIC_AUTH_FAILURE,
    AuthFailed,
    Principal,
    aapi_key_authenticate,
    ajwt_authenticate,
    api_key_authenticate,
    jwt_authenticate,
)

__all__ = [
    "AuthFailed",
    "AuthThrottled",
    "GatewayAuthentication",
    "Principal",
    "aauthenticate_credentials",
    "aauthenticate_request",
    "authenticate_credentials",
    "credential_from_headers",
]

AuthThrottled = throttle.AuthThrottled

# Far longer than any key or token we issue; a bound before hashing or decoding anything.
MAX_CREDENTIAL_LENGTH = 4096


def credential_from_headers(headers: Mapping[str, str]) -> str:
    """The credential a request carries, or AuthFailed when it carries none or a malformed one.

    A Bearer ``Authorization`` wins; a non-Bearer one (SigV4 from a client that also sends
    ``X-API-Key``) gives way to ``X-API-Key``.
    """
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return _checked(value.strip())
    api_key = headers.get("X-API-Key")
    if api_key is not None:
        return _checked(api_key.strip())
    raise AuthFailed("malformed authorization header" if authorization else "no credentials")


def _checked(value: str) -> str:
    if not value or len(value) > MAX_CREDENTIAL_LENGTH or any(c.isspace() for c in value):
        raise AuthFailed("malformed credential")
    return value


def _is_api_key(credential: str) -> bool:
    return credential.startswith(settings.GATEWAY.auth.api_key_prefix)


def authenticate_credentials(headers: Mapping[str, str]) -> Principal:
    """Who sent these headers; AuthFailed (generic message) for any failure."""
    credential = credential_from_headers(headers)
    if is_device_token(credential):
        return device_token_authenticate(raw=credential)
    if _is_api_key(credential):
        return api_key_authenticate(raw=credential)
    return jwt_authenticate(raw=credential)


async def aauthenticate_credentials(headers: Mapping[str, str]) -> Principal:
    """Async twin for the proxy: no ORM when warm, and then only in a thread."""
    credential = credential_from_headers(headers)
    if is_device_token(credential):
        return await adevice_token_authenticate(raw=credential)
    if _is_api_key(credential):
        return await aapi_key_authenticate(raw=credential)
    return await ajwt_authenticate(raw=credential)


async def aauthenticate_request(headers: Mapping[str, str], meta: dict, family: str) -> Principal:
    """The proxy's authentication with the failed-credential throttle (accounts/throttle.py):
    AuthFailed for a bad credential, AuthThrottled once its address is over the limit."""
    address = throttle.client_address(meta)
    try:
        throttle.check(address)
        try:
            return await aauthenticate_credentials(headers)
        except AuthFailed as exc:
            await throttle.afailure(address, exc)
            raise
    except AuthThrottled:
        throttle.auth_throttled.send(sender=None, family=family)
        raise


class GatewayAuthentication(BaseAuthentication):
    """DRF: API key or JWT from the headers; ``request.auth`` is the Principal.

    A request with neither header is left to the next authenticator (the session), as DRF
    expects; any credential that is present but not valid is a 401 with the generic message.
    """

    def authenticate(self, request: Request) -> tuple[User, Principal] | None:
        headers = request.headers
        authorization = headers.get("Authorization")
        if not authorization and headers.get("X-API-Key") is None:
            return None
        address = throttle.client_address(request.META)
        try:
            throttle.check(address)
            try:
                principal = authenticate_credentials(headers)
                user = User.objects.get(pk=principal.user_id, is_active=True)
            except User.DoesNotExist:
                raise AuthFailed("no active user") from None
            except AuthFailed as exc:
                throttle.failure(address, exc)
                raise
        except AuthThrottled as exc:
            throttle.auth_throttled.send(sender=None, family="api")
            raise exceptions.Throttled(wait=exc.retry_after, detail=str(exc)) from None
        except AuthFailed:
            raise exceptions.AuthenticationFailed(GENERIC_AUTH_FAILURE) from None
        return user, principal

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class GatewayAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the two ways to present a credential."""

    target_class = GatewayAuthentication
    name = ["bearerAuth", "apiKeyAuth"]  # noqa: RUF012 (drf-spectacular's own attribute)

    def get_security_requirement(self, auto_schema) -> list[dict]:
        # Either one will do (a list is OR in OpenAPI; one object with both would be AND).
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema) -> list[dict]:
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (SSOK_...), a device token (SSOD_..., from "
                "/oauth/token) or a JWT access token from /api/token.",
            },
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        ]
