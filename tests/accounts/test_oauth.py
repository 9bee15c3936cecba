"""SSO against the local OpenID Connect provider, over real HTTP, through allauth."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from allauth.socialaccount.models import SocialAccount
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, User
from tests.fixtures.oidc import (
    CALLBACK_PATH,
    LOGIN_PATH,
    provider_answer,
    sign_in,
    start_login,
)
from tests.fixtures.personas import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("oidc_settings")]


def signed_in_email(client) -> str | None:
    response = client.get("/token")
    if response.status_code != 200:
        return None
    return response.context["request"].user.email


def test_full_authorize_callback_session_flow(client):
    authorize_url = start_login(client)
    assert authorize_url.startswith("http://127.0.0.1:")
    assert "code_challenge=" in authorize_url  # PKCE
    assert "state=" in authorize_url
    redirect = provider_answer(authorize_url, email="New.Person@Example.com")
    assert redirect.path == CALLBACK_PATH
    assert set(redirect.params) == {"code", "state"}
    response = client.get(redirect.path, redirect.params)
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert signed_in_email(client) == "new.person@example.com"
    user = User.objects.get(email="new.person@example.com")
    assert SocialAccount.objects.filter(user=user, provider="demo").exists()
    assert not user.has_usable_password()
    event = AuditEvent.objects.get(action="login.success")
    assert event.actor == user
    assert event.ip == "127.0.0.1"


def test_signing_in_again_reuses_the_account(client):
    sign_in(client, email="again@example.com")
    client.post("/accounts/logout/")
    second = Client()
    assert sign_in(second, email="again@example.com").status_code == 302
    assert User.objects.filter(email="again@example.com").count() == 1
    assert SocialAccount.objects.count() == 1


def test_existing_user_is_connected_by_verified_email(client, owner):
    assert sign_in(client, email=owner.email).status_code == 302
    assert signed_in_email(client) == owner.email
    assert User.objects.count() == 1


def test_tampered_state_is_rejected(client):
    redirect = provider_answer(start_login(client), email="someone@example.com")
    state = redirect.params["state"]
    params = {**redirect.params, "state": state[:-1] + ("X" if state[-1] != "X" else "Y")}
    response = client.get(redirect.path, params)
    assert "socialaccount/authentication_error.html" in [t.name for t in response.templates]
    assert signed_in_email(client) is None
    assert not User.objects.filter(email="someone@example.com").exists()
    assert AuditEvent.objects.filter(action="login.failure").exists()


def test_state_from_another_browser_is_rejected(client):
    redirect = provider_answer(start_login(client), email="victim@example.com")
    attacker = Client()
    response = attacker.get(redirect.path, redirect.params)
    assert "socialaccount/authentication_error.html" in [t.name for t in response.templates]
    assert signed_in_email(attacker) is None


def test_replayed_callback_is_rejected(client):
    redirect = provider_answer(start_login(client), email="replay@example.com")
    assert client.get(redirect.path, redirect.params).status_code == 302
    client.post("/accounts/logout/")
    replay = client.get(redirect.path, redirect.params)
    assert "socialaccount/authentication_error.html" in [t.name for t in replay.templates]
    assert signed_in_email(client) is None


def test_reused_authorization_code_is_rejected(client):
    first = provider_answer(start_login(client), email="reuse@example.com")
    assert client.get(first.path, first.params).status_code == 302
    other = Client()
    second = provider_answer(start_login(other), email="reuse@example.com")
    # A fresh state of the other browser, with the code already exchanged once.
    stale = {"code": first.params["code"], "state": second.params["state"]}
    response = other.get(first.path, stale)
    assert "socialaccount/authentication_error.html" in [t.name for t in response.templates]
    assert signed_in_email(other) is None


def test_expired_authorization_code_is_rejected(client, oidc_provider):
    redirect = provider_answer(start_login(client), email="slow@example.com")
    # The code lives 60 s at the provider; the state lives 10 minutes here.
    with time_machine.travel(timezone.now() + timedelta(seconds=120)):
        response = client.get(redirect.path, redirect.params)
    assert "socialaccount/authentication_error.html" in [t.name for t in response.templates]
    assert signed_in_email(client) is None
    assert not User.objects.filter(email="slow@example.com").exists()


def test_provider_access_denied_cancels_sign_in(client):
    redirect = provider_answer(start_login(client), email="x@example.com", action="deny")
    assert redirect.params["error"] == "access_denied"
    response = client.get(redirect.path, redirect.params)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/3rdparty/login/cancelled/"
    assert signed_in_email(client) is None


def test_provider_server_error_is_shown_and_audited(client):
    redirect = provider_answer(start_login(client), email="x@example.com")
    params = {"error": "server_error", "state": redirect.params["state"]}
    response = client.get(redirect.path, params)
    assert "socialaccount/authentication_error.html" in [t.name for t in response.templates]
    assert signed_in_email(client) is None
    event = AuditEvent.objects.get(action="login.failure")
    assert event.detail["provider"] == "demo"


def test_disallowed_domain_is_refused(client, auth_config):
    auth_config(allowed_email_domains=["example.com"])
    response = sign_in(client, email="intruder@elsewhere.test")
    assert response.status_code == 403
    assert b"domain not allowed" in response.content
    assert signed_in_email(client) is None
    assert not User.objects.filter(email="intruder@elsewhere.test").exists()
    event = AuditEvent.objects.get(action="login.failure")
    assert event.target == "intruder@elsewhere.test"
    allowed = Client()
    assert sign_in(allowed, email="member@example.com").status_code == 302


def test_sign_out_ends_the_session(client):
    sign_in(client, email="leaving@example.com")
    assert signed_in_email(client) == "leaving@example.com"
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert signed_in_email(client) is None
    assert AuditEvent.objects.filter(action="logout").exists()


def test_admin_flag_comes_from_configured_emails_at_every_sign_in(auth_config):
    auth_config(admin_emails=["Boss@Example.com"])
    assert sign_in(Client(), email="boss@example.com").status_code == 302
    boss = User.objects.get(email="boss@example.com")
    assert (boss.is_staff, boss.is_superuser, boss.admin_from_config) == (True, True, True)
    assert sign_in(Client(), email="worker@example.com").status_code == 302
    assert not User.objects.get(email="worker@example.com").is_staff
    # Taken off the list: the next sign-in removes the flag the list gave.
    auth_config(admin_emails=[])
    sign_in(Client(), email="boss@example.com")
    boss.refresh_from_db()
    assert (boss.is_staff, boss.is_superuser) == (False, False)
    assert AuditEvent.objects.filter(action="user.admin_revoke", target=f"user:{boss.pk}").exists()


def test_superuser_made_by_hand_keeps_the_flag_when_not_listed(auth_config):
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    auth_config(admin_emails=["someone-else@example.com"])
    assert sign_in(Client(), email="root@example.com").status_code == 302
    root.refresh_from_db()
    assert (root.is_staff, root.is_superuser) == (True, True)


def test_admin_flag_change_reaches_cached_credentials(auth_config, owner, owner_key):
    from django.utils.datastructures import CaseInsensitiveMapping

    from accounts.authentication import authenticate_credentials

    headers = CaseInsensitiveMapping({"X-API-Key": owner_key.raw})
    assert authenticate_credentials(headers).is_admin is False
    auth_config(admin_emails=[owner.email])
    sign_in(Client(), email=owner.email)
    assert authenticate_credentials(headers).is_admin is True


def test_login_page_lists_the_provider_and_no_password_form(client):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert LOGIN_PATH.encode() in page.content
    assert b'type="password"' not in page.content


def test_local_passwords_are_closed_by_default(client, owner):
    owner.set_password("correct horse battery staple")
    owner.save()
    response = client.post(
        "/accounts/login/", {"login": owner.email, "password": "correct horse battery staple"}
    )
    assert response.status_code == 403
    assert signed_in_email(client) is None
    assert client.get("/accounts/signup/").status_code == 404
    assert client.get("/accounts/password/reset/").status_code == 404


def test_login_start_by_get_does_not_redirect_to_the_provider(client):
    # SOCIALACCOUNT_LOGIN_ON_GET is off: a link cannot start a sign-in (login CSRF).
    response = client.get(LOGIN_PATH)
    assert response.status_code == 200


# --- email_verified (issue #14) -----------------------------------------------------------------


@pytest.mark.parametrize("claim", [False, None], ids=["false", "missing"])
def test_it_refuses_an_unverified_email_from_an_oidc_provider(oidc_settings, auth_config, claim):
    auth_config(admin_emails=["boss@example.com"], allowed_email_domains=["example.com"])
    oidc_settings.email_verified = claim
    client = Client()
    response = sign_in(client, email="boss@example.com")
    assert response.status_code == 403
    assert signed_in_email(client) is None
    assert not User.objects.filter(email="boss@example.com").exists()
    event = AuditEvent.objects.get(action="login.failure")
    assert event.detail["reason"] == "e-mail not verified"


def test_it_refuses_an_unverified_email_of_an_existing_admin(oidc_settings, auth_config):
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    oidc_settings.email_verified = False
    client = Client()
    assert sign_in(client, email=root.email).status_code == 403
    assert signed_in_email(client) is None
    assert not SocialAccount.objects.exists()


def test_require_email_verified_false_lets_an_unverified_email_sign_in(oidc_settings, auth_config):
    from config.conf import OidcProviderConfig

    auth_config(
        oidc={
            "demo": OidcProviderConfig(
                client_id="x", server_url=oidc_settings.url, require_email_verified=False
            )
        }
    )
    oidc_settings.email_verified = False
    client = Client()
    assert sign_in(client, email="unverified@example.com").status_code == 302
    assert signed_in_email(client) == "unverified@example.com"


def test_a_verified_email_signs_in_as_before(oidc_settings):
    assert oidc_settings.email_verified is True
    client = Client()
    assert sign_in(client, email="verified@example.com").status_code == 302
    assert signed_in_email(client) == "verified@example.com"
