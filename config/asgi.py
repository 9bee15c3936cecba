"""ASGI entry point (gunicorn + uvicorn workers, or `manage.py serve`).

Django does not speak the ASGI lifespan protocol, so it is answered here: at shutdown, after
the server's grace period, streams still open are cut and every call still being recorded is
awaited, so that a call that reached Bedrock is recorded even when the worker stops.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            from django.conf import settings

            from gateway import services, streaming

            grace = settings.GATEWAY.server.shutdown_grace_seconds
            await streaming.cut_all(timeout=grace)
            await services.drain(timeout=grace)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)
