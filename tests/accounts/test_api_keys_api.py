"""GET/POST /api/keys and DELETE /api/keys/{id}: own keys only, the secret shown once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey, AuditEvent
from accounts.services import GENERIC_AUTH_FAILURE, api_key_create

pytestmark = pytest.mark.django_db

HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    "'; DROP TABLE accounts_apikey; --",
    '" onmouseover="x',
    "ключ 🔑 名前",
]


def post_json(client, path, data, **extra):
    return client.post(path, json.dumps(data), content_type="application/json", **extra)


def test_create_returns_the_full_key_once_and_list_never_does(client, owner):
    client.force_login(owner)
    created = post_json(client, "/api/keys", {"name": "laptop"})
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("SSOK_")
    assert len(body["key"]) == 5 + 32
    assert body["hint"] == f"{body['key'][:9]}****{body['key'][-4:]}"
    assert body["status"] == "active"
    assert body["name"] == "laptop"
    listed = client.get("/api/keys").json()
    assert listed["count"] == 1
    item = listed["results"][0]
    assert set(item) == {
        "id",
        "name",
        "hint",
        "created_at",
        "last_used_at",
        "expires_at",
        "status",
    }
    assert body["key"] not in json.dumps(listed)
    assert body["key"][9:-4] not in client.get("/api/keys").content.decode()


def test_created_key_works_as_a_credential(client, owner):
    client.force_login(owner)
    raw = post_json(client, "/api/keys", {"name": "ci"}).json()["key"]
    client.logout()
    response = client.get("/api/keys", HTTP_X_API_KEY=raw)
    assert response.status_code == 200
    assert response.json()["results"][0]["last_used_at"] is not None


def test_list_shows_only_the_callers_keys(client, owner, teammate):
    api_key_create(user=owner, name="mine")
    api_key_create(user=teammate, name="theirs")
    client.force_login(owner)
    names = [k["name"] for k in client.get("/api/keys").json()["results"]]
    assert names == ["mine"]


def test_create_with_future_expiry_and_status(client, owner):
    client.force_login(owner)
    expires = (timezone.now() + timedelta(days=30)).isoformat()
    body = post_json(client, "/api/keys", {"name": "month", "expires_at": expires}).json()
    assert body["expires_at"] is not None
    assert body["status"] == "active"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": None}, "name"),
        ({"name": ["a"]}, "name"),
        ({"name": "nul\u0000byte"}, "name"),
        ({"name": "ok", "expires_at": "yesterday"}, "expires_at"),
        ({"name": "ok", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client, owner, payload, field):
    client.force_login(owner)
    response = post_json(client, "/api/keys", payload)
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert isinstance(errors[field], list)
    assert errors[field]
    assert ApiKey.objects.count() == 0


def test_malformed_json_is_a_400(client, owner):
    client.force_login(owner)
    response = client.post("/api/keys", '{"name": "x",', content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_json_that_is_not_an_object_is_a_400(client, owner):
    client.force_login(owner)
    response = client.post("/api/keys", '["name"]', content_type="application/json")
    assert response.status_code == 400


def test_wrong_content_type_is_a_415(client, owner):
    client.force_login(owner)
    response = client.post("/api/keys", "name=laptop", content_type="text/plain")
    assert response.status_code == 415
    form = client.post("/api/keys", {"name": "laptop"})  # multipart form
    assert form.status_code == 415
    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_stored_verbatim_and_returned_as_json_text(client, owner, name):
    client.force_login(owner)
    created = post_json(client, "/api/keys", {"name": name})
    assert created.status_code == 201
    assert created["Content-Type"] == "application/json"
    assert ApiKey.objects.get().name == name  # the ORM parameterises: the table is intact
    listed = client.get("/api/keys")
    assert listed.json()["results"][0]["name"] == name
    # Served as JSON, never as HTML: a browser will not run it.
    assert listed["Content-Type"] == "application/json"
    assert listed["X-Content-Type-Options"] == "nosniff"


def test_delete_revokes_own_key(client, owner, owner_key):
    client.force_login(owner)
    response = client.delete(f"/api/keys/{owner_key.api_key.pk}")
    assert response.status_code == 204
    owner_key.api_key.refresh_from_db()
    assert owner_key.api_key.status == "revoked"
    assert client.get("/api/keys").json()["results"][0]["status"] == "revoked"
    # A credential that is present but revoked is refused, even beside a valid session.
    assert client.get("/api/keys", HTTP_X_API_KEY=owner_key.raw).status_code == 401


def test_delete_of_someone_elses_key_is_a_404_and_changes_nothing(client, teammate, owner_key):
    client.force_login(teammate)
    response = client.delete(f"/api/keys/{owner_key.api_key.pk}")
    assert response.status_code == 404
    owner_key.api_key.refresh_from_db()
    assert owner_key.api_key.status == "active"


def test_delete_of_unknown_or_non_numeric_id_is_a_404(client, owner):
    client.force_login(owner)
    assert client.delete("/api/keys/999999").status_code == 404
    assert client.delete("/api/keys/abc").status_code == 404


def test_key_endpoints_require_authentication(client):
    assert client.get("/api/keys").status_code in (401, 403)
    response = client.get("/api/keys", HTTP_AUTHORIZATION="Bearer SSOK_nope")
    assert response.status_code == 401
    assert response.json() == {"detail": GENERIC_AUTH_FAILURE}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_key_create_and_revoke_leave_an_audit_trail(client, owner):
    client.force_login(owner)
    key_id = post_json(client, "/api/keys", {"name": "audited"}, HTTP_USER_AGENT="tests/1").json()[
        "id"
    ]
    client.delete(f"/api/keys/{key_id}")
    events = list(AuditEvent.objects.order_by("created_at", "id"))
    assert [e.action for e in events] == ["key.create", "key.revoke"]
    assert all(e.actor_id == owner.pk and e.target == f"key:{key_id}" for e in events)
    assert events[0].user_agent == "tests/1"
    assert events[0].ip == "127.0.0.1"
    assert "SSOK_" not in json.dumps(events[0].detail).replace(events[0].detail["hint"], "")


def test_api_key_list_query_count_is_pinned(
    client, owner, owner_key, backend_name, django_assert_num_queries
):
    for n in range(5):
        api_key_create(user=owner, name=f"k{n}")
    client.get("/api/keys", HTTP_X_API_KEY=owner_key.raw)  # warm the credential cache
    # user row, count, page; the embedded store also reads the generation row
    with django_assert_num_queries(3 if backend_name == "redis" else 4):
        response = client.get("/api/keys", HTTP_X_API_KEY=owner_key.raw)
    assert response.json()["count"] == 6
