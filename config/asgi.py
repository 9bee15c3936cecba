"""ASGI entry point (gunicorn + uvicorn workers, or `manage.py serve`).

The proxy's routes (/bedrock/, /anthropic/) go to the proxy's own lean ASGI path
(gateway/asgi.py): no middleware stack (Django runs each sync-style hook through a thread hop
under ASGI, a dozen per request), no request signals, no body spooling; the proxy needs none of
them (no sessions, cookies or CSRF: it authenticates every call itself). Everything else gets
the full stack.

Django does not speak the ASGI lifespan protocol, so it is answered here: at shutdown, after
the server's grace period, streams still open are cut and every call still being recorded is
awaited, so that a call that reached Bedrock is recorded even when the worker stops.
"""

import os

from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

from config.bodylimit import BodyLimit
from gateway.asgi import ProxyApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

PROXY_PREFIXES = ("/bedrock/", "/anthropic/")


class ProxyHandler(ASGIHandler):
    """Django's ASGI handler with no middleware, for the proxy's own routes."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        get_response = self._get_response_async if is_async else self._get_response
        self._middleware_chain = convert_exception_to_response(get_response)


# The proxy's routes: gateway.asgi's lean path; a path it does not know, Django's handler.
proxy_application = ProxyApp(fallback=ProxyHandler())


# Servers sharing this process (`make run` has an HTTP and an HTTPS listener): each runs the
# lifespan; only the last one to stop may cut the streams, which may belong to the others.
_servers_running = 0


async def _lifespan(receive, send) -> None:
    global _servers_running
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _servers_running += 1
            from gateway.recorder import recorder
            from usage.spool import spool_pending

            if spool_pending():  # records spooled before a restart: write them now
                recorder().replay_soon()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            from django.conf import settings

            from config.db import aclose_loop_connection
            from gateway import services, streaming, upstream

            _servers_running -= 1
            if _servers_running <= 0:
                grace = settings.GATEWAY.server.shutdown_grace_seconds
                await streaming.cut_all(timeout=grace)
                await services.drain(timeout=grace)
                await upstream.close_pool()
                await aclose_loop_connection()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _dispatch(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    elif scope["type"] == "http" and scope["path"].startswith(PROXY_PREFIXES):
        await proxy_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)


# Body limits before either application reads a byte of the body (config/bodylimit.py).
application = BodyLimit(_dispatch)
