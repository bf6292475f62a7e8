"""How the SDK reaches the functions service: one interface, two implementations.

- :class:`NativeTransport` on a user's machine: wraps a :class:`shoal._client.Connection` (the
  ``shoal._native`` extension, Cap'n Proto to shoald).
- :class:`GuestTransport` inside a container: nested calls over the guest channel
  (``shoal._guest.client``, docs/guest-protocol.md "Nested calls"). Chosen when the environment has
  ``SHOAL_GUEST_SOCKET``.

``Function`` and ``FunctionCall`` are written once against :class:`Transport`; :func:`current`
picks the implementation. Both speak in :class:`Output` records whose ``status`` is one of
:data:`STATUSES` (the names of ``OutputStatus`` in ``schema/functions.capnp``).

Threading: every method may be called from any thread (the native client serialises onto its own
kj thread; the guest client matches replies to requests). Blocking methods release the GIL.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import os
import queue
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .exception import InternalError, InvalidError, TimeoutError

#: ``OutputStatus`` of ``schema/functions.capnp``, by ordinal.
STATUSES = (
    "success",
    "failure",
    "timeout",
    "cancelled",
    "internal_error",
    "generator_item",
    "generator_done",
)
#: A status after which no more outputs come for that input.
FINAL_STATUSES = frozenset(STATUSES) - {"generator_item"}

GUEST_SOCKET_ENV = "SHOAL_GUEST_SOCKET"


@dataclasses.dataclass(frozen=True)
class Output:
    """One output of a call: the result (or one generator item) of the input at ``index``."""

    index: int
    status: str
    data: bytes = b""
    error: str = ""
    attempts: int = 0

    @property
    def final(self) -> bool:
        return self.status != "generator_item"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Output":
        status = d.get("status", "internal_error")
        if isinstance(status, int):
            status = STATUSES[status] if 0 <= status < len(STATUSES) else "internal_error"
        return cls(
            index=int(d.get("index", 0)),
            status=str(status),
            data=bytes(d.get("data") or b""),
            error=str(d.get("error") or ""),
            attempts=int(d.get("attempts") or 0),
        )


@dataclasses.dataclass(frozen=True)
class FunctionRef:
    """A function registered in shoald. ``definition`` is None when the transport cannot fetch it
    (the guest's ``function.lookup`` returns only flags)."""

    function_id: str
    name: str
    app_name: str
    is_class: bool = False
    is_generator: bool = False
    definition: Optional[bytes] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "FunctionRef":
        definition = d.get("definition")
        return cls(
            function_id=str(d["function_id"]),
            name=str(d.get("name", "")),
            app_name=str(d.get("app_name", "")),
            is_class=bool(d.get("is_class", False)),
            is_generator=bool(d.get("is_generator", False)),
            definition=bytes(definition) if definition else None,
        )


class MapStream:
    """The inputs and outputs of one ``map`` call (pull-based).

    ``push`` may block (flow control); ``close`` says no more inputs follow; ``poll`` returns the
    outputs received so far (waiting up to ``timeout_s`` for at least one) and whether every input
    has its final output; ``cancel`` abandons the call."""

    call_id: str = ""

    def push(self, items: Sequence[Tuple[int, bytes]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def poll(self, timeout_s: float) -> Tuple[List[Output], bool]:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


class Transport:
    """What ``Function`` and ``FunctionCall`` need. Errors are :mod:`shoal.exception` errors."""

    #: "native" or "guest".
    kind = ""

    def lookup(self, app_name: str, name: str) -> FunctionRef:
        raise NotImplementedError

    def call(self, function_id: str, args: bytes) -> Output:
        """One input; blocks until its final output."""
        raise NotImplementedError

    def map(self, function_id: str) -> MapStream:
        raise NotImplementedError

    def spawn(self, function_id: str, args: bytes) -> str:
        """One input, durable; returns the call id."""
        raise NotImplementedError

    def get_outputs(self, call_id: str, timeout_s: float) -> Tuple[List[Output], bool]:
        """The outputs of a call, waiting up to ``timeout_s`` (0: just look) for it to finish."""
        raise NotImplementedError

    def cancel(self, call_id: str) -> None:
        raise NotImplementedError

    def derive(self, function_id: str, name: str, overrides: Dict[str, Any]) -> FunctionRef:
        """A function derived from a registered one (same app, same code) with some spec fields
        replaced: ``definition`` for a class instance with constructor arguments, options for
        ``with_options``. The native transport asks shoald (``Functions.derive``); the guest channel
        has no such call yet (docs/sdk.md, "Limitations")."""
        raise InvalidError(_DERIVE_UNSUPPORTED.format(name=name))


_DERIVE_UNSUPPORTED = (
    "{name} is not registered in the app: inside a container, class instances with new constructor "
    "arguments and with_options() variants cannot be added to the app yet; create them outside "
    "(for example at module level, before app.run() or `shoal deploy`)"
)


# --- native ---------------------------------------------------------------------------------------


class _NativeMap(MapStream):
    def __init__(self, transport: "NativeTransport", remote: Any):
        self._transport = transport
        self._remote = remote
        self.call_id = str(getattr(remote, "call_id", "") or "")

    def push(self, items: Sequence[Tuple[int, bytes]]) -> None:
        self._remote.push(list(items))

    def close(self) -> None:
        self._remote.close()

    def poll(self, timeout_s: float) -> Tuple[List[Output], bool]:
        outputs, done = self._remote.poll(float(timeout_s))
        return [Output.from_dict(o) for o in outputs], bool(done)

    def cancel(self) -> None:
        if self.call_id:
            self._transport.cancel(self.call_id)


class NativeTransport(Transport):
    """Over a :class:`shoal._client.Connection` (which maps native errors onto
    :mod:`shoal.exception`). Also the door to the host-only operations (apps, code upload), which
    callers reach through :attr:`connection`."""

    kind = "native"

    def __init__(self, connection: Any):
        self.connection = connection

    def lookup(self, app_name: str, name: str) -> FunctionRef:
        return FunctionRef.from_dict(self.connection.lookup(app_name, name))

    def call(self, function_id: str, args: bytes) -> Output:
        return Output.from_dict(self.connection.call_function(function_id, args))

    def map(self, function_id: str) -> MapStream:
        return _NativeMap(self, self.connection.map(function_id))

    def spawn(self, function_id: str, args: bytes) -> str:
        return str(self.connection.spawn(function_id, args))

    def get_outputs(self, call_id: str, timeout_s: float) -> Tuple[List[Output], bool]:
        outputs, done = self.connection.get_outputs(call_id, max(0, int(timeout_s * 1000)))
        return [Output.from_dict(o) for o in outputs], bool(done)

    def cancel(self, call_id: str) -> None:
        self.connection.cancel(call_id)

    def derive(self, function_id: str, name: str, overrides: Dict[str, Any]) -> FunctionRef:
        if not self.connection.has("derive_function"):
            return super().derive(function_id, name, overrides)
        return FunctionRef.from_dict(
            self.connection.derive_function(function_id, name, dict(overrides))
        )

    def close(self) -> None:
        self.connection.close()


# --- guest ----------------------------------------------------------------------------------------

#: ``flags`` of a ``function.lookup`` REPLY.
FLAG_IS_CLASS = 1
FLAG_IS_GENERATOR = 2
#: How many nested ``function.call``s one emulated map keeps in flight.
GUEST_MAP_CONCURRENCY = 32


def _guest_client():
    from ._guest import client  # noqa: PLC0415 - only inside containers

    if not client.is_active():
        raise InvalidError(
            f"{GUEST_SOCKET_ENV} is set but this process is not the container's guest runtime: "
            "nested calls work only from the function's own process (not from its subprocesses)"
        )
    return client


def _protocol():
    from ._guest import protocol  # noqa: PLC0415

    return protocol


def _guest_request(method: str, build) -> Any:
    """One nested call: ``build(writer)`` writes the body; returns a reader over the REPLY body."""
    protocol = _protocol()
    writer = protocol.Writer()
    build(writer)
    return protocol.Reader(_guest_client().call(method, writer.getvalue()))


def _read_output(reader: Any, index: int) -> Output:
    """An output record (docs/guest-protocol.md): ``status:u8 data:bytes error:str attempts:u32``,
    ``status`` numbered as ``OutputStatus``."""
    status = reader.u8("status")
    data = reader.bytes("data")
    error = reader.str("error")
    attempts = reader.u32("attempts")
    name = STATUSES[status] if status < len(STATUSES) else "internal_error"
    return Output(index=index, status=name, data=data, error=error, attempts=attempts)


class _GuestMap(MapStream):
    """``map`` inside a container: the guest protocol has no streaming call yet, so each input is
    one nested ``function.call``, up to :data:`GUEST_MAP_CONCURRENCY` at a time."""

    def __init__(self, transport: "GuestTransport", function_id: str):
        self._transport = transport
        self._function_id = function_id
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=GUEST_MAP_CONCURRENCY, thread_name_prefix="shoal-guest-map"
        )
        self._slots = threading.Semaphore(GUEST_MAP_CONCURRENCY * 4)
        self._lock = threading.Lock()
        self._outstanding = 0
        self._closed = False
        self._cancelled = False
        self._outputs: "queue.Queue[Optional[Output]]" = queue.Queue()

    def push(self, items: Sequence[Tuple[int, bytes]]) -> None:
        for index, args in items:
            self._slots.acquire()
            with self._lock:
                if self._cancelled:
                    self._slots.release()
                    return
                self._outstanding += 1
            self._pool.submit(self._run, index, args)

    def _run(self, index: int, args: bytes) -> None:
        try:
            if self._cancelled:
                out = Output(index, "cancelled", error="the map was cancelled")
            else:
                out = dataclasses.replace(self._transport.call(self._function_id, args), index=index)
        except BaseException as e:  # noqa: B902 - becomes this input's output
            out = Output(index, "internal_error", error=f"the nested call failed: {e}")
        self._slots.release()
        self._outputs.put(out)
        with self._lock:
            self._outstanding -= 1
            finished = self._closed and self._outstanding == 0
        if finished:
            self._outputs.put(None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            finished = self._outstanding == 0
        if finished:
            self._outputs.put(None)
        self._pool.shutdown(wait=False)

    def poll(self, timeout_s: float) -> Tuple[List[Output], bool]:
        got: List[Output] = []
        done = False
        try:
            item = self._outputs.get(timeout=max(0.0, timeout_s))
            while True:
                if item is None:
                    done = True
                    break
                got.append(item)
                item = self._outputs.get_nowait()
        except queue.Empty:
            pass
        return got, done

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True


class GuestTransport(Transport):
    """Nested calls from user code in a container, over ``shoal._guest.client.call`` with the
    bodies of docs/guest-protocol.md ("Nested calls")."""

    kind = "guest"

    def lookup(self, app_name: str, name: str) -> FunctionRef:
        r = _guest_request("function.lookup", lambda w: w.str(app_name).str(name))
        function_id = r.str("function_id")
        flags = r.u32("flags")
        definition = r.bytes("definition") if r.remaining() else b""
        r.finish("function.lookup reply")
        return FunctionRef(
            function_id=function_id,
            name=name,
            app_name=app_name,
            is_class=bool(flags & FLAG_IS_CLASS),
            is_generator=bool(flags & FLAG_IS_GENERATOR),
            definition=definition or None,
        )

    def call(self, function_id: str, args: bytes) -> Output:
        r = _guest_request("function.call", lambda w: w.str(function_id).bytes(args))
        out = _read_output(r, 0)
        r.finish("function.call reply")
        return out

    def map(self, function_id: str) -> MapStream:
        return _GuestMap(self, function_id)

    def spawn(self, function_id: str, args: bytes) -> str:
        r = _guest_request("function.spawn", lambda w: w.str(function_id).bytes(args))
        call_id = r.str("call_id")
        r.finish("function.spawn reply")
        return call_id

    def get_outputs(self, call_id: str, timeout_s: float) -> Tuple[List[Output], bool]:
        timeout_ms = max(0, int(timeout_s * 1000))
        try:
            r = _guest_request("call.get", lambda w: w.str(call_id).u64(timeout_ms))
        except TimeoutError:
            return [], False
        done = r.u8("done")
        if not done:
            r.finish("call.get reply")
            return [], False
        out = _read_output(r, 0)
        r.finish("call.get reply")
        return [out], True

    def cancel(self, call_id: str) -> None:
        try:
            _guest_request("call.cancel", lambda w: w.str(call_id))
        except InvalidError as e:
            raise InvalidError(
                f"cancelling {call_id} from inside a container is not supported by this server "
                f"yet ({e})"
            ) from None


# --- which one --------------------------------------------------------------------------------------

_lock = threading.Lock()
_host: Optional[Transport] = None
_guest: Optional[GuestTransport] = None


def in_container() -> bool:
    return bool(os.environ.get(GUEST_SOCKET_ENV))


def current() -> Transport:
    """The transport of this process: the guest channel inside a container, else the (lazily
    opened, process-wide) connection to shoald."""
    if in_container():
        return guest()
    return host()


def guest() -> GuestTransport:
    global _guest
    with _lock:
        if _guest is None:
            _guest = GuestTransport()
        return _guest


def host() -> Transport:
    """The process-wide native transport; connects (starting the embedded cluster if nothing is
    configured) on first use."""
    global _host
    with _lock:
        if _host is None:
            if in_container():
                raise InternalError("a connection to shoald was requested inside a container")
            from . import _client  # noqa: PLC0415 - loads shoal._native

            _host = NativeTransport(_client.connect())
        return _host


def set_host(transport: Optional[Transport]) -> Optional[Transport]:
    """Replaces the process-wide host transport (tests, or a caller with its own connection);
    returns the previous one without closing it."""
    global _host
    with _lock:
        previous, _host = _host, transport
    return previous


@atexit.register
def _close_host() -> None:
    transport = set_host(None)
    close = getattr(transport, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
