"""/api/docs (Swagger UI) and /api/redoc: static files from drf-spectacular-sidecar, behind
sign-in, under the site's Content-Security-Policy; /api/schema behind a credential."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.services import api_key_create, token_pair_create

pytestmark = pytest.mark.django_db

DOC_PAGES = ["/api/docs", "/api/redoc"]


@pytest.mark.parametrize("path", DOC_PAGES)
def test_docs_pages_redirect_anonymous_visitors_to_sign_in(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", DOC_PAGES)
def test_docs_pages_load_only_our_own_static_files_under_the_csp(path, owner):
    client = Client()
    client.force_login(owner)
    page = client.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    csp = page["Content-Security-Policy"]
    assert "script-src 'self';" in csp  # scripts from our own origin only, on both pages
    assert "style-src 'self'" in csp
    # Redoc alone styles itself inline (styled-components); Swagger UI needs nothing more.
    assert ("'unsafe-inline'" in csp) == (path == "/api/redoc")
    # No CDN, no inline script or style for the policy to block.
    assert "cdn.jsdelivr.net" not in html
    assert "fonts.googleapis.com" not in html
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert "<style" not in html
    assert " style=" not in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources
    assert all(s.startswith("/") for s in sources), sources
    for source in sources:
        if source.startswith("/static/"):
            assert client.get(source).status_code == 200, source


def test_swagger_start_script_is_same_origin_javascript(owner):
    client = Client()
    client.force_login(owner)
    script = client.get("/api/docs?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema" in script.content.decode()


def test_schema_needs_a_credential(owner):
    assert Client().get("/api/schema").status_code in (401, 403)
    key = api_key_create(user=owner, name="docs").raw
    assert Client().get("/api/schema", HTTP_X_API_KEY=key).status_code == 200
    access = token_pair_create(user=owner)["access"]
    assert Client().get("/api/schema", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200
    session = Client()
    session.force_login(owner)
    assert session.get("/api/schema").status_code == 200
