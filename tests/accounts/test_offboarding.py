"""Offboarding (#15): the hourly identity refresh against the real local OpenID Connect provider,
and the admin's one-click "deactivate and revoke all credentials"."""

from __future__ import annotations

import socket

import pytest
from allauth.socialaccount.models import SocialToken
from django.test import Client

from accounts.models import ApiKey, AuditEvent, Device, User
from accounts.offboarding import identities_refresh
from accounts.services import AuthFailed, api_key_authenticate, api_key_create, token_pair_create
from accounts.tasks import refresh_identities
from tests.fixtures.device_flow import api_get, signed_in_device
from tests.fixtures.oidc import sign_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_django_cache", "oidc_settings")]


def signed_in(email: str) -> tuple[Client, User]:
    """A browser signed in through the provider, and its user."""
    client = Client()
    assert sign_in(client, email=email).status_code == 302
    return client, User.objects.get(email=email)


def stored_refresh_token(user: User) -> str:
    return SocialToken.objects.get(account__user=user).token_secret


def test_sign_in_stores_the_providers_refresh_token(oidc_provider):
    _, user = signed_in("stored@example.com")
    refresh = stored_refresh_token(user)
    assert refresh
    assert oidc_provider.refresh_tokens[refresh][0] == "stored@example.com"


def test_a_user_removed_at_the_provider_loses_every_credential_at_once(oidc_provider):
    browser, user = signed_in("leaver@example.com")
    key = api_key_create(user=user, name="laptop")
    jwt = token_pair_create(user=user)
    device = signed_in_device(user)
    # Everything works before.
    assert api_get(key.raw, header="x-api-key").status_code == 200
    assert api_get(jwt["access"]).status_code == 200
    assert api_get(device["access_token"]).status_code == 200
    assert browser.get("/keys").status_code == 200

    oidc_provider.remove_user("leaver@example.com")
    counts = identities_refresh()

    assert counts == {"checked": 1, "refreshed": 0, "deactivated": 1, "errors": 0}
    user.refresh_from_db()
    assert not user.is_active
    assert api_get(key.raw, header="x-api-key").status_code == 401
    with pytest.raises(AuthFailed):
        api_key_authenticate(raw=key.raw)
    assert api_get(jwt["access"]).status_code == 401
    assert api_get(device["access_token"]).status_code == 401
    refreshed = Client().post(
        "/api/token/refresh", {"refresh": jwt["refresh"]}, content_type="application/json"
    )
    assert refreshed.status_code == 401
    # Revoked, not only refused while the user is inactive: reactivation brings none back.
    assert ApiKey.objects.get(pk=key.api_key.pk).revoked_at is not None
    assert Device.objects.get(user=user).revoked_at is not None
    assert browser.get("/keys").status_code == 302  # the session is over
    event = AuditEvent.objects.get(action="user.offboard")
    assert event.detail["api_keys"] == 1
    assert event.detail["devices"] == 1
    assert "invalid_grant" in event.detail["reason"]
    # The dead refresh token is gone: the next run asks nothing about this user.
    assert not SocialToken.objects.filter(account__user=user).exists()
    assert identities_refresh()["checked"] == 0


def test_a_refresh_that_works_keeps_the_user_and_stores_the_rotated_token(oidc_provider):
    _, user = signed_in("stayer@example.com")
    key = api_key_create(user=user, name="laptop")
    before = stored_refresh_token(user)

    assert identities_refresh() == {"checked": 1, "refreshed": 1, "deactivated": 0, "errors": 0}

    user.refresh_from_db()
    assert user.is_active
    after = stored_refresh_token(user)
    assert after != before
    assert before not in oidc_provider.refresh_tokens  # the provider retired it
    assert after in oidc_provider.refresh_tokens
    assert api_key_authenticate(raw=key.raw).user_id == user.pk
    # The rotated token is the one that works next time.
    assert identities_refresh()["refreshed"] == 1


def test_a_provider_that_does_not_rotate_keeps_the_same_token(oidc_provider):
    _, user = signed_in("same@example.com")
    before = stored_refresh_token(user)
    oidc_provider.rotate_refresh_tokens = False
    assert identities_refresh()["refreshed"] == 1
    assert stored_refresh_token(user) == before


def test_a_provider_in_an_outage_leaves_the_user_active(oidc_provider):
    _, user = signed_in("outage@example.com")
    key = api_key_create(user=user, name="laptop")
    before = stored_refresh_token(user)
    oidc_provider.outage = True  # the token endpoint answers 503

    assert identities_refresh() == {"checked": 1, "refreshed": 0, "deactivated": 0, "errors": 1}

    user.refresh_from_db()
    assert user.is_active
    assert stored_refresh_token(user) == before
    assert api_get(key.raw, header="x-api-key").status_code == 200


def test_an_unreachable_provider_leaves_the_user_active(settings):
    _, user = signed_in("unreachable@example.com")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
    app["settings"] = {**app["settings"], "server_url": f"http://127.0.0.1:{closed}"}

    assert identities_refresh() == {"checked": 1, "refreshed": 0, "deactivated": 0, "errors": 1}
    user.refresh_from_db()
    assert user.is_active


def test_a_wrong_client_secret_deactivates_nobody(settings):
    _, user = signed_in("misconfigured@example.com")
    app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
    app["secret"] = "not-the-secret"  # the provider answers invalid_client, not invalid_grant

    assert identities_refresh()["errors"] == 1
    user.refresh_from_db()
    assert user.is_active


def test_users_without_a_stored_token_are_skipped(owner, owner_key):
    assert identities_refresh() == {"checked": 0, "refreshed": 0, "deactivated": 0, "errors": 0}
    owner.refresh_from_db()
    assert owner.is_active


def test_inactive_users_are_not_asked_about(oidc_provider):
    _, user = signed_in("gone-already@example.com")
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert identities_refresh()["checked"] == 0


def test_the_beat_task_runs_the_refresh(oidc_provider):
    _, user = signed_in("task@example.com")
    oidc_provider.remove_user("task@example.com")
    assert refresh_identities.name == "accounts.refresh_identities"
    assert refresh_identities.apply().get()["deactivated"] == 1
    user.refresh_from_db()
    assert not user.is_active


# --- One click in admin -------------------------------------------------------------------------


def test_admin_action_deactivates_and_revokes_all_credentials(admin_user):
    browser, user = signed_in("fired@example.com")
    key = api_key_create(user=user, name="laptop")
    jwt = token_pair_create(user=user)
    device = signed_in_device(user)
    admin = Client()
    admin.force_login(admin_user)

    response = admin.post(
        "/admin/accounts/user/",
        {"action": "offboard", "_selected_action": [user.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert b"Offboarded 1 user(s): 1 key(s) and 1 device(s) revoked" in response.content
    user.refresh_from_db()
    assert not user.is_active
    assert ApiKey.objects.get(pk=key.api_key.pk).revoked_at is not None
    assert api_get(key.raw, header="x-api-key").status_code == 401
    assert api_get(jwt["access"]).status_code == 401
    assert api_get(device["access_token"]).status_code == 401
    assert browser.get("/keys").status_code == 302
    event = AuditEvent.objects.get(action="user.offboard")
    assert event.actor == admin_user
