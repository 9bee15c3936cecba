"""The dashboard's HTML pages through Django's test client: access, content, safety."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from costs.money import Usage
from tests.fixtures.calls import SONNET

pytestmark = pytest.mark.django_db

PAGES = ["/", "/usage", "/usage/export.csv", "/sessions", "/caps", "/keys", "/token"]
HOSTILE = "<script>alert(1)</script>'; DROP TABLE users; --"


@pytest.mark.parametrize("path", PAGES)
def test_pages_require_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("path", ["/", "/usage", "/sessions", "/caps", "/keys", "/token"])
def test_pages_render_in_the_layout_with_a_strict_csp(owner_client, path):
    response = owner_client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="mainnav"' in html
    assert 'action="/accounts/logout/"' in html  # sign-out is a POST form
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    # No inline script or style for the policy to block: every <script> has a src.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert " style=" not in html
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]


def test_admin_link_only_for_admins(owner_client, admin_user):
    assert b'href="/admin/"' not in owner_client.get("/").content
    admin = Client()
    admin.force_login(admin_user)
    assert b'href="/admin/"' in admin.get("/").content


def test_json_responses_carry_no_csp(owner_client):
    response = owner_client.get("/api/usage/summary")
    assert response.status_code == 200
    assert "Content-Security-Policy" not in response


def test_dashboard_shows_todays_and_this_months_figures(
    owner, owner_client, record_claude_code_call
):
    record_claude_code_call(
        owner, usage=Usage(input_tokens=1_000_000, output_tokens=0)
    )  # $3.00 on Sonnet 4.6
    record_claude_code_call(
        owner, usage=Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=7000)
    )
    page = owner_client.get("/")
    today, month = page.context["today"], page.context["month"]
    assert today["requests"] == month["requests"] == 2
    assert today["tokens"] == 1_000_000 + 1000 + 500
    assert today["cache_read_tokens"] == 7000
    # 3.00 + 0.003 + 0.0075 + 0.0021
    assert today["cost"] == "$3.01"
    html = page.content.decode()
    assert "1,001,500" in html
    assert SONNET in html  # recent calls and the by-model table


def test_dashboard_never_shows_another_users_calls(
    owner, stranger, owner_client, record_claude_code_call
):
    record_claude_code_call(stranger, model_id="us.anthropic.claude-opus-4-5-20251101-v1:0")
    page = owner_client.get("/")
    assert page.context["today"]["requests"] == 0
    assert b"claude-opus-4-5" not in page.content
    assert b"No calls yet" in page.content


def test_dashboard_escapes_hostile_model_ids(owner, owner_client, record_claude_code_call):
    record_claude_code_call(owner, model_id=HOSTILE)
    html = owner_client.get("/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_dashboard_points_a_new_user_at_key_creation(owner_client):
    html = owner_client.get("/").content.decode()
    assert "Create an API key" in html
    assert 'data-summary-url="/api/usage/summary"' in html
    assert 'data-caps-url="/api/usage/caps/status"' in html


def test_static_files_are_served_for_the_pages(owner_client):
    for path in ["/static/css/app.css", "/static/js/app.js", "/static/js/dashboard.js"]:
        response = owner_client.get(path)
        assert response.status_code == 200, path
    chart = owner_client.get("/static/vendor/chartjs/chart.umd.min.js")
    assert chart.status_code == 200
    assert b"Chart.js v4" in b"".join(chart.streaming_content)[:200]
