"""The Python frame codec (shoal._guest.protocol) against the rules the C++ decoder
(runtime/guest/guest_frame.hpp) enforces; the golden encodings are the same bytes
tests/guest/guest_frame_test.cpp checks."""

from __future__ import annotations

import struct

import pytest

from shoal._guest import protocol as p

EVERY_FRAME = [
    p.Hello(1, "3.11.2", "2.2.0"),
    p.Init(b"\x00definition\xff", 8),
    p.Ready(3),
    p.Inputs([p.Input(1, b"a"), p.Input(2**64 - 1, b""), p.Input(5, bytes(range(256)))]),
    p.Inputs([]),
    p.Outputs(
        [
            p.Output(1, p.SUCCESS, b"value", ""),
            p.Output(2, p.FAILURE, b"", "Traceback ...\nValueError: é"),
            p.Output(3, p.ITEM, b"x", ""),
            p.Output(3, p.DONE),
            p.Output(4, p.CANCELLED),
        ]
    ),
    p.Cancel(42),
    p.Call(9, "function.call", b"\x01\x02"),
    p.Reply(9, 0, b"body", ""),
    p.Reply(10, 200, b"", "a code from a newer supervisor"),
    p.Shutdown(),
    p.Fatal("Traceback (most recent call last, in container ct-1):\nImportError: x"),
]

GOLDEN = [
    (p.Hello(1, "3.11.2", "2.2.0"), "00000018010000000100000006332e31312e3200000005322e322e30"),
    (
        p.Outputs([p.Output(7, 1, b"\x80", "é")]),
        "000000190500000001000000000000000701000000018000000002c3a9",
    ),
    (p.Reply(0x0102030405060708, 2, b"ab", "nope"), "0000001808010203040506070802000000026162000000046e6f7065"),
    (p.Shutdown(), "0000000109"),
]


def frame_bytes(t: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload) + 1, t) + payload


def decode_all(data: bytes, max_payload_bytes: int = p.MAX_PAYLOAD_BYTES):
    d = p.FrameDecoder(max_payload_bytes)
    d.feed(data)
    out = []
    while True:
        f = d.next()
        if f is None:
            return out, d
        out.append(f)


@pytest.mark.parametrize("frame", EVERY_FRAME, ids=lambda f: type(f).__name__)
def test_every_frame_type_survives_a_round_trip(frame):
    frames, d = decode_all(p.encode(frame))
    assert frames == [frame]
    assert d.buffered_bytes() == 0


@pytest.mark.parametrize("frame,hex_bytes", GOLDEN, ids=lambda x: getattr(type(x), "__name__", ""))
def test_encodings_match_the_cpp_codec_byte_for_byte(frame, hex_bytes):
    assert p.encode(frame).hex() == hex_bytes


def test_a_frame_over_the_cap_is_rejected_from_its_header_alone():
    d = p.FrameDecoder()
    d.feed(struct.pack(">IB", 80_000_001, p.INPUTS))  # no payload sent at all
    with pytest.raises(p.ProtocolError, match="guest frame of 80000000 bytes exceeds the 67108864-byte limit"):
        d.next()


def test_the_cap_is_configurable_and_inclusive():
    ok = frame_bytes(p.FATAL, struct.pack(">I", 6) + b"abcdef")  # payload of 10 bytes
    frames, _ = decode_all(ok, max_payload_bytes=10)
    assert frames == [p.Fatal("abcdef")]
    with pytest.raises(p.ProtocolError, match="of 10 bytes exceeds the 9-byte limit"):
        decode_all(ok, max_payload_bytes=9)


@pytest.mark.parametrize("t", [0, 11, 255])
def test_an_unknown_frame_type_is_rejected(t):
    with pytest.raises(p.ProtocolError, match=f"guest frame type {t} is unknown"):
        decode_all(frame_bytes(t, b""))


def test_a_frame_of_length_zero_is_rejected():
    with pytest.raises(p.ProtocolError, match="length 0"):
        decode_all(b"\x00\x00\x00\x00\x05")


