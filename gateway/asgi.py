"""The proxy's own ASGI path: /bedrock/ and /anthropic/ without Django's request handler.

Django's ASGI handler costs a proxied call more than the proxy's own work: it spools the body
to a temporary file, sends the request_started / request_finished signals (whose receivers
close database connections through thread hops), and closes the response through another
thread hop. The proxy needs none of it: it authenticates every call itself, keeps no session,
and hands its database connections back itself (config/db.py). Here a call is one parse of
the ASGI scope into a small HttpRequest, the view (the same views, resolved from the same
URLconf), and the response written straight to ASGI.

Kept from Django's handler: a client that disconnects cancels the view (the call is then
metered as cut, gateway.streaming), streaming bodies are consumed with aclosing(), and an
unexpected exception answers through Django's handler500 (config/errors.py) after logging.
A path the proxy's URLconf does not know goes to Django's handler with its body replayed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from io import BytesIO
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponseBase, QueryDict
from django.urls import Resolver404, ResolverMatch, resolve

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ProxyRequest(HttpRequest):
    """The request a proxy view sees: what Django's ASGIRequest would give, body in memory."""

    def __init__(self, scope: Scope, body: bytes) -> None:
        super().__init__()
        self.scope = scope
        self.path = self.path_info = scope["path"]
        self.method = scope["method"].upper()
        query = scope.get("query_string", b"")
        meta: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "QUERY_STRING": query.decode("latin1") if isinstance(query, bytes) else query,
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
        }
        client = scope.get("client")
        if client:
            meta["REMOTE_ADDR"] = meta["REMOTE_HOST"] = client[0]
            meta["REMOTE_PORT"] = client[1]
        server = scope.get("server")
        meta["SERVER_NAME"], meta["SERVER_PORT"] = (
            (server[0], str(server[1])) if server else ("unknown", "0")
        )
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin1").lower()
            if "_" in name:
                continue  # as Django: no spoofing through "_" versus "-"
            if name == "content-length":
                key = "CONTENT_LENGTH"
            elif name == "content-type":
                key = "CONTENT_TYPE"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            value = raw_value.decode("latin1")
            meta[key] = f"{meta[key]},{value}" if key in meta else value
        self.META = meta
        # Before GET: a charset in the content type sets `encoding`, which drops GET.
        self._set_content_type_params(meta)
        self.GET = QueryDict(meta["QUERY_STRING"])
        self._body = body
        self._stream = BytesIO(body)
        self._read_started = False

    def _get_scheme(self) -> str:
        return self.scope.get("scheme") or super()._get_scheme()


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (config.bodylimit has bounded it); None if the client left first."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then the client's own messages."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_response(response: HttpResponseBase, send: Send) -> None:
    headers = [(name.encode("latin1"), value.encode("latin1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if not response.streaming:
        await send({"type": "http.response.body", "body": response.content})
        return
    async with aclosing(aiter(response)) as content:
        async for part in content:
            await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body"})


async def _respond(view: Callable, request: ProxyRequest, kwargs: dict, send: Send) -> None:
    try:
        response = await view(request, **kwargs)
    except Exception as exc:  # what Django's handler would turn into its 500 page
        response = await sync_to_async(response_for_exception)(request, exc)
    try:
        await _send_response(response, send)
    finally:
        for closer in response._resource_closers:
            closer()


@functools.lru_cache(maxsize=1024)
def _resolve(path: str) -> ResolverMatch:
    # A client keeps calling the same few paths (one per model and verb): the URLconf is walked
    # once per path, not per call. A miss (Resolver404) is not cached.
    return resolve(path)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ProxyApp:
    """ASGI app for the proxy's routes; `fallback` (Django's handler) serves the rest."""

    def __init__(self, fallback: ASGIApp) -> None:
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        try:
            match = _resolve(scope["path"])
        except Resolver404:
            await self.fallback(scope, _replaying(body, receive), send)
            return
        request = ProxyRequest(scope, body)
        request.resolver_match = match
        # The view runs until it is done or the client goes away, whichever comes first: a
        # client that leaves cancels the view (the call is metered as cut, never lost).
        serving = asyncio.create_task(_respond(match.func, request, dict(match.kwargs), send))
        watching = asyncio.create_task(_until_disconnect(receive))
        await asyncio.wait((serving, watching), return_when=asyncio.FIRST_COMPLETED)
        for task in (watching, serving):
            if not task.done():
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except OSError:
                logger.info("client connection lost while answering %s", scope["path"])
