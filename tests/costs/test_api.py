"""/api/costs: admin-only CRUD and CSV import over DRF."""

from datetime import UTC, datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from costs.models import ModelPrice
from costs.money import Usage
from costs.pricing import call_cost_micros
from costs.services import OUR_COLUMNS

pytestmark = pytest.mark.django_db

OURS = ",".join(OUR_COLUMNS)
GOOD_ROW = "test.model-a,,,3.75,15,4.6875,7.5,0.375,,,2026-11-01"
BODY = {
    "model_id": "us.test.model-api",
    "input": "3.75",
    "output": "15",
    "cache_write_5m": "4.6875",
    "cache_write_1h": "7.5",
    "cache_read": "0.375",
    "effective_from": "2026-11-01T00:00:00Z",
}


def _create(api: APIClient, **overrides) -> dict:
    response = api.post("/api/costs", {**BODY, **overrides}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/costs"),
        ("post", "/api/costs"),
        ("get", "/api/costs/1"),
        ("put", "/api/costs/1"),
        ("patch", "/api/costs/1"),
        ("delete", "/api/costs/1"),
        ("post", "/api/costs/import"),
    ],
)
def test_non_admins_get_403_and_anonymous_callers_401(member_api, method, path):
    assert getattr(member_api, method)(path, {}, format="json").status_code == 403
    assert getattr(APIClient(), method)(path, {}, format="json").status_code == 401


def test_admin_creates_a_price_shown_in_usd_and_stored_in_micros(admin_api):
    body = _create(admin_api)
    assert body["model_id"] == "test.model-api"
    assert body["scope"] == "us"
    assert (body["input"], body["cache_write_5m"], body["cache_read"]) == (
        "3.75",
        "4.6875",
        "0.375",
    )
    stored = ModelPrice.objects.get(pk=body["id"])
    assert (stored.input_rate, stored.cache_write_5m_rate) == (3_750_000, 4_687_500)
    # and the hot path sees it at once
    usage = Usage(input_tokens=1_000_000)
    at = datetime(2026, 11, 2, tzinfo=UTC)
    assert call_cost_micros(model_id="us.test.model-api", usage=usage, at=at) == 3_750_000


def test_admin_lists_prices_paginated_and_filtered(admin_api):
    _create(admin_api)
    _create(admin_api, model_id="test.model-other")
    body = admin_api.get("/api/costs?model_id=test.model-api").json()
    assert body["count"] == 1
    assert body["results"][0]["output"] == "15"
    assert admin_api.get("/api/costs?limit=1").json()["next"] is not None


