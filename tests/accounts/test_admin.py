"""Django admin: every key listed and revocable, users deactivated at once, audit read-only."""

from __future__ import annotations

import pytest
from django.utils.datastructures import CaseInsensitiveMapping

from accounts.authentication import AuthFailed, authenticate_credentials
from accounts.models import AuditEvent
from accounts.services import api_key_create, audit_record

pytestmark = pytest.mark.django_db


def key_headers(raw: str) -> CaseInsensitiveMapping:
    return CaseInsensitiveMapping({"X-API-Key": raw})


def test_admin_lists_every_users_keys_without_secrets(client, admin_user, owner, teammate):
    mine = api_key_create(user=owner, name="owner-key")
    theirs = api_key_create(user=teammate, name="<script>x</script>")
    client.force_login(admin_user)
    page = client.get("/admin/accounts/apikey/")
    assert page.status_code == 200
    html = page.content.decode()
    assert mine.api_key.hint in html
    assert theirs.api_key.hint in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert mine.raw not in html
    assert mine.api_key.key_hash not in html


def test_admin_revoke_action_stops_the_key_at_once(client, admin_user, owner_key):
    authenticate_credentials(key_headers(owner_key.raw))  # cached
    client.force_login(admin_user)
    response = client.post(
        "/admin/accounts/apikey/",
        {"action": "revoke", "_selected_action": [owner_key.api_key.pk]},
    )
    assert response.status_code == 302
    with pytest.raises(AuthFailed):
        authenticate_credentials(key_headers(owner_key.raw))
    event = AuditEvent.objects.get(action="key.revoke")
    assert event.actor == admin_user


def test_admin_deactivating_a_user_stops_their_keys(client, admin_user, owner, owner_key):
    authenticate_credentials(key_headers(owner_key.raw))
    client.force_login(admin_user)
    response = client.post(
        "/admin/accounts/user/", {"action": "deactivate", "_selected_action": [owner.pk]}
    )
    assert response.status_code == 302
    owner.refresh_from_db()
    assert not owner.is_active
    with pytest.raises(AuthFailed):
        authenticate_credentials(key_headers(owner_key.raw))


def test_audit_trail_is_readable_but_not_editable(client, admin_user, owner):
    event = audit_record(action="login.success", actor=owner, target=owner.email)
    client.force_login(admin_user)
    assert client.get("/admin/accounts/auditevent/").status_code == 200
    assert client.get(f"/admin/accounts/auditevent/{event.pk}/change/").status_code == 200
    assert client.get("/admin/accounts/auditevent/add/").status_code == 403
    client.post(f"/admin/accounts/auditevent/{event.pk}/change/", {"action": "tampered"})
    client.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"})
    event.refresh_from_db()
    assert event.action == "login.success"


def test_non_admin_cannot_open_admin(client, owner):
    client.force_login(owner)
    assert client.get("/admin/accounts/apikey/").status_code == 302
