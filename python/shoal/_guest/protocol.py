"""Frames of the guest protocol (docs/guest-protocol.md), mirroring ``runtime/guest/guest_frame.hpp``.

Stdlib only. A frame on the wire is ``length:u32 type:u8 payload`` with ``length = 1 +
len(payload)``; integers are big-endian, ``bytes := n:u32 data[n]``, ``str := bytes`` (UTF-8).

Decoding is as strict as the C++ decoder: a payload over the cap, an unknown type, a field that does
not fit, a ``str`` that is not UTF-8, an output status outside 0..4 or trailing bytes raise
:class:`ProtocolError` with the same sentences. :class:`Writer` and :class:`Reader` are also the
codec of CALL/REPLY bodies (``function.call`` ...).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import List, Optional, Union

PROTOCOL_VERSION = 1
#: Default cap on one frame's payload (the type byte excluded).
MAX_PAYLOAD_BYTES = 64 << 20
HEADER_BYTES = 5

# Frame types.
HELLO = 1
INIT = 2
READY = 3
INPUTS = 4
OUTPUTS = 5
CANCEL = 6
CALL = 7
REPLY = 8
SHUTDOWN = 9
FATAL = 10

TYPE_NAMES = {
    HELLO: "HELLO",
    INIT: "INIT",
    READY: "READY",
    INPUTS: "INPUTS",
    OUTPUTS: "OUTPUTS",
    CANCEL: "CANCEL",
    CALL: "CALL",
    REPLY: "REPLY",
    SHUTDOWN: "SHUTDOWN",
    FATAL: "FATAL",
}
#: Frames only the guest sends; the others only the supervisor sends.
SENT_BY_GUEST = frozenset({HELLO, READY, OUTPUTS, CALL, FATAL})

# Output statuses.
SUCCESS = 0
FAILURE = 1
ITEM = 2
DONE = 3
CANCELLED = 4

#: REPLY status values: ``runtime/errc.hpp``, by number. Unknown (newer) numbers are "internal".
ERRC_NAMES = (
    "none",
    "invalid_argument",
    "not_found",
    "already_exists",
    "unauthenticated",
    "permission_denied",
    "unavailable",
    "storage_failure",
    "incompatible_state",
    "state_dir_locked",
    "resource_exhausted",
    "timeout",
    "cancelled",
    "internal",
)
ERRC_INVALID_ARGUMENT = 1


def errc_name(code: int) -> str:
    return ERRC_NAMES[code] if 0 <= code < len(ERRC_NAMES) else "internal"


class ProtocolError(Exception):
    """A frame or body that breaks the protocol; the receiver closes the connection."""


# --- frames ----------------------------------------------------------------------------------------


@dataclass
class Hello:
    protocol: int = PROTOCOL_VERSION
    python_version: str = ""
    cloudpickle_version: str = ""
    TYPE = HELLO


@dataclass
class Init:
    definition: bytes = b""
    max_inputs: int = 1
    TYPE = INIT


@dataclass
class Ready:
    max_inputs: int = 1
    TYPE = READY


@dataclass
class Input:
    id: int
    args: bytes


@dataclass
class Inputs:
    items: List[Input] = field(default_factory=list)
    TYPE = INPUTS


@dataclass
class Output:
    id: int
    status: int
    data: bytes = b""
    error: str = ""


@dataclass
class Outputs:
    items: List[Output] = field(default_factory=list)
    TYPE = OUTPUTS


@dataclass
class Cancel:
    input_id: int = 0
    TYPE = CANCEL


@dataclass
class Call:
    request_id: int = 0
    method: str = ""
    body: bytes = b""
    TYPE = CALL


@dataclass
class Reply:
    request_id: int = 0
    status: int = 0
    body: bytes = b""
    error: str = ""
    TYPE = REPLY


@dataclass
class Shutdown:
    TYPE = SHUTDOWN


@dataclass
class Fatal:
    error: str = ""
    TYPE = FATAL


Frame = Union[Hello, Init, Ready, Inputs, Outputs, Cancel, Call, Reply, Shutdown, Fatal]

# --- primitives ------------------------------------------------------------------------------------

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">IB")
_INPUT_HEAD = struct.Struct(">QI")
_OUTPUT_HEAD = struct.Struct(">QBI")

_MIN_INPUT_BYTES = 8 + 4
_MIN_OUTPUT_BYTES = 8 + 1 + 4 + 4


def encode_text(text: str) -> bytes:
    """UTF-8 that is always valid: lone surrogates (from undecodable file names...) become
    backslash escapes instead of making the receiver reject the frame."""
    return text.encode("utf-8", "backslashreplace")


class Writer:
    """Appends primitives; ``getvalue()`` returns the bytes."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list = []

    def u8(self, value: int) -> "Writer":
        self._parts.append(bytes((value,)))
        return self

    def u32(self, value: int) -> "Writer":
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> "Writer":
        self._parts.append(_U64.pack(value))
        return self

    def bytes(self, data: bytes) -> "Writer":
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(data)
        return self

    def str(self, text: str) -> "Writer":
        return self.bytes(encode_text(text))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads primitives from a bytes-like object; every read names its field. The first malformed
    field raises :class:`ProtocolError`; :meth:`finish` rejects trailing bytes."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, name: str) -> int:
        pos = self._pos
        if len(self._data) - pos < n:
            raise ProtocolError(
                f"guest payload ends inside field '{name}' ({n} bytes needed, "
                f"{len(self._data) - pos} left)"
            )
        self._pos = pos + n
        return pos

    def u8(self, name: str) -> int:
        return self._data[self._take(1, name)]

    def u32(self, name: str) -> int:
        return _U32.unpack_from(self._data, self._take(4, name))[0]

    def u64(self, name: str) -> int:
        return _U64.unpack_from(self._data, self._take(8, name))[0]

    def bytes(self, name: str) -> bytes:
        n = self.u32(name)
        pos = self._take(n, name)
        return bytes(self._data[pos : pos + n])

    def str(self, name: str) -> str:
        raw = self.bytes(name)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"guest payload field '{name}' is not valid UTF-8") from None

    def count(self, min_record_bytes: int, name: str) -> int:
        n = self.u32(name)
        if n > self.remaining() // min_record_bytes:
            raise ProtocolError(
                f"guest payload field '{name}' is {n} but only {self.remaining()} bytes follow"
            )
        return n

    def finish(self, what: str) -> None:
        if self.remaining():
            raise ProtocolError(f"{what} has {self.remaining()} trailing bytes")


