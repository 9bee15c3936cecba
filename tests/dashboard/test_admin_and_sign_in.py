"""Django admin additions (a user's keys and caps inline) and the sign-in page."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import api_key_create
from caps.services import cap_create
from tests.fixtures.oidc import LOGIN_PATH, oidc_provider, oidc_settings  # noqa: F401

pytestmark = pytest.mark.django_db


def test_user_admin_page_shows_keys_and_caps_inline(owner, admin_user):
    key = api_key_create(user=owner, name="laptop").api_key
    cap = cap_create(user_id=owner.pk, cap_type="hourly", set_by="user", max_requests=42)
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/accounts/user/{owner.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert key.hint in html
    assert f"/admin/accounts/apikey/{key.pk}/change/" in html
    assert f"/admin/caps/usercapconfig/{cap.pk}/change/" in html
    assert "AI Gateway administration" in html


@pytest.mark.usefixtures("oidc_settings")
def test_sign_in_page_has_a_button_per_provider_and_explains_the_demo(client):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'<form method="post" action="{LOGIN_PATH}' in html
    assert "Sign in with Demo" in html
    assert "Demo sign-in:" in html
    assert 'type="password"' not in html
    assert "script-src 'self'" in page["Content-Security-Policy"]


def test_sign_in_page_says_when_nothing_is_configured(client, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {}
    html = client.get("/accounts/login/").content.decode()
    assert "No sign-in method is configured" in html


def test_sign_out_is_a_post_in_the_layout(owner):
    client = Client()
    client.force_login(owner)
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302
