"""The only place that talks to Bedrock: signing, the connection pool, event-stream reading.

Requests are signed here with SigV4 (configured keys, else botocore's default chain, else the
emulator's documented example pair) or sent with the gateway's own Bedrock API key. The
caller's credentials never travel upstream. One connection pool per event loop
(`gateway/httpclient.py`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import quote

import botocore.session
import httpx
import orjson
from botocore.credentials import Credentials
from django.conf import settings

from config import clock
from config.conf import secret_value
from costs.money import Usage
from emulator.eventstream import EventStreamDecoder, EventStreamError
from gateway import httpclient, sigv4

logger = logging.getLogger(__name__)

# The emulator's default test credentials: AWS's documented example pair.
EMULATOR_ACCESS_KEY = "AKIDEXAMPLE"
EMULATOR_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # noqa: S105 - a public example

# Response headers relayed to the client as Bedrock sent them.
RELAYED_HEADERS = (
    "x-amzn-requestid",
    "x-amzn-bedrock-input-token-count",
    "x-amzn-bedrock-output-token-count",
    "x-amzn-bedrock-invocation-latency",
    "x-amzn-bedrock-cache-read-input-token-count",
    "x-amzn-bedrock-cache-write-input-token-count",
    "x-amzn-errortype",
)


class UpstreamUnavailable(Exception):
    """Bedrock could not be reached (connect error): the call never reached it."""


class UpstreamTimeout(Exception):
    """Bedrock did not answer in time; the call may have reached it."""


@functools.cache
def _credentials() -> Credentials | None:
    aws = settings.GATEWAY.aws
    if aws.bedrock_api_key:
        return None
    if aws.access_key_id:
        return Credentials(
            aws.access_key_id, secret_value(aws.secret_access_key), secret_value(aws.session_token)
        )
    if aws.upstream == "emulator":
        return Credentials(EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY)
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise UpstreamUnavailable("no AWS credentials found for the Bedrock upstream")
    return credentials


def _signed_headers(method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    aws = settings.GATEWAY.aws
    if aws.bedrock_api_key:
        return {**headers, "Authorization": f"Bearer {secret_value(aws.bedrock_api_key)}"}
    credentials = _credentials()
    if credentials is None:  # a bearer key was configured after the credentials were cached
        raise UpstreamUnavailable("no AWS credentials found for the Bedrock upstream")
    frozen = credentials.get_frozen_credentials()
    return sigv4.sign(
        method,
        url,
        body,
        headers,
        access_key=frozen.access_key,
        secret_key=frozen.secret_key,
        token=frozen.token,
        region=aws.region,
        service="bedrock",
        now=clock.now(),
    )


class UpstreamResponse:
    """A response from Bedrock being read: status, headers (case-insensitive), body."""

    def __init__(self, response: httpclient.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = response.headers

    async def aread(self) -> bytes:
        return await self._response.read()

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._response.iter_raw()

    async def aclose(self) -> None:
        # Closing an unfinished response drops its connection: the upstream call is cancelled.
        self._response.close()


_pools: dict[int, httpclient.Pool] = {}


def _pool() -> httpclient.Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(id(loop))
    if pool is None or pool.closed or pool.loop is not loop:
        aws = settings.GATEWAY.aws
        pool = httpclient.Pool(
            limit=aws.max_pool_connections,
            connect_timeout=aws.connect_timeout,
            read_timeout=aws.read_timeout,
        )
        _pools[id(loop)] = pool
    return pool


async def close_pool() -> None:
    """Drop this event loop's upstream connections."""
    pool = _pools.pop(id(asyncio.get_running_loop()), None)
    if pool is not None:
        await pool.close()


def model_url(model_id: str, verb: str) -> str:
    """Upstream URL for a model operation; the id is fully percent-encoded, as botocore does."""
    endpoint = settings.GATEWAY.aws.resolved_endpoint
    return f"{endpoint}/model/{quote(model_id, safe='')}/{verb}"


