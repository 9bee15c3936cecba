"""One proxied call's life: authenticate, reserve against caps, then record and settle once.

`call_begin` does everything before Bedrock is called; `ProxyCall.finish` does everything
after, exactly once, whichever terminal path the call takes (success, upstream error, failure
before the first byte, client disconnect, shutdown). `finish` runs as its own task so that a
cancelled request (client gone) cannot interrupt it; `drain()` awaits those still running
when the server shuts down.

Between the two, a heartbeat renews the call's reservation every third of
`usage_caps.reservation_lease_seconds`, so a stream that outlives the lease keeps its
reservation; `finish` stops it. The heartbeat holds the call only weakly: a call dropped
without `finish` (a bug) stops renewing, and its lease expires as a dead worker's would.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings

from accounts.authentication import Principal
from caps.errors import CallsInFlight, CapExceeded, CapStoreUnavailable
from caps.estimates import estimate_usage
from caps.headroom import headroom_headers
from caps.reservations import Reservation, acap_renew, acap_reserve, acap_settle
from config import clock
from costs.money import Usage, model_base_id
from costs.pricing import acall_cost_micros
from gateway import metrics
from gateway.errors import ProxyError
from gateway.recorder import recorder
from usage import spool
from usage.services import CallRecord, client_family

logger = logging.getLogger(__name__)

_finishing: set[asyncio.Task] = set()
# Calls that reached Bedrock and are finishing, until their record is handed to the recorder:
# at shutdown, those still here when the drain ends are spooled from what is known of them.
_unhanded: dict[uuid.UUID, ProxyCall] = {}
_heartbeats: set[asyncio.Task] = set()
NOTHING = Usage()


class Outcome(StrEnum):
    """How a call ended when it did not end well (its record's `error_type`). An error Bedrock
    answered keeps Bedrock's own name (`ThrottlingException`, ...)."""

    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # never reached: nothing counted
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_CUT = "upstream_cut"
    CLIENT_DISCONNECTED = "client_disconnected"
    SERVER_SHUTDOWN = "server_shutdown"
    USAGE_UNREADABLE = "usage_unreadable"  # a 200 without usage: counted at the estimate


def upstream_error_name(headers: Any) -> str | None:
    """The error Bedrock named in `x-amzn-errortype` ("ThrottlingException:http://…")."""
    return headers.get("x-amzn-errortype", "").split(":")[0] or None


@dataclass
class ProxyCall:
    """A call in flight: who, what, its reservation, and what happened upstream."""

    principal: Principal
    model_id: str
    route: str
    streaming: bool
    user_agent: str
    session_id: str | None
    reservation: Reservation | None = None
    estimate: Usage | None = None
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)
    started_at: datetime = field(default_factory=clock.now)
    started: float = field(default_factory=time.perf_counter)
    reached_upstream: bool = False
    upstream_status: int = 0
    error_type: str | None = None
    request_id: str = ""
    ttfb: float | None = None
    _finish: asyncio.Task | None = None
    _final: Usage = NOTHING  # what it counts for: set once, when it starts finishing
    _heartbeat: asyncio.TimerHandle | None = field(default=None, repr=False)

    def start_heartbeat(self) -> None:
        """Renew the reservation's lease every third of a lease until `finish`. A timer, not a
        task: most calls end long before their first renewal, and then it only costs this."""
        reservation = self.reservation
        if reservation is None or not reservation.reserved or self._heartbeat is not None:
            return
        interval = settings.GATEWAY.usage_caps.reservation_lease_seconds / 3
        self._heartbeat = _renewal_timer(weakref.ref(self), reservation, interval)

    def mark_first_byte(self) -> None:
        if self.ttfb is None:
            self.ttfb = time.perf_counter() - self.started

    @property
    def headroom(self) -> dict[str, str]:
        return headroom_headers(self.reservation) if self.reservation else {}

    def finish(
        self, usage: Usage | None, outcome: str | None = None, *, reached: bool | None = None
    ) -> asyncio.Task:
        """Where every call ends: record and settle, once. `usage` None: the call never
        reached Bedrock or, when it answered 200, its usage could not be read (then it counts
        at the reservation's estimate, never as nothing). `outcome`: how it ended when not
        well (an `Outcome`, or the upstream's own error name); the first one given stays.
        `reached`: whether Bedrock was reached, when the caller learnt it here."""
        if reached is not None:
            self.reached_upstream = reached
        if outcome is not None and self.error_type is None:
            self.error_type = str(outcome)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._finish is None:
            self._final = self._final_usage(usage)
            if self.reached_upstream:
                _unhanded[self.call_id] = self
            self._finish = asyncio.create_task(self._record(self._final))
            _finishing.add(self._finish)
            metrics.RECORDING.inc()
            self._finish.add_done_callback(self._finished)
        return self._finish

    def _finished(self, task: asyncio.Task) -> None:
        _finishing.discard(task)
        metrics.RECORDING.dec()
        if _unhanded.pop(self.call_id, None) is not None and not task.cancelled():
            # An error before the record reached the recorder: the spool keeps it.
            latency = time.perf_counter() - self.started
            record = self.call_record(self._final, latency, None, priced=False)
            spool.spool_append([record])
            recorder().replay_soon()

    def _final_usage(self, usage: Usage | None) -> Usage:
        """What the call counts for: a 200 without readable usage counts at the estimate."""
        if usage is None and self.reached_upstream and self.upstream_status == 200:
            logger.warning(
                "call %s: no usage in a 200 answer; counted at its estimate", self.call_id
            )
            self.error_type = self.error_type or Outcome.USAGE_UNREADABLE
            return self.estimate or Usage()
        return usage or Usage()

    async def _record(self, usage: Usage) -> None:
        latency = time.perf_counter() - self.started
        status = str(self.upstream_status or 0)
        metrics.REQUESTS.labels(self.route, self.model_id, status).inc()
        if self.error_type and self.error_type != Outcome.CLIENT_DISCONNECTED:
            metrics.UPSTREAM_ERRORS.labels(self.error_type).inc()
        metrics.LATENCY.labels(self.route).observe(latency)
        if self.ttfb is not None:
            metrics.TTFB.labels(self.route).observe(self.ttfb)
        # Priced once, for the cap, the metric and the record (None: no price known; the cap
        # then counts it at its family's dearest price).
        cost = None
        if self.reached_upstream:
            cost = await acall_cost_micros(
                model_id=self.model_id,
                usage=usage,
                at=self.started_at,
                region=settings.GATEWAY.aws.region,
            )
        try:
            if self.reservation is not None:
                await acap_settle(
                    reservation=self.reservation,
                    actual=usage if self.reached_upstream else None,
                    cost_micros=cost,
                )
        except Exception:
            # The reservation's lease releases it; the record below is what must not be lost.
            logger.exception("cap settle failed for call %s", self.call_id)
        if not self.reached_upstream:
            return
        try:
            _count_tokens(self.model_id, usage, cost)
            await self._store(usage, latency, cost)
        except Exception:
            # Nobody awaits this task: say what was lost rather than let it vanish.
            logger.exception("recording call %s failed", self.call_id)
            raise

    async def _store(self, usage: Usage, latency: float, cost: int | None) -> None:
        record = self.call_record(usage, latency, cost, priced=True)
        _unhanded.pop(self.call_id, None)
        await recorder().record(call=record)

    def call_record(
        self, usage: Usage, latency: float, cost: int | None, *, priced: bool
    ) -> CallRecord:
        return CallRecord(
            call_id=self.call_id,
            user_id=self.principal.user_id,
            api_key_id=self.principal.api_key_id,
            auth_kind=self.principal.auth_kind,
            model_id=self.model_id,
            route=self.route,
            streaming=self.streaming,
            usage=usage,
            upstream_status=self.upstream_status,
            error_type=self.error_type,
            latency_ms=round(latency * 1000),
            ttfb_ms=round(self.ttfb * 1000) if self.ttfb is not None else None,
            request_id=self.request_id,
            started_at=self.started_at,
            client_family=client_family(self.user_agent),
            session_id=self.session_id,
            team_id=self.principal.team_id,
            cost_micros=cost,
            priced=priced,
        )


