"""Request body limits, enforced in ASGI before Django reads (or spools) a byte of the body.

Django's ASGI handler reads the whole body into a temporary file before any view, middleware
or authentication runs, so a limit checked there comes too late: `Content-Length: 10 GB`
would be read and spooled first. This guard wraps the application (config/asgi.py):

- a declared body (`Content-Length`) above the route's limit is answered 413 at once, without
  reading it (and without `100 Continue`);
- a streamed body (chunked) is counted as it arrives; when it passes the limit, the
  application is told the client went away (it then answers nothing and drops what it
  spooled, at most the limit) and the guard answers 413.

Limits by route: `server.max_body_bytes` on the proxy (/bedrock/, /anthropic/),
IMPORT_BODY_BYTES on the price CSV imports, `server.max_api_body_bytes` everywhere else.
The 413 is in the shape of the route family's clients (see gateway/errors.py): Anthropic's
envelope on /anthropic, Bedrock's on /bedrock, DRF's `{"detail": ...}` elsewhere.
"""

from __future__ import annotations

import json
import uuid
from functools import cache

# The price CSV imports (admin and API) take a file of up to 5 MB (costs.services
# .MAX_IMPORT_BYTES), plus the form around it (multipart framing, the CSRF token).
IMPORT_BODY_BYTES = 5 * 1024 * 1024 + 64 * 1024

PROXY_FAMILIES = (("/bedrock/", "bedrock"), ("/anthropic/", "anthropic"))


@cache
def _import_paths() -> frozenset[str]:
    from django.urls import reverse

    paths = {reverse("costs-import"), reverse("admin:costs_modelprice_import")}
    return frozenset(path.rstrip("/") for path in paths)


def route_limit(path: str) -> tuple[int, str]:
    """(limit in bytes, error family) of a request path."""
    from django.conf import settings

    server = settings.GATEWAY.server
    for prefix, family in PROXY_FAMILIES:
        if path.startswith(prefix):
            return server.max_body_bytes, family
    if path.rstrip("/") in _import_paths():
        return max(IMPORT_BODY_BYTES, server.max_api_body_bytes), "api"
    return server.max_api_body_bytes, "api"


def _too_large(family: str, limit: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    message = f"Request body exceeds the limit of {limit} bytes."
    if family == "api":
        status, body = 413, json.dumps({"detail": message}).encode()
        headers = [(b"content-type", b"application/json")]
    else:
        from gateway.errors import Family, ProxyError

        if family == "bedrock":
            kind, request_id = Family.BEDROCK, str(uuid.uuid4())
        else:
            kind, request_id = Family.ANTHROPIC, f"req_{uuid.uuid4().hex}"
        response = ProxyError("too_large", message).response(kind, request_id)
        status, body = response.status_code, response.content
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
        ]
    headers += [
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        # The rest of the body is not read: the connection cannot carry another request.
        (b"connection", b"close"),
    ]
    return status, headers, body


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """ASGI middleware: 413 for a body above its route's limit, before the app reads it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, family = route_limit(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._reject(send, family, limit)
            return

        received = 0
        over = False
        started = False

        async def limited_receive() -> dict:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The app sees a client that went away: Django drops what it spooled and
                    # answers nothing; the 413 is ours.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        if over and not started:
            await self._reject(send, family, limit)

    @staticmethod
    async def _reject(send, family: str, limit: int) -> None:
        status, headers, body = _too_large(family, limit)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
