"""The event stream codec against botocore's own parser, and the incremental decoder."""

import base64
import json

import pytest
from botocore.eventstream import EventStreamBuffer

from emulator.eventstream import (
    ChecksumMismatch,
    EventStreamDecoder,
    EventStreamError,
    chunk_payload,
    encode_chunk,
    encode_event,
    encode_exception,
    encode_message,
)

EVENTS = [
    {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}},
    {"type": "message_stop"},
]


def test_botocore_parses_encoded_chunks():
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(encode_chunk(event, i) for i, event in enumerate(EVENTS)))

    messages = list(buffer)

    assert [m.headers for m in messages] == [
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    ] * 3
    decoded = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in messages]
    assert decoded == EVENTS


def test_botocore_parses_exception_frames():
    buffer = EventStreamBuffer()
    buffer.add_data(encode_exception("throttlingException", "slow down"))

    [message] = list(buffer)

    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "throttlingException"
    assert json.loads(message.payload) == {"message": "slow down"}


def test_decoder_reads_botocore_compatible_frames_fed_one_byte_at_a_time():
    data = b"".join(encode_chunk(event, i) for i, event in enumerate(EVENTS))
    decoder = EventStreamDecoder()
    messages = []

    for index in range(len(data)):
        messages.extend(decoder.feed(data[index : index + 1]))

    assert [chunk_payload(m) for m in messages] == EVENTS
    assert decoder.pending == 0


def test_decoder_handles_many_frames_in_one_feed_and_split_frames():
    frames = [encode_chunk({"type": "x", "n": n}, n) for n in range(50)]
    data = b"".join(frames)
    decoder = EventStreamDecoder()

    first = decoder.feed(data[:1000])
    rest = decoder.feed(data[1000:])

    assert [chunk_payload(m)["n"] for m in first + rest] == list(range(50))


def test_decoder_reads_converse_events_and_typed_headers():
    frame = encode_event("messageStop", {"stopReason": "end_turn"})
    typed = encode_message({":message-type": "event", "blob": b"\x00\x01"}, b"{}")

    [event, other] = EventStreamDecoder().feed(frame + typed)

    assert event.event_type == "messageStop"
    assert event.json()["stopReason"] == "end_turn"
    assert chunk_payload(event) is None
    assert other.headers["blob"] == b"\x00\x01"


@pytest.mark.parametrize("offset", [2, 9, 40, -2])
def test_decoder_rejects_a_corrupted_byte(offset):
    data = bytearray(encode_chunk(EVENTS[0]))
    data[offset] ^= 0x40

    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(bytes(data))


def test_decoder_reports_a_message_crc_mismatch():
    data = bytearray(encode_chunk(EVENTS[0]))
    data[-10] ^= 0x01

    with pytest.raises(ChecksumMismatch):
        EventStreamDecoder().feed(bytes(data))
