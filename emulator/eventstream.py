"""The AWS event stream binary format (``application/vnd.amazon.eventstream``).

One message on the wire::

    total length  u32 BE   (the whole message, CRCs included)
    headers len   u32 BE
    prelude CRC   u32 BE   CRC32 of the 8 bytes above
    headers       name_len u8, name, type u8, value   (repeated)
    payload       total - headers - 16 bytes
    message CRC   u32 BE   CRC32 of everything before it

The encoder is what the emulator streams; the decoder is incremental (``feed`` bytes as
they arrive, get back complete messages) so the gateway can read usage from relayed bytes
without holding a stream in memory. Both validate what botocore validates.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any
from zlib import crc32

__all__ = [
    "ChecksumMismatch",
    "EventStreamDecoder",
    "EventStreamError",
    "Message",
    "chunk_payload",
    "encode_chunk",
    "encode_event",
    "encode_exception",
    "encode_message",
]

_PRELUDE = struct.Struct(">II")
_U32 = struct.Struct(">I")
_PRELUDE_LENGTH = 12  # two lengths and the prelude CRC
_MINIMUM_LENGTH = 16  # prelude + message CRC
# botocore's own limits (botocore.eventstream): anything larger is a framing error.
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024
MAX_HEADERS_LENGTH = 128 * 1024

_STRING = 7
_BYTES = 6


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad lengths, CRCs or header types)."""


