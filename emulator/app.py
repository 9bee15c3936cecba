"""The ASGI application: routing, authentication, knobs, and the five Bedrock operations."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from . import converse, messages
from .config import Knobs, Settings, knobs_from_headers
from .errors import BedrockError, error_by_name
from .eventstream import encode_chunk, encode_event, encode_exception
from .models import ON_DEMAND_MODELS, is_profile, resolve_model
from .sigv4 import verify_sigv4
from .tokens import Prompt, PromptCache

__all__ = ["ConnectionCut", "Emulator", "create_app"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

VERBS = ("invoke", "invoke-with-response-stream", "converse", "converse-stream", "count-tokens")
_JSON = b"application/json"
_EVENT_STREAM = b"application/vnd.amazon.eventstream"


class ConnectionCut(Exception):
    """Raised to make uvicorn drop the connection mid-stream (the ``cut-after`` knob)."""


class _QuietCut(logging.Filter):
    # uvicorn logs an app exception with a traceback; a requested cut is not an error.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionCut))


logging.getLogger("uvicorn.error").addFilter(_QuietCut())
_log = logging.getLogger("emulator")


def _route(raw_path: bytes) -> tuple[str, str] | None:
    """(model id, verb) from ``/model/{id}/{verb}``; the verb is the last segment, so an ARN's
    ``/`` (sent raw or as %2F) stays in the id."""
    if not raw_path.startswith(b"/model/"):
        return None
    model, _, verb = raw_path[7:].rpartition(b"/")
    verb_text = verb.decode("latin-1")
    if not model or verb_text not in VERBS:
        return None
    return unquote(model.decode("latin-1")), verb_text


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BedrockError(
            "ValidationException",
            f"Malformed input request: {exc.__class__.__name__}: {exc}, "
            "please reformat your input and try again.",
        ) from None


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class Emulator:
    """The Bedrock runtime emulator as a raw ASGI application."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.cache = PromptCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # ------------------------------------------------------------ request handling

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        if scope["path"] == "/ping" and scope["method"] in ("GET", "HEAD"):
            await _respond(send, 200, b'{"status":"ok"}', request_id)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw_path.partition(b"?")[0]
        body = await _read_body(receive)
        headers = _headers(scope)
        try:
            route = _route(raw_path) if scope["method"] == "POST" else None
            if route is None:
                raise BedrockError("UnknownOperationException")
            self._authenticate(scope, raw_path, headers, body)
            knobs = knobs_from_headers(self.settings.knobs, headers)
            _inject_error(knobs)
            model_id, verb = route
            model = self._resolve(model_id)
            if verb == "invoke":
                await self._invoke(send, body, model, knobs, started, request_id)
            elif verb == "invoke-with-response-stream":
                await self._invoke_stream(send, receive, body, model, knobs, started, request_id)
            elif verb == "converse":
                await self._converse(send, body, model, knobs, started, request_id)
            elif verb == "converse-stream":
                await self._converse_stream(send, receive, body, model, knobs, started, request_id)
            else:
                await self._count_tokens(send, body, model, request_id)
        except BedrockError as rejected:
            payload = json.dumps({"message": rejected.message}).encode()
            await _respond(send, rejected.status, payload, request_id, rejected.headers())
        except (ConnectionCut, asyncio.CancelledError):
            raise
        except Exception:
            # A body shape the emulator did not foresee must still get Bedrock's error format;
            # validation happens before the response starts, so nothing has been sent yet.
            _log.exception("unexpected error handling %s", scope["path"])
            error = BedrockError("InternalServerException")
            payload = json.dumps({"message": error.message}).encode()
            await _respond(send, error.status, payload, request_id, error.headers())

    def _authenticate(
        self, scope: Scope, raw_path: bytes, headers: dict[str, str], body: bytes
    ) -> None:
        authorization = headers.get("authorization")
        if not authorization:
            if self.settings.require_auth:
                raise BedrockError("MissingAuthenticationTokenException")
            return
        scheme = authorization.split(" ", 1)[0]
        if scheme == "Bearer":
            token = authorization[7:].strip()
            keys = self.settings.api_keys
            if not token or (keys is not None and token not in keys):
                raise BedrockError(
                    "AccessDeniedException",
                    "Authentication failed: Please make sure your API Key is valid.",
                )
            return
        if scheme != "AWS4-HMAC-SHA256":
            raise BedrockError(
                "IncompleteSignatureException", f"Unsupported authorization type: {scheme}"
            )
        verify_sigv4(
            authorization=authorization,
            method=scope["method"],
            raw_path=raw_path.decode("utf-8", "replace"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            secrets=self.settings.credentials,
        )

    def _resolve(self, model_id: str) -> str:
        model = resolve_model(model_id)
        if model is None:
            raise BedrockError("ValidationException", "The provided model identifier is invalid.")
        if (
            self.settings.require_profiles
            and model not in ON_DEMAND_MODELS
            and not is_profile(model_id)
        ):
            raise BedrockError(
                "ValidationException",
                f"Invocation of model ID {model} with on-demand throughput isn’t supported. Retry "  # noqa: RUF001 - Bedrock's own wording
                "your request with the ID or ARN of an inference profile that contains this model.",
            )
        return model

    def _complete(self, body: Any, model: str, knobs: Knobs) -> messages.Completion:
        messages.validate_body(body, model=model, allowed_betas=self.settings.allowed_betas)
        return messages.complete(
            body,
            model=model,
            reply_tokens=knobs.reply_tokens,
            cache=self.cache,
            tool_use=knobs.tool_use,
            tokens_per_delta=knobs.tokens_per_delta,
        )

    def _complete_converse(self, raw: bytes, model: str, knobs: Knobs) -> messages.Completion:
        request = _parse_json(raw)
        if not isinstance(request, dict):
            raise BedrockError(
                "ValidationException",
                "Malformed input request, please reformat your input and try again.",
            )
        return self._complete(converse.to_anthropic(request), model, knobs)

    # ------------------------------------------------------------ operations

    async def _invoke(
        self, send: Send, raw: bytes, model: str, knobs: Knobs, started: float, request_id: str
    ) -> None:
        completion = self._complete(_parse_json(raw), model, knobs)
        await _sleep_generation(knobs, completion.output_tokens)
        body = messages.message_body(completion)
        if not model.startswith("anthropic."):
            body = messages.nova_body(completion)
        if knobs.omit_usage:
            body.pop("usage", None)
            await _respond(send, 200, json.dumps(body).encode(), request_id)
            return
        payload = json.dumps(body, separators=(",", ":")).encode()
        usage = completion.usage
        headers = [
            (b"x-amzn-bedrock-invocation-latency", str(_ms_since(started)).encode()),
            (b"x-amzn-bedrock-output-token-count", str(completion.output_tokens).encode()),
            (b"x-amzn-bedrock-input-token-count", str(usage.input_tokens).encode()),
            (b"x-amzn-bedrock-cache-read-input-token-count", str(usage.cache_read).encode()),
            (b"x-amzn-bedrock-cache-write-input-token-count", str(usage.cache_write).encode()),
        ]
        await _respond(send, 200, payload, request_id, headers)

    async def _converse(
        self, send: Send, raw: bytes, model: str, knobs: Knobs, started: float, request_id: str
    ) -> None:
        completion = self._complete_converse(raw, model, knobs)
        await _sleep_generation(knobs, completion.output_tokens)
        body = converse.converse_body(completion, _ms_since(started))
        await _respond(send, 200, json.dumps(body, separators=(",", ":")).encode(), request_id)

    async def _invoke_stream(
        self,
        send: Send,
        receive: Receive,
        raw: bytes,
        model: str,
        knobs: Knobs,
        started: float,
        request_id: str,
    ) -> None:
        completion = self._complete(_parse_json(raw), model, knobs)
        events = messages.stream_events(completion)
        usage = completion.usage
        first_byte = [0]

        def encode(index: int, event: dict[str, Any]) -> bytes:
            if index == 0:
                first_byte[0] = _ms_since(started)
            if knobs.omit_usage:
                event = _without_usage(event)
                return encode_chunk(event, index)
            if event["type"] == "message_stop":
                event = {
                    "type": "message_stop",
                    "amazon-bedrock-invocationMetrics": {
                        "inputTokenCount": usage.input_tokens,
                        "outputTokenCount": completion.output_tokens,
                        "invocationLatency": _ms_since(started),
                        "firstByteLatency": first_byte[0],
                        "cacheReadInputTokenCount": usage.cache_read,
                        "cacheWriteInputTokenCount": usage.cache_write,
                    },
                }
            return encode_chunk(event, index)

        def paced(event: dict[str, Any]) -> bool:
            return event["type"] == "content_block_delta"

        await _stream(send, receive, events, encode, paced, knobs, request_id)

    async def _converse_stream(
        self,
        send: Send,
        receive: Receive,
        raw: bytes,
        model: str,
        knobs: Knobs,
        started: float,
        request_id: str,
    ) -> None:
        completion = self._complete_converse(raw, model, knobs)
        events = converse.converse_events(completion)

        def encode(index: int, item: tuple[str, dict[str, Any]]) -> bytes:
            kind, body = item
            if kind == "metadata":
                body = {**body, "metrics": {"latencyMs": _ms_since(started)}}
            return encode_event(kind, body, index)

        def paced(item: tuple[str, dict[str, Any]]) -> bool:
            return item[0] == "contentBlockDelta"

        await _stream(send, receive, events, encode, paced, knobs, request_id)

    async def _count_tokens(self, send: Send, raw: bytes, model: str, request_id: str) -> None:
        request = _parse_json(raw)
        source = request.get("input") if isinstance(request, dict) else None
        if not isinstance(source, dict) or not source:
            raise BedrockError(
                "ValidationException",
                "1 validation error detected: Value null at 'input' failed to satisfy constraint: "
                "Member must not be null",
            )
        if "invokeModel" in source:
            encoded = (source["invokeModel"] or {}).get("body", "")
            try:
                body = _parse_json(base64.b64decode(encoded, validate=True))
            except (binascii.Error, TypeError):
                raise BedrockError(
                    "ValidationException", "Invalid base64 in input.invokeModel.body."
                ) from None
        elif "converse" in source:
            body = converse.to_anthropic(source["converse"] or {}, require_messages=False)
        else:
            raise BedrockError("ValidationException", "input must set invokeModel or converse.")
        messages.validate_body(
            body, model=model, allowed_betas=self.settings.allowed_betas, require_max_tokens=False
        )
        prompt = Prompt(body)
        messages.check_breakpoints(prompt)
        await _respond(send, 200, json.dumps({"inputTokens": prompt.total}).encode(), request_id)


def _inject_error(knobs: Knobs) -> None:
    """The ``error`` / ``error-rate`` knobs: an error before any byte of the response."""
    if knobs.error_rate > 0:
        if random.random() >= knobs.error_rate:
            return
    elif not knobs.error:
        return
    name = error_by_name(knobs.error or "ThrottlingException")
    if name is None:
        raise BedrockError("ValidationException", f"Unknown x-emulator-error: {knobs.error!r}")
    raise BedrockError(name)


async def _sleep_generation(knobs: Knobs, output_tokens: int) -> None:
    # A non-streamed reply arrives when the whole generation would have finished.
    delay = knobs.ttfb_ms / 1000 + knobs.stall_ms / 1000
    if knobs.tokens_per_second > 0:
        delay += output_tokens / knobs.tokens_per_second
    await _sleep_at_least(delay)


async def _sleep_at_least(seconds: float) -> None:
    # The event loop's timers may fire a little early; a knob promises a minimum delay.
    if seconds <= 0:
        return
    deadline = time.perf_counter() + seconds
    await asyncio.sleep(seconds)
    while (remaining := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(remaining + 0.0002)


async def _respond(
    send: Send,
    status: int,
    payload: bytes,
    request_id: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", _JSON),
        (b"content-length", str(len(payload)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _stream(
    send: Send,
    receive: Receive,
    events: list[Any],
    encode: Callable[[int, Any], bytes],
    paced: Callable[[Any], bool],
    knobs: Knobs,
    request_id: str,
) -> None:
    """Send events as event-stream frames, applying pacing and the mid-stream fault knobs."""
    await _sleep_at_least(knobs.ttfb_ms / 1000)
    headers = [
        (b"content-type", _EVENT_STREAM),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-bedrock-content-type", _JSON),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    interval = 1 / knobs.tokens_per_second if knobs.tokens_per_second > 0 else 0.0
    faults = knobs.stream_error or knobs.cut_after is not None or knobs.stall_ms
    if not interval and not faults:
        # Nothing to pace: one write is what keeps the emulator out of a benchmark's way.
        frames = b"".join(encode(index, event) for index, event in enumerate(events))
        await send({"type": "http.response.body", "body": frames})
        return
    # A slow stream stops when its client goes away, as a model's generation would.
    watcher = asyncio.create_task(_until_disconnect(receive))
    try:
        await _paced(send, events, encode, paced, knobs, interval, watcher)
    finally:
        watcher.cancel()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _paced(
    send: Send,
    events: list[Any],
    encode: Callable[[int, Any], bytes],
    paced: Callable[[Any], bool],
    knobs: Knobs,
    interval: float,
    disconnected: asyncio.Task[None],
) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    for index, event in enumerate(events):
        if disconnected.done():
            return
        if knobs.stream_error and index == knobs.stream_error_after:
            await _send_stream_error(send, knobs.stream_error)
            return
        if knobs.cut_after is not None and index == knobs.cut_after:
            raise ConnectionCut(f"cut after {index} events")
        if knobs.stall_ms and index == knobs.stall_after:
            await _sleep_at_least(knobs.stall_ms / 1000)
            next_at = loop.time()
        if interval and paced(event):
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": encode(index, event), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _send_stream_error(send: Send, name: str) -> None:
    canonical = error_by_name(name) or name
    error = BedrockError(canonical) if error_by_name(name) else None
    message = error.message if error else f"{name} injected by the emulator"
    stream_name = canonical[0].lower() + canonical[1:]
    extra: dict[str, Any] = {}
    if canonical == "ModelStreamErrorException":
        extra = {"originalStatusCode": 500, "originalMessage": "The model stopped unexpectedly."}
    frame = encode_exception(stream_name, message, **extra)
    await send({"type": "http.response.body", "body": frame})


def create_app(settings: Settings | None = None) -> Emulator:
    """The ASGI application for ``settings`` (defaults: example credentials, any bearer key)."""
    return Emulator(settings)


def _without_usage(event: dict[str, Any]) -> dict[str, Any]:
    """A stream event with every usage figure taken out (the `omit-usage` knob)."""
    if event["type"] == "message_start":
        message = {k: v for k, v in event["message"].items() if k != "usage"}
        return {**event, "message": message}
    if event["type"] in ("message_delta", "message_stop"):
        return {
            k: v for k, v in event.items() if k not in ("usage", "amazon-bedrock-invocationMetrics")
        }
    return event
