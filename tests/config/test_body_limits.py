"""Body limits and hostile input outside the proxy: /health, /api, admin and the price CSV
import. Sizes are checked through a real gateway process (the limit is an ASGI guard in front
of Django); parsing through the Django test client."""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Iterator

import httpx
import pytest
from django.test import Client

from accounts.services import api_key_create, user_get_or_create
from config import jsonlimits
from config.bodylimit import IMPORT_BODY_BYTES
from config.conf import load_config
from costs.models import ModelPrice
from costs.services import MAX_IMPORT_BYTES, OUR_COLUMNS
from tests.fixtures import raw_http
from tests.fixtures.servers import Server, start_gateway

API_LIMIT = 2_621_440
TEN_GB = 10 * 1024**3
ADMIN_IMPORT = "/admin/costs/modelprice/import-csv/"


@pytest.fixture(scope="module")
def default_limits_gateway(django_db_setup, django_db_blocker, emulator) -> Iterator[Server]:
    """A gateway with the default limits (32 MiB proxy, 2.5 MB elsewhere, 5 MB imports)."""
    with start_gateway(upstream_url=emulator.url) as server:
        yield server


def detail_413(response) -> None:
    assert response.status == 413, response.body[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": f"Request body exceeds the limit of {API_LIMIT} bytes."}


# --- configuration -------------------------------------------------------------------------


def test_max_api_body_bytes_defaults_to_djangos_and_is_read_from_the_environment():
    assert load_config(environ={}).server.max_api_body_bytes == API_LIMIT
    environ = {"GATEWAY_SERVER__MAX_API_BODY_BYTES": "1000"}
    assert load_config(environ=environ).server.max_api_body_bytes == 1000


def test_djangos_own_limit_never_refuses_what_the_guard_lets_through(settings):
    assert settings.GATEWAY.server.max_api_body_bytes <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE >= IMPORT_BODY_BYTES > MAX_IMPORT_BYTES


# --- sizes, through a real gateway ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/api/token/refresh", "/api/keys", "/admin/login/"])
def test_a_declared_10_gb_body_is_refused_at_once_without_being_sent(default_limits_gateway, path):
    response = raw_http.request(
        default_limits_gateway.port, "POST", path, [("Content-Length", str(TEN_GB))]
    )
    assert response.body_bytes_sent == 0
    assert response.seconds < 2
    detail_413(response)


def test_a_large_chunked_body_to_health_is_cut_off_with_a_413(default_limits_gateway):
    response = raw_http.request(
        default_limits_gateway.port,
        "POST",
        "/health",
        [],
        raw_http.pieces(40 * 1024 * 1024),
        chunked=True,
    )
    detail_413(response)
    assert response.body_bytes_sent < 40 * 1024 * 1024


def test_a_3_mb_token_refresh_is_a_413_in_drfs_shape(default_limits_gateway):
    body = b'{"refresh": "' + b"a" * 3_000_000 + b'"}'
    response = raw_http.request(
        default_limits_gateway.port,
        "POST",
        "/api/token/refresh",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        raw_http.pieces(len(body)),
    )
    detail_413(response)


def test_a_body_under_the_limit_reaches_the_view(default_limits_gateway):
    body = b'{"refresh": "' + b"a" * 2_000_000 + b'"}'
    response = httpx.post(
        f"{default_limits_gateway.url}/api/token/refresh",
        content=body,
        headers={"content-type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 400  # the serializer's, not the guard's
    assert "refresh" in response.json()


def big_price_csv(target_bytes: int) -> str:
    """Valid price rows (each with a long source note) adding up to about target_bytes."""
    header = ",".join(OUR_COLUMNS) + ",source\n"
    note = "n" * 900
    rows, size, i = [], len(header), 0
    while size < target_bytes:
        row = f"test.bulk-{i},,,3.75,15,4.6875,7.5,0.375,,,2026-11-01,{note}\n"
        rows.append(row)
        size += len(row)
        i += 1
    return header + "".join(rows)


@pytest.mark.django_db(transaction=True)
def test_a_4_mb_csv_previewed_in_admin_can_be_applied(default_limits_gateway, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-1")
    text = big_price_csv(4 * 1024 * 1024)
    assert API_LIMIT < len(text.encode()) < MAX_IMPORT_BYTES
    with httpx.Client(
        base_url=default_limits_gateway.url, timeout=60, follow_redirects=False
    ) as client:
        page = client.get("/admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        signed_in = client.post(
            "/admin/login/",
            data={"username": "root", "password": "pw-for-tests-1", "csrfmiddlewaretoken": token},
            headers={"referer": f"{default_limits_gateway.url}/admin/login/"},
        )
        assert signed_in.status_code == 302, signed_in.text[:500]

        page = client.get(ADMIN_IMPORT).text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        preview = client.post(
            ADMIN_IMPORT,
            data={"csrfmiddlewaretoken": token},
            files={"file": ("prices.csv", text.encode(), "text/csv")},
        )
        assert preview.status_code == 200
        page = preview.text
        assert 'id="import-preview"' in page
        assert 'enctype="multipart/form-data"' in page.split('id="import-preview"')[1]
        hidden = html.unescape(re.search(r'name="csv_text" value="([^"]*)"', page).group(1))
        assert len(hidden.encode()) > API_LIMIT

        # sent back as the page's form sends it: multipart, the CSV in a plain field
        applied = client.post(
            ADMIN_IMPORT,
            data={"csrfmiddlewaretoken": token, "apply": "1", "csv_text": hidden},
            files={"unused": ("", b"", "application/octet-stream")},
        )
        assert applied.status_code == 302, applied.text[:500]
    assert ModelPrice.objects.filter(model_id__startswith="test.bulk-").count() == len(
        text.splitlines()[1:]
    )


@pytest.mark.django_db(transaction=True)
def test_a_4_mb_csv_can_be_imported_through_the_api(default_limits_gateway, django_user_model):
    admin = django_user_model.objects.create_superuser("root2", "root2@example.com", "x")
    key = api_key_create(user=user_get_or_create(email=admin.email), name="t").raw
    text = big_price_csv(4 * 1024 * 1024)
    response = httpx.post(
        f"{default_limits_gateway.url}/api/costs/import",
        content=text.encode(),
        headers={"content-type": "text/csv", "authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:500]
    assert response.json()["created"] == len(text.splitlines()) - 1


def test_the_import_routes_refuse_more_than_their_own_limit(default_limits_gateway):
    for path in ("/api/costs/import", ADMIN_IMPORT):
        response = raw_http.request(
            default_limits_gateway.port,
            "POST",
            path,
            [("Content-Length", str(IMPORT_BODY_BYTES + 1))],
        )
        assert response.status == 413
        assert str(IMPORT_BODY_BYTES) in response.json()["detail"]


# --- parsing, through the Django test client -----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"refresh": ' + b"[" * 300 + b"]" * 300 + b"}",
    ],
)
def test_json_nested_too_deep_is_a_drf_400(body):
    response = Client().post("/api/token/refresh", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than 256" in response.json()["detail"]


@pytest.mark.django_db
def test_json_nested_too_deep_is_a_400_on_views_with_the_default_parsers(admin_client):
    body = b'{"model_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = admin_client.post("/api/costs", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than 256" in response.json()["detail"]


@pytest.mark.django_db
def test_a_lone_surrogate_is_a_drf_400():
    body = b'{"refresh": "\\ud800"}'
    response = Client().post("/api/token/refresh", body, content_type="application/json")
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]


@pytest.mark.django_db
def test_a_body_over_djangos_limit_is_a_413_not_a_500(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = b'{"refresh": "' + b"a" * 5000 + b'"}'
    client = Client(raise_request_exception=False)
    response = client.post("/api/token/refresh", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is too large."}


@pytest.mark.django_db
def test_a_csv_field_of_200_kb_is_a_row_error(admin_client):
    header = ",".join(OUR_COLUMNS) + ",source"
    good = "test.model-a,,,3.75,15,4.6875,7.5,0.375,,,2026-11-01,note"
    huge = f'test.model-b,,,3.75,15,4.6875,7.5,0.375,,,2026-11-01,"{"x" * 200_000}"'
    text = f"{header}\n{good}\n{huge}\n"
    response = admin_client.post("/api/costs/import", text.encode(), content_type="text/csv")
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["row"] == 3
    assert f"longer than {csv.field_size_limit()} characters" in error["message"]
    assert not ModelPrice.objects.filter(model_id__startswith="test.model-").exists()


# --- the depth check itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[{{{{"}', 1),  # brackets in strings do not count
        ('{"a": "\\"[[[", "b": ["\\\\"]}', 2),  # nor behind escaped quotes
        ('["]]]]"]', 1),
    ],
)
def test_depth_counts_structure_only(text, expected):
    assert jsonlimits.depth(text) == expected


def test_depth_allows_the_limit_and_refuses_one_more():
    at_limit = "[" * jsonlimits.MAX_DEPTH + "]" * jsonlimits.MAX_DEPTH
    assert jsonlimits.loads(at_limit) is not None
    with pytest.raises(jsonlimits.JsonTooDeep):
        jsonlimits.loads("[" + at_limit + "]")
