"""Prometheus metrics for the proxy, served at /metrics (loopback, or with the metrics token)."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("gateway_requests_total", "Proxied requests", ["route", "model", "status"])
LATENCY = Histogram(
    "gateway_request_seconds", "Whole-call latency", ["route"], buckets=_LATENCY_BUCKETS
)
TTFB = Histogram(
    "gateway_time_to_first_byte_seconds",
    "Time to the first upstream byte",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter("gateway_tokens_total", "Tokens metered", ["model", "kind"])
COST = Counter("gateway_cost_micros_total", "Cost metered, micro-dollars", ["model"])
CAP_REJECTIONS = Counter(
    "gateway_cap_rejections_total", "Calls refused by a cap", ["cap_type", "limit_type"]
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Upstream failures", ["kind"])
RECORDING = Gauge("gateway_calls_recording", "Finished calls whose usage is being recorded")
BETA_RETRIES = Counter(
    "gateway_beta_retries_total", "Calls retried once without betas the upstream rejected"
)

_LOOPBACK = {"127.0.0.1", "::1"}


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.GATEWAY.server.metrics_token
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    allowed = (token and hmac.compare_digest(supplied, token)) or (
        not token and request.META.get("REMOTE_ADDR") in _LOOPBACK
    )
    if not allowed:
        return JsonResponse({"detail": "Metrics need the metrics token."}, status=403)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