def _count_tokens(model_id: str, usage: Usage, cost: int | None) -> None:
    tokens = metrics.TOKENS
    tokens.labels(model_id, "input").inc(usage.input_tokens)
    tokens.labels(model_id, "output").inc(usage.output_tokens)
    tokens.labels(model_id, "cache_write").inc(usage.cache_write_tokens)
    tokens.labels(model_id, "cache_read").inc(usage.cache_read_tokens)
    if cost:
        metrics.COST.labels(model_id).inc(cost)


def _renew_soon(call: weakref.ref[ProxyCall], reservation: Reservation, interval: float) -> None:
    # The heartbeat holds the call weakly: it stops when the call finishes (its timer is
    # cancelled) or is dropped unfinished (the weak reference dies); a renewal in progress
    # when settling starts is harmless: settled leases are not revived.
    live = call()
    if live is None or live._finish is not None:
        return
    task = asyncio.create_task(_renew(call, reservation, interval))
    _heartbeats.add(task)
    task.add_done_callback(_heartbeats.discard)


async def _renew(call: weakref.ref[ProxyCall], reservation: Reservation, interval: float) -> None:
    try:
        renewed = await acap_renew(reservation=reservation)
    except Exception:
        logger.exception("renewing the reservation of user %s failed", reservation.user_id)
    else:
        if not renewed and not reservation.settled:
            logger.warning("reservation %s could not be renewed", reservation.id)
    live = call()
    if live is not None and live._finish is None:
        live._heartbeat = _renewal_timer(call, reservation, interval)