# The model a credentials probe counts tokens for: any id proves the signature, since Bedrock
# checks it before it looks at the model (a ValidationException still means "signed right").
PROBE_MODEL = "anthropic.claude-haiku-4-5-20251001-v1:0"
_REFUSED = (401, 403)


def probe_credentials(timeout: float) -> None:
    """A signed, free call (count-tokens) that proves the upstream accepts our credentials;
    raises UpstreamUnavailable naming what failed (never the host)."""
    invoke = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
    }
    encoded = base64.b64encode(json.dumps(invoke).encode()).decode()
    body = json.dumps({"input": {"invokeModel": {"body": encoded}}}).encode()
    url = model_url(PROBE_MODEL, "count-tokens")
    headers = _signed_headers("POST", url, body, {"Content-Type": "application/json"})
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        logger.warning("upstream probe failed: %s", exc)
        raise UpstreamUnavailable("connection failed") from None
    if response.status_code in _REFUSED:
        error = response.headers.get("x-amzn-errortype", "").split(":")[0] or "refused"
        raise UpstreamUnavailable(f"credentials refused ({error})")
    if response.status_code >= 500:
        raise UpstreamUnavailable(f"upstream error {response.status_code}")


def _failure(exc: httpclient.HttpClientError) -> Exception:
    """Our exception for a client failure: unreachable (never reached Bedrock) or timeout.
    Logged here; the exception's text may reach a client's error body, so it never names
    the upstream's host."""
    if isinstance(exc, httpclient.ConnectFailed):
        logger.warning("upstream unreachable: %s", exc)
        return UpstreamUnavailable("connection failed")
    if isinstance(exc, httpclient.ReadTimeout):
        logger.warning("upstream timed out: %s", exc)
        return UpstreamTimeout("timed out")
    logger.warning("upstream failed: %s", exc)
    return UpstreamUnavailable("connection lost")


async def open_call(
    model_id: str, verb: str, body: bytes, *, stream: bool, extra_headers: dict[str, str]
) -> UpstreamResponse:
    """Send one signed request; the caller reads (and must close) the response."""
    url = model_url(model_id, verb)
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/vnd.amazon.eventstream" if stream else "application/json",
        "Accept-Encoding": "identity",
        **extra_headers,
    }
    headers = _signed_headers("POST", url, body, headers)
    try:
        # The URL is sent as it was signed (already percent-encoded).
        response = await _pool().post(url, body, headers)
    except httpclient.HttpClientError as exc:
        raise _failure(exc) from exc
    return UpstreamResponse(response)


async def read_body(response: UpstreamResponse) -> bytes:
    try:
        return await response.aread()
    except httpclient.HttpClientError as exc:
        raise _failure(exc) from exc
    finally:
        await response.aclose()


