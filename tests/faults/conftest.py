"""Fault tests: a private Redis the test stops, restarts (empty, or with its data) and a
gateway process pointed at it, on the test database (PostgreSQL when DATABASE_URL is set)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.fixtures.servers import free_port, start_gateway
from tests.gateway.conftest import GATEWAY_ENV, gateway_idle, reference_data, wait_for

__all__ = ["RedisProcess", "gateway_idle", "reference_data", "wait_for"]


class RedisProcess:
    """One redis-server on a fixed port, without persistence unless `stop(save=True)`."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="faults-redis-"))
        self.process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def start(self, *, load: bool = False) -> None:
        """Start on the same port: empty, or (`load`) with what `stop(save=True)` wrote."""
        dump = self.dir / "dump.rdb"
        if not load:
            dump.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--dbfilename", "dump.rdb"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def answers() -> bool:
            try:
                return bool(self.client().ping())
            except redis.ConnectionError:
                return False

        assert wait_for(answers, timeout=10), "redis-server did not start"

    def stop(self, *, save: bool = False) -> None:
        """Kill the server (SIGKILL: no goodbye to clients), after a snapshot if `save`."""
        if self.process is None:
            return
        if save:
            self.client().save()
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def running(self) -> bool:
        return self.process is not None


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


def gateway_env(redis_process: RedisProcess, failure_mode: str) -> dict[str, str]:
    return {
        **GATEWAY_ENV,
        "REDIS_URL": redis_process.url,
        "GATEWAY_USAGE_CAPS__STORE_FAILURE_MODE": failure_mode,
    }


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
