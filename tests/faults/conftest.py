"""Fault tests: a private Redis the test stops, restarts (empty, or with its data) and a
gateway process pointed at it, on the test database (PostgreSQL when DATABASE_URL is set)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.fixtures.redis_process import RedisProcess, gateway_env
from tests.fixtures.servers import start_gateway


@pytest.fixture(scope="module")
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def fresh_redis(redis_process: RedisProcess) -> RedisProcess:
    """The private Redis, running and empty at the start of the test."""
    if not redis_process.running():
        redis_process.start()
    redis_process.client().flushall()
    return redis_process


@pytest.fixture(scope="module")
def open_gateway(django_db_setup, django_db_blocker, emulator, redis_process):
    """A gateway on the private Redis that serves and records when Redis is down."""
    with start_gateway(upstream_url=emulator.url, env=gateway_env(redis_process, "open")) as gw:
        yield gw


@pytest.fixture(scope="module")
def closed_gateway(django_db_setup, django_db_blocker, emulator, redis_process):
    """A gateway on the private Redis that refuses (503) when Redis is down."""
    with start_gateway(upstream_url=emulator.url, env=gateway_env(redis_process, "closed")) as gw:
        yield gw
