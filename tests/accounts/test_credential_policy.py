"""Issue #14: credentials only from a session, admin = is_superuser, key lifetimes, key hashing
with its own rotating secrets."""

from __future__ import annotations

import hmac
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django.utils.datastructures import CaseInsensitiveMapping
from rest_framework.test import APIClient

from accounts.authentication import authenticate_credentials
from accounts.models import ApiKey, AuditEvent, User
from accounts.permissions import SESSION_REQUIRED
from accounts.services import AuthFailed, api_key_create, token_pair_create
from tests.fixtures.personas import make_user

pytestmark = pytest.mark.django_db

OLD_SECRET = "old-django-secret-" + "o" * 40
HASH_KEY_2 = "hash-key-two-" + "2" * 40
HASH_KEY_3 = "hash-key-three-" + "3" * 40


def key_headers(raw: str) -> CaseInsensitiveMapping:
    return CaseInsensitiveMapping({"X-API-Key": raw})


def signed_in(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)  # a real session (SessionAuthentication), as the dashboard has
    return client


# --- 1. Keys and tokens are minted only from a session -----------------------------------------


def test_it_refuses_to_create_a_key_with_an_api_key(owner, owner_key):
    response = APIClient().post(
        "/api/keys", {"name": "more"}, format="json", HTTP_X_API_KEY=owner_key.raw
    )
    assert response.status_code == 403
    assert response.json() == {"detail": SESSION_REQUIRED}
    assert ApiKey.objects.count() == 1


def test_it_refuses_to_create_a_key_with_a_jwt(owner):
    access = token_pair_create(user=owner)["access"]
    response = APIClient().post(
        "/api/keys", {"name": "more"}, format="json", HTTP_AUTHORIZATION=f"Bearer {access}"
    )
    assert response.status_code == 403
    assert response.json() == {"detail": SESSION_REQUIRED}
    assert not ApiKey.objects.exists()


def test_it_refuses_a_key_header_beside_a_session_when_creating(owner, owner_key):
    # The key is who the request is from: a session cookie beside it does not make it one.
    client = signed_in(owner)
    response = client.post(
        "/api/keys", {"name": "more"}, format="json", HTTP_X_API_KEY=owner_key.raw
    )
    assert response.status_code == 403
    assert ApiKey.objects.count() == 1


@pytest.mark.parametrize("kind", ["key", "jwt"])
def test_it_refuses_to_mint_a_jwt_with_a_key_or_a_jwt(owner, owner_key, kind):
    credential = owner_key.raw if kind == "key" else token_pair_create(user=owner)["access"]
    response = APIClient().post("/api/token", HTTP_AUTHORIZATION=f"Bearer {credential}")
    assert response.status_code == 403
    assert response.json() == {"detail": SESSION_REQUIRED}


