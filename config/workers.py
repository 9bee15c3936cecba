"""The gunicorn worker class of the production command: `-k config.workers.GatewayWorker`.

uvicorn_worker's UvicornWorker leaves uvicorn's graceful shutdown unbounded, so on SIGTERM a
worker with a long stream waits until gunicorn's `--graceful-timeout` SIGKILLs it, and the
calls still open are never recorded. This worker gives open calls `server.shutdown_grace_seconds`
(at most the graceful timeout less RECORDING_SECONDS) to finish; then uvicorn cuts them and the
application's lifespan shutdown (config/asgi.py) awaits their recording before the worker exits.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

# What a worker keeps of gunicorn's graceful timeout to record the calls it cut.
RECORDING_SECONDS = 5


class GatewayWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {**UvicornWorker.CONFIG_KWARGS, "lifespan": "on"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        from django.conf import settings

        grace = settings.GATEWAY.server.shutdown_grace_seconds
        self.config.timeout_graceful_shutdown = max(
            1, min(grace, int(self.cfg.graceful_timeout) - RECORDING_SECONDS)
        )
