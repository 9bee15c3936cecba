"""The API docs in a real browser: Swagger UI and Redoc render from our own static files,
under the CSP, for a signed-in user (nothing loaded from elsewhere, no CSP violation)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.fixtures.browser import shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    ("path", "operation"), [("/api/docs", "/api/keys"), ("/api/redoc", "keys")]
)
def test_the_api_docs_render_under_the_csp(
    live, reference_data, page: Page, screenshots, path, operation
):
    sign_in(page, live, "reader@example.com")
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    # Nothing reaches another origin (Redoc's bundle asks for its logo on a CDN: the CSP
    # blocks it before it leaves the browser).
    foreign: list[str] = []
    page.on(
        "response",
        lambda r: None if r.url.startswith((live.url, "data:", "blob:")) else foreign.append(r.url),
    )
    page.goto(f"{live.url}{path}")
    expect(page.get_by_text(operation).first).to_be_visible(timeout=15_000)
    shot(page, screenshots, f"api-docs-{path.rsplit('/', 1)[1]}")
    assert foreign == []
    blocked = [p for p in problems if "Content Security Policy" in p and "cdn.redoc.ly" not in p]
    assert blocked == []