def test_admin_reads_replaces_patches_and_deletes_a_price(admin_api):
    price_id = _create(admin_api)["id"]
    url = f"/api/costs/{price_id}"
    assert admin_api.get(url).json()["input"] == "3.75"

    replaced = admin_api.put(
        url,
        {
            **BODY,
            "input": "4",
            "long_prompt_threshold_tokens": 200000,
            "long_prompt_multiplier": "2",
        },
        format="json",
    )
    assert replaced.status_code == 200, replaced.json()
    assert replaced.json()["long_prompt_multiplier"] == "2"

    patched = admin_api.patch(url, {"cache_read": "0.4"}, format="json")
    assert patched.status_code == 200, patched.json()
    assert (patched.json()["input"], patched.json()["cache_read"]) == ("4", "0.4")
    stored = ModelPrice.objects.get(pk=price_id)
    assert (stored.input_rate, stored.cache_read_rate) == (4_000_000, 400_000)
    assert stored.long_prompt_threshold_tokens == 200_000

    assert admin_api.delete(url).status_code == 204
    assert admin_api.get(url).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"input": 3.75}, "input"),  # a float: money is never float
        ({"input": "0.0000001"}, "input"),
        ({"output": "-1"}, "output"),
        ({"cache_read": "lots"}, "cache_read"),
        ({"model_id": "<script>alert(1)</script>"}, "model_id"),
        ({"model_id": "eu.test.model-api", "scope": "us"}, "scope"),
        ({"scope": "moon"}, "scope"),
        ({"region": "DROP TABLE"}, "region"),
        ({"effective_from": "soon"}, "effective_from"),
        ({"long_prompt_threshold_tokens": 1000}, "long_prompt_multiplier"),
        (
            {"long_prompt_threshold_tokens": 1000, "long_prompt_multiplier": "0.5"},
            "long_prompt_multiplier",
        ),
    ],
)
def test_invalid_input_is_a_400_naming_the_field(admin_api, overrides, field):
    response = admin_api.post("/api/costs", {**BODY, **overrides}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not ModelPrice.objects.filter(model_id="test.model-api").exists()


def test_a_body_that_is_not_an_object_is_a_400(admin_api):
    price_id = _create(admin_api)["id"]
    assert admin_api.post("/api/costs", [1, 2], format="json").status_code == 400
    assert admin_api.patch(f"/api/costs/{price_id}", [1], format="json").status_code == 400
    assert admin_api.put(f"/api/costs/{price_id}", "x", format="json").status_code == 400


def test_missing_fields_are_named(admin_api):
    response = admin_api.post("/api/costs", {"model_id": "test.x"}, format="json")
    assert response.status_code == 400
    assert {"input", "output", "cache_write_5m", "cache_write_1h", "cache_read"} <= set(
        response.json()
    )


def test_a_second_price_with_the_same_key_is_a_400(admin_api):
    _create(admin_api)
    response = admin_api.post("/api/costs", BODY, format="json")
    assert response.status_code == 400
    assert "effective_from" in response.json()
    other = _create(admin_api, effective_from="2026-12-01T00:00:00Z")
    clash = admin_api.patch(
        f"/api/costs/{other['id']}", {"effective_from": "2026-11-01T00:00:00Z"}, format="json"
    )
    assert clash.status_code == 400


def test_import_accepts_a_multipart_file(admin_api):
    upload = SimpleUploadedFile("prices.csv", f"{OURS}\n{GOOD_ROW}\n".encode(), "text/csv")
    response = admin_api.post("/api/costs/import", {"file": upload}, format="multipart")
    assert response.status_code == 200, response.json()
    assert response.json() == {"format": "gateway", "created": 1, "updated": 0, "unchanged": 0}
    assert ModelPrice.objects.get(model_id="test.model-a").input_rate == 3_750_000


def test_import_accepts_a_text_csv_body(admin_api):
    text = (
        "region_id,model_id,model_name,provider,input_price,output_price,batch_input_price,"
        "batch_output_price,cache_write_price,cache_read_price,timestamp\n"
        "us-east-1,anthropic.claude-t,T,Anthropic,0.003,0.015,,,,,2026-11-01\n"
    )
    response = admin_api.generic("POST", "/api/costs/import", text, content_type="text/csv")
    assert response.status_code == 200, response.json()
    assert response.json()["format"] == "rust"
    assert response.json()["created"] == 1


def test_import_of_a_bad_file_is_a_400_with_rows_and_applies_nothing(admin_api):
    text = f"{OURS}\n{GOOD_ROW}\ntest.model-b,,,1,-1,1,1,1,,,2026-11-01\n"
    response = admin_api.generic("POST", "/api/costs/import", text, content_type="text/csv")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["row"], error["field"]) == (3, "output")
    assert error["message"] == "must not be negative"
    assert not ModelPrice.objects.filter(model_id__startswith="test.").exists()


def test_import_with_a_wrong_header_is_a_400(admin_api):
    response = admin_api.generic("POST", "/api/costs/import", "a,b\n1,2\n", content_type="text/csv")
    assert response.status_code == 400
    assert "unrecognised header" in response.json()["errors"][0]["message"]


def test_import_of_a_huge_file_is_a_400(admin_api):
    big = (f"{OURS}\n" + f"{GOOD_ROW}\n" * 120_000).encode()
    assert len(big) > 5 * 1024 * 1024
    response = admin_api.post(
        "/api/costs/import",
        {"file": SimpleUploadedFile("big.csv", big, "text/csv")},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "file is larger than 5 MB"
    body = admin_api.generic("POST", "/api/costs/import", big, content_type="text/csv")
    assert body.status_code == 400
    assert body.json()["errors"][0]["message"] == "file is larger than 5 MB"


def test_import_without_a_file_or_with_binary_is_a_400(admin_api):
    response = admin_api.post("/api/costs/import", {"other": "x"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "file"
    binary = SimpleUploadedFile("p.csv", b"\xff\xfe\x00garbage", "text/csv")
    response = admin_api.post("/api/costs/import", {"file": binary}, format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "file is not UTF-8 text"
