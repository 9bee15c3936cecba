"""JWTs: obtaining, claims, expiry, signatures, rotation, revocation at sign-out, concurrency."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import jwt as pyjwt
import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django.utils.datastructures import CaseInsensitiveMapping
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from accounts.authentication import AuthFailed, authenticate_credentials
from accounts.models import AuditEvent
from accounts.services import (
    GENERIC_AUTH_FAILURE,
    token_pair_create,
    user_deactivate,
    user_tokens_revoke,
)

pytestmark = pytest.mark.django_db


def bearer(raw: str) -> CaseInsensitiveMapping:
    return CaseInsensitiveMapping({"Authorization": f"Bearer {raw}"})


def refresh_call(client, refresh: str):
    return client.post(
        "/api/token/refresh", json.dumps({"refresh": refresh}), content_type="application/json"
    )


def decode(token: str) -> dict:
    return pyjwt.decode(token, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])


def test_signed_in_user_obtains_a_pair_through_the_session(client, owner):
    client.force_login(owner)
    response = client.post("/api/token", content_type="application/json")
    assert response.status_code == 200
    pair = response.json()
    assert set(pair) == {"access", "refresh"}
    principal = authenticate_credentials(bearer(pair["access"]))
    assert (principal.user_id, principal.auth_kind, principal.api_key_id) == (owner.pk, "jwt", None)


def test_token_endpoint_requires_a_session_not_a_key_or_token(client, owner, owner_key):
    assert client.post("/api/token").status_code in (401, 403)
    with_key = client.post("/api/token", HTTP_AUTHORIZATION=f"Bearer {owner_key.raw}")
    assert with_key.status_code in (401, 403)
    access = token_pair_create(user=owner)["access"]
    assert client.post("/api/token", HTTP_AUTHORIZATION=f"Bearer {access}").status_code in (
        401,
        403,
    )


def test_token_endpoint_enforces_csrf_for_sessions(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post("/api/token").status_code == 403


def test_access_token_carries_the_custom_claims(owner, admin_user):
    claims = decode(token_pair_create(user=owner)["access"])
    assert claims["user_id"] == str(owner.pk)
    assert claims["email"] == "owner@example.com"
    assert claims["is_admin"] is False
    assert claims["token_type"] == "access"
    assert claims["exp"] - claims["iat"] == 3600  # the default lifetime
    admin_claims = decode(token_pair_create(user=admin_user)["access"])
    assert admin_claims["is_admin"] is True
    assert authenticate_credentials(bearer(token_pair_create(user=admin_user)["access"])).is_admin


def test_valid_token_is_accepted_by_the_management_api(client, owner):
    access = token_pair_create(user=owner)["access"]
    response = client.get("/api/keys", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 200


def test_expired_access_token_is_rejected(owner):
    access = token_pair_create(user=owner)["access"]
    later = timezone.now() + timedelta(hours=1, seconds=5)
    with time_machine.travel(later), pytest.raises(AuthFailed) as failure:
        authenticate_credentials(bearer(access))
    assert str(failure.value) == GENERIC_AUTH_FAILURE


def test_token_signed_with_another_key_is_rejected(owner):
    claims = decode(token_pair_create(user=owner)["access"])
    forged = pyjwt.encode(claims, "another-secret-of-at-least-32-characters!", algorithm="HS256")
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(forged))


def test_token_with_alg_none_is_rejected(owner):
    claims = decode(token_pair_create(user=owner)["access"])
    unsigned = pyjwt.encode(claims, key=None, algorithm="none")
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(unsigned))


def test_tampered_payload_is_rejected(owner, admin_user):
    header, _payload, signature = token_pair_create(user=owner)["access"].split(".")
    claims = decode(token_pair_create(user=owner)["access"])
    claims["user_id"] = str(admin_user.pk)
    forged_payload = pyjwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(f"{header}.{forged_payload}.{signature}"))


def test_refresh_token_used_as_access_is_rejected(owner):
    refresh = token_pair_create(user=owner)["refresh"]
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(refresh))


@pytest.mark.parametrize(
    "value",
    ["Bearer", "Bearer a.b", "Bearer a.b.c", "Bearer ...", "JWT eyJhbGciOi.x.y", "eyJ.x.y"],
)
def test_malformed_authorization_headers_are_rejected(client, value):
    response = client.get("/api/keys", HTTP_AUTHORIZATION=value)
    assert response.status_code == 401
    assert response.json() == {"detail": GENERIC_AUTH_FAILURE}
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_refresh_rotates_and_the_used_refresh_is_rejected_afterwards(client, owner):
    first = token_pair_create(user=owner)
    rotated = refresh_call(client, first["refresh"])
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh"] != first["refresh"]
    assert authenticate_credentials(bearer(second["access"])).user_id == owner.pk
    replay = refresh_call(client, first["refresh"])
    assert replay.status_code == 401
    assert replay.json() == {"detail": GENERIC_AUTH_FAILURE}
    assert refresh_call(client, second["refresh"]).status_code == 200


def test_refresh_with_an_access_token_or_garbage_is_a_401(client, owner):
    access = token_pair_create(user=owner)["access"]
    assert refresh_call(client, access).status_code == 401
    assert refresh_call(client, "garbage").status_code == 401


def test_refresh_bad_input_is_a_400_or_415(client):
    assert refresh_call(client, "").status_code == 400
    assert (
        client.post("/api/token/refresh", "{", content_type="application/json").status_code == 400
    )
    empty = client.post("/api/token/refresh", "{}", content_type="application/json")
    assert empty.status_code == 400
    assert list(empty.json()) == ["refresh"]
    wrong_type = client.post("/api/token/refresh", "refresh=x", content_type="text/plain")
    assert wrong_type.status_code == 415


def test_expired_refresh_token_is_rejected(client, owner):
    refresh = token_pair_create(user=owner)["refresh"]
    with time_machine.travel(timezone.now() + timedelta(days=91)):
        assert refresh_call(client, refresh).status_code == 401


def test_sign_out_revokes_every_token_of_the_user(client, owner):
    client.force_login(owner)
    pairs = [client.post("/api/token").json() for _ in range(2)]
    rotated = refresh_call(client, pairs[1]["refresh"]).json()
    for pair in [*pairs, rotated]:
        authenticate_credentials(bearer(pair["access"]))  # valid, and now cached
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    for pair in [*pairs, rotated]:
        with pytest.raises(AuthFailed):
            authenticate_credentials(bearer(pair["access"]))
        assert refresh_call(client, pair["refresh"]).status_code == 401
    assert BlacklistedToken.objects.filter(token__user=owner).count() == 3
    assert client.get("/api/keys").status_code in (401, 403)  # the session ended too
    assert AuditEvent.objects.filter(action="token.revoke", actor=owner).exists()


def test_tokens_issued_after_sign_out_work(owner):
    user_tokens_revoke(user=owner)
    owner.refresh_from_db()
    fresh = token_pair_create(user=owner)
    assert authenticate_credentials(bearer(fresh["access"])).user_id == owner.pk


def test_sign_out_by_get_does_not_revoke(client, owner):
    client.force_login(owner)
    access = client.post("/api/token").json()["access"]
    client.get("/accounts/logout/")
    assert authenticate_credentials(bearer(access)).user_id == owner.pk


def test_deactivated_users_tokens_stop_at_once(client, owner):
    pair = token_pair_create(user=owner)
    authenticate_credentials(bearer(pair["access"]))
    user_deactivate(user=owner)
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(pair["access"]))
    assert refresh_call(client, pair["refresh"]).status_code == 401


def test_warm_jwt_costs_no_query_on_redis_and_one_read_embedded(
    owner, backend_name, django_assert_num_queries
):
    access = token_pair_create(user=owner)["access"]
    authenticate_credentials(bearer(access))
    with django_assert_num_queries(0 if backend_name == "redis" else 1):
        authenticate_credentials(bearer(access))


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_token_all_succeed(live_server, owner):
    import httpx

    access = token_pair_create(user=owner)["access"]
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        response = httpx.get(
            f"{live_server.url}/api/keys",
            headers={"Authorization": f"Bearer {access}"},
            timeout=20,
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 16


@pytest.mark.django_db(transaction=True)
def test_concurrent_refresh_with_one_token_succeeds_once(live_server, owner):
    import httpx

    refresh = token_pair_create(user=owner)["refresh"]
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        response = httpx.post(
            f"{live_server.url}/api/token/refresh", json={"refresh": refresh}, timeout=20
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [401] * 7


def test_token_page_requires_sign_in(client):
    response = client.get("/token")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_token_page_shows_a_fresh_pair_on_post_only(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    page = client.get("/token")
    assert page.status_code == 200
    assert b"Get a new token" in page.content
    assert b"access-token" not in page.content
    assert client.post("/token").status_code == 403  # no CSRF token
    csrf = page.cookies["csrftoken"].value
    shown = client.post("/token", {"csrfmiddlewaretoken": csrf})
    assert shown.status_code == 200
    access = shown.context["tokens"]["access"]
    assert access.encode() in shown.content
    assert authenticate_credentials(bearer(access)).user_id == owner.pk
    assert "no-cache" in shown["Cache-Control"] or "no-store" in shown["Cache-Control"]
