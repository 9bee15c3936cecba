"""The Anthropic Messages API over Bedrock: request, response, stream and error translation.

Pure functions on plain dicts (and the model map for names), called by the /anthropic views:
- to_bedrock_request / to_bedrock_count_tokens: an Anthropic request -> Bedrock model id + body;
- to_anthropic_response / SseTranslator: Bedrock's answer -> Anthropic's JSON / server-sent events;
- bedrock_error_to_anthropic / stream_error_type: Bedrock errors -> Anthropic's error envelope;
- models_list / model_get: GET /v1/models from the active model aliases.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import orjson

from gateway import model_map

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
METRICS_KEY = "amazon-bedrock-invocationMetrics"
MODELS_DEFAULT_LIMIT = 20
MODELS_MAX_LIMIT = 1000

Headers = Mapping[str, Any] | Iterable[tuple[str | bytes, str | bytes]]

_VERSION_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH = "1970-01-01T00:00:00Z"


class AnthropicError(Exception):
    """A failure answered in Anthropic's error envelope with the given HTTP status."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    @property
    def body(self) -> dict:
        return error_body(self.type, self.message)


def error_body(type: str, message: str) -> dict:
    """Anthropic's error envelope: {"type": "error", "error": {"type": ..., "message": ...}}."""
    return {"type": "error", "error": {"type": type, "message": message}}


def _invalid(message: str) -> AnthropicError:
    return AnthropicError(400, "invalid_request_error", message)


# --- Requests -----------------------------------------------------------------------------------


def _header_values(headers: Headers | None, name: str) -> list[str]:
    """Every value of a header, whatever the container (Django's headers, a dict, ASGI pairs)."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    values: list[str] = []
    for key, value in items:
        key = key.decode("latin-1") if isinstance(key, bytes) else key
        if key.lower() != name:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            values.append(item.decode("latin-1") if isinstance(item, bytes) else str(item))
    return values


def check_anthropic_version(headers: Headers | None) -> None:
    """anthropic-version: 2023-06-01 or any later dated version (SDK 2.x sends 2026-10-21)."""
    for value in _header_values(headers, "anthropic-version"):
        version = value.strip()
        try:
            valid = bool(_VERSION_DATE.match(version)) and date.fromisoformat(version) >= date(
                2023, 1, 1
            )
        except ValueError:
            valid = False
        if not valid:
            raise _invalid(f'anthropic-version: "{version}" is not a valid version')


def betas_from(headers: Headers | None, body_betas: Any = None) -> list[str]:
    """The betas of a request: the body's anthropic_beta then every anthropic-beta header value."""
    if body_betas is None:
        body_betas = []
    if not isinstance(body_betas, list) or not all(isinstance(b, str) for b in body_betas):
        raise _invalid("anthropic_beta: Input should be a list of strings")
    betas: list[str] = []
    for value in [*body_betas, *_header_values(headers, "anthropic-beta")]:
        for beta in value.split(","):
            beta = beta.strip()
            if beta and beta not in betas:
                betas.append(beta)
    return betas


def _require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    return body


def _require_model(body: dict) -> str:
    if "model" not in body:
        raise _invalid("model: Field required")
    model = body["model"]
    if not isinstance(model, str) or not model.strip():
        raise _invalid("model: Input should be a non-empty string")
    return model


def _require_messages(body: dict) -> None:
    if "messages" not in body:
        raise _invalid("messages: Field required")
    if not isinstance(body["messages"], list):
        raise _invalid("messages: Input should be a valid list")
    if not body["messages"]:
        raise _invalid("messages: at least one message is required")


def _require_max_tokens(body: dict) -> None:
    if "max_tokens" not in body:
        raise _invalid("max_tokens: Field required")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _invalid("max_tokens: Input should be an integer greater than or equal to 1")


