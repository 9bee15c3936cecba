"""Fixtures of the usage tests: personas, a call factory, a clean counter store, a worker."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from celery import Celery
from django.conf import settings

from tests.fixtures.calls import call_for
from tests.fixtures.personas import unique_user
from tests.fixtures.servers import BASE_DIR, test_database_url
from usage.services import usage_record
from usage.store import RedisStore, get_store

# The usage engineer's own Redis database (never FLUSHALL; FLUSHDB only this one).
OWN_REDIS_URL = "redis://127.0.0.1:6379/4"


@pytest.fixture
def unique_owner(db):
    """The user whose calls a test looks at, with an e-mail no other test uses."""
    return unique_user()


@pytest.fixture
def unique_stranger(db):
    """Another user, with an e-mail no other test uses, whose calls the owner must not see."""
    return unique_user()


@pytest.fixture
def admin(db):
    return unique_user(admin=True)


@pytest.fixture
def record():
    """Record a call for a user: record(user, **CallRecord overrides) -> UsageRecord | None."""

    def _record(user, **overrides):
        return usage_record(call=call_for(user, **overrides))

    return _record


def _clean_live_keys() -> None:
    store = get_store()
    if isinstance(store, RedisStore):
        store.delete(store.scan(settings.GATEWAY.redis.usage_summary_prefix))


@pytest.fixture(autouse=True)
def clean_store():
    """Redis is not rolled back with the test database: start and end with no usage keys."""
    _clean_live_keys()
    yield
    _clean_live_keys()


@pytest.fixture
def own_redis():
    """A RedisStore on the usage engineer's own Redis database, flushed before and after."""
    store = RedisStore(OWN_REDIS_URL)
    store.client.flushdb()
    yield store
    store.client.flushdb()


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker):
    """A real Celery worker process on a Redis broker (db 4), using the test database.

    Yields a Celery app bound to that broker for sending tasks (the tests' own app is eager).
    """
    broker = OWN_REDIS_URL
    RedisStore(broker).client.flushdb()
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "DATABASE_URL": test_database_url(),
        "GATEWAY_CELERY__TASK_ALWAYS_EAGER": "false",
    }
    if settings.GATEWAY.server.secret_key:
        env["GATEWAY_SERVER__SECRET_KEY"] = settings.GATEWAY.server.secret_key
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed when the worker stops
        prefix="celery-worker-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--loglevel=info",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"usage-test-{os.getpid()}@%h",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=log,  # a file, not a pipe that a chatty worker could fill and block on
        stderr=subprocess.STDOUT,
    )
    # Celery lets CELERY_BROKER_URL in the environment win over any broker given in code
    # (CI's Redis pass sets it): point it at this worker's broker while the worker runs.
    saved_broker = os.environ.get("CELERY_BROKER_URL")
    os.environ["CELERY_BROKER_URL"] = broker
    sender = Celery("usage-tests", broker=broker)
    try:
        deadline = time.monotonic() + 60
        while not sender.control.ping(timeout=0.5):
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace")
                raise RuntimeError(f"celery worker exited with {process.returncode}:\n{output}")
            if time.monotonic() > deadline:
                raise RuntimeError("celery worker did not answer a ping within 60 s")
        yield sender
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        sender.close()
        RedisStore(broker).client.flushdb()
        log.close()
        Path(log.name).unlink(missing_ok=True)
        if saved_broker is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_broker
