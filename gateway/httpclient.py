"""The upstream's HTTP/1.1 client: one pooled connection per call in flight, parsed by httptools.

Why not aiohttp: a metered call is one POST to one host, and aiohttp's general machinery
(cookie jar, tracing hooks, URL objects, a multidict per header set, a stream reader per
response, a timer object per read) cost the worker a seventh of a call's CPU (py-spy, c=1).
Here a request is one `transport.write` of its head and body; the response is parsed by
httptools (the parser uvicorn serves with) straight into the response's buffer.

What it keeps of aiohttp's behaviour, because the proxy's guarantees rest on it:
- A connect that fails or takes longer than `connect_timeout` is `ConnectFailed`: the
  request never left, nothing reached Bedrock.
- No byte for `read_timeout` while a response is awaited or read is `ReadTimeout`; the
  connection is dropped, which cancels the call upstream.
- A connection that closes before its response is complete is `ConnectionLost`.
- A POST is never retried: Bedrock may have started it (and charged for it).
- Idle connections are reused while the server keeps them (HTTP/1.1 keep-alive) and for at
  most `KEEPALIVE_SECONDS` idle; at most `limit` connections are open (a call waits for one).
- A response closed before its end drops its connection (cancels the upstream call);
  one read to its end returns the connection to the pool.
- Reading stops (`pause_reading`) while more than `HIGH_WATER` bytes wait for a slow reader
  of `iter_raw` (`read` takes the whole body, however large).
  A reader gets what has arrived since its last read as one piece.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

# Idle connections older than this are closed rather than reused: servers close idle ones
# after a while (Bedrock's load balancers after 60 s or more), and a request sent on a
# connection the server is closing is lost. aiohttp's default, kept.
KEEPALIVE_SECONDS = 15.0
HIGH_WATER = 256 * 1024


class HttpClientError(Exception):
    """The upstream could not be asked or did not answer. The text may name the host: it is
    for the server's log, not for a client's error body."""


class ConnectFailed(HttpClientError):
    """No connection could be opened: the request was never sent."""


class ReadTimeout(HttpClientError):
    """No byte arrived for `read_timeout` seconds."""


class ConnectionLost(HttpClientError):
    """The connection closed (or sent what is not HTTP) before the response was complete."""


class Headers(dict[str, str]):
    """Response headers by lower-case name; a repeated header's values joined by ", "."""

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)


