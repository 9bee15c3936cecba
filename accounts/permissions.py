"""DRF permissions of the gateway's API: who is an administrator, and who may mint credentials."""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

SESSION_REQUIRED = (
    "Keys and tokens are created only from a signed-in session (the dashboard): "
    "an API key or a token cannot create credentials."
)


class IsGatewayAdmin(BasePermission):
    """The gateway's administrators: `is_superuser` (from `auth.admin_emails`,
    `createapikey --admin` or `createsuperuser`). `is_staff` alone grants nothing here."""

    message = "Administrators only."

    def has_permission(self, request: Request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_superuser)


# The name DRF's own class has, so that a view switches by its import line alone.
IsAdminUser = IsGatewayAdmin


def is_session_request(request: Request) -> bool:
    """Whether the caller was authenticated by a signed-in session (not a key or a JWT)."""
    return isinstance(request.successful_authenticator, SessionAuthentication)


class CreatesCredentialsFromSession(BasePermission):
    """POST (which creates a key or a token) needs a signed-in session: a leaked key or
    short-lived JWT cannot be turned into more credentials. Other methods pass."""

    message = SESSION_REQUIRED

    def has_permission(self, request: Request, view) -> bool:
        return request.method != "POST" or is_session_request(request)
