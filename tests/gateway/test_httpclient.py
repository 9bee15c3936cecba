"""The upstream's HTTP client against real sockets: small asyncio servers that answer the way a
misbehaving upstream would (slow, cut, chunked, closing), and the emulator over HTTPS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway import httpclient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


class _Server:
    """A local server whose `handler` answers each connection (counted), and a client pool
    (`_pool(**pool_options)`) for the block: `async with _Server(handler) as (url, pool)`."""

    def __init__(self, handler: Handler, **pool_options: float) -> None:
        self.handler = handler
        self.pool_options = pool_options
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()

    async def __aenter__(self) -> tuple[str, httpclient.Pool]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.pool = _pool(**self.pool_options)
        return f"http://127.0.0.1:{port}", self.pool

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()
        self.server.close()


def _pool(**overrides: float) -> httpclient.Pool:
    options = {"limit": 10, "connect_timeout": 2.0, "read_timeout": 2.0, **overrides}
    return httpclient.Pool(
        limit=int(options["limit"]),
        connect_timeout=options["connect_timeout"],
        read_timeout=options["read_timeout"],
    )


def _run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given():
    server: _Server

    async def echo(reader, writer) -> None:
        while True:
            request = await _read_request(reader)
            server.requests.append(request)
            body = request.split(b"\r\n\r\n", 1)[1]
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"X-Amzn-RequestId: r1\r\nSet-Thing: a\r\nSet-Thing: b\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()

    server = _Server(echo)

    async def test() -> None:
        async with server as (url, pool):
            for n in range(3):
                response = await pool.post(
                    f"{url}/model/a%3Ab/invoke", b'{"n": %d}' % n, {"X-Test": "yes"}
                )
                assert response.status_code == 200
                assert response.headers["x-amzn-requestid"] == "r1"
                assert response.headers.get("X-AMZN-REQUESTID") == "r1"
                assert "content-type" in response.headers
                assert response.headers["set-thing"] == "a, b"
                assert await response.read() == b'{"n": %d}' % n
        assert server.connections == 1
        head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"POST /model/a%3Ab/invoke HTTP/1.1"  # not re-encoded
        assert b"Host: 127.0.0.1:%d" % int(url.rsplit(":", 1)[1]) in head
        assert b"X-Test: yes" in head
        assert b"Content-Length: 8" in head

    _run(test)


def test_a_chunked_body_arrives_decoded_in_order_and_whole():
    parts = [bytes([65 + n]) * (70_000 + n) for n in range(8)]  # 560 kB: past the high water

    async def chunked(reader, writer) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def test() -> None:
        async with _Server(chunked) as (url, pool):
            response = await pool.post(f"{url}/x", b"{}", {})
            received = []
            async for data in response.iter_raw():
                received.append(data)
                await asyncio.sleep(0.001)  # a slow reader: the client stops reading meanwhile
            assert b"".join(received) == b"".join(parts)

    _run(test)


def test_an_unreachable_host_is_connect_failed():
    async def test() -> None:
        async with _Server(lambda r, w: asyncio.sleep(0)) as (url, _):
            pass  # the server is closed: its port refuses
        pool = _pool()
        with pytest.raises(httpclient.ConnectFailed):
            await pool.post(f"{url}/x", b"{}", {})
        await pool.close()

    _run(test)


def test_silence_is_a_read_timeout_and_the_connection_is_dropped():
    async def silent(reader, writer) -> None:
        await _read_request(reader)
        assert await reader.read() == b""  # until the client drops the connection
        server.closed_by_client.set()

    server = _Server(silent, read_timeout=0.2)

    async def test() -> None:
        async with server as (url, pool):
            with pytest.raises(httpclient.ReadTimeout):
                await pool.post(f"{url}/x", b"{}", {})
            await asyncio.wait_for(server.closed_by_client.wait(), 5)

    _run(test)


def test_a_body_cut_short_is_connection_lost():
    async def cut(reader, writer) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    async def test() -> None:
        async with _Server(cut) as (url, pool):
            response = await pool.post(f"{url}/x", b"{}", {})
            with pytest.raises(httpclient.ConnectionLost):
                await response.read()

    _run(test)


def test_garbage_instead_of_http_is_connection_lost():
    async def garbage(reader, writer) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def test() -> None:
        async with _Server(garbage) as (url, pool):
            with pytest.raises(httpclient.ConnectionLost):
                await pool.post(f"{url}/x", b"{}", {})

    _run(test)


def test_closing_an_unfinished_response_drops_its_connection():
    async def endless(reader, writer) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        assert await reader.read() == b""  # the client hung up: Bedrock stops generating
        server.closed_by_client.set()

    server = _Server(endless)

    async def test() -> None:
        async with server as (url, pool):
            response = await pool.post(f"{url}/x", b"{}", {})
            async for data in response.iter_raw():
                assert data == b"hello"
                break
            response.close()
            await asyncio.wait_for(server.closed_by_client.wait(), 5)

    _run(test)


def test_the_pool_limit_queues_calls_until_a_connection_is_free():
    async def held(reader, writer) -> None:
        await _read_request(reader)
        arrived.set()
        await gate.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    server = _Server(held, limit=1)

    async def test() -> None:
        async with server as (url, pool):
            first = asyncio.create_task(pool.post(f"{url}/x", b"{}", {}))
            second = asyncio.create_task(pool.post(f"{url}/x", b"{}", {}))
            await asyncio.wait_for(arrived.wait(), 5)
            # Not synchronisation: time in which a second connection would arrive, were it let.
            await asyncio.sleep(0.2)
            assert server.connections == 1
            assert not second.done()
            gate.set()
            assert await (await first).read() == b"ok"
            assert await (await second).read() == b"ok"
            assert server.connections == 2  # "Connection: close": not reused

    arrived, gate = asyncio.Event(), asyncio.Event()
    _run(test)


def test_a_line_break_in_a_header_is_refused_before_anything_is_sent():
    async def test() -> None:
        async with _Server(lambda r, w: asyncio.sleep(0)) as (url, pool):
            with pytest.raises(ValueError, match="line break"):
                await pool.post(f"{url}/x", b"{}", {"anthropic-beta": "a\r\nX-Evil: 1"})

    _run(test)


def test_a_whole_body_larger_than_the_high_water_is_read_to_its_end():
    body = b"x" * (3 * httpclient.HIGH_WATER)

    async def large(reader, writer) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 16_384):
            writer.write(body[start : start + 16_384])
            await writer.drain()

    async def test() -> None:
        async with _Server(large, read_timeout=1.0) as (url, pool):
            response = await pool.post(f"{url}/x", b"{}", {})
            assert await response.read() == body

    _run(test)
