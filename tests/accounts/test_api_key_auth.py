"""API keys as credentials: both headers, every rejection, the warm path's cost, other processes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from django.utils.datastructures import CaseInsensitiveMapping

from accounts.authentication import (
    AuthFailed,
    Principal,
    aauthenticate_credentials,
    authenticate_credentials,
)
from accounts.models import ApiKey
from accounts.services import (
    GENERIC_AUTH_FAILURE,
    api_key_create,
    api_key_revoke,
    user_deactivate,
)
from tests.fixtures.servers import start_gateway

pytestmark = pytest.mark.django_db


def headers(**values: str) -> CaseInsensitiveMapping:
    return CaseInsensitiveMapping({k.replace("_", "-"): v for k, v in values.items()})


def bearer(raw: str) -> CaseInsensitiveMapping:
    return headers(Authorization=f"Bearer {raw}")


def test_key_is_accepted_as_bearer_token(owner, owner_key):
    principal = authenticate_credentials(bearer(owner_key.raw))
    assert principal == Principal(
        user_id=owner.pk,
        email=owner.email,
        is_admin=False,
        api_key_id=owner_key.api_key.pk,
        auth_kind="api_key",
    )


def test_key_is_accepted_in_x_api_key_header(owner, owner_key):
    principal = authenticate_credentials(headers(X_API_Key=owner_key.raw))
    assert principal.user_id == owner.pk
    assert principal.auth_kind == "api_key"


def test_header_names_are_case_insensitive_and_scheme_too(owner, owner_key):
    assert authenticate_credentials(headers(x_api_key=owner_key.raw)).user_id == owner.pk
    assert authenticate_credentials(headers(authorization=f"bearer {owner_key.raw}")).user_id


def test_x_api_key_wins_over_a_non_bearer_authorization(owner, owner_key):
    sigv4 = "AWS4-HMAC-SHA256 Credential=AKIA/20261125/us-east-1/bedrock/aws4_request"
    principal = authenticate_credentials(headers(Authorization=sigv4, X_API_Key=owner_key.raw))
    assert principal.user_id == owner.pk


@pytest.mark.parametrize(
    "bad_headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token SSOK_abc"},
        {"Authorization": "Bearer SSOK_a SSOK_b"},
        {"X-API-Key": ""},
        {"X-API-Key": "SSOK_" + "x" * 5000},
        {"X-API-Key": "SSOK_" + "A" * 32},
        {"X-API-Key": "not-a-key-nor-a-jwt"},
    ],
    ids=[
        "missing",
        "bearer-empty",
        "bearer-space",
        "basic",
        "other-scheme",
        "two-values",
        "empty-x-api-key",
        "oversized",
        "unknown-key",
        "garbage",
    ],
)
def test_every_malformed_or_unknown_credential_fails_with_the_generic_message(bad_headers):
    with pytest.raises(AuthFailed) as failure:
        authenticate_credentials(CaseInsensitiveMapping(bad_headers))
    assert str(failure.value) == GENERIC_AUTH_FAILURE


def test_a_near_miss_key_fails_with_the_same_message_as_garbage(owner_key):
    near_miss = owner_key.raw[:-1] + ("a" if owner_key.raw[-1] != "a" else "b")
    with pytest.raises(AuthFailed) as near:
        authenticate_credentials(bearer(near_miss))
    with pytest.raises(AuthFailed) as far:
        authenticate_credentials(bearer("SSOK_nothing"))
    assert str(near.value) == str(far.value) == GENERIC_AUTH_FAILURE


def test_revoked_key_is_rejected_immediately_even_when_cached(owner_key):
    authenticate_credentials(bearer(owner_key.raw))  # now cached
    api_key_revoke(api_key=owner_key.api_key)
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(owner_key.raw))


def test_expired_key_is_rejected_even_when_cached(owner):
    created = api_key_create(
        user=owner, name="short", expires_at=timezone.now() + timedelta(minutes=5)
    )
    assert authenticate_credentials(bearer(created.raw)).api_key_id == created.api_key.pk
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        with pytest.raises(AuthFailed):
            authenticate_credentials(bearer(created.raw))
        assert ApiKey.objects.get(pk=created.api_key.pk).status == "expired"


def test_key_that_expired_before_first_use_is_rejected(owner):
    created = api_key_create(user=owner, name="old", expires_at=timezone.now() + timedelta(1))
    ApiKey.objects.filter(pk=created.api_key.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(created.raw))


def test_deactivated_users_keys_stop_at_once(owner, owner_key):
    authenticate_credentials(bearer(owner_key.raw))
    user_deactivate(user=owner)
    with pytest.raises(AuthFailed):
        authenticate_credentials(bearer(owner_key.raw))


def test_key_is_never_stored_in_plain_text(owner_key):
    raw = owner_key.raw
    body = raw.removeprefix("SSOK_")
    row = ApiKey.objects.filter(pk=owner_key.api_key.pk).values().get()
    for value in row.values():
        assert raw not in str(value)
        assert body not in str(value)
        assert body[4:-4] not in str(value)  # not even the hidden middle
    # Nowhere in the whole table either, whatever the column.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")  # noqa: S608 - our own table
        dump = repr(cursor.fetchall())
    assert body[4:-4] not in dump
    assert row["key_hash"] != raw
    assert len(row["key_hash"]) == 64


def test_last_used_is_written_at_most_once_a_minute(owner_key, django_assert_num_queries):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        authenticate_credentials(bearer(owner_key.raw))
    first = ApiKey.objects.get(pk=owner_key.api_key.pk).last_used_at
    assert first is not None
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        authenticate_credentials(bearer(owner_key.raw))
    assert ApiKey.objects.get(pk=owner_key.api_key.pk).last_used_at == first
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        authenticate_credentials(bearer(owner_key.raw))
    later = ApiKey.objects.get(pk=owner_key.api_key.pk).last_used_at
    assert later - first == timedelta(seconds=61)


def test_warm_key_costs_no_query_on_redis_and_one_read_embedded(
    owner_key, backend_name, django_assert_num_queries
):
    authenticate_credentials(bearer(owner_key.raw))  # cold: loads and records last use
    warm_queries = 0 if backend_name == "redis" else 1  # the generation row
    for _ in range(3):
        with django_assert_num_queries(warm_queries):
            authenticate_credentials(bearer(owner_key.raw))


def test_cold_key_costs_a_bounded_number_of_queries(
    owner_key, backend_name, django_assert_num_queries
):
    # The key+owner read and the first last_used write; embedded also reads the generation.
    with django_assert_num_queries(2 if backend_name == "redis" else 3):
        authenticate_credentials(bearer(owner_key.raw))


@pytest.mark.django_db(transaction=True)  # the ORM runs in another thread on a miss
@pytest.mark.usefixtures("thread_connections")
async def test_async_variant_authenticates_and_rejects_like_the_sync_one(owner_key):
    principal = await aauthenticate_credentials(headers(X_API_Key=owner_key.raw))
    assert principal.api_key_id == owner_key.api_key.pk
    again = await aauthenticate_credentials(bearer(owner_key.raw))  # warm
    assert again == principal
    with pytest.raises(AuthFailed):
        await aauthenticate_credentials(bearer("SSOK_unknownunknownunknownunknown12"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("thread_connections")
async def test_async_variant_sees_revocation_at_once(owner_key):
    from asgiref.sync import sync_to_async

    await aauthenticate_credentials(bearer(owner_key.raw))
    await sync_to_async(api_key_revoke)(api_key=owner_key.api_key)
    with pytest.raises(AuthFailed):
        await aauthenticate_credentials(bearer(owner_key.raw))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("thread_connections")
async def test_async_warm_path_runs_concurrently_on_one_loop(owner_key):
    await aauthenticate_credentials(bearer(owner_key.raw))
    results = await asyncio.gather(
        *(aauthenticate_credentials(bearer(owner_key.raw)) for _ in range(50))
    )
    assert {r.api_key_id for r in results} == {owner_key.api_key.pk}


@pytest.mark.django_db(transaction=True)
def test_revoked_key_is_rejected_in_another_process(owner_key):
    with start_gateway(upstream_url="http://127.0.0.1:9") as gateway:
        url = f"{gateway.url}/api/keys"
        for _ in range(3):  # warm the other process's cache
            ok = httpx.get(url, headers={"X-API-Key": owner_key.raw}, timeout=10)
            assert ok.status_code == 200, ok.text
        assert ok.json()["results"][0]["id"] == owner_key.api_key.pk
        api_key_revoke(api_key=owner_key.api_key)
        refused = httpx.get(url, headers={"Authorization": f"Bearer {owner_key.raw}"}, timeout=10)
        assert refused.status_code == 401
        assert refused.json() == {"detail": GENERIC_AUTH_FAILURE}
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db(transaction=True)
def test_deactivated_user_is_rejected_in_another_process(owner, owner_key):
    with start_gateway(upstream_url="http://127.0.0.1:9") as gateway:
        url = f"{gateway.url}/api/keys"
        assert httpx.get(url, headers={"X-API-Key": owner_key.raw}, timeout=10).status_code == 200
        user_deactivate(user=owner)
        assert httpx.get(url, headers={"X-API-Key": owner_key.raw}, timeout=10).status_code == 401
