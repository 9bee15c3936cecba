"""The demo sign-in (auth.demo_provider) is safe by construction: loopback only, no real
provider beside it, demo-created accounts only, passwords untouched, admin from the list only,
and a banner on every page while it is on. Over real HTTP against the local OIDC provider."""

from __future__ import annotations

import hashlib

import pytest
from allauth.socialaccount.models import SocialAccount
from django.test import Client

from accounts.models import AuditEvent, User
from config.conf import load_config
from tests.fixtures.oidc import sign_in
from tests.fixtures.personas import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("oidc_settings")]

BANNER = "Demo sign-in is on: anyone who can reach this server can sign in as any e-mail"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def demo_on(auth_config):
    """The tests' provider id is "demo", as the demo sign-in's: turning the flag on makes it
    the demo sign-in (config/settings.py lists it exactly so)."""
    auth_config(demo_provider=True)


def signed_in(client) -> bool:
    return client.get("/token").status_code == 200


@pytest.mark.parametrize(
    "environ",
    [
        {"GATEWAY_SERVER__HOST": "0.0.0.0"},  # noqa: S104 - the point of the test
        {"GATEWAY_SERVER__HOST": "192.168.1.10"},
        {
            "GATEWAY_AUTH__OIDC__CORP__CLIENT_ID": "gw",
            "GATEWAY_AUTH__OIDC__CORP__SERVER_URL": "https://login.example.com",
        },
        {"GATEWAY_AUTH__PROVIDERS__GITHUB__CLIENT_ID": "gw"},
    ],
)
def test_demo_sign_in_is_off_unless_loopback_and_no_real_provider(environ):
    config = load_config({"GATEWAY_AUTH__DEMO_PROVIDER": "true", **environ})
    assert config.auth.demo_provider is False


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_demo_sign_in_stays_on_on_loopback(host):
    config = load_config({"GATEWAY_AUTH__DEMO_PROVIDER": "true", "GATEWAY_SERVER__HOST": host})
    assert config.auth.demo_provider is True


def test_a_new_email_gets_a_demo_account_without_a_password(demo_on):
    client = Client()
    assert sign_in(client, email="new@example.com").status_code == 302
    assert signed_in(client)
    user = User.objects.get(email="new@example.com")
    assert user.created_by_demo
    assert not user.has_usable_password()
    again = Client()
    assert sign_in(again, email="new@example.com").status_code == 302
    assert signed_in(again)


def test_it_never_signs_into_a_createsuperuser_account(demo_on):
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    client = Client()
    response = sign_in(client, email="root@example.com")
    assert response.status_code == 403
    assert "the demo sign-in did not create" in response.content.decode()
    assert not signed_in(client)
    root.refresh_from_db()
    assert root.check_password(PASSWORD)  # never touched
    assert not SocialAccount.objects.filter(user=root).exists()
    event = AuditEvent.objects.filter(action="login.failure", target="root@example.com").get()
    assert "did not create" in event.detail["reason"]


def test_it_refuses_an_ordinary_account_with_the_same_email_whatever_the_case(demo_on):
    make_user("worker@example.com")
    assert sign_in(Client(), email="Worker@Example.com").status_code == 403


def test_an_account_connected_to_the_demo_by_an_older_version_is_refused(demo_on):
    """A demo social account linked to a non-demo user (old e-mail auto-connect) opens nothing."""
    root = User.objects.create_superuser("root", "root@example.com", PASSWORD)
    uid = "demo-" + hashlib.sha256(b"root@example.com").hexdigest()[:24]
    SocialAccount.objects.create(user=root, provider="demo", uid=uid)
    client = Client()
    assert sign_in(client, email="root@example.com").status_code == 403
    assert not signed_in(client)


def test_admin_only_from_the_list(demo_on, auth_config):
    auth_config(demo_provider=True, admin_emails=["you@example.com"])
    assert sign_in(Client(), email="you@example.com").status_code == 302
    you = User.objects.get(email="you@example.com")
    assert (you.is_staff, you.is_superuser) == (True, True)
    # A demo account made administrator by hand loses it: anyone can sign in as it.
    assert sign_in(Client(), email="other@example.com").status_code == 302
    User.objects.filter(email="other@example.com").update(is_staff=True, is_superuser=True)
    assert sign_in(Client(), email="other@example.com").status_code == 302
    other = User.objects.get(email="other@example.com")
    assert (other.is_staff, other.is_superuser) == (False, False)


def test_a_configured_provider_called_demo_still_connects_by_email(owner):
    """With the demo sign-in off, an `auth.oidc.demo` provider is an ordinary one."""
    client = Client()
    assert sign_in(client, email=owner.email).status_code == 302
    assert signed_in(client)


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_banner_on_every_page_while_on(demo_on, path):
    page = Client().get(path)
    assert page.status_code == 200
    assert BANNER in page.content.decode()


def test_banner_on_signed_in_pages_and_docs(demo_on, owner):
    client = Client()
    client.force_login(owner)
    for path in ["/", "/keys", "/api/docs", "/api/redoc"]:
        page = client.get(path)
        assert page.status_code == 200, path
        assert BANNER in page.content.decode(), path


def test_no_banner_when_off():
    assert BANNER not in Client().get("/accounts/login/").content.decode()