def validate_messages_request(body: Any, headers: Headers | None = None) -> dict:
    """Checks a POST /v1/messages body and headers; returns the body. Raises AnthropicError."""
    body = _require_object(body)
    check_anthropic_version(headers)
    _require_model(body)
    _require_max_tokens(body)
    _require_messages(body)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream: Input should be a valid boolean")
    return body


def _not_found(name: str) -> AnthropicError:
    return AnthropicError(404, "not_found_error", f"model: {name}")


def invoke_body(body: dict, betas: list[str]) -> dict:
    """The Bedrock invoke body for a validated Messages body: no model/stream, Bedrock's version."""
    translated = {
        key: value
        for key, value in body.items()
        if key not in ("model", "stream", "anthropic_version", "anthropic_beta")
    }
    translated["anthropic_version"] = BEDROCK_ANTHROPIC_VERSION
    if betas:
        translated["anthropic_beta"] = betas
    return translated


def _messages_request(
    body: Any, headers: Headers | None, model_id: str | None
) -> tuple[str, dict, list[str]]:
    if model_id is None:
        raise _not_found(body["model"])
    betas = betas_from(headers, body.get("anthropic_beta"))
    return model_id, invoke_body(body, betas), betas


def to_bedrock_request(body: Any, headers: Headers | None) -> tuple[str, dict, list[str]]:
    """An Anthropic Messages request -> (Bedrock model id, invoke body, betas)."""
    body = validate_messages_request(body, headers)
    return _messages_request(body, headers, model_map.resolve_bedrock_model(body["model"]))


async def ato_bedrock_request(body: Any, headers: Headers | None) -> tuple[str, dict, list[str]]:
    """to_bedrock_request for async views (no database access when the model map is warm)."""
    body = validate_messages_request(body, headers)
    model_id = await model_map.aresolve_bedrock_model(body["model"])
    return _messages_request(body, headers, model_id)


# --- count_tokens -------------------------------------------------------------------------------


def _count_tokens_request(
    body: dict, headers: Headers | None, model_id: str | None
) -> tuple[str, dict]:
    if model_id is None:
        raise _not_found(body["model"])
    betas = betas_from(headers, body.get("anthropic_beta"))
    # Bedrock counts an invoke body, which needs a max_tokens: it does not change the count.
    invoke = {**invoke_body(body, betas), "max_tokens": 1}
    encoded = base64.b64encode(json.dumps(invoke, separators=(",", ":")).encode()).decode()
    return model_id, {"input": {"invokeModel": {"body": encoded}}}


def _validate_count_tokens(body: Any, headers: Headers | None) -> dict:
    body = _require_object(body)
    check_anthropic_version(headers)
    _require_model(body)
    _require_messages(body)
    return body


def to_bedrock_count_tokens(body: Any, headers: Headers | None = None) -> tuple[str, dict]:
    """A POST /v1/messages/count_tokens body -> (Bedrock model id, CountTokens request body)."""
    body = _validate_count_tokens(body, headers)
    return _count_tokens_request(body, headers, model_map.resolve_bedrock_model(body["model"]))


async def ato_bedrock_count_tokens(body: Any, headers: Headers | None = None) -> tuple[str, dict]:
    """to_bedrock_count_tokens for async views."""
    body = _validate_count_tokens(body, headers)
    model_id = await model_map.aresolve_bedrock_model(body["model"])
    return _count_tokens_request(body, headers, model_id)


def from_bedrock_count_tokens(bedrock_json: Any) -> dict:
    """Bedrock's {"inputTokens": N} -> Anthropic's {"input_tokens": N}."""
    tokens = bedrock_json.get("inputTokens") if isinstance(bedrock_json, dict) else None
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise AnthropicError(502, "api_error", "The upstream returned no token count.")
    return {"input_tokens": tokens}


# --- Responses ----------------------------------------------------------------------------------


def to_anthropic_response(bedrock_json: dict, requested_model: str) -> dict:
    """A Bedrock invoke response (already an Anthropic Message) with the model the client named."""
    message = {key: value for key, value in bedrock_json.items() if key != METRICS_KEY}
    message["model"] = requested_model
    return message