def test_a_key_or_jwt_may_still_list_and_revoke_keys(owner, owner_key):
    api = APIClient()
    listed = api.get("/api/keys", HTTP_X_API_KEY=owner_key.raw)
    assert listed.status_code == 200
    other = api_key_create(user=owner, name="other")
    access = token_pair_create(user=owner)["access"]
    revoked = api.delete(f"/api/keys/{other.api_key.pk}", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert revoked.status_code == 204


def test_the_refresh_token_still_rotates_without_a_session(owner):
    refresh = token_pair_create(user=owner)["refresh"]
    response = APIClient().post("/api/token/refresh", {"refresh": refresh}, format="json")
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


def test_a_session_still_creates_keys_and_tokens(owner):
    client = signed_in(owner)
    assert client.post("/api/keys", {"name": "ok"}, format="json").status_code == 201
    assert client.post("/api/token").status_code == 200


@pytest.mark.parametrize("target", ["teammate", 987654, "abc"])
def test_it_refuses_a_key_for_another_user_from_a_non_admin_whatever_the_id(
    owner, teammate, target
):
    user = teammate.pk if target == "teammate" else target
    response = signed_in(owner).post("/api/keys", {"name": "x", "user": user}, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Only administrators create keys for a user."}
    assert not ApiKey.objects.exists()


def test_an_admin_signed_in_creates_a_key_for_a_user_and_the_audit_trail_says_so(
    admin_user, teammate
):
    response = signed_in(admin_user).post(
        "/api/keys", {"name": "for-teammate", "user": teammate.pk}, format="json"
    )
    assert response.status_code == 201
    api_key = ApiKey.objects.get()
    assert api_key.user == teammate
    assert authenticate_credentials(key_headers(response.json()["key"])).user_id == teammate.pk
    event = AuditEvent.objects.get(action="key.create")
    assert event.actor == admin_user
    assert event.detail["owner"] == teammate.email
    assert event.detail["on_behalf_of"] == teammate.email


def test_it_refuses_an_admin_key_creating_a_key_for_a_user(admin_user, teammate):
    admin_key = api_key_create(user=admin_user, name="admin-laptop")
    response = APIClient().post(
        "/api/keys",
        {"name": "x", "user": teammate.pk},
        format="json",
        HTTP_X_API_KEY=admin_key.raw,
    )
    assert response.status_code == 403
    assert not ApiKey.objects.filter(user=teammate).exists()


# --- 2. The gateway's administrator is is_superuser -------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/admin/usage/records", "/api/admin/usage/unpriced-models", "/api/costs"]
)
def test_it_refuses_admin_apis_to_staff_without_superuser(path):
    staff = make_user("staff@example.com", is_staff=True)
    root = make_user("root@example.com", is_staff=True, is_superuser=True)
    assert signed_in(staff).get(path).status_code == 403
    assert signed_in(root).get(path).status_code == 200


def test_it_refuses_a_cap_for_a_user_from_staff_without_superuser(owner):
    staff = make_user("staff@example.com", is_staff=True)
    response = signed_in(staff).post(
        "/api/usage/caps", {"cap_type": "daily", "max_requests": 1, "user": owner.pk}, format="json"
    )
    assert response.status_code == 403


def test_staff_alone_is_no_admin_in_credentials():
    staff = make_user("staff@example.com", is_staff=True)
    assert staff.is_admin is False
    key = api_key_create(user=staff, name="k")
    assert authenticate_credentials(key_headers(key.raw)).is_admin is False
    access = token_pair_create(user=staff)["access"]
    headers = CaseInsensitiveMapping({"Authorization": f"Bearer {access}"})
    assert authenticate_credentials(headers).is_admin is False


def test_createapikey_admin_gives_both_flags_to_a_staff_only_user():
    make_user("half@example.com", is_staff=True)
    call_command("createapikey", "half@example.com", "--admin", stdout=StringIO())
    user = User.objects.get(email="half@example.com")
    assert (user.is_staff, user.is_superuser) == (True, True)


# --- 4. Key lifetimes ---------------------------------------------------------------------------


def test_it_gives_a_key_without_expiry_the_default_lifetime(owner, auth_config):
    auth_config(api_key_default_lifetime_days=30, api_key_max_lifetime_days=90)
    before = timezone.now()
    response = signed_in(owner).post("/api/keys", {"name": "default"}, format="json")
    assert response.status_code == 201
    expires_at = ApiKey.objects.get().expires_at
    assert before + timedelta(days=30) <= expires_at <= timezone.now() + timedelta(days=30)
    assert response.json()["expires_at"] is not None


def test_a_key_without_expiry_gets_the_maximum_when_only_a_maximum_is_set(owner, auth_config):
    auth_config(api_key_max_lifetime_days=7)
    signed_in(owner).post("/api/keys", {"name": "max"}, format="json")
    expires_at = ApiKey.objects.get().expires_at
    assert timedelta(days=7) - timedelta(minutes=1) < expires_at - timezone.now() <= timedelta(7)


def test_it_refuses_an_expiry_beyond_the_max_lifetime_naming_the_field(owner, auth_config):
    auth_config(api_key_max_lifetime_days=90)
    too_late = (timezone.now() + timedelta(days=91)).isoformat()
    response = signed_in(owner).post(
        "/api/keys", {"name": "long", "expires_at": too_late}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()) == ["expires_at"]
    assert "90 days" in response.json()["expires_at"][0]
    assert not ApiKey.objects.exists()
    within = (timezone.now() + timedelta(days=89)).isoformat()
    ok = signed_in(owner).post("/api/keys", {"name": "ok", "expires_at": within}, format="json")
    assert ok.status_code == 201


def test_keys_stay_permanent_when_no_lifetime_is_configured(owner):
    signed_in(owner).post("/api/keys", {"name": "forever"}, format="json")
    assert ApiKey.objects.get().expires_at is None


def test_it_refuses_an_expiry_beyond_the_max_on_the_keys_page(owner, auth_config):
    auth_config(api_key_max_lifetime_days=10)
    client = Client()
    client.force_login(owner)
    day = (timezone.now() + timedelta(days=30)).date().isoformat()
    page = client.post("/keys", {"name": "long", "expires_on": day})
    assert page.status_code == 400
    assert b"10 days at most" in page.content
    assert not ApiKey.objects.exists()
    # The page says the limit and, created with none, shows the expiry it got.
    created = client.post("/keys", {"name": "short"})
    assert created.status_code == 200
    assert b"At most 10 days from now." in created.content
    expires_at = ApiKey.objects.get().expires_at
    assert f"Expires {expires_at:%Y-%m-%d %H:%M} UTC".encode() in created.content


# --- 5. Key hashing with its own rotating secrets -----------------------------------------------


def test_old_keys_verify_after_a_new_hash_key_and_new_keys_use_version_2(
    owner, settings, auth_config
):
    settings.SECRET_KEY = OLD_SECRET
    old = api_key_create(user=owner, name="before")
    assert old.api_key.hash_version == 1
    assert len(old.raw) == 5 + 32  # version 1 keys look as they always did
    # The operator adds a new first secret and keeps the one that hashed version 1.
    auth_config(api_key_hash_keys=[HASH_KEY_2, OLD_SECRET])
    new = api_key_create(user=owner, name="after")
    assert new.api_key.hash_version == 2
    assert new.raw.startswith("SSOK_v2_")
    assert new.api_key.hint.startswith("SSOK_v2_")
    for created in (old, new):
        principal = authenticate_credentials(key_headers(created.raw))
        assert principal.api_key_id == created.api_key.pk
    # And a third: every version still verifies.
    auth_config(api_key_hash_keys=[HASH_KEY_3, HASH_KEY_2, OLD_SECRET])
    third = api_key_create(user=owner, name="third")
    assert third.api_key.hash_version == 3
    for created in (old, new, third):
        assert authenticate_credentials(key_headers(created.raw)).user_id == owner.pk


def test_rotating_the_secret_key_breaks_no_key_when_hash_keys_are_set(owner, settings, auth_config):
    settings.SECRET_KEY = OLD_SECRET
    v1 = api_key_create(user=owner, name="v1")
    auth_config(api_key_hash_keys=[HASH_KEY_2, OLD_SECRET])
    v2 = api_key_create(user=owner, name="v2")
    settings.SECRET_KEY = "a-brand-new-django-secret-" + "n" * 40
    from accounts.credential_cache import get_credential_cache

    get_credential_cache().clear()  # nothing served from memory: the hashes are recomputed
    for created in (v1, v2):
        assert authenticate_credentials(key_headers(created.raw)).api_key_id == created.api_key.pk


def test_without_hash_keys_a_key_is_hashed_with_the_secret_key(owner, settings):
    settings.SECRET_KEY = OLD_SECRET
    created = api_key_create(user=owner, name="k")
    settings.SECRET_KEY = "a-brand-new-django-secret-" + "n" * 40
    from accounts.credential_cache import get_credential_cache

    get_credential_cache().clear()
    with pytest.raises(AuthFailed):
        authenticate_credentials(key_headers(created.raw))


def test_it_refuses_a_key_whose_version_no_secret_has(owner, auth_config):
    auth_config(api_key_hash_keys=[HASH_KEY_2, OLD_SECRET])
    created = api_key_create(user=owner, name="k")
    forged = created.raw.replace("SSOK_v2_", "SSOK_v9_", 1)
    with pytest.raises(AuthFailed):
        authenticate_credentials(key_headers(forged))
    downgraded = created.raw.replace("SSOK_v2_", "SSOK_", 1)
    with pytest.raises(AuthFailed):
        authenticate_credentials(key_headers(downgraded))


def test_a_key_check_costs_one_hmac_whatever_the_number_of_hash_keys(
    owner, auth_config, monkeypatch
):
    auth_config(api_key_hash_keys=[HASH_KEY_3, HASH_KEY_2, OLD_SECRET])
    created = api_key_create(user=owner, name="k")
    authenticate_credentials(key_headers(created.raw))  # warm
    calls = []
    real = hmac.new

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("accounts.services.hmac.new", counting)
    authenticate_credentials(key_headers(created.raw))
    assert calls == [HASH_KEY_3.encode()]