# SHUTDOWN has no payload to truncate; the trailing-bytes test covers it.
@pytest.mark.parametrize(
    "frame", [f for f in EVERY_FRAME if f.TYPE != p.SHUTDOWN], ids=lambda f: type(f).__name__
)
def test_a_truncated_payload_is_rejected(frame):
    payload = p.encode(frame)[5:]
    for cut in range(len(payload)):
        with pytest.raises(p.ProtocolError, match="ends inside field|is not valid UTF-8|bytes follow"):
            p.decode_payload(frame.TYPE, payload[:cut])


@pytest.mark.parametrize("frame", EVERY_FRAME, ids=lambda f: type(f).__name__)
def test_trailing_garbage_after_the_last_field_is_rejected(frame):
    payload = p.encode(frame)[5:] + b"\x00"
    with pytest.raises(p.ProtocolError, match=r"payload has 1 trailing bytes"):
        decode_all(frame_bytes(frame.TYPE, payload))


def test_a_string_that_is_not_utf8_is_rejected():
    payload = struct.pack(">I", 2) + b"\xc3\x28"
    with pytest.raises(p.ProtocolError, match="field 'error' is not valid UTF-8"):
        decode_all(frame_bytes(p.FATAL, payload))
    surrogate = "\ud800".encode("utf-8", "surrogatepass")
    with pytest.raises(p.ProtocolError, match="not valid UTF-8"):
        decode_all(frame_bytes(p.FATAL, struct.pack(">I", len(surrogate)) + surrogate))


def test_an_output_status_outside_0_to_4_is_rejected():
    payload = struct.pack(">IQBII", 1, 7, 5, 0, 0)
    with pytest.raises(p.ProtocolError, match="output status 5 is not one of"):
        decode_all(frame_bytes(p.OUTPUTS, payload))


def test_a_count_larger_than_the_payload_can_hold_is_rejected_before_allocating():
    payload = struct.pack(">I", 0xFFFFFFFF)
    with pytest.raises(p.ProtocolError, match="field 'count' is 4294967295 but only 0 bytes follow"):
        decode_all(frame_bytes(p.INPUTS, payload))


def test_a_decoder_stays_poisoned_after_an_error():
    d = p.FrameDecoder()
    d.feed(frame_bytes(99, b""))
    with pytest.raises(p.ProtocolError):
        d.next()
    d.feed(p.encode(p.Shutdown()))
    with pytest.raises(p.ProtocolError, match="type 99"):
        d.next()


def test_frames_split_at_every_byte_boundary_decode_the_same():
    stream = b"".join(p.encode(f) for f in EVERY_FRAME)
    for split in range(len(stream) + 1):
        d = p.FrameDecoder()
        got = []
        for part in (stream[:split], stream[split:]):
            d.feed(part)
            while (f := d.next()) is not None:
                got.append(f)
        assert got == EVERY_FRAME, f"split at {split}"


def test_a_stream_fed_one_byte_at_a_time_decodes_the_same():
    stream = b"".join(p.encode(f) for f in EVERY_FRAME)
    d = p.FrameDecoder()
    got = []
    for i in range(len(stream)):
        d.feed(stream[i : i + 1])
        while (f := d.next()) is not None:
            got.append(f)
    assert got == EVERY_FRAME


def test_many_frames_in_one_feed_come_out_in_order():
    frames = [p.Cancel(i) for i in range(10_000)]
    got, d = decode_all(b"".join(p.encode(f) for f in frames))
    assert got == frames
    assert d.buffered_bytes() == 0


def test_a_lone_surrogate_in_an_outgoing_string_still_encodes_as_valid_utf8():
    frames, _ = decode_all(p.encode(p.Fatal("bad name: \udcff")))
    assert frames == [p.Fatal("bad name: \\udcff")]


def test_call_bodies_use_the_same_strict_reader():
    body = p.Writer().str("fu-1").bytes(b"args").u64(5).getvalue()
    r = p.Reader(body)
    assert (r.str("function_id"), r.bytes("args"), r.u64("timeout_ms")) == ("fu-1", b"args", 5)
    r.finish("body")
    r = p.Reader(body + b"!")
    r.str("function_id"), r.bytes("args"), r.u64("timeout_ms")
    with pytest.raises(p.ProtocolError, match="body has 1 trailing bytes"):
        r.finish("body")
