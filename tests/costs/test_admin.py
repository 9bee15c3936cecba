"""Django admin for prices: list, edit in USD, CSV import (upload -> preview -> apply)."""

import html
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from costs.models import ModelPrice
from costs.services import OUR_COLUMNS

pytestmark = pytest.mark.django_db

IMPORT_URL = "/admin/costs/modelprice/import-csv/"
OURS = ",".join(OUR_COLUMNS)
GOOD_ROW = "test.model-a,,,3.75,15,4.6875,7.5,0.375,,,2026-11-01"


def test_changelist_lists_prices_in_usd_and_links_the_import(admin_client, default_prices):
    page = admin_client.get("/admin/costs/modelprice/?q=opus-5-5").content.decode()
    assert "anthropic.claude-opus-5-5" in page
    assert '<td class="field-cache_read_usd">$0.18</td>' in page  # the global row
    assert IMPORT_URL in page


def test_admin_adds_a_price_in_usd(admin_client):
    response = admin_client.post(
        "/admin/costs/modelprice/add/",
        {
            "model_id": "global.test.model-form",
            "scope": "",
            "region": "",
            "effective_from_0": "2026-11-01",
            "effective_from_1": "00:00:00",
            "input": "3.75",
            "output": "15",
            "cache_write_5m": "4.6875",
            "cache_write_1h": "7.5",
            "cache_read": "0.375",
            "source": "typed in",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    price = ModelPrice.objects.get(model_id="test.model-form")
    assert (price.scope, price.input_rate, price.cache_read_rate) == ("global", 3_750_000, 375_000)


def test_admin_form_refuses_an_inexact_rate(admin_client):
    response = admin_client.post(
        "/admin/costs/modelprice/add/",
        {
            "model_id": "test.model-form",
            "effective_from_0": "2026-11-01",
            "effective_from_1": "00:00:00",
            "input": "0.0000001",
            "output": "1",
            "cache_write_5m": "1",
            "cache_write_1h": "1",
            "cache_read": "1",
        },
    )
    assert response.status_code == 200
    assert "input" in response.context["adminform"].form.errors
    assert not ModelPrice.objects.filter(model_id="test.model-form").exists()


def test_import_page_previews_then_applies(admin_client):
    assert admin_client.get(IMPORT_URL).status_code == 200
    upload = SimpleUploadedFile("p.csv", f"{OURS}\n{GOOD_ROW}\n".encode(), "text/csv")
    preview = admin_client.post(IMPORT_URL, {"file": upload})
    page = preview.content.decode()
    assert 'id="import-preview"' in page
    assert "test.model-a" in page
    assert "4.6875" in page
    assert not ModelPrice.objects.filter(model_id="test.model-a").exists()

    # the page carries the previewed text in a hidden field, as a browser would send it back
    hidden = re.search(r'name="csv_text" value="([^"]*)"', page).group(1)
    applied = admin_client.post(IMPORT_URL, {"apply": "1", "csv_text": html.unescape(hidden)})
    assert applied.status_code == 302
    assert ModelPrice.objects.get(model_id="test.model-a").input_rate == 3_750_000


def test_import_page_shows_errors_by_row_and_offers_no_apply(admin_client):
    text = f"{OURS}\n{GOOD_ROW}\n<b>bad</b>,,,1,1,1,1,1,,,2026-11-01\n"
    upload = SimpleUploadedFile("p.csv", text.encode(), "text/csv")
    page = admin_client.post(IMPORT_URL, {"file": upload}).content.decode()
    assert 'id="import-errors"' in page
    assert "<td>3</td><td>model_id</td>" in page
    assert 'name="apply"' not in page
    assert "<b>bad</b>" not in page  # escaped, never rendered as markup
    assert not ModelPrice.objects.filter(model_id="test.model-a").exists()


def test_import_page_is_for_staff_only(client, member):
    client.force_login(member)
    response = client.get(IMPORT_URL)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
