"""The API keys page: create (shown once), list, revoke with confirmation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import AuthFailed, api_key_authenticate, api_key_create
from tests.fixtures.web import csrf_token

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert(1)</script>'; DROP TABLE keys; --"


def test_creating_a_key_shows_it_once_with_snippets(owner, owner_client):
    response = owner_client.post("/keys", {"name": "laptop"})
    assert response.status_code == 200
    raw = response.context["created"].raw
    html = response.content.decode()
    assert html.count(raw) >= 5  # the key box and every snippet
    assert f"AWS_BEARER_TOKEN_BEDROCK={raw}" in html
    assert f'ANTHROPIC_CUSTOM_HEADERS="X-API-Key: {raw}"' in html
    assert "CLAUDE_CODE_USE_BEDROCK=1" in html
    assert "ANTHROPIC_BEDROCK_BASE_URL=http://testserver/bedrock" in html
    assert 'base_url="http://testserver/anthropic"' in html
    assert 'endpoint_url="https://testserver:8443/bedrock"' in html
    assert "AWS_CA_BUNDLE=" in html
    assert api_key_authenticate(raw=raw).user_id == owner.pk
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]
    # Shown once: the list afterwards has only the hint.
    again = owner_client.get("/keys").content.decode()
    assert raw not in again
    key = ApiKey.objects.get(user=owner)
    assert key.hint in again


def test_a_key_with_an_expiry_date_expires_at_midnight_utc(owner, owner_client):
    day = (timezone.now() + timedelta(days=3)).date()
    owner_client.post("/keys", {"name": "ci", "expires_on": day.isoformat()})
    key = ApiKey.objects.get(user=owner)
    assert key.expires_at.date() == day
    assert (key.expires_at.hour, key.expires_at.minute) == (0, 0)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": ""}, "name", "This field is required."),
        ({"name": "x" * 101}, "name", "at most 100 characters"),
        ({"name": "ok", "expires_on": "2001-01-01"}, "expires_on", "Must be a date after today."),
        ({"name": "ok", "expires_on": "tomorrow"}, "expires_on", "Enter a valid date."),
    ],
)
def test_key_form_shows_field_errors(owner, owner_client, data, field, message):
    response = owner_client.post("/keys", data)
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert 'class="field-error"' in response.content.decode()
    assert not ApiKey.objects.filter(user=owner).exists()


def test_key_names_are_escaped(owner, owner_client):
    owner_client.post("/keys", {"name": HOSTILE})
    html = owner_client.get("/keys").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert ApiKey.objects.get(user=owner).name == HOSTILE


def test_key_forms_need_the_csrf_token(owner, csrf_client):
    assert csrf_client.post("/keys", {"name": "x"}).status_code == 403
    key = api_key_create(user=owner, name="laptop").api_key
    assert csrf_client.post(f"/keys/{key.pk}/revoke").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None
    token = csrf_token(csrf_client, "/keys")
    assert csrf_client.post("/keys", {"name": "x", "csrfmiddlewaretoken": token}).status_code == 200


def test_revoking_asks_for_confirmation_then_revokes(owner, owner_client):
    created = api_key_create(user=owner, name="laptop")
    confirm = owner_client.get(f"/keys/{created.api_key.pk}/revoke")
    assert confirm.status_code == 200
    assert b"Revoke key" in confirm.content
    created.api_key.refresh_from_db()
    assert created.api_key.revoked_at is None  # a GET changes nothing
    done = owner_client.post(f"/keys/{created.api_key.pk}/revoke", follow=True)
    assert done.redirect_chain == [("/keys", 302)]
    assert b"revoked." in done.content
    with pytest.raises(AuthFailed):
        api_key_authenticate(raw=created.raw)


def test_another_users_key_is_neither_listed_nor_revocable(owner_client, stranger):
    theirs = api_key_create(user=stranger, name="their-secret-name")
    assert b"their-secret-name" not in owner_client.get("/keys").content
    assert owner_client.get(f"/keys/{theirs.api_key.pk}/revoke").status_code == 404
    assert owner_client.post(f"/keys/{theirs.api_key.pk}/revoke").status_code == 404
    assert api_key_authenticate(raw=theirs.raw).user_id == stranger.pk


def test_revoked_keys_are_listed_without_a_revoke_button(owner, owner_client):
    key = api_key_create(user=owner, name="old").api_key
    owner_client.post(f"/keys/{key.pk}/revoke")
    html = owner_client.get("/keys").content.decode()
    assert ">revoked<" in html
    assert f"/keys/{key.pk}/revoke" not in html


def test_token_page_is_in_the_layout(owner_client):
    client: Client = owner_client
    page = client.get("/token")
    assert b'class="mainnav"' in page.content
    assert b"Get a new token" in page.content
