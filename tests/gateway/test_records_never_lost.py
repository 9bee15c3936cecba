"""A call that reached Bedrock is recorded exactly once: client strings are checked before
anything is reserved, one bad record never takes a batch with it, and records the database
cannot take (locked, unreachable) wait in a durable spool until it answers."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from urllib.parse import quote

import anthropic
import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from accounts.services import api_key_create, user_get_or_create
from caps.status import cap_status
from config import clock
from costs.money import Usage
from tests.fixtures import servers
from tests.fixtures.database import database_write_locked
from tests.fixtures.gateways import GATEWAY_ENV, gateway_idle
from tests.fixtures.waiting import wait_for
from usage import spool
from usage.models import UsageRecord
from usage.services import CallRecord, usage_record_many

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
MESSAGES = [{"role": "user", "content": "Hello"}]


def post_messages(stack, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway.url}/anthropic/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", **headers},
        json={"model": "claude-haiku-4-5", "max_tokens": 16, "messages": MESSAGES},
        timeout=30,
    )


def records(user) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(user=user))


@pytest.fixture
def never_lost_coder(reference_data):
    """(user, raw API key) of never-lost@example.com."""
    user = user_get_or_create(email="never-lost@example.com")
    return user, api_key_create(user=user, name="tests").raw


# --- Client strings are checked before anything is reserved ---------------------------------


def test_a_session_id_of_100_characters_is_recorded(stack, never_lost_coder):
    user, key = never_lost_coder
    response = post_messages(stack, key, **{"X-Claude-Code-Session-Id": "s" * 100})
    assert response.status_code == 200, response.text
    assert wait_for(lambda: records(user))
    assert records(user)[0].session_id == "s" * 100


@pytest.mark.parametrize("session_id", ["s" * 101, "tab\tinside"], ids=["101-chars", "control"])
def test_a_bad_session_id_is_a_400_and_reserves_nothing(stack, never_lost_coder, session_id):
    user, key = never_lost_coder
    response = post_messages(stack, key, **{"X-Claude-Code-Session-Id": session_id})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "X-Claude-Code-Session-Id" in error["error"]["message"]
    assert gateway_idle(stack.gateway)
    assert records(user) == []
    assert all(cap["in_flight"]["requests"] == 0 for cap in cap_status(user_id=user.pk))


@pytest.mark.parametrize(
    "model_id",
    ["anthropic.claude-" + "x" * 300, "anthropic.claude%00-sonnet-4-6", "anthropic.clau de"],
    ids=["over-200-chars", "nul", "space"],
)
def test_a_bad_bedrock_model_id_is_a_validation_exception(stack, never_lost_coder, model_id):
    user, key = never_lost_coder
    response = httpx.post(
        f"{stack.gateway.url}/bedrock/model/{model_id}/invoke",
        headers={"Authorization": f"Bearer {key}"},
        json={"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8, "messages": MESSAGES},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.headers["x-amzn-ErrorType"] == "ValidationException"
    assert "model identifier" in response.json()["message"]
    assert gateway_idle(stack.gateway)
    assert records(user) == []


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-sonnet-4-6",
        "global.anthropic.claude-sonnet-4-6",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6",
    ],
)
def test_documented_model_id_shapes_pass(stack, never_lost_coder, model_id):
    user, key = never_lost_coder
    response = httpx.post(
        f"{stack.gateway.url}/bedrock/model/{quote(model_id, safe='')}/invoke",
        headers={"Authorization": f"Bearer {key}"},
        json={"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4, "messages": MESSAGES},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert gateway_idle(stack.gateway)
    assert [r.model_id for r in records(user)] == [model_id]


# --- One bad record never takes a batch with it ----------------------------------------------


def call_record(user, **overrides) -> CallRecord:
    values = {
        "call_id": uuid.uuid4(),
        "user_id": user.pk,
        "api_key_id": None,
        "auth_kind": "api_key",
        "model_id": MODEL,
        "route": "anthropic.messages",
        "streaming": False,
        "usage": Usage(input_tokens=10, output_tokens=5),
        "upstream_status": 200,
        "error_type": None,
        "latency_ms": 12,
        "ttfb_ms": None,
        "request_id": "req",
        "started_at": clock.now(),
        "client_family": "curl",
        "session_id": None,
    }
    return CallRecord(**{**values, **overrides})


@pytest.fixture
def spool_in(tmp_path, settings):
    settings.VAR_DIR = tmp_path
    return tmp_path / "spool"


def test_a_record_the_database_refuses_is_kept_aside_and_the_others_are_written(
    never_lost_coder, spool_in
):
    user, _ = never_lost_coder
    good = [call_record(user), call_record(user)]
    bad = call_record(user, usage=Usage(input_tokens=-1))  # breaks a check constraint
    assert usage_record_many(calls=[good[0], bad, good[1]]) == 2
    assert {r.call_id for r in records(user)} == {good[0].call_id, good[1].call_id}
    rejected = (spool_in / spool.REJECTED).read_text().splitlines()
    assert [json.loads(line)["call_id"] for line in rejected] == [str(bad.call_id)]


def test_a_spooled_journal_replays_once_whatever_was_written_before(never_lost_coder, spool_in):
    user, _ = never_lost_coder
    calls = [call_record(user) for _ in range(3)]
    spool.spool_append(calls)
    usage_record_many(calls=calls[:1])  # a replay cut short had written the first one
    assert spool.spool_depth() == 3
    assert spool.spool_replay() == 2
    assert spool.spool_replay() == 0
    assert spool.spool_depth() == 0
    assert sorted(r.call_id for r in records(user)) == sorted(c.call_id for c in calls)


def test_a_torn_last_line_is_skipped_and_the_rest_replayed(never_lost_coder, spool_in):
    user, _ = never_lost_coder
    call = call_record(user)
    spool.spool_append([call])
    with (spool_in / spool.JOURNAL).open("a") as journal:
        journal.write('{"call_id": "half')
    assert spool.spool_replay() == 1
    assert [r.call_id for r in records(user)] == [call.call_id]


# --- The database locked while a stream ends: spooled, then replayed -------------------------


@pytest.fixture
def short_timeout_gateway(tmp_path, emulator, django_db_setup):
    env = {
        **GATEWAY_ENV,
        "GATEWAY_DATABASE__TIMEOUT_SECONDS": "1",
        "GATEWAY_SERVER__DATA_DIR": str(tmp_path / "data"),
        # Keys were hashed with this process's secret; the gateway's data dir has none.
        "GATEWAY_SERVER__SECRET_KEY": settings.SECRET_KEY,
    }
    with servers.start_gateway(upstream_url=emulator.url, env=env) as server:
        yield server, tmp_path / "data" / "spool"


def test_a_stream_ending_while_the_database_is_locked_is_recorded_once_when_it_answers(
    short_timeout_gateway, never_lost_coder
):
    gateway, spool_folder = short_timeout_gateway
    user, key = never_lost_coder
    client = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=key, max_retries=0)
    started = threading.Event()
    texts: list[str] = []

    def stream() -> None:
        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=40,
            messages=MESSAGES,
            extra_headers={"x-emulator-tokens-per-second": "20"},
        ) as events:
            for text in events.text_stream:
                started.set()
                texts.append(text)
            texts.append(f"usage:{events.get_final_message().usage.output_tokens}")

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(10)
    with database_write_locked():
        worker.join(timeout=30)  # the stream ends (and its recording fails) inside the lock
        assert texts[-1] == "usage:24"
        journal = spool_folder / spool.JOURNAL
        assert wait_for(lambda: journal.exists() and journal.read_text().count("\n") == 1, 10)
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert "gateway_usage_spool_depth 1.0" in metrics
    # The lock is gone: the gateway replays on its own, once.
    assert wait_for(lambda: records(user), timeout=10)
    assert wait_for(lambda: journal.read_text() == "", timeout=10)
    (record,) = records(user)
    assert (record.output_tokens, record.route) == (24, "anthropic.messages_stream")


# --- The database cannot serve a request in time: a quick 503, never a 500 -------------------


@contextlib.contextmanager
def keys_table_locked():
    """Another client holds the API keys' table until the block ends (SQLite: the write lock
    of the whole database; a key's first use writes its last_used_at)."""
    if connection.vendor == "sqlite":
        with database_write_locked():
            yield
    else:
        url = servers.test_database_url().replace("postgres://", "postgresql://", 1)
        with psycopg.connect(url) as other, other.transaction():
            other.execute("LOCK TABLE accounts_apikey IN ACCESS EXCLUSIVE MODE")
            yield


@pytest.mark.parametrize("family", ["anthropic", "bedrock"])
def test_a_database_that_cannot_answer_in_time_is_a_503_with_retry_after(
    short_timeout_gateway, never_lost_coder, family
):
    gateway, _ = short_timeout_gateway
    _user, key = never_lost_coder
    if family == "anthropic":
        request = {
            "url": f"{gateway.url}/anthropic/v1/messages",
            "headers": {"x-api-key": key, "anthropic-version": "2023-06-01"},
            "json": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": MESSAGES},
        }
    else:
        request = {
            "url": f"{gateway.url}/bedrock/model/{MODEL}/invoke",
            "headers": {"Authorization": f"Bearer {key}"},
            "json": {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 8,
                "messages": MESSAGES,
            },
        }
    with keys_table_locked():
        response = httpx.post(**request, timeout=20)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    if family == "anthropic":
        assert response.json()["error"]["type"] == "overloaded_error"
    else:
        assert response.headers["x-amzn-ErrorType"] == "ServiceUnavailableException"
    # And once the database answers, the same request goes through.
    assert httpx.post(**request, timeout=20).status_code == 200
