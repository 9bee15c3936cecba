"""A graceful shutdown: streams in flight finish within the grace period, then the rest are cut
and still recorded, each exactly once."""

import signal
import threading
import time

import httpx
import pytest

from tests.fixtures.servers import start_gateway
from tests.gateway.conftest import wait_for
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
                events.extend(line for line in response.iter_lines() if line.startswith("event:"))
        except httpx.HTTPError as exc:
            out["error"] = exc
        out["events"] = events

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
        time.sleep(0.6)
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
