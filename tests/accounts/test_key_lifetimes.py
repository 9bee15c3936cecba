"""Key lifetimes (#15): one rule (accounts.services.api_key_expiry) for the keys page, the API,
Django admin and `createapikey`; the keys page shows each key's expiry and the policy."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import ApiKey
from accounts.services import api_key_authenticate, api_key_create
from config import clock

pytestmark = pytest.mark.django_db


def keys_page(user) -> str:
    client = Client()
    client.force_login(user)
    response = client.get("/keys")
    assert response.status_code == 200
    return response.content.decode()


def row_of(page: str, api_key: ApiKey) -> str:
    start = page.index(f'data-key-id="{api_key.pk}"')
    return page[start : page.index("</tr>", start)]


def test_the_keys_page_says_when_each_key_expires(owner):
    month = api_key_create(
        user=owner, name="month", expires_at=clock.now() + timedelta(days=30, hours=1)
    ).api_key
    day = api_key_create(
        user=owner, name="day", expires_at=clock.now() + timedelta(hours=5)
    ).api_key
    forever = api_key_create(user=owner, name="forever").api_key
    page = keys_page(owner)
    assert "expires in 30 days" in row_of(page, month)
    assert "expires within a day" in row_of(page, day)
    assert "never" in row_of(page, forever)
    assert "expires in" not in row_of(page, forever)


def test_the_keys_page_states_the_policy_when_set(owner, auth_config):
    assert "Key lifetime policy" not in keys_page(owner)
    auth_config(api_key_max_lifetime_days=90, api_key_default_lifetime_days=30)
    page = keys_page(owner)
    assert "keys live at most 90 days" in page
    assert "a key created without a date expires after 30 days" in page


def test_a_key_created_on_the_page_without_a_date_gets_the_default(owner, auth_config):
    auth_config(api_key_max_lifetime_days=90, api_key_default_lifetime_days=30)
    client = Client()
    client.force_login(owner)
    assert client.post("/keys", {"name": "laptop"}).status_code == 200
    left = ApiKey.objects.get().expires_at - clock.now()
    assert timedelta(days=30) - timedelta(minutes=1) < left <= timedelta(days=30)


def test_createapikey_applies_the_default_lifetime(auth_config):
    auth_config(api_key_default_lifetime_days=30)
    out = StringIO()
    call_command("createapikey", "cli@example.com", stdout=out)
    left = ApiKey.objects.get().expires_at - clock.now()
    assert timedelta(days=30) - timedelta(minutes=1) < left <= timedelta(days=30)
    assert api_key_authenticate(raw=out.getvalue().strip()).email == "cli@example.com"


def test_createapikey_refuses_an_expiry_beyond_the_maximum(auth_config):
    auth_config(api_key_max_lifetime_days=90)
    with pytest.raises(CommandError, match="90 days at most"):
        call_command("createapikey", "cli@example.com", "--expires-in-days", "91")
    assert not ApiKey.objects.exists()
    call_command("createapikey", "cli@example.com", "--expires-in-days", "7", stdout=StringIO())
    left = ApiKey.objects.get().expires_at - clock.now()
    assert timedelta(days=7) - timedelta(minutes=1) < left <= timedelta(days=7)


def test_admin_refuses_to_extend_a_key_beyond_the_maximum(admin_user, owner_key, auth_config):
    auth_config(api_key_max_lifetime_days=90)
    admin = Client()
    admin.force_login(admin_user)
    url = f"/admin/accounts/apikey/{owner_key.api_key.pk}/change/"
    too_late = owner_key.api_key.created_at + timedelta(days=100)

    def save(when):
        return admin.post(
            url,
            {
                "name": "laptop",
                "expires_at_0": when.strftime("%Y-%m-%d"),
                "expires_at_1": when.strftime("%H:%M:%S"),
            },
        )

    refused = save(too_late)
    assert refused.status_code == 200
    assert b"90 days at most" in refused.content
    assert ApiKey.objects.get().expires_at is None
    within = owner_key.api_key.created_at + timedelta(days=60)
    assert save(within).status_code == 302
    assert ApiKey.objects.get().expires_at.date() == within.date()
