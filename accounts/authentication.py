"""Placeholder until the accounts issue lands its API key / JWT authentication."""

from rest_framework.authentication import BaseAuthentication


class GatewayAuthentication(BaseAuthentication):
    def authenticate(self, request):  # noqa: ANN001, ANN201
        return None
