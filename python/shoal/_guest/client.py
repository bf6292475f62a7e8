"""Nested calls from user code running in a container (``other.remote()`` inside a function).

Each call is one CALL frame to the container's supervisor, answered by one REPLY
(docs/guest-protocol.md, "Nested calls"). :func:`call` blocks only the calling thread: the guest's
reader thread keeps reading frames and hands the REPLY over, so it works from input threads, from
``@enter`` hooks and (as :func:`acall`) from asyncio code.

Outside a container (:func:`is_active` is False) every call raises ``RuntimeError``.

Errors: a REPLY with a non-zero status raises the ``shoal.exception`` class for that ``errc``
(``NotFoundError`` for ``not_found``, ...) with ``.code`` set; a lost connection ends the container
(exit 70), so callers never see it.

Bodies are built and parsed with ``shoal._guest.protocol.Writer`` / ``Reader`` (the SDK's
``shoal._transport`` does it for the methods the doc lists).
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
