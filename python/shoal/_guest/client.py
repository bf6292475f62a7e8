"""Nested calls from user code running in a container (``other.remote()`` inside a function).

Each call is one CALL frame to the container's supervisor, answered by one REPLY
(docs/guest-protocol.md, "Nested calls"). :func:`call` blocks only the calling thread: the guest's
reader thread keeps reading frames and hands the REPLY over, so it works from input threads, from
``@enter`` hooks and (as :func:`acall`) from asyncio code.

Outside a container (:func:`is_active` is False) every call raises ``RuntimeError``.

Errors: a REPLY with a non-zero status raises the ``shoal.exception`` class for that ``errc``
(``NotFoundError`` for ``not_found``, ...) with ``.code`` set; a lost connection ends the container
(exit 70), so callers never see it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from typing import Callable, Dict, Optional, Tuple

from .. import exception
from . import protocol

_lock = threading.Lock()
_ids = itertools.count(1)
_pending: Dict[int, concurrent.futures.Future] = {}
_send: Optional[Callable[[protocol.Call], None]] = None


def is_active() -> bool:
    """True inside a container whose guest runtime is connected."""
    return _send is not None


def _attach(send: Callable[[protocol.Call], None]) -> None:
    """Called by the runtime once connected: ``send`` writes one CALL frame (thread-safe)."""
    global _send
    _send = send


def _deliver(reply: protocol.Reply) -> None:
    """Called by the runtime's reader thread for each REPLY."""
    with _lock:
        future = _pending.pop(reply.request_id, None)
    if future is not None and not future.done():
        future.set_result(reply)
    # A reply nobody waits for (its caller timed out) is dropped: nothing can use it.


def _start(method: str, body: bytes) -> Tuple[int, concurrent.futures.Future]:
    send = _send
    if send is None:
        raise RuntimeError("shoal._guest.client works only inside a Shoal container")
    future: concurrent.futures.Future = concurrent.futures.Future()
    with _lock:
        request_id = next(_ids)
        _pending[request_id] = future
    send(protocol.Call(request_id, method, bytes(body)))
    return request_id, future


def _forget(request_id: int) -> None:
    with _lock:
        _pending.pop(request_id, None)


def _result(method: str, reply: protocol.Reply) -> bytes:
    if reply.status == 0:
        return reply.body
    code = protocol.errc_name(reply.status)
    exc = exception.error_class(code)(reply.error or f"{method} failed with {code}")
    exc.code = code
    raise exc


def call(method: str, body: bytes, timeout: Optional[float] = None) -> bytes:
    """Sends CALL(method, body) and blocks this thread until the REPLY; returns its body.

    ``timeout`` (seconds) raises ``shoal.exception.TimeoutError`` when no REPLY came in time."""
    request_id, future = _start(method, body)
    try:
        reply = future.result(timeout)
    except concurrent.futures.TimeoutError:
        _forget(request_id)
        raise exception.TimeoutError(
            f"no reply to the nested call {method!r} within {timeout} s"
        ) from None
    return _result(method, reply)


async def acall(method: str, body: bytes) -> bytes:
    """:func:`call` for asyncio code: awaits the REPLY without blocking the event loop."""
    request_id, future = _start(method, body)
    try:
        reply = await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        _forget(request_id)
        raise
    return _result(method, reply)


# --- the methods of docs/guest-protocol.md ---------------------------------------------------------


def _output_record(body: bytes) -> Tuple[int, bytes, str]:
    r = protocol.Reader(body)
    status, data, error = r.u8("status"), r.bytes("data"), r.str("error")
    r.finish("output record")
    return status, data, error


def function_lookup(app: str, name: str) -> Tuple[str, int]:
    """``function.lookup``: ``(function_id, definition_flags)``."""
    body = protocol.Writer().str(app).str(name).getvalue()
    r = protocol.Reader(call("function.lookup", body))
    out = (r.str("function_id"), r.u32("definition_flags"))
    r.finish("function.lookup reply")
    return out


def function_call(function_id: str, args: bytes) -> Tuple[int, bytes, str]:
    """``function.call``: runs the function with an ``encode_args`` blob and waits; returns the
    output record ``(status, data, error)`` (statuses as in OUTPUTS)."""
    body = protocol.Writer().str(function_id).bytes(args).getvalue()
    return _output_record(call("function.call", body))


async def function_call_async(function_id: str, args: bytes) -> Tuple[int, bytes, str]:
    body = protocol.Writer().str(function_id).bytes(args).getvalue()
    return _output_record(await acall("function.call", body))


def function_spawn(function_id: str, args: bytes) -> str:
    """``function.spawn``: starts the function; returns the call id ("fc-...")."""
    body = protocol.Writer().str(function_id).bytes(args).getvalue()
    r = protocol.Reader(call("function.spawn", body))
    call_id = r.str("call_id")
    r.finish("function.spawn reply")
    return call_id


def call_get(call_id: str, timeout_ms: int) -> Tuple[int, bytes, str]:
    """``call.get``: the output record of a spawned call, waiting up to ``timeout_ms``."""
    body = protocol.Writer().str(call_id).u64(timeout_ms).getvalue()
    return _output_record(call("call.get", body))
