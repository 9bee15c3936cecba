"""Prometheus metrics for the proxy, served at /metrics (loopback, or with the metrics token)."""

import hmac
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from accounts.throttle import auth_throttled
from config.conf import secret_value
from costs.pricing import priced_base_id

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

OTHER_MODEL = "other"


def model_label(model_id: str) -> str:
    """The `model` label: the base model id when it has a price, else `other`.

    Model ids come from clients: raw, they would make one series per made-up id (unbounded,
    and a NUL byte was seen). Priced base ids are a short list the administrators keep.
    """
    return priced_base_id(model_id) or OTHER_MODEL


class _ModelLabelled:
    """A metric whose `model` label (by name or position) is mapped through `model_label`."""

    def __init__(self, metric, labelnames: list[str]) -> None:
        self._metric = metric
        self._index = labelnames.index("model")

    def labels(self, *values: str, **named: str):  # prometheus' child
        if "model" in named:
            named["model"] = model_label(named["model"])
        elif len(values) > self._index:
            index = self._index
            values = (*values[:index], model_label(values[index]), *values[index + 1 :])
        return self._metric.labels(*values, **named)

    def __getattr__(self, name: str):  # everything else is the metric's
        return getattr(self._metric, name)


def _by_model(metric_class, name: str, documentation: str, labelnames: list[str]):
    return _ModelLabelled(metric_class(name, documentation, labelnames), labelnames)


REQUESTS = _by_model(
    Counter, "gateway_requests_total", "Proxied requests", ["route", "model", "status"]
)
LATENCY = Histogram(
    "gateway_request_seconds", "Whole-call latency", ["route"], buckets=_LATENCY_BUCKETS
)
TTFB = Histogram(
    "gateway_time_to_first_byte_seconds",
    "Time to the first upstream byte",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = _by_model(Counter, "gateway_tokens_total", "Tokens metered", ["model", "kind"])
COST = _by_model(Counter, "gateway_cost_micros_total", "Cost metered, micro-dollars", ["model"])
CAP_REJECTIONS = Counter(
    "gateway_cap_rejections_total", "Calls refused by a cap", ["cap_type", "limit_type"]
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Upstream failures", ["kind"])
# multiprocess_mode (gunicorn's workers, config/gunicorn.py): recording is summed over the
# live workers; the spool is one file they share, so its depth is the latest any one saw.
RECORDING = Gauge(
    "gateway_calls_recording",
    "Finished calls whose usage is being recorded",
    multiprocess_mode="livesum",
)
SPOOL_DEPTH = Gauge(
    "gateway_usage_spool_depth",
    "Usage records waiting in the disk spool for the database",
    multiprocess_mode="mostrecent",
)
BETA_RETRIES = Counter(
    "gateway_beta_retries_total", "Calls retried once without betas the upstream rejected"
)
AUTH_THROTTLED = Counter(
    "gateway_auth_throttled_total",
    "Requests refused (429) after too many failed credentials from one address",
    ["family"],
)
auth_throttled.connect(
    lambda sender, family, **kwargs: AUTH_THROTTLED.labels(family=family).inc(),
    dispatch_uid="gateway.metrics.auth_throttled",
    weak=False,
)

_LOOPBACK = {"127.0.0.1", "::1"}


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = secret_value(settings.GATEWAY.server.metrics_token)
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    allowed = (token and hmac.compare_digest(supplied, token)) or (
        not token and request.META.get("REMOTE_ADDR") in _LOOPBACK
    )
    if not allowed:
        return JsonResponse({"detail": "Metrics need the metrics token."}, status=403)
    return HttpResponse(_exposition(), content_type=CONTENT_TYPE_LATEST)


def _exposition() -> bytes:
    """This process's metrics, or every worker's added up under gunicorn's multiprocess mode."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
