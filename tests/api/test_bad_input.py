"""The 500s schemathesis found in /api, pinned: each bad input is a 400 in DRF's shape
(`{"field": [...]}`), and the lists' shapes are what the OpenAPI schema says."""

from __future__ import annotations

import pytest

from accounts.services import api_key_create, user_get_or_create

HUGE = "99999999999999999999999"  # beyond any 64-bit integer


@pytest.fixture
def admin_headers(db) -> dict[str, str]:
    admin = user_get_or_create(email="bad-input-admin@example.com", admin=True)
    return {"HTTP_X_API_KEY": api_key_create(user=admin, name="tests").raw}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/usage/caps?user=%C2%B2", "user"),  # "²".isdigit(), yet int("²") fails
        ("/api/usage/caps/status?user=%C2%B2", "user"),
        (f"/api/usage/caps?user={HUGE}", "user"),  # SQLite: int too large
        (f"/api/usage/caps/status?user={HUGE}", "user"),
        (f"/api/usage/records?key={HUGE}", "key"),
        (f"/api/admin/usage/records?user={HUGE}", "user"),
        ("/api/usage/records?status=%C2%B2%C2%B2%C2%B2", "status"),
        ("/api/usage/records?to=9999-12-31", "to"),  # a bare end date's next day overflows
        ("/api/usage/records?from=0001-01-01T00:00%2B05:00", "from"),  # UTC is year 0
        ("/api/usage/summary?to=9999-12-31", "to"),
        ("/api/usage/summary?from=9999-12-31T23:30&to=9999-12-31T23:59", "from"),
        ("/api/usage/summary?to=0001-01-05", "to"),  # 'from' defaults to 30 days before
        ("/api/costs?model_id=a%00b", "model_id"),  # PostgreSQL cannot take a NUL
    ],
)
def test_bad_query_parameters_are_a_400_naming_the_field(client, admin_headers, path, field):
    response = client.get(path, **admin_headers)
    assert response.status_code == 400, response.content
    assert isinstance(response.json()[field], list)


@pytest.mark.parametrize("path", ["/api/keys", "/api/usage/caps", "/api/costs"])
def test_huge_limit_and_offset_are_bounded_not_a_500(client, admin_headers, path):
    response = client.get(f"{path}?limit={HUGE}&offset={HUGE}", **admin_headers)
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    "path", ["/api/keys", "/api/usage/caps", "/api/costs", "/api/usage/records"]
)
def test_lists_are_paginated_as_the_schema_says(client, admin_headers, path):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    name = ok["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][name]["properties"]) >= {"count", "results"}
    body = client.get(path, **admin_headers).json()
    assert set(body) == {"count", "next", "previous", "results"}


def test_a_price_without_a_long_prompt_multiplier_is_documented_nullable():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    field = schema["components"]["schemas"]["PriceOutput"]["properties"]["long_prompt_multiplier"]
    assert field.get("nullable") is True
