"""The shared Redis clients retry a command whose connection broke under it (a Redis restart
seen mid-command, a dropped idle connection) instead of failing the request."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from config import redis_clients
from tests.fixtures.redis_process import RedisProcess

MARKER = b"break-me"


class BreakOnce:
    """A TCP proxy to Redis that drops the first connection carrying MARKER, unanswered."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.broken = 0
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.connections += 1
                server = socket.create_connection(("127.0.0.1", self.target_port))
                threading.Thread(
                    target=self._pump, args=(client, server, True), daemon=True
                ).start()
                threading.Thread(
                    target=self._pump, args=(server, client, False), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if upstream and MARKER in data and not self.broken:
                    self.broken += 1
                    break  # the command never reaches Redis, and no answer comes back
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(redis_process: RedisProcess) -> Iterator[BreakOnce]:
    if not redis_process.running():
        redis_process.start()
    redis_process.client().flushall()
    proxy = BreakOnce(redis_process.port)
    yield proxy
    proxy.close()


def test_the_sync_client_retries_a_command_whose_connection_broke(proxy, redis_process):
    client = redis_clients.sync_client(f"redis://127.0.0.1:{proxy.port}/0")
    assert client.ping()
    assert client.set(MARKER, "v")
    assert proxy.broken == 1
    assert proxy.connections == 2  # the first connection broke; the retry made a new one
    assert redis_process.client().get(MARKER) == b"v"


def test_the_asyncio_client_retries_a_command_whose_connection_broke(proxy, redis_process):
    async def main() -> bool:
        client = redis_clients.async_client(f"redis://127.0.0.1:{proxy.port}/0")
        try:
            assert await client.ping()
            return await client.set(MARKER, "v")
        finally:
            await client.aclose()

    assert asyncio.run(main())
    assert proxy.broken == 1
    assert redis_process.client().get(MARKER) == b"v"


def test_a_redis_that_stays_down_still_fails_fast(redis_process):
    client = redis.Redis.from_url(redis_process.url, **redis_clients.connection_options())
    redis_process.stop()
    try:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.get("anything")
        assert time.monotonic() - started < 1.0  # retries back off for ~60 ms, not seconds
    finally:
        redis_process.start()
