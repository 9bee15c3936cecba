"""GET /health: cheap liveness; ?check=db|cache|aws|all reports each component and its latency."""

import time
from collections.abc import Callable

import httpx
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from usage.store import get_store

CHECK_TIMEOUT_SECONDS = 3.0


def _check_db() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_cache() -> None:
    get_store().ping()


def _check_aws() -> None:
    # Any HTTP answer (even 403/404) proves the endpoint is reachable; only transport fails.
    endpoint = settings.GATEWAY.aws.resolved_endpoint
    httpx.get(f"{endpoint}/ping", timeout=CHECK_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {"db": _check_db, "cache": _check_cache, "aws": _check_aws}


def _run(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure as "down"
        status, error = "down", type(exc).__name__
    else:
        status, error = "up", None
    result = {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    if error:
        result["error"] = error
    return result


def health(request: HttpRequest) -> JsonResponse:
    requested = request.GET.get("check")
    if not requested:
        return JsonResponse({"status": "ok"})
    names = list(CHECKS) if requested == "all" else requested.split(",")
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        return JsonResponse(
            {"detail": f"unknown check {unknown[0]!r}; use db, cache, aws or all"}, status=400
        )
    components = {name: _run(CHECKS[name]) for name in names}
    healthy = all(c["status"] == "up" for c in components.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "components": components},
        status=200 if healthy else 503,
    )