def anthropic_response_headers(upstream_headers: Headers | None) -> dict[str, str]:
    """Headers an Anthropic client expects from Bedrock's: request-id from x-amzn-requestid."""
    request_ids = _header_values(upstream_headers, "x-amzn-requestid")
    return {"request-id": request_ids[0]} if request_ids else {}


def sse_event(event_type: str, data: dict) -> bytes:
    """One server-sent event exactly as Anthropic's API writes it (compact JSON, UTF-8)."""
    return b"event: %s\ndata: %s\n\n" % (event_type.encode(), orjson.dumps(data))


PING = sse_event("ping", {"type": "ping"})


class SseTranslator:
    """Bedrock stream chunks (decoded event dicts) -> Anthropic server-sent events, in order."""

    def __init__(self, requested_model: str) -> None:
        self.requested_model = requested_model
        self.started = False  # a byte went out: later failures must be an SSE error event
        self.finished = False  # message_stop went out

    def feed(self, event: dict) -> bytes:
        """The SSE bytes for one Bedrock chunk event; message_start is followed by a ping."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            raise ValueError("a stream event without a type")
        if event_type == "message_start" and isinstance(event.get("message"), dict):
            event = {**event, "message": {**event["message"], "model": self.requested_model}}
            self.started = True
            return sse_event(event_type, event) + PING
        if event_type == "message_stop":
            event = {key: value for key, value in event.items() if key != METRICS_KEY}
            self.finished = True
        self.started = True
        return sse_event(event_type, event)

    def ping(self) -> bytes:
        """A keep-alive event, as Anthropic sends while a response is slow to come."""
        return PING

    def error(self, type: str, message: str) -> bytes:
        """An error after the first byte: the status is already sent, so it is an SSE event."""
        self.started = True
        return sse_event("error", error_body(type, message))

    def exception(self, exception_type: str, message: str) -> bytes:
        """A Bedrock mid-stream exception frame (e.g. throttlingException) as an SSE error."""
        return self.error(stream_error_type(exception_type), message)


# --- Errors -------------------------------------------------------------------------------------

_BEDROCK_ERRORS: dict[str, tuple[int, str]] = {
    "ValidationException": (400, "invalid_request_error"),
    "AccessDeniedException": (403, "permission_error"),
    "ResourceNotFoundException": (404, "not_found_error"),
    "ThrottlingException": (429, "rate_limit_error"),
    "ModelNotReadyException": (429, "rate_limit_error"),
    # A quota of the gateway's AWS account: to the client it is a rate limit, as on Anthropic.
    "ServiceQuotaExceededException": (429, "rate_limit_error"),
    "ModelTimeoutException": (504, "api_error"),
    "ModelErrorException": (502, "api_error"),
    "InternalServerException": (502, "api_error"),
    "ServiceUnavailableException": (503, "overloaded_error"),
    # The gateway's own upstream credentials failed: not the client's fault, not its key.
    "UnrecognizedClientException": (502, "api_error"),
    "InvalidSignatureException": (502, "api_error"),
    "IncompleteSignatureException": (502, "api_error"),
    "ExpiredTokenException": (502, "api_error"),
    "MissingAuthenticationTokenException": (502, "api_error"),
}

_BY_STATUS: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    401: (502, "api_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    408: (504, "api_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    503: (503, "overloaded_error"),
    504: (504, "api_error"),
}

_STREAM_ERRORS: dict[str, str] = {
    "throttlingException": "rate_limit_error",
    "modelStreamErrorException": "api_error",
    "internalServerException": "api_error",
    "validationException": "invalid_request_error",
    "serviceUnavailableException": "overloaded_error",
    "modelTimeoutException": "api_error",
}


def _error_name(error_type: str | None) -> str:
    # x-amzn-ErrorType may carry a namespace or a URI: "aws#ValidationException:http://…".
    return (error_type or "").split(":", 1)[0].rsplit("#", 1)[-1].strip()


def bedrock_error_to_anthropic(
    status: int, error_type: str | None, message: str
) -> tuple[int, dict]:
    """A Bedrock error response (status, x-amzn-ErrorType, message) -> Anthropic status + body."""
    mapped = _BEDROCK_ERRORS.get(_error_name(error_type)) or _BY_STATUS.get(status)
    if mapped is None:
        mapped = (status, "invalid_request_error") if 400 <= status < 500 else (502, "api_error")
    new_status, new_type = mapped
    return new_status, error_body(new_type, message or f"Upstream error ({status}).")


def stream_error_type(exception_type: str | None) -> str:
    """The Anthropic error type for a Bedrock mid-stream exception (:exception-type header)."""
    name = _error_name(exception_type)
    return _STREAM_ERRORS.get(name[:1].lower() + name[1:], "api_error")


# --- GET /v1/models -----------------------------------------------------------------------------


def _model_info(entry: model_map.ModelEntry) -> dict:
    created = entry.released_at.strftime("%Y-%m-%dT00:00:00Z") if entry.released_at else _EPOCH
    return {
        "type": "model",
        "id": entry.anthropic_name,
        "display_name": entry.display_name or entry.anthropic_name,
        "created_at": created,
        "lifecycle": "active",  # only active aliases are listed
    }


def _listed(entries: list[model_map.ModelEntry]) -> list[dict]:
    # One entry per Bedrock model, like Anthropic's list: the canonical (dated, longest) name
    # stands for its short aliases (claude-haiku-4-5-20251001, not claude-haiku-4-5).
    chosen: dict[str, model_map.ModelEntry] = {}
    for entry in entries:
        current = chosen.get(entry.bedrock_model_id)
        if current is None or len(entry.anthropic_name) > len(current.anthropic_name):
            chosen[entry.bedrock_model_id] = entry
    kept = set(map(id, chosen.values()))
    return [_model_info(entry) for entry in entries if id(entry) in kept]


def _limit(limit: int | str | None) -> int:
    if limit is None or limit == "":
        return MODELS_DEFAULT_LIMIT
    try:
        value = int(limit)
    except (TypeError, ValueError):
        raise _invalid("limit: Input should be a valid integer") from None
    if not 1 <= value <= MODELS_MAX_LIMIT:
        raise _invalid(f"limit: Input should be between 1 and {MODELS_MAX_LIMIT}")
    return value


def _page(
    models: list[dict], limit: int | str | None, after_id: str | None, before_id: str | None
) -> dict:
    size = _limit(limit)
    if after_id and before_id:
        raise _invalid("Only one of after_id and before_id may be given.")
    ids = [model["id"] for model in models]
    cursor = after_id or before_id
    if cursor and cursor not in ids:
        raise _invalid(f"{'after_id' if after_id else 'before_id'}: unknown model {cursor!r}")
    if after_id:
        rest = models[ids.index(after_id) + 1 :]
        page, has_more = rest[:size], len(rest) > size
    elif before_id:
        rest = models[: ids.index(before_id)]
        page, has_more = rest[-size:], len(rest) > size
    else:
        page, has_more = models[:size], len(models) > size
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def models_list(
    limit: int | str | None = None, after_id: str | None = None, before_id: str | None = None
) -> dict:
    """GET /v1/models: the active models, newest first, paged like Anthropic's API."""
    return _page(_listed(model_map.active_models()), limit, after_id, before_id)


async def amodels_list(
    limit: int | str | None = None, after_id: str | None = None, before_id: str | None = None
) -> dict:
    """models_list for async views."""
    return _page(_listed(await model_map.aactive_models()), limit, after_id, before_id)


def model_get(name: str) -> dict:
    """GET /v1/models/{name}: one active model (any of its names); 404 not_found_error if none."""
    for entry in model_map.active_models():
        if entry.anthropic_name == name:
            return _model_info(entry)
    raise _not_found(name)
