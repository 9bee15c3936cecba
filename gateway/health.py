"""GET /health: cheap liveness; ?check=db|cache|aws|all reports each component and its latency.

Plain `/health` is public and answers whatever the Host header says (load balancers probe node
addresses that are not in `server.allowed_hosts`): `HealthMiddleware` answers it before
Django's host validation. Component checks make outbound calls, so `?check=` is served to
loopback or with the metrics token (`Authorization: Bearer <server.metrics_token>`) only; the
names are de-duplicated (at most one check per known component) and each component's result
is kept for `RESULT_SECONDS`, so a burst of probes makes one round of outbound calls.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from config.conf import secret_value
from gateway import upstream
from usage.spool import spool_depth
from usage.store import get_store

CHECK_TIMEOUT_SECONDS = 3.0
RESULT_SECONDS = 5.0
PATH = "/health"
_LOOPBACK = {"127.0.0.1", "::1"}


def _check_db() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_cache() -> None:
    get_store().ping()


def _check_aws() -> None:
    # A signed call, not a ping: an endpoint that answers proves nothing if it refuses our
    # credentials.
    upstream.probe_credentials(timeout=CHECK_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {"db": _check_db, "cache": _check_cache, "aws": _check_aws}

# (component, what it points at) -> (monotonic expiry, result); one lock per component so that
# concurrent probes wait for the check in progress instead of starting their own.
_results: dict[tuple[str, str], tuple[float, dict]] = {}
_locks = {name: threading.Lock() for name in CHECKS}


def _target(name: str) -> str:
    if name == "aws":
        return settings.GATEWAY.aws.resolved_endpoint
    if name == "db":
        return str(connection.settings_dict.get("NAME"))
    return settings.GATEWAY.redis.url or "embedded"


def _run(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except upstream.UpstreamUnavailable as exc:
        status, error = "down", str(exc)
    except Exception as exc:  # a health check reports every failure as "down"
        status, error = "down", type(exc).__name__
    else:
        status, error = "up", ""
    result = {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    if error:
        result["error"] = error
    return result


def _result(name: str) -> dict:
    key = (name, _target(name))
    with _locks[name]:
        held = _results.get(key)
        if held is not None and held[0] > time.monotonic():
            return held[1]
        result = _run(CHECKS[name])
        _results[key] = (time.monotonic() + RESULT_SECONDS, result)
        return result


def _may_check(request: HttpRequest) -> bool:
    if request.META.get("REMOTE_ADDR") in _LOOPBACK:
        return True
    token = secret_value(settings.GATEWAY.server.metrics_token) or ""
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(supplied.encode(), token.encode())


def _names(requested: str) -> list[str] | str:
    """The components asked for, each once, in order; or the first unknown name."""
    names: list[str] = []
    for name in (part.strip() for part in requested.split(",")):
        for known in CHECKS if name == "all" else (name,):
            if known not in CHECKS:
                return known
            if known not in names:
                names.append(known)
    return names


def health(request: HttpRequest) -> JsonResponse:
    requested = request.GET.get("check")
    if not requested:
        return JsonResponse({"status": "ok"})
    if not _may_check(request):
        return JsonResponse(
            {"detail": "Component checks need loopback or the metrics token."}, status=403
        )
    names = _names(requested)
    if isinstance(names, str):
        return JsonResponse(
            {"detail": f"unknown check {names[:40]!r}; use db, cache, aws or all"}, status=400
        )
    components = {name: _result(name) for name in names}
    healthy = all(c["status"] == "up" for c in components.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "degraded",
            "components": components,
            # Usage records waiting on disk for the database (they are safe there).
            "spool_depth": spool_depth(),
        },
        status=200 if healthy else 503,
    )


def _answer(request: HttpRequest) -> JsonResponse:
    response = health(request)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


class HealthMiddleware:
    """Answers GET /health ahead of every other middleware (and so of the Host check)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        if request.path == PATH:
            return _answer(request)
        return self.get_response(request)

    async def _acall(self, request):
        if request.path == PATH:
            if not request.GET.get("check"):
                return _answer(request)  # no I/O: no thread hop
            return await sync_to_async(_answer)(request)
        return await self.get_response(request)