# --- frame codec -----------------------------------------------------------------------------------


def _payload(frame: Frame) -> bytes:
    t = frame.TYPE
    w = Writer()
    if t == HELLO:
        w.u32(frame.protocol).str(frame.python_version).str(frame.cloudpickle_version)
    elif t == INIT:
        w.bytes(frame.definition).u32(frame.max_inputs)
    elif t == READY:
        w.u32(frame.max_inputs)
    elif t == INPUTS:
        w.u32(len(frame.items))
        parts = w._parts
        for item in frame.items:
            parts.append(_INPUT_HEAD.pack(item.id, len(item.args)))
            parts.append(item.args)
    elif t == OUTPUTS:
        w.u32(len(frame.items))
        parts = w._parts
        for out in frame.items:
            parts.append(_OUTPUT_HEAD.pack(out.id, out.status, len(out.data)))
            parts.append(out.data)
            w.str(out.error)
    elif t == CANCEL:
        w.u64(frame.input_id)
    elif t == CALL:
        w.u64(frame.request_id).str(frame.method).bytes(frame.body)
    elif t == REPLY:
        w.u64(frame.request_id).u8(frame.status).bytes(frame.body).str(frame.error)
    elif t == SHUTDOWN:
        pass
    elif t == FATAL:
        w.str(frame.error)
    else:  # pragma: no cover - a bug in the caller
        raise TypeError(f"not a guest frame: {frame!r}")
    return w.getvalue()