def _renewal_timer(
    call: weakref.ref[ProxyCall], reservation: Reservation, interval: float
) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(interval, _renew_soon, call, reservation, interval)


# Bedrock's model id shapes: a base id (`anthropic.claude-sonnet-4-6`,
# `anthropic.claude-3-5-haiku-20241022-v1:0`), the same behind an inference-profile prefix
# (`us.`, `global.`), or an ARN (`arn:aws:bedrock:us-east-1:123456789012:inference-profile/…`).
# Printable ASCII only; the usage record's columns hold the longest id accepted.
MAX_MODEL_ID = 200
_MODEL_ID = re.compile(
    r"(?:arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]*:[0-9]{0,12}:[a-z-]+/)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9._-]+)*(?:/[A-Za-z0-9][A-Za-z0-9._:-]*)?"
)
MAX_SESSION_ID = 100


def _checked_model_id(model_id: str) -> str:
    if len(model_id) > MAX_MODEL_ID or not _MODEL_ID.fullmatch(model_id):
        raise ProxyError(
            "invalid",
            f"Invalid model identifier: expected a Bedrock model id, inference profile or ARN "
            f"of at most {MAX_MODEL_ID} characters.",
        )
    # Only families whose answers carry usage the gateway reads: the rest would be metered
    # as nothing, and token and cost caps would never fill.
    base = model_base_id(model_id)[0]
    family = base.split(".", 1)[0] if "." in base else ""
    served = settings.GATEWAY.aws.served_model_families
    if family not in served:
        raise ProxyError(
            "invalid",
            f"Model {base!r} is not served by this gateway: it meters only the model families "
            f"{', '.join(served)}.",
        )
    return model_id


def _checked_session_id(session_id: str | None) -> str | None:
    if session_id is None:
        return None
    if len(session_id) > MAX_SESSION_ID or not session_id.isprintable():
        raise ProxyError(
            "invalid",
            f"Invalid X-Claude-Code-Session-Id: at most {MAX_SESSION_ID} printable characters.",
        )
    return session_id or None


async def call_begin(
    *,
    principal: Principal,
    model_id: str,
    route: str,
    streaming: bool,
    body: dict,
    headers,
) -> ProxyCall:
    """Everything before Bedrock: the client's strings checked (400), then the cap reservation
    (429 / 503), each as a ProxyError."""
    call = ProxyCall(
        principal=principal,
        model_id=_checked_model_id(model_id),
        route=route,
        streaming=streaming,
        user_agent=headers.get("User-Agent", ""),
        session_id=_checked_session_id(headers.get("X-Claude-Code-Session-Id")),
    )
    estimate = call.estimate = estimate_usage(
        user_id=principal.user_id, model_id=model_id, body=body
    )
    try:
        call.reservation = await acap_reserve(
            user_id=principal.user_id,
            model_id=model_id,
            estimate=estimate,
            now=call.started_at,
            session_id=call.session_id,
            team_id=principal.team_id,
        )
    except CapExceeded as exc:
        metrics.CAP_REJECTIONS.labels(exc.cap_type, exc.limit_type).inc()
        retry_after = str(max(int(exc.retry_after_seconds), 1))
        raise ProxyError(
            "cap", exc.message, extra=exc.body(), headers={"Retry-After": retry_after}
        ) from None
    except CallsInFlight as exc:
        metrics.CAP_REJECTIONS.labels("concurrency", exc.reason).inc()
        raise ProxyError(
            "cap", exc.message, headers={"Retry-After": str(exc.retry_after_seconds)}
        ) from None
    except CapStoreUnavailable as exc:
        raise ProxyError("unavailable", str(exc) or "Usage caps cannot be checked now.") from None
    call.start_heartbeat()
    return call


async def drain(timeout: float) -> None:
    """Wait for calls still being recorded (server shutdown); what the database has not taken
    by then goes to the spool, so that the process can exit without losing it. A call that
    starts finishing meanwhile is waited for too."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _finishing and (left := deadline - loop.time()) > 0:
        await asyncio.wait(list(_finishing), timeout=left)
    if _finishing:
        recorder().spool_unwritten()
        _spool_unhanded()


def _spool_unhanded() -> None:
    """Shutdown: the calls still finishing whose record never reached the recorder (their
    settle or pricing was slow) go to the spool as they are known; the next start prices
    them. One that is written after all is skipped by call_id at replay."""
    calls = [
        call.call_record(call._final, time.perf_counter() - call.started, None, priced=False)
        for call in list(_unhanded.values())
    ]
    _unhanded.clear()
    if calls:
        spool.spool_append(calls)
        logger.warning("%d call(s) still finishing at shutdown: spooled", len(calls))