class ChecksumMismatch(EventStreamError):
    """A prelude or message CRC32 does not match its bytes."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded event stream message: its headers and its raw payload."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def message_type(self) -> str | None:
        return self.headers.get(":message-type")

    @property
    def event_type(self) -> str | None:
        return self.headers.get(":event-type")

    @property
    def exception_type(self) -> str | None:
        return self.headers.get(":exception-type")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


# ---------------------------------------------------------------- encoding


def _encode_headers(headers: dict[str, str | bytes]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        out.append(len(raw_name))
        out += raw_name
        if isinstance(value, bytes):
            out.append(_BYTES)
            raw = value
        else:
            out.append(_STRING)
            raw = value.encode()
        out += struct.pack(">H", len(raw))
        out += raw
    return bytes(out)


def _frame(raw_headers: bytes, payload: bytes) -> bytes:
    total = _MINIMUM_LENGTH + len(raw_headers) + len(payload)
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + _U32.pack(crc32(prelude)) + raw_headers + payload
    return head + _U32.pack(crc32(head))


def encode_message(headers: dict[str, str | bytes], payload: bytes) -> bytes:
    """One framed message with string (or bytes) headers, CRCs computed."""
    return _frame(_encode_headers(headers), payload)


# The header block of every Bedrock chunk is constant, so it is encoded once.
_CHUNK_HEADERS = _encode_headers(
    {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
)
# Bedrock pads each payload with a "p" member of varying length so that payload sizes do not
# reveal token lengths; clients must ignore it, so the emulator sends it too.
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _padding(seed: int) -> str:
    return _PADDING[: 1 + seed % len(_PADDING)]


def encode_chunk(event: dict[str, Any], seed: int = 0) -> bytes:
    """An ``invoke-with-response-stream`` chunk: ``{"bytes": base64(event JSON)}``."""
    raw = json.dumps(event, separators=(",", ":")).encode()
    payload = b'{"bytes":"%s","p":"%s"}' % (base64.b64encode(raw), _padding(seed).encode())
    return _frame(_CHUNK_HEADERS, payload)


_event_headers_cache: dict[str, bytes] = {}


def encode_event(event_type: str, body: dict[str, Any], seed: int = 0) -> bytes:
    """A Converse stream event: the event JSON is the payload itself."""
    raw_headers = _event_headers_cache.get(event_type)
    if raw_headers is None:
        raw_headers = _encode_headers(
            {
                ":event-type": event_type,
                ":content-type": "application/json",
                ":message-type": "event",
            }
        )
        _event_headers_cache[event_type] = raw_headers
    payload = dict(body)
    payload["p"] = _padding(seed)
    return _frame(raw_headers, json.dumps(payload, separators=(",", ":")).encode())


def encode_exception(exception_type: str, message: str, **extra: Any) -> bytes:
    """An exception frame; ``exception_type`` is the lowerCamel member name of the stream."""
    headers: dict[str, str | bytes] = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    body = {"message": message, **extra}
    return encode_message(headers, json.dumps(body, separators=(",", ":")).encode())


# ---------------------------------------------------------------- decoding


def _decode_headers(data: bytes | memoryview) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    pos = 0
    end = len(data)
    while pos < end:
        name_length = data[pos]
        pos += 1
        name = bytes(data[pos : pos + name_length]).decode()
        pos += name_length
        if pos >= end:
            raise EventStreamError("truncated header")
        kind = data[pos]
        pos += 1
        value: Any
        if kind in (_STRING, _BYTES):
            (length,) = struct.unpack_from(">H", data, pos)
            pos += 2
            raw = bytes(data[pos : pos + length])
            pos += length
            value = raw.decode() if kind == _STRING else raw
        elif kind == 0:
            value = True
        elif kind == 1:
            value = False
        elif kind == 2:
            (value,) = struct.unpack_from(">b", data, pos)
            pos += 1
        elif kind == 3:
            (value,) = struct.unpack_from(">h", data, pos)
            pos += 2
        elif kind == 4:
            (value,) = struct.unpack_from(">i", data, pos)
            pos += 4
        elif kind == 5 or kind == 8:  # long, timestamp (ms since epoch)
            (value,) = struct.unpack_from(">q", data, pos)
            pos += 8
        elif kind == 9:
            value = uuid.UUID(bytes=bytes(data[pos : pos + 16]))
            pos += 16
        else:
            raise EventStreamError(f"unknown header type {kind}")
        if pos > end:
            raise EventStreamError("truncated header")
        headers[name] = value
    return headers


# A stream repeats a handful of header blocks (chunk, exception types), so they are parsed once.
_header_cache: dict[bytes, dict[str, Any]] = {}


class EventStreamDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the messages completed by those bytes.

    Raises ``ChecksumMismatch`` / ``EventStreamError`` on corrupt input; after that the
    decoder is unusable (the framing is lost, as it is for botocore).
    """

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        offset = self._offset
        available = len(buffer)
        while available - offset >= _PRELUDE_LENGTH:
            total, headers_length = _PRELUDE.unpack_from(buffer, offset)
            if total > MAX_MESSAGE_LENGTH or total < _MINIMUM_LENGTH:
                raise EventStreamError(f"invalid message length {total}")
            if headers_length > MAX_HEADERS_LENGTH or headers_length > total - _MINIMUM_LENGTH:
                raise EventStreamError(f"invalid headers length {headers_length}")
            (prelude_crc,) = _U32.unpack_from(buffer, offset + 8)
            view = memoryview(buffer)
            try:
                if crc32(view[offset : offset + 8]) != prelude_crc:
                    raise ChecksumMismatch("prelude CRC32 mismatch")
                if available - offset < total:
                    break
                end = offset + total
                (message_crc,) = _U32.unpack_from(buffer, end - 4)
                if crc32(view[offset : end - 4]) != message_crc:
                    raise ChecksumMismatch("message CRC32 mismatch")
                headers_start = offset + _PRELUDE_LENGTH
                payload_start = headers_start + headers_length
                raw_headers = bytes(view[headers_start:payload_start])
                cached = _header_cache.get(raw_headers)
                if cached is None:
                    cached = _decode_headers(raw_headers)
                    if len(_header_cache) < 256:
                        _header_cache[raw_headers] = cached
                headers = dict(cached)
                payload = bytes(view[payload_start : end - 4])
            finally:
                view.release()
            messages.append(Message(headers, payload))
            offset = end
        # Compact only once consumed bytes dominate, so a long stream is not copied per message.
        if offset and offset * 2 >= len(buffer):
            del buffer[:offset]
            offset = 0
        self._offset = offset
        return messages


def chunk_payload(message: Message) -> dict[str, Any] | None:
    """The Anthropic event inside an ``invoke-with-response-stream`` chunk, else None."""
    if message.message_type != "event" or message.event_type != "chunk":
        return None
    encoded = json.loads(message.payload).get("bytes")
    if encoded is None:
        return None
    return json.loads(base64.b64decode(encoded))