@functools.lru_cache(maxsize=64)
def _origin(url: str) -> tuple[str, int, bool, str]:
    """(host, port, tls, Host header) of an absolute URL's origin."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    host = parts.hostname or ""
    port = parts.port or default
    return host, port, tls, host if port == default else f"{host}:{port}"


def _target(url: str) -> str:
    # The path and query as given (already percent-encoded, as signed).
    rest = url.split("://", 1)[1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # The system's trust store (or SSL_CERT_FILE), as aiohttp and botocore use by default.
    return ssl.create_default_context()


class Response:
    """One upstream response: status and headers once `request` returns, then the body."""

    status_code: int
    headers: Headers

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self._error: HttpClientError | None = None
        self._head_ready = False
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self._released = False
        self._whole = False  # read() takes the whole body: nothing to hold back for it

    # -- fed by the connection --------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HttpClientError) -> None:
        if self._error is None and not self.complete:
            self._error = error
        self._wake()

    def _on_head(self, status: int) -> None:
        headers = Headers()
        for raw_name, raw_value in self._raw_headers:
            name, value = raw_name.decode("latin1").lower(), raw_value.decode("latin1")
            known = dict.get(headers, name)
            headers[name] = value if known is None else f"{known}, {value}"
        self._raw_headers = []
        self.status_code, self.headers, self._head_ready = status, headers, True
        self._wake()

    def _on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._whole:
            self._connection.pause()
        self._wake()

    def _on_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- read by the caller -----------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection has news (bytes, the end or an error), or `read_timeout`."""
        loop = self._connection.loop
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(self._connection.read_timeout, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _head(self) -> None:
        while not self._head_ready:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool (or is dropped on error)."""
        self._whole = True
        self._connection.resume()
        try:
            while not self.complete:
                if self._error is not None:
                    raise self._error
                await self._wait()
            return b"".join(self._chunks)
        finally:
            self._chunks.clear()
            self.close()

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (transfer coding removed); ends with the body."""
        try:
            while True:
                if self._chunks:
                    # What arrived since the last read, as one piece: one pass of the
                    # reader's work (meter, translation, send) however it was cut.
                    chunks = self._chunks
                    data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                    chunks.clear()
                    self._buffered = 0
                    self._connection.resume()
                    yield data
                    continue
                if self.complete:
                    return
                if self._error is not None:
                    raise self._error
                await self._wait()
        finally:
            self.close()

    def close(self) -> None:
        """Done with the response: an unfinished one drops its connection (the upstream call
        is cancelled); a finished one has given it back already."""
        if self._released:
            return
        self._released = True
        self._connection.release(reuse=self.complete and self._error is None)


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("timed out"))


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Pool, key: tuple[str, int, bool]) -> None:
        self.pool, self.key, self.loop = pool, key, pool.loop
        self.read_timeout = pool.read_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.drop(ConnectionLost("malformed response"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response._fail(ConnectionLost("connection lost"))
        self.pool.forget(self)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response._on_head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        if self.response is not None:
            self.response._on_complete()

    # -- the pool's side --------------------------------------------------------------------

    def send(self, head: bytes, body: bytes) -> Response:
        self.response = response = Response(self)
        self.reusable = False
        assert self.transport is not None
        self.transport.write(head + body)
        return response

    def release(self, *, reuse: bool) -> None:
        self.response = None
        self.resume()
        if reuse and self.reusable and not self.closed:
            self.pool.give_back(self)
        else:
            self.drop(None)
            self.pool.slot_free()

    def drop(self, error: HttpClientError | None) -> None:
        if error is not None and self.response is not None:
            self.response._fail(error)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()


class Pool:
    """Connections to the upstream for one event loop."""

    def __init__(self, *, limit: int, connect_timeout: float, read_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, int, bool], deque[_Connection]] = {}
        self._all: set[_Connection] = set()
        self.closed = False

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """Send a POST and wait for the response's status and headers (not its body)."""
        host, port, tls, host_header = _origin(url)
        lines = [f"POST {_target(url)} HTTP/1.1\r\nHost: {host_header}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"a line break in the request header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("latin1")
        await self._slots.acquire()
        connection = None
        try:
            connection = self._take_idle((host, port, tls)) or await self._connect(host, port, tls)
            response = connection.send(head, body)
            await response._head()
        except BaseException:
            if connection is None:
                self.slot_free()
            else:
                connection.release(reuse=False)  # drops it: its request may be half sent
            raise
        return response

    def _take_idle(self, key: tuple[str, int, bool]) -> _Connection | None:
        idle = self._idle.get(key)
        now = self.loop.time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closing
            if not connection.closed and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.drop(None)
        return None

    async def _connect(self, host: str, port: int, tls: bool) -> _Connection:
        connection = _Connection(self, (host, port, tls))
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=_tls_context() if tls else None,
                    server_hostname=host if tls else None,
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{host}:{port}: {type(exc).__name__}: {exc}") from exc
        self._all.add(connection)
        return connection

    def give_back(self, connection: _Connection) -> None:
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.key, deque()).append(connection)
        self._slots.release()

    def slot_free(self) -> None:
        self._slots.release()

    def forget(self, connection: _Connection) -> None:
        self._all.discard(connection)

    async def close(self) -> None:
        """Drop every connection (idle or in use)."""
        self.closed = True
        for connection in list(self._all):
            connection.drop(ConnectionLost("client closed"))
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