def encode(frame: Frame) -> bytes:
    """The whole frame, header included. Does not check the payload cap (see
    :func:`output_record_bytes` for sizing OUTPUTS batches)."""
    payload = _payload(frame)
    return _HEADER.pack(len(payload) + 1, frame.TYPE) + payload


def output_record_bytes(out: Output) -> int:
    """How many payload bytes ``out`` takes in an OUTPUTS frame."""
    return _MIN_OUTPUT_BYTES + len(out.data) + len(encode_text(out.error))


def _unknown_type(t: int) -> ProtocolError:
    return ProtocolError(f"guest frame type {t} is unknown (known: 1 HELLO .. 10 FATAL)")


def decode_payload(t: int, payload) -> Frame:
    """Decodes one payload of type ``t``; strict (see the module docstring)."""
    if t not in TYPE_NAMES:
        raise _unknown_type(t)
    r = Reader(payload)
    if t == HELLO:
        f = Hello(r.u32("protocol"), r.str("python_version"), r.str("cloudpickle_version"))
    elif t == INIT:
        f = Init(r.bytes("definition"), r.u32("max_inputs"))
    elif t == READY:
        f = Ready(r.u32("max_inputs"))
    elif t == INPUTS:
        n = r.count(_MIN_INPUT_BYTES, "count")
        items = []
        for _ in range(n):
            items.append(Input(r.u64("input_id"), r.bytes("args")))
        f = Inputs(items)
    elif t == OUTPUTS:
        n = r.count(_MIN_OUTPUT_BYTES, "count")
        items = []
        for _ in range(n):
            input_id = r.u64("input_id")
            status = r.u8("status")
            if status > CANCELLED:
                raise ProtocolError(
                    f"guest output status {status} is not one of 0 (success) .. 4 (cancelled)"
                )
            items.append(Output(input_id, status, r.bytes("data"), r.str("error")))
        f = Outputs(items)
    elif t == CANCEL:
        f = Cancel(r.u64("input_id"))
    elif t == CALL:
        f = Call(r.u64("request_id"), r.str("method"), r.bytes("body"))
    elif t == REPLY:
        f = Reply(r.u64("request_id"), r.u8("status"), r.bytes("body"), r.str("error"))
    elif t == SHUTDOWN:
        f = Shutdown()
    else:
        f = Fatal(r.str("error"))
    r.finish(f"{TYPE_NAMES[t]} payload")
    return f


class FrameDecoder:
    """Splits a byte stream into frames: ``feed()`` what arrived, then ``next()`` until it returns
    None. An oversized length or unknown type raises as soon as the 5 header bytes are there. After
    an error the decoder is poisoned and raises the same error again."""

    def __init__(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._buf = bytearray()
        self._pos = 0
        self._error: Optional[ProtocolError] = None

    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data) -> None:
        if self._error is not None:
            return
        if self._pos and (self._pos == len(self._buf) or self._pos >= len(self._buf) // 2):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> Optional[Frame]:
        if self._error is not None:
            raise self._error
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_BYTES:
            return None
        length, t = _HEADER.unpack_from(buf, pos)
        try:
            if length == 0:
                raise ProtocolError(
                    "guest frame has length 0 (a frame holds at least its type byte)"
                )
            if length - 1 > self.max_payload_bytes:
                raise ProtocolError(
                    f"guest frame of {length - 1} bytes exceeds the "
                    f"{self.max_payload_bytes}-byte limit"
                )
            if t not in TYPE_NAMES:
                raise _unknown_type(t)
            end = pos + HEADER_BYTES + length - 1
            if len(buf) < end:
                return None
            # A copy, so no view of the buffer outlives this call (a bytearray with exported
            # views cannot grow).
            view = memoryview(buf)
            payload = view[pos + HEADER_BYTES : end].tobytes()
            view.release()
            frame = decode_payload(t, payload)
        except ProtocolError as e:
            self._error = e
            raise
        self._pos = end
        if end == len(buf):
            buf.clear()
            self._pos = 0
        return frame
