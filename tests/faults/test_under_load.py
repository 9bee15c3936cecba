"""The production shape under load and faults: gunicorn with two workers, the private Redis,
the test database. Whatever happens, no 500; every call that got a 200 is recorded exactly
once; the cap counters equal the records' sums."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings

from accounts.services import api_key_create, user_get_or_create
from caps.status import cap_status
from caps.store import cap_store
from costs.money import Usage
from tests.fixtures import servers
from tests.fixtures.database import database_write_locked
from tests.fixtures.redis_process import gateway_env
from tests.fixtures.waiting import wait_for
from usage import spool
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 50
MESSAGES = [{"role": "user", "content": "Tell me a story"}]
LONG = {"x-emulator-reply-tokens": "200", "x-emulator-tokens-per-second": "20"}  # ~10 s


def gunicorn_env(redis_process, tmp_path, **extra: str) -> dict[str, str]:
    return {
        **gateway_env(redis_process, "open"),
        "GATEWAY_SERVER__DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_SERVER__SECRET_KEY": settings.SECRET_KEY,  # the keys were hashed with it
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **extra,
    }


def stream(url: str, key: str, started: threading.Semaphore, **knobs: str) -> dict:
    """One /anthropic stream read to its end (or its cut): status, events, how it ended."""
    outcome = {"status": None, "events": [], "ended": "complete"}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", **knobs}
    body = {"model": "claude-haiku-4-5", "max_tokens": 200, "stream": True, "messages": MESSAGES}
    try:
        with httpx.stream(
            "POST", f"{url}/anthropic/v1/messages", headers=headers, json=body, timeout=30
        ) as response:
            outcome["status"] = response.status_code
            outcome["retry_after"] = response.headers.get("retry-after")
            started.release()
            for line in response.iter_lines():
                if line.startswith("event: "):
                    outcome["events"].append(line.removeprefix("event: "))
    except httpx.HTTPError as exc:
        outcome["ended"] = type(exc).__name__
    if "message_stop" not in outcome["events"]:
        outcome["ended"] = outcome["ended"] if outcome["ended"] != "complete" else "cut"
    return outcome


def counters_match_records(user, redis_process) -> None:
    records = list(UsageRecord.objects.filter(user=user))
    tokens = sum(
        Usage(
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cache_write_5m_tokens=r.cache_write_5m_tokens,
            cache_write_1h_tokens=r.cache_write_1h_tokens,
        ).cap_tokens
        for r in records
    )
    (daily,) = [
        cap
        for cap in cap_status(user_id=user.pk, store=cap_store(url=redis_process.url))
        if cap["cap_type"] == "daily"
    ]
    assert daily["current_usage"]["requests"] == len(records)
    assert daily["current_usage"]["tokens"] == tokens
    assert daily["in_flight"]["requests"] == 0


def test_sigterm_with_50_streams_in_flight_ends_every_client_and_records_each_once(
    fresh_redis, reference_data, emulator, tmp_path, settings
):
    # Five developers with ten streams each (one user may hold at most 32 calls in flight).
    users = [user_get_or_create(email=f"sigterm-load-{i}@example.com") for i in range(5)]
    keys = [api_key_create(user=user, name="load").raw for user in users]
    env = gunicorn_env(fresh_redis, tmp_path, GATEWAY_SERVER__SHUTDOWN_GRACE_SECONDS="2")
    started = threading.Semaphore(0)
    with (
        servers.start_gunicorn(upstream_url=emulator.url, env=env, graceful_timeout=10) as gw,
        ThreadPoolExecutor(max_workers=STREAMS) as pool,
    ):
        calls = [
            pool.submit(stream, gw.url, keys[i % len(keys)], started, **LONG)
            for i in range(STREAMS)
        ]
        for _ in range(STREAMS):
            assert started.acquire(timeout=30)
        gw.process.send_signal(signal.SIGTERM)
        outcomes = [call.result(timeout=30) for call in calls]
        assert gw.process.wait(timeout=30) == 0
    # What the database had not taken by the end of the drain is in the spool: the next start
    # replays it (as here).
    settings.VAR_DIR = tmp_path / "data"
    spool.spool_replay()
    assert [o["status"] for o in outcomes] == [200] * STREAMS  # never a 500
    assert all(o["ended"] != "complete" for o in outcomes), "the streams outlive the grace"
    records = list(UsageRecord.objects.filter(user__in=users))
    assert len(records) == STREAMS
    assert len({r.call_id for r in records}) == STREAMS
    assert all(r.output_tokens > 0 for r in records)
    for user in users:
        counters_match_records(user, fresh_redis)


def test_a_database_locked_under_load_loses_no_record(
    fresh_redis, reference_data, emulator, tmp_path
):
    user = user_get_or_create(email="locked-load@example.com")
    key = api_key_create(user=user, name="load").raw
    env = gunicorn_env(fresh_redis, tmp_path, GATEWAY_DATABASE__TIMEOUT_SECONDS="1")
    body = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": MESSAGES}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}

    def call(_: int) -> int:
        return httpx.post(
            f"{gw.url}/anthropic/v1/messages", headers=headers, json=body, timeout=30
        ).status_code

    with servers.start_gunicorn(upstream_url=emulator.url, env=env) as gw:
        assert call(0) == 200  # the key's first use writes last_used_at: before the lock
        with database_write_locked(), ThreadPoolExecutor(max_workers=10) as pool:
            statuses = list(pool.map(call, range(30)))
            journal = tmp_path / "data" / "spool" / "usage-records.jsonl"
            # Answers do not wait for recording: the records reach the spool within the
            # database timeout (1 s) of the lock.
            # (The first call's own record may be among them, if it was still being written.)
            assert wait_for(
                lambda: journal.exists() and journal.read_text().count("\n") >= 30, timeout=10
            )
        assert statuses == [200] * 30
        served = 31
        # The lock is gone: both workers replay; each record lands once.
        assert wait_for(lambda: UsageRecord.objects.filter(user=user).count() >= served, 15)
        assert wait_for(lambda: journal.read_text() == "", timeout=15)
    records = list(UsageRecord.objects.filter(user=user))
    assert len(records) == served
    assert len({r.call_id for r in records}) == served
    counters_match_records(user, fresh_redis)


def test_upstream_errors_and_cut_streams_under_load_are_never_a_500(
    fresh_redis, reference_data, emulator, tmp_path
):
    user = user_get_or_create(email="flaky-load@example.com")
    key = api_key_create(user=user, name="load").raw
    env = gunicorn_env(fresh_redis, tmp_path)
    started = threading.Semaphore(0)
    knobs = [
        {"x-emulator-error": "ThrottlingException", "x-emulator-error-rate": "0.5"},
        {"x-emulator-error": "InternalServerException", "x-emulator-error-rate": "0.5"},
        {"x-emulator-cut-after": "6"},
        {
            "x-emulator-stream-error": "modelStreamErrorException",
            "x-emulator-stream-error-after": "4",
        },
        {},
    ]
    with (
        servers.start_gunicorn(upstream_url=emulator.url, env=env) as gw,
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        outcomes = list(
            pool.map(lambda i: stream(gw.url, key, started, **knobs[i % len(knobs)]), range(40))
        )
        assert wait_for(
            lambda: (
                UsageRecord.objects.filter(user=user).count()
                >= sum(o["status"] == 200 for o in outcomes)
            ),
            timeout=15,
        )
    statuses = [o["status"] for o in outcomes]
    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 429, 502, 503}, statuses
    # Every call that reached Bedrock is recorded once: the 200s, and the refused ones too.
    records = list(UsageRecord.objects.filter(user=user))
    assert len({r.call_id for r in records}) == len(records)
    assert len(records) >= statuses.count(200)
    assert json.dumps(sorted({o["ended"] for o in outcomes}))  # streams ended, each its way
    counters_match_records(user, fresh_redis)


def test_a_burst_of_streams_on_freshly_started_workers_never_answers_500_or_hangs(
    fresh_redis, reference_data, emulator, tmp_path
):
    """200 paced streams from 20 developers arriving within two seconds at two workers that
    have just started (cold pools): each is served, or refused quickly with a Retry-After."""
    users = [user_get_or_create(email=f"burst-{i}@example.com") for i in range(20)]
    keys = [api_key_create(user=user, name="burst").raw for user in users]
    env = gunicorn_env(fresh_redis, tmp_path, GATEWAY_DATABASE__TIMEOUT_SECONDS="2")
    knobs = {"x-emulator-reply-tokens": "20", "x-emulator-tokens-per-second": "20"}  # ~1 s

    def one(i: int) -> tuple[int | None, str | None, float]:
        time.sleep(i * 0.01)  # pacing: arrivals spread over two seconds
        started = time.monotonic()
        outcome = stream(gw.url, keys[i % len(keys)], threading.Semaphore(0), **knobs)
        retry_after = outcome.get("retry_after")
        return outcome["status"], retry_after, time.monotonic() - started

    with (
        servers.start_gunicorn(upstream_url=emulator.url, env=env) as gw,
        ThreadPoolExecutor(max_workers=200) as pool,
    ):
        results = list(pool.map(one, range(200)))
    statuses = [status for status, _, _ in results]
    assert 500 not in statuses
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) >= 150, statuses  # a cold start still serves the burst
    assert all(retry for status, retry, _ in results if status in (429, 503))
    assert max(seconds for _, _, seconds in results) < 20  # nobody hangs
