"""The load client (httpx, async, one event loop): closed-loop calls and paced streams, each
against the emulator directly (Bedrock's API) or through the gateway (the Messages API)."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from emulator.eventstream import EventStreamDecoder, chunk_payload

MODEL = "claude-haiku-4-5"
# What the gateway calls for MODEL in us-east-1 (aws.model_prefix auto): the direct call's id.
BEDROCK_MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
_PATH = f"/model/{BEDROCK_MODEL.replace(':', '%3A')}"
PROMPT = [{"role": "user", "content": "Benchmark me, briefly."}]


@dataclass(frozen=True)
class Target:
    """One side of a comparison: where to send a call, and how."""

    name: str  # "direct" or "gateway"
    base: str
    keys: tuple[str, ...] = ()  # the gateway's API keys (one per bench user)

    @property
    def direct(self) -> bool:
        return self.name == "direct"

    def request(self, max_tokens: int, *, stream: bool, user: int = 0):
        """(url, body, headers) of one call."""
        if self.direct:
            body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens}
            verb = "invoke-with-response-stream" if stream else "invoke"
            url = f"{self.base}{_PATH}/{verb}"
            # The emulator takes any bearer token; SigV4 would cost the client, not the emulator.
            headers = {"content-type": "application/json", "authorization": "Bearer bench"}
        else:
            body = {"model": MODEL, "max_tokens": max_tokens}
            if stream:
                body["stream"] = True
            url = f"{self.base}/anthropic/v1/messages"
            headers = {
                "content-type": "application/json",
                "anthropic-version": "2023-06-01",
                "x-api-key": self.keys[user % len(self.keys)],
            }
        body["messages"] = PROMPT
        return url, json.dumps(body).encode(), headers


@dataclass
class CallResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls
    calls: int = 0  # every call answered (any status)
    errors: Counter = field(default_factory=Counter)
    elapsed: float = 0.0
    client_cpu: float = 0.0  # the load client's own CPU, share of one core

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed if self.elapsed else 0.0


async def calls(
    target: Target, concurrency: int, seconds: float, *, users: int = 1, max_tokens: int = 32
) -> CallResult:
    """`concurrency` clients each calling back-to-back for `seconds` (closed loop); the
    gateway's clients spread over `users` users (one user may have 32 calls in flight)."""
    result = CallResult()
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker(index: int) -> None:
            url, body, headers = target.request(max_tokens, stream=False, user=index % users)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                result.calls += 1
                if response.status_code == 200:
                    result.latencies.append(time.perf_counter() - started)
                else:
                    result.errors[response.status_code] += 1

        started, cpu = time.perf_counter(), _own_cpu()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        result.elapsed = time.perf_counter() - started
        result.client_cpu = (_own_cpu() - cpu) / result.elapsed
    return result


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class StreamResult:
    ttfbs: list[float] = field(default_factory=list)  # seconds to the first content delta
    completed: int = 0
    failures: Counter = field(default_factory=Counter)
    client_cpu: float = 0.0  # the load client's own CPU, share of one core

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def _direct_reader() -> Callable[[bytes], tuple[bool, bool]]:
    """Feed Bedrock event-stream bytes; returns (first content delta seen, message_stop seen)."""
    decoder = EventStreamDecoder()
    seen = {"delta": False, "stop": False}

    def feed(data: bytes) -> tuple[bool, bool]:
        for message in decoder.feed(data):
            event = chunk_payload(message) or {}
            kind = event.get("type")
            if kind == "content_block_delta":
                seen["delta"] = True
            elif kind == "message_stop":
                seen["stop"] = True
        return seen["delta"], seen["stop"]

    return feed


def _sse_reader() -> Callable[[bytes], tuple[bool, bool]]:
    """The same for the gateway's server-sent events."""
    tail = b""
    seen = {"delta": False, "stop": False}

    def feed(data: bytes) -> tuple[bool, bool]:
        nonlocal tail
        text = tail + data
        if not seen["delta"] and b"event: content_block_delta" in text:
            seen["delta"] = True
        if b"event: message_stop" in text:
            seen["stop"] = True
        tail = text[-32:]
        return seen["delta"], seen["stop"]

    return feed


async def streams(
    target: Target,
    count: int,
    ramp: float,
    tokens: int,
    *,
    users: int = 1,
    sample: Callable[[], None] | None = None,
) -> StreamResult:
    """`count` streams of `tokens` tokens, opened evenly over `ramp` seconds (the emulator
    paces them); time to the first content event, completions and failures. `sample` is called
    every 0.25 s while they run (e.g. the gateway's RSS)."""
    result = StreamResult()
    limits = httpx.Limits(max_connections=count + 16, max_keepalive_connections=count + 16)
    timeout = httpx.Timeout(120, connect=30)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def one(index: int) -> None:
            await asyncio.sleep(ramp * index / count)
            url, body, headers = target.request(tokens, stream=True, user=index % users)
            feed = _direct_reader() if target.direct else _sse_reader()
            started = time.perf_counter()
            delta = stop = False
            try:
                async with client.stream("POST", url, content=body, headers=headers) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        result.failures[f"HTTP {resp.status_code}"] += 1
                        return
                    async for chunk in resp.aiter_raw():
                        had_delta = delta
                        delta, stop = feed(chunk)
                        if delta and not had_delta:
                            result.ttfbs.append(time.perf_counter() - started)
            except (httpx.HTTPError, OSError) as exc:
                result.failures[type(exc).__name__] += 1
                return
            if stop:
                result.completed += 1
            else:
                result.failures["no message_stop"] += 1

        async def sampler() -> None:
            while True:
                sample()
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(sampler()) if sample else None
        started, cpu = time.perf_counter(), _own_cpu()
        try:
            await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            if watcher:
                watcher.cancel()
        result.client_cpu = (_own_cpu() - cpu) / (time.perf_counter() - started)
    return result
