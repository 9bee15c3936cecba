"""The proxy's own ASGI path (gateway/asgi.py): what a view sees of the request, and what
falls back to Django's handler."""

import httpx
import pytest

from gateway.asgi import ProxyRequest

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_proxy_request_reads_the_scope_as_django_would():
    scope = {
        "type": "http",
        "method": "post",
        "path": "/anthropic/v1/messages",
        "query_string": b"beta=true&x=1",
        "client": ("10.1.2.3", 5555),
        "server": ("gateway.internal", 8000),
        "headers": [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", b"2"),
            (b"anthropic-beta", b"a-2025"),
            (b"anthropic-beta", b"b-2025"),
            (b"x_api_key", b"smuggled"),  # "_" for "-": dropped, as Django does
            (b"x-api-key", b"the-key"),
        ],
    }
    request = ProxyRequest(scope, b"{}")
    assert request.method == "POST"
    assert request.content_type == "application/json"
    assert request.headers["Anthropic-Beta"] == "a-2025,b-2025"
    assert request.headers["X-Api-Key"] == "the-key"
    assert request.META["REMOTE_ADDR"] == "10.1.2.3"
    assert request.GET["beta"] == "true"
    assert request.read() == b"{}"


def test_an_unknown_proxy_path_answers_in_the_familys_shape(stack):
    response = httpx.post(
        f"{stack.gateway.url}/anthropic/v1/no-such-route", json={"a": 1}, timeout=10
    )
    assert response.status_code == 404
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "not_found_error"


def test_the_proxy_sets_no_cookie_and_varies_on_none(stack):
    response = httpx.post(
        f"{stack.gateway.url}/anthropic/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []},
        timeout=10,
    )
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert "cookie" not in response.headers.get("vary", "").lower()
