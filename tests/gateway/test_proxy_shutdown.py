"""A graceful shutdown: streams in flight finish within the grace period, then the rest are cut
and still recorded, each exactly once."""

import asyncio
import json
import signal
import threading
import time

import httpx
import pytest

from config.asgi import proxy_application
from config.db import aclose_loop_connection
from gateway import services, streaming, upstream
from tests.fixtures.servers import start_gateway
from tests.fixtures.waiting import wait_for
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

GRACE_SECONDS = 2


def stream_in_background(url: str, key: str, tokens: int, out: dict) -> threading.Thread:
    def run() -> None:
        body = {
            "model": "claude-haiku-4-5",
            "max_tokens": 1000,
            "stream": True,
            "messages": [{"role": "user", "content": "a long story"}],
        }
        headers = {
            "x-api-key": key,
            "x-emulator-tokens-per-second": "10",
            "x-emulator-reply-tokens": str(tokens),
        }
        events = []
        try:
            with httpx.stream(
                "POST", f"{url}/anthropic/v1/messages", json=body, headers=headers, timeout=30
            ) as response:
                out["started"].set()
                events.extend(line for line in response.iter_lines() if line.startswith("event:"))
        except httpx.HTTPError as exc:
            out["error"] = exc
        out["events"] = events

    out["started"] = threading.Event()  # the gateway has answered: the stream is under way
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_shutdown_lets_short_streams_finish_and_cuts_and_records_long_ones(emulator, alice_key):
    short, long = {}, {}
    with start_gateway(upstream_url=emulator.url, grace_seconds=GRACE_SECONDS) as gateway:
        threads = [
            stream_in_background(gateway.url, alice_key, 10, short),  # ~1 s: fits the grace
            stream_in_background(gateway.url, alice_key, 300, long),  # ~30 s: cut
        ]
        assert short["started"].wait(10)
        assert long["started"].wait(10)
        stopped_at = time.monotonic()
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(timeout=30)
        stopped_in = time.monotonic() - stopped_at
        for thread in threads:
            thread.join(timeout=30)
    assert stopped_in < GRACE_SECONDS + 5
    assert short["events"][-1] == "event: message_stop"
    assert "event: message_stop" not in long["events"]
    records = wait_for(lambda: UsageRecord.objects.count() == 2 and UsageRecord.objects.all())
    assert records, "a call in flight at shutdown was not recorded"
    by_output = sorted(records, key=lambda r: r.output_tokens)
    finished, cut = by_output
    assert finished.error_type is None
    assert finished.output_tokens == 10
    assert cut.error_type == "server_shutdown"
    assert 1 <= cut.output_tokens < 300


def test_a_stream_cancelled_twice_at_shutdown_is_still_recorded(emulator, alice_key, settings):
    # At shutdown the pump is cancelled to cut the stream, and the response, closing once the
    # client has its end, cancels it again: wherever that second cancel lands, the call is
    # recorded (it once landed in the upstream's close and the record was lost).
    settings.GATEWAY = settings.GATEWAY.model_copy(
        update={"aws": settings.GATEWAY.aws.model_copy(update={"endpoint_url": emulator.url})}
    )
    body = json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 1000,
            "stream": True,
            "messages": [{"role": "user", "content": "a long story"}],
        }
    ).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/anthropic/v1/messages",
        "query_string": b"",
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"content-type", b"application/json"),
            (b"x-api-key", alice_key.encode()),
            (b"x-emulator-reply-tokens", b"300"),
            (b"x-emulator-tokens-per-second", b"50"),
        ],
    }
    steps_between = range(12)

    async def stream_cut_twice(steps: int) -> asyncio.Task:
        streaming_started = asyncio.Event()
        requests = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if requests:
                return requests.pop()
            await asyncio.Event().wait()  # the client stays
            return {}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                streaming_started.set()

        pumps_before = set(streaming._pumps)
        serving = asyncio.create_task(proxy_application(scope, receive, send))
        await asyncio.wait_for(streaming_started.wait(), 10)
        (pump,) = set(streaming._pumps) - pumps_before
        pump.cancel(streaming.SHUTDOWN)
        for _ in range(steps):
            await asyncio.sleep(0)  # one event-loop step each: how far the pump gets is the case
        pump.cancel()
        await asyncio.wait([pump], timeout=10)
        return serving

    async def scenario() -> None:
        served = [await stream_cut_twice(steps) for steps in steps_between]
        await services.drain(timeout=10)
        for serving in served:
            serving.cancel()
        await upstream.close_pool()  # as the server's lifespan does when it stops
        await aclose_loop_connection()

    asyncio.run(scenario())
    records = list(UsageRecord.objects.all())
    assert len(records) == len(steps_between)
    assert {r.error_type for r in records} == {"server_shutdown"}
    assert all(0 < r.output_tokens < 300 for r in records)
