"""The proxy's async views: /bedrock (Bedrock runtime's own API) and /anthropic (Messages API)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.authentication import AuthFailed, AuthThrottled, aauthenticate_request
from accounts.services import Principal
from config import jsonlimits
from costs.money import Usage
from gateway import anthropic, betas, limits, metrics, upstream
from gateway.errors import Family, ProxyError
from gateway.services import Outcome, ProxyCall, call_begin, upstream_error_name
from gateway.streaming import relay

# verb -> (streams, route label, converse API)
BEDROCK_VERBS: dict[str, tuple[bool, str, bool]] = {
    "invoke": (False, "bedrock.invoke", False),
    "invoke-with-response-stream": (True, "bedrock.invoke_stream", False),
    "converse": (False, "bedrock.converse", True),
    "converse-stream": (True, "bedrock.converse_stream", True),
}
EVENTSTREAM = "application/vnd.amazon.eventstream"


def _read_json(request: HttpRequest) -> dict:
    """The request body as a JSON object, read with the proxy's own size limit."""
    if request.method != "POST":
        raise ProxyError("method", f"Method {request.method} is not allowed here; use POST.")
    content_type = request.content_type or "application/json"
    if content_type != "application/json":
        raise ProxyError(
            "media_type", f"Content-Type must be application/json, not {content_type}."
        )
    limit = settings.GATEWAY.server.max_body_bytes
    declared = request.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProxyError("too_large", f"Request body exceeds the limit of {limit} bytes.")
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise ProxyError("too_large", f"Request body exceeds the limit of {limit} bytes.")
    try:
        body = jsonlimits.loads(raw)  # UTF-8 only, nested at most jsonlimits.MAX_DEPTH deep
    except jsonlimits.JsonTooDeep as exc:
        raise ProxyError("invalid", f"Request body: {exc}") from None
    except UnicodeDecodeError:
        raise ProxyError("invalid", "Request body is not valid UTF-8.") from None
    except ValueError:
        raise ProxyError("invalid", "Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ProxyError("invalid", "Request body must be a JSON object.")
    return body


# The database could not serve this request in time (down, locked, its pool exhausted by a
# burst): a quick 503 the client retries, never a 500 or a hang.
DB_UNAVAILABLE = (OperationalError, InterfaceError)


async def authenticate(request: HttpRequest, family: Family) -> Principal:
    """The caller, or the family's 401; its 429 once the address has failed too often."""
    try:
        return await aauthenticate_request(request.headers, request.META, family.value)
    except AuthThrottled as exc:
        retry = {"Retry-After": str(exc.retry_after)}
        raise ProxyError("throttled", str(exc), headers=retry) from None
    except AuthFailed as exc:
        raise ProxyError("auth", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def _busy() -> ProxyError:
    return ProxyError(
        "unavailable", "The gateway is busy; retry shortly.", headers={"Retry-After": "1"}
    )


def _relayed_headers(response, call: ProxyCall) -> dict[str, str]:
    headers = {
        name: response.headers[name]
        for name in upstream.RELAYED_HEADERS
        if name in response.headers
    }
    headers.update(call.headroom)
    return headers


def _upstream_headers(request: HttpRequest) -> dict[str, str]:
    """Headers the upstream gets from the client: betas and, for the emulator only, its knobs."""
    headers = {}
    betas = request.headers.get("anthropic-beta")
    if betas:
        headers["anthropic-beta"] = betas
    if settings.GATEWAY.aws.upstream == "emulator":
        headers.update(
            (name, value)
            for name, value in request.headers.items()
            if name.lower().startswith("x-emulator-")
        )
    return headers


def _converse_as_messages(body: dict) -> dict:
    """The parts of a Converse body that size an estimate, in Messages form."""
    config = body.get("inferenceConfig") or {}
    return {
        "max_tokens": config.get("maxTokens") or 4096,
        "system": body.get("system"),
        "messages": body.get("messages"),
        "tools": (body.get("toolConfig") or {}).get("tools"),
    }


async def _start_upstream(
    call: ProxyCall, model_id: str, verb: str, payload: bytes, *, stream: bool, headers: dict
) -> upstream.UpstreamResponse:
    """Open the upstream call; any failure before a response settles the call at once."""
    try:
        response = await upstream.open_call(
            model_id, verb, payload, stream=stream, extra_headers=headers
        )
    except upstream.UpstreamUnavailable as exc:
        await asyncio.shield(call.finish(None, Outcome.UPSTREAM_UNREACHABLE))
        raise ProxyError("bad_gateway", f"Bedrock is unreachable: {exc}") from None
    except upstream.UpstreamTimeout:
        await asyncio.shield(call.finish(Usage(), Outcome.UPSTREAM_TIMEOUT, reached=True))
        raise ProxyError("timeout", "Bedrock did not answer in time.") from None
    except asyncio.CancelledError:
        await asyncio.shield(call.finish(Usage(), Outcome.CLIENT_DISCONNECTED, reached=True))
        raise
    call.reached_upstream = True
    call.upstream_status = response.status_code
    call.request_id = response.headers.get("x-amzn-requestid", "")
    call.mark_first_byte()
    return response


def _headers_without(headers: dict[str, str], drop: set[str]) -> dict[str, str]:
    kept = betas.strip_header(headers.get("anthropic-beta"), drop)
    headers = {name: value for name, value in headers.items() if name != "anthropic-beta"}
    return {**headers, "anthropic-beta": kept} if kept else headers


async def _send(
    call: ProxyCall, model_id: str, verb: str, body: dict, *, stream: bool, headers: dict
) -> tuple[upstream.UpstreamResponse, bytes | None]:
    """Send upstream without the betas it is known to reject; on a new beta rejection, learn
    which betas it rejects and retry once without them. Returns the response and, when it had
    to be read already, its body."""
    known = betas.rejected(model_id)
    if known:
        body, headers = betas.strip(body, known), _headers_without(headers, known)
    payload = _dumps(body)
    response = await _start_upstream(call, model_id, verb, payload, stream=stream, headers=headers)
    if response.status_code != 400 or not body.get("anthropic_beta"):
        return response, None
    raw = await _read_whole(call, response)
    found = await betas.learn(model_id, body) if betas.is_beta_rejection(400, raw) else set()
    if not found:
        return response, raw
    metrics.BETA_RETRIES.inc()
    body, headers = betas.strip(body, found), _headers_without(headers, found)
    payload = _dumps(body)
    response = await _start_upstream(call, model_id, verb, payload, stream=stream, headers=headers)
    return response, None


async def _read_whole(call: ProxyCall, response: upstream.UpstreamResponse) -> bytes:
    """A complete upstream body; a timeout or cut is recorded before the error is raised."""
    try:
        return await upstream.read_body(response)
    except (upstream.UpstreamTimeout, upstream.UpstreamUnavailable) as exc:
        timed_out = isinstance(exc, upstream.UpstreamTimeout)
        outcome = Outcome.UPSTREAM_TIMEOUT if timed_out else Outcome.UPSTREAM_CUT
        await asyncio.shield(call.finish(Usage(), outcome))
        kind = "timeout" if timed_out else "bad_gateway"
        raise ProxyError(kind, "Bedrock's response was cut short.") from None
    except asyncio.CancelledError:
        await asyncio.shield(call.finish(Usage(), Outcome.CLIENT_DISCONNECTED))
        raise


def _dumps(body: dict) -> bytes:
    """A client's JSON body, encoded again for the upstream."""
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits, which the client's JSON may hold
        return json.dumps(body).encode()


def _parsed(raw: bytes) -> object:
    """An answer's JSON, or None when it is not JSON."""
    try:
        return orjson.loads(raw)
    except ValueError:
        return None


def _usage_of(data: object, converse: bool) -> Usage | None:
    """The usage in an answer's parsed body; None when there is none to read (the call then
    counts at its estimate)."""
    usage = data.get("usage") if isinstance(data, dict) else None
    # Another family's usage object (Nova's `inputTokens` on invoke) is not ours to read.
    if (
        not isinstance(usage, dict)
        or ("outputTokens" if converse else "output_tokens") not in usage
    ):
        return None
    if converse:
        return upstream.usage_from_converse(usage)
    return upstream.usage_from_message(usage)


def _error_tail_bedrock(error_type: str, message: str) -> None:
    # A cut mid-frame cannot be repaired: cut the client too, so its parser reports it.
    return None


@csrf_exempt
async def bedrock_model(request: HttpRequest, model_id: str, verb: str) -> HttpResponse:
    request_id = str(uuid.uuid4())
    try:
        response = await _bedrock_model(request, model_id, verb)
    except DB_UNAVAILABLE:
        response = _busy().response(Family.BEDROCK, request_id)
    except ProxyError as exc:
        response = exc.response(Family.BEDROCK, request_id)
    return _nosniff(response)


def _nosniff(response: HttpResponse) -> HttpResponse:
    # The proxy's routes skip SecurityMiddleware (config/asgi.py); this is the header of its
    # that a JSON API needs.
    response["X-Content-Type-Options"] = "nosniff"
    return response


async def _bedrock_model(request: HttpRequest, model_id: str, verb: str) -> HttpResponse:
    principal = await authenticate(request, Family.BEDROCK)
    body = _read_json(request)
    if verb == "count-tokens":
        await limits.count_tokens_check(principal)
        return await _bedrock_count_tokens(model_id, json.dumps(body))
    betas.check(body.get("anthropic_beta"), request.headers.get("anthropic-beta"))
    streams, route, converse = BEDROCK_VERBS[verb]
    estimate_body = _converse_as_messages(body) if converse else body
    if not isinstance(estimate_body.get("max_tokens", 1), int):
        raise ProxyError("invalid", "max_tokens must be an integer.")
    call = await call_begin(
        principal=principal,
        model_id=model_id,
        route=route,
        streaming=streams,
        body=estimate_body,
        headers=request.headers,
    )
    extra = _upstream_headers(request)
    if streams:
        extra["X-Amzn-Bedrock-Accept"] = request.headers.get("X-Amzn-Bedrock-Accept", "*/*")
    response, raw = await _send(call, model_id, verb, body, stream=streams, headers=extra)
    headers = _relayed_headers(response, call)
    if not streams or response.status_code != 200:
        raw = raw if raw is not None else await _read_whole(call, response)
        usage = _usage_of(_parsed(raw), converse) if response.status_code == 200 else Usage()
        # Recorded in its own task: the answer does not wait for it.
        call.finish(usage, upstream_error_name(response.headers))
        content_type = response.headers.get("content-type", "application/json")
        return HttpResponse(
            raw, status=response.status_code, content_type=content_type, headers=headers
        )
    return relay(
        call,
        response,
        upstream.StreamMeter(converse=converse),
        content_type=EVENTSTREAM,
        headers=headers,
        translate=None,
        on_error=_error_tail_bedrock,
        put_timeout=settings.GATEWAY.aws.read_timeout,
    )


async def _bedrock_count_tokens(model_id: str, payload: str) -> HttpResponse:
    """Token counting is free upstream: proxied for authenticated users, not metered."""
    try:
        response = await upstream.open_call(
            model_id, "count-tokens", payload.encode(), stream=False, extra_headers={}
        )
        raw = await upstream.read_body(response)
    except upstream.UpstreamUnavailable as exc:
        raise ProxyError("bad_gateway", f"Bedrock is unreachable: {exc}") from None
    except upstream.UpstreamTimeout:
        raise ProxyError("timeout", "Bedrock did not answer in time.") from None
    headers = {n: response.headers[n] for n in upstream.RELAYED_HEADERS if n in response.headers}
    return HttpResponse(
        raw,
        status=response.status_code,
        headers=headers,
        content_type=response.headers.get("content-type", "application/json"),
    )


# --- /anthropic --------------------------------------------------------------------------------


def _anthropic_view(handler: Callable) -> Callable:
    @csrf_exempt
    async def view(request: HttpRequest) -> HttpResponse:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            response = await handler(request)
        except DB_UNAVAILABLE:
            response = _busy().response(Family.ANTHROPIC, request_id)
        except ProxyError as exc:
            response = exc.response(Family.ANTHROPIC, request_id)
        except anthropic.AnthropicError as exc:
            response = _anthropic_error_response(exc.status, exc.type, exc.message, request_id)
        response.setdefault("request-id", request_id)
        return _nosniff(response)

    return view


def _anthropic_error_response(status: int, kind: str, message: str, request_id: str):
    return HttpResponse(
        json.dumps(anthropic.error_body(kind, message)),
        status=status,
        content_type="application/json",
        headers={"request-id": request_id},
    )


async def _messages(request: HttpRequest) -> HttpResponse:
    principal = await authenticate(request, Family.ANTHROPIC)
    body = _read_json(request)
    model_id, bedrock_body, _betas = await anthropic.ato_bedrock_request(body, request.headers)
    betas.check(_betas)
    requested = body["model"]
    streams = body.get("stream") is True
    route = "anthropic.messages_stream" if streams else "anthropic.messages"
    call = await call_begin(
        principal=principal,
        model_id=model_id,
        route=route,
        streaming=streams,
        body=bedrock_body,
        headers=request.headers,
    )
    verb = "invoke-with-response-stream" if streams else "invoke"
    extra = _upstream_headers(request)
    extra.pop("anthropic-beta", None)  # betas travel in the body on this route
    response, raw = await _send(call, model_id, verb, bedrock_body, stream=streams, headers=extra)
    headers = {"request-id": call.request_id or f"req_{call.call_id.hex}", **call.headroom}
    if response.status_code != 200:
        raw = raw if raw is not None else await _read_whole(call, response)
        await asyncio.shield(call.finish(Usage(), upstream_error_name(response.headers)))
        try:
            message = json.loads(raw).get("message", "")
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")[:500]
        status, error = anthropic.bedrock_error_to_anthropic(
            response.status_code, call.error_type, message
        )
        return HttpResponse(
            json.dumps(error), status=status, content_type="application/json", headers=headers
        )
    if not streams:
        raw = await _read_whole(call, response)
        data = _parsed(raw)
        call.finish(_usage_of(data, converse=False))  # in its own task: the answer goes now
        if not isinstance(data, dict):
            raise ProxyError("bad_gateway", "Bedrock's answer could not be read.")
        result = anthropic.to_anthropic_response(data, requested)
        return HttpResponse(orjson.dumps(result), content_type="application/json", headers=headers)
    translator = anthropic.SseTranslator(requested)
    meter = upstream.StreamMeter()
    reported: list[bool] = []

    def translate(chunk: bytes, events: list[dict]) -> bytes:
        out = b"".join(translator.feed(event) for event in events)
        if meter.exception and not reported:
            reported.append(True)
            out += translator.exception(*meter.exception)
        return out

    def on_error(kind: str, message: str) -> bytes:
        return translator.error("api_error", message)

    return relay(
        call,
        response,
        meter,
        content_type="text/event-stream; charset=utf-8",
        headers=headers,
        translate=translate,
        on_error=on_error,
        put_timeout=settings.GATEWAY.aws.read_timeout,
    )


async def _count_tokens(request: HttpRequest) -> HttpResponse:
    principal = await authenticate(request, Family.ANTHROPIC)
    await limits.count_tokens_check(principal)
    body = _read_json(request)
    model_id, payload = await anthropic.ato_bedrock_count_tokens(body, request.headers)
    try:
        response = await upstream.open_call(
            model_id, "count-tokens", json.dumps(payload).encode(), stream=False, extra_headers={}
        )
        raw = await upstream.read_body(response)
    except upstream.UpstreamUnavailable as exc:
        raise ProxyError("bad_gateway", f"Bedrock is unreachable: {exc}") from None
    except upstream.UpstreamTimeout:
        raise ProxyError("timeout", "Bedrock did not answer in time.") from None
    data = json.loads(raw) if raw else {}
    if response.status_code != 200:
        status, error = anthropic.bedrock_error_to_anthropic(
            response.status_code, upstream_error_name(response.headers), data.get("message", "")
        )
        return HttpResponse(json.dumps(error), status=status, content_type="application/json")
    return HttpResponse(
        json.dumps(anthropic.from_bedrock_count_tokens(data)), content_type="application/json"
    )


async def _models(request: HttpRequest) -> HttpResponse:
    await authenticate(request, Family.ANTHROPIC)
    if request.method != "GET":
        raise ProxyError("method", f"Method {request.method} is not allowed here; use GET.")
    body = await anthropic.amodels_list(
        limit=request.GET.get("limit"),
        after_id=request.GET.get("after_id"),
        before_id=request.GET.get("before_id"),
    )
    return HttpResponse(json.dumps(body), content_type="application/json")


messages = _anthropic_view(_messages)
count_tokens = _anthropic_view(_count_tokens)
models = _anthropic_view(_models)