async def iter_raw(response: UpstreamResponse) -> AsyncIterator[bytes]:
    """Upstream bytes as they arrive, undecoded (event-stream frames are relayed as is)."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpclient.HttpClientError as exc:
        raise _failure(exc) from exc
    finally:
        await response.aclose()


def usage_from_message(usage: dict) -> Usage:
    """Usage from an Anthropic `usage` object (invoke body, message_start)."""
    creation = usage.get("cache_creation") or {}
    write_1h = int(creation.get("ephemeral_1h_input_tokens") or 0)
    write_total = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_write_5m_tokens=max(write_total - write_1h, 0),
        cache_write_1h_tokens=write_1h,
        cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
    )


def usage_from_converse(usage: dict) -> Usage:
    return Usage(
        input_tokens=int(usage.get("inputTokens") or 0),
        output_tokens=int(usage.get("outputTokens") or 0),
        cache_write_5m_tokens=int(usage.get("cacheWriteInputTokens") or 0),
        cache_read_tokens=int(usage.get("cacheReadInputTokens") or 0),
    )


def _delta_chars(delta: object) -> int:
    """Characters of generated text in one delta (Anthropic's or Converse's shape)."""
    if not isinstance(delta, dict):
        return 0
    total = 0
    for key in ("text", "partial_json", "thinking"):
        value = delta.get(key)
        if isinstance(value, str):
            total += len(value)
    for key in ("toolUse", "reasoningContent"):
        inner = delta.get(key)
        if isinstance(inner, dict):
            value = inner.get("input") or inner.get("text")
            total += len(value) if isinstance(value, str) else 0
    return total


@dataclass
class StreamMeter:
    """Reads token usage from a copy of the relayed event stream, frame by frame.

    Input and cache tokens come from `message_start`; output from `message_delta` (cumulative)
    or the final invocation metrics. If the stream is cut before those, output is what the
    deltas relayed: the larger of their count and their text's size in tokens (characters / 4,
    rounded up), since one Bedrock delta carries several tokens.
    """

    converse: bool = False
    usage: Usage = field(default_factory=Usage)
    seen_usage: bool = False
    deltas: int = 0
    delta_chars: int = 0
    final_output: int | None = None
    exception: tuple[str, str] | None = None
    _decoder: EventStreamDecoder = field(default_factory=EventStreamDecoder)
    _broken: bool = False

    def feed(self, chunk: bytes) -> list[dict]:
        """Parse what `chunk` completes; returns the decoded event payloads (chunk events)."""
        if self._broken:
            return []
        events: list[dict] = []
        try:
            for message in self._decoder.feed(chunk):
                event = self._on_message(message.headers, message.payload)
                if event is not None:
                    events.append(event)
        except EventStreamError:
            self._broken = True
        return events

    def _on_message(self, headers: dict, payload: bytes) -> dict | None:
        if headers.get(":message-type") == "exception":
            try:
                message = orjson.loads(payload).get("message", "")
            except ValueError:
                message = payload.decode(errors="replace")
            self.exception = (str(headers.get(":exception-type", "")), message)
            return None
        if self.converse:
            event = orjson.loads(payload)
            event_type = headers.get(":event-type")
            if event_type == "contentBlockDelta":
                self.deltas += 1
                self.delta_chars += _delta_chars(event.get("delta"))
            elif event_type == "metadata" and "usage" in event:
                self.final_output = None
                self.seen_usage = True
                self.usage = usage_from_converse(event["usage"])
            return {"type": event_type, **event}
        event = orjson.loads(base64.b64decode(orjson.loads(payload)["bytes"]))
        kind = event.get("type")
        if kind == "message_start":
            usage = event.get("message", {}).get("usage")
            self.seen_usage = isinstance(usage, dict) and "input_tokens" in usage
            self.usage = usage_from_message(usage if self.seen_usage else {})
        elif kind == "content_block_delta":
            self.deltas += 1
            self.delta_chars += _delta_chars(event.get("delta"))
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict) and "output_tokens" in usage:
                self.final_output = int(usage["output_tokens"] or 0)
        elif kind == "message_stop":
            metrics = event.get("amazon-bedrock-invocationMetrics") or {}
            if "outputTokenCount" in metrics:
                self.final_output = int(metrics["outputTokenCount"])
        return event

    def result(self) -> Usage | None:
        """The call's usage; None when the stream carried none to read."""
        if not self.seen_usage and self.final_output is None:
            return None
        if self.converse and self.final_output is None and self.usage.output_tokens:
            return self.usage
        output = self.final_output
        if output is None:
            output = max(self.usage.output_tokens, self.deltas, -(-self.delta_chars // 4))
        return Usage(
            input_tokens=self.usage.input_tokens,
            output_tokens=output,
            cache_write_5m_tokens=self.usage.cache_write_5m_tokens,
            cache_write_1h_tokens=self.usage.cache_write_1h_tokens,
            cache_read_tokens=self.usage.cache_read_tokens,
        )
