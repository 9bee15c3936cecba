"""Offboarding: a person the identity provider no longer knows loses every credential at once.

Each OpenID Connect sign-in stores the provider's refresh token (allauth's ``SocialToken``,
``token_secret``; the apps ask for ``offline_access``). Every hour ``identities_refresh``
presents each active user's refresh token at the provider's token endpoint:

- a new token set: stored (a rotated refresh token replaces the old one);
- ``invalid_grant`` (the person was removed, disabled, or their grant revoked): the user is
  deactivated and every credential revoked (``user_offboard``), as one click in admin does;
- anything else (network error, timeout, 5xx, a malformed answer): nothing changes, the run
  counts an error and the next run tries again. An outage must never lock everyone out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from allauth.socialaccount.adapter import get_adapter
from allauth.socialaccount.models import SocialApp, SocialToken
from django.db.models import F

from accounts.device import user_devices_revoke
from accounts.models import ApiKey, User
from accounts.services import (
    Origin,
    audit_record,
    user_credentials_invalidate,
    user_deactivate,
    user_tokens_revoke,
)
from config import clock

logger = logging.getLogger(__name__)

# Per request to the provider: a slow provider delays the hourly run, never a user's call.
PROVIDER_TIMEOUT_SECONDS = 10.0
OIDC_PROVIDER = "openid_connect"


def user_offboard(
    *,
    user: User,
    actor: User | None = None,
    origin: Origin | None = None,
    reason: str = "",
) -> dict[str, int]:
    """Deactivate `user` and revoke everything they hold: API keys, JWTs, devices, sessions."""
    # Deactivation first: from here on every credential of the user is refused, whatever the
    # steps below have revoked yet.
    user_deactivate(user=user, actor=actor, origin=origin)
    keys = ApiKey.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=clock.now())
    # Ends every browser session: the session hash includes the generation (User model).
    User.objects.filter(pk=user.pk).update(session_generation=F("session_generation") + 1)
    user.refresh_from_db(fields=["session_generation"])
    jwts = user_tokens_revoke(user=user, actor=actor, origin=origin)
    devices = user_devices_revoke(user=user, actor=actor, origin=origin)
    # The provider's tokens are dead or unwanted; and were an administrator to reactivate the
    # user, a stale token must not deactivate them again before they sign in afresh.
    SocialToken.objects.filter(account__user=user).delete()
    user_credentials_invalidate(user_id=user.pk)  # the revoked keys' cache entries
    counts = {"api_keys": keys, "refresh_tokens": jwts, "devices": devices}
    audit_record(
        action="user.offboard",
        actor=actor,
        target=f"user:{user.pk}",
        origin=origin,
        detail={"email": user.email, "reason": reason, **counts},
    )
    return counts


@dataclass(frozen=True)
class _TokenClient:
    """Where and how to present a refresh token to one provider app."""

    token_endpoint: str
    client_id: str
    secret: str
    basic_auth: bool


class _ProviderUnavailable(Exception):
    """The provider could not be asked (discovery failed): nobody is judged this run."""


def _token_client(provider_id: str) -> _TokenClient | None:
    """The token endpoint of a configured OpenID Connect app; None for other providers."""
    try:
        provider = get_adapter().get_provider(None, provider_id)
    except SocialApp.DoesNotExist:
        return None  # no longer configured: nothing to ask
    if provider.id != OIDC_PROVIDER:
        return None  # GitHub, Google...: no refresh token we can judge by
    try:
        response = httpx.get(provider.server_url, timeout=PROVIDER_TIMEOUT_SECONDS)
        response.raise_for_status()
        discovery = response.json()
        endpoint = discovery["token_endpoint"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise _ProviderUnavailable(type(exc).__name__) from exc
    # As allauth decides at sign-in: HTTP Basic only when the provider offers it alone.
    method = provider.app.settings.get("token_auth_method")
    methods = discovery.get("token_endpoint_auth_methods_supported") or []
    basic = (
        method == "client_secret_basic"
        if method
        else "client_secret_post" not in methods and "client_secret_basic" in methods
    )
    return _TokenClient(
        token_endpoint=endpoint,
        client_id=provider.app.client_id,
        secret=provider.app.secret,
        basic_auth=basic,
    )


def _present(client: _TokenClient, refresh_token: str) -> tuple[int, dict[str, Any]]:
    """POST a refresh grant; the status and JSON body (httpx.HTTPError on network errors)."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    auth = None
    if client.basic_auth:
        auth = (client.client_id, client.secret)
    else:
        data.update(client_id=client.client_id, client_secret=client.secret)
    response = httpx.post(
        client.token_endpoint,
        data=data,
        auth=auth,
        headers={"Accept": "application/json"},
        timeout=PROVIDER_TIMEOUT_SECONDS,
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def _store(token: SocialToken, answer: dict[str, Any], now: datetime) -> None:
    token.token = str(answer["access_token"])
    if answer.get("refresh_token"):
        # A rotating provider has retired the one just used: keep the new one.
        token.token_secret = str(answer["refresh_token"])
    expires_in = answer.get("expires_in")
    token.expires_at = now + timedelta(seconds=int(expires_in)) if expires_in else None
    token.save(update_fields=["token", "token_secret", "expires_at"])


def identities_refresh(*, now: datetime | None = None) -> dict[str, int]:
    """Refresh every active user's stored OpenID Connect token; deactivate on invalid_grant.

    Users without a stored refresh token are skipped. Returns counts: checked, refreshed,
    deactivated, errors.
    """
    now = now or clock.now()
    counts = {"checked": 0, "refreshed": 0, "deactivated": 0, "errors": 0}
    clients: dict[str, _TokenClient | _ProviderUnavailable | None] = {}
    tokens = (
        SocialToken.objects.filter(account__user__is_active=True)
        .exclude(token_secret="")
        .select_related("account__user")
        .order_by("pk")
    )
    for token in tokens:
        provider_id = token.account.provider
        if provider_id not in clients:
            try:
                clients[provider_id] = _token_client(provider_id)
            except _ProviderUnavailable as exc:
                logger.warning("identity refresh: %s discovery failed (%s)", provider_id, exc)
                clients[provider_id] = exc
        client = clients[provider_id]
        if client is None:
            continue
        counts["checked"] += 1
        if isinstance(client, _ProviderUnavailable):
            counts["errors"] += 1
            continue
        user = token.account.user
        try:
            status, answer = _present(client, token.token_secret)
        except httpx.HTTPError as exc:
            logger.warning("identity refresh: user %s, %s", user.pk, type(exc).__name__)
            counts["errors"] += 1
            continue
        if status == 200 and answer.get("access_token"):
            _store(token, answer, now)
            counts["refreshed"] += 1
        elif status in (400, 401) and answer.get("error") == "invalid_grant":
            # Only invalid_grant speaks of the person; invalid_client or a 5xx speak of us
            # or of the provider, and must not deactivate anyone.
            user_offboard(user=user, reason=f"{provider_id}: invalid_grant")
            counts["deactivated"] += 1
        else:
            logger.warning(
                "identity refresh: user %s, provider answered %s %s",
                user.pk,
                status,
                answer.get("error", ""),
            )
            counts["errors"] += 1
    return counts
