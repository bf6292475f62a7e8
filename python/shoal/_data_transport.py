"""How ``shoal.Queue`` and ``shoal.Dict`` reach the queue broker: one interface, two
implementations (like :mod:`shoal._transport` for functions, which has no data methods yet).

- :class:`NativeData` on a user's machine: the ``Queues`` capability of the session
  (``schema/queues.capnp``) through the process-wide connection of :func:`shoal._transport.host`.
- :class:`GuestData` inside a container: the ``queue.*`` / ``dict.*`` nested calls of
  docs/guest-protocol.md ("Queues and dicts") over the guest channel.

Payloads are bytes here: the objects pickle keys and values, the transports move bytes. Every
method raises :mod:`shoal.exception` errors (``NotFoundError``, ``ResourceExhaustedError``...).
Blocking methods release the GIL (native) or block only the calling thread (guest).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Tuple

from . import _transport
from .exception import InvalidError

KINDS = ("queue", "dict")


class Handle:
    """Ownership of an ephemeral object: ``close()`` deletes it (idempotent)."""

    name = ""

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class DataTransport:
    """What :class:`shoal.Queue` and :class:`shoal.Dict` need."""

    #: "native" or "guest".
    kind = ""

    def environment(self) -> str:
        """The environment this transport's objects live in (the session's / the container's)."""
        raise NotImplementedError

    # objects
    def lookup(self, kind: str, name: str, create_if_missing: bool) -> Dict[str, Any]:
        raise NotImplementedError

    def create(self, kind: str, name: str) -> Dict[str, Any]:
        raise InvalidError(f"creating a {kind} by name is not available here; use from_name(..., create_if_missing=True)")

    def ephemeral(self, kind: str) -> Handle:
        raise NotImplementedError

    def delete(self, kind: str, name: str) -> None:
        raise NotImplementedError

    def list(self, kind: str) -> List[Dict[str, Any]]:
        raise InvalidError(f"listing {kind}s is not available inside a container")

    # queues
    def queue_put(self, name: str, partition: str, items: List[bytes], ttl_ms: int) -> None:
        raise NotImplementedError

    def queue_get(self, name: str, partition: str, n: int, block_ms: int) -> List[bytes]:
        raise NotImplementedError

    def queue_len(self, name: str, partition: str, total: bool) -> int:
        raise NotImplementedError

    def queue_clear(self, name: str, partition: str, all: bool) -> None:  # noqa: A002
        raise NotImplementedError

    def queue_peek(self, name: str, partition: str, cursor: int, limit: int,
                   block_ms: int) -> Tuple[List[Tuple[int, bytes]], int]:
        raise NotImplementedError

    # dicts
    def dict_get(self, name: str, key: bytes) -> Tuple[bool, bytes]:
        raise NotImplementedError

    def dict_put(self, name: str, key: bytes, value: bytes, skip_if_exists: bool) -> bool:
        raise NotImplementedError

    def dict_update(self, name: str, entries: List[Tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def dict_pop(self, name: str, key: bytes) -> Tuple[bool, bytes]:
        raise NotImplementedError

    def dict_contains(self, name: str, key: bytes) -> bool:
        raise NotImplementedError

    def dict_len(self, name: str) -> int:
        raise NotImplementedError

    def dict_scan(self, name: str, cursor: bytes, limit: int,
                  with_values: bool) -> Tuple[List[Tuple[bytes, bytes]], bytes, bool]:
        raise NotImplementedError

    def dict_clear(self, name: str) -> None:
        raise NotImplementedError


# --- native ---------------------------------------------------------------------------------------


class _NativeHandle(Handle):
    def __init__(self, native: Any, connection: Any):
        self._native = native
        self._connection = connection
        self.name = str(native.name)

    def close(self) -> None:
        native, self._native = self._native, None
        if native is not None:
            try:
                self._connection._guard("deleting an ephemeral object", native.close)
            except Exception:  # noqa: BLE001 - the connection is gone: the server dropped it too
                pass


class NativeData(DataTransport):
    """Over a :class:`shoal._client.Connection` (errors mapped by its ``_call``)."""

    kind = "native"

    def __init__(self, connection: Any):
        self.connection = connection
        self._environment: Optional[str] = None

    def _call(self, what: str, fn) -> Any:
        return self.connection._call(what, fn)

    def environment(self) -> str:
        if self._environment is None:
            self._environment = str(self.connection.info().get("environment") or "main")
        return self._environment

    def lookup(self, kind, name, create_if_missing):
        return dict(self._call(f"looking up the {kind} {name!r}",
                               lambda c: c.lookup_object(kind, name, bool(create_if_missing))))

    def create(self, kind, name):
        return dict(self._call(f"creating the {kind} {name!r}", lambda c: c.create_object(kind, name)))

    def ephemeral(self, kind):
        native = self._call(f"creating an ephemeral {kind}", lambda c: c.create_ephemeral(kind))
        return _NativeHandle(native, self.connection)

    def delete(self, kind, name):
        self._call(f"deleting the {kind} {name!r}", lambda c: c.delete_object(kind, name))

    def list(self, kind):
        return [dict(o) for o in self._call(f"listing {kind}s", lambda c: c.list_objects(kind))]

    def queue_put(self, name, partition, items, ttl_ms):
        self._call(f"putting into the queue {name!r}",
                   lambda c: c.queue_put(name, partition, list(items), int(ttl_ms)))

    def queue_get(self, name, partition, n, block_ms):
        return list(self._call(f"getting from the queue {name!r}",
                               lambda c: c.queue_get(name, partition, int(n), int(block_ms))))

    def queue_len(self, name, partition, total):
        return int(self._call(f"counting the queue {name!r}", lambda c: c.queue_len(name, partition, bool(total))))

    def queue_clear(self, name, partition, all):  # noqa: A002
        self._call(f"clearing the queue {name!r}", lambda c: c.queue_clear(name, partition, bool(all)))

    def queue_peek(self, name, partition, cursor, limit, block_ms):
        items, next_cursor = self._call(
            f"reading the queue {name!r}",
            lambda c: c.queue_peek(name, partition, int(cursor), int(limit), int(block_ms)),
        )
        return [(int(s), bytes(d)) for s, d in items], int(next_cursor)

    def dict_get(self, name, key):
        found, value = self._call(f"reading the dict {name!r}", lambda c: c.dict_get(name, key))
        return bool(found), bytes(value)

    def dict_put(self, name, key, value, skip_if_exists):
        return bool(self._call(f"writing to the dict {name!r}",
                               lambda c: c.dict_put(name, key, value, bool(skip_if_exists))))

    def dict_update(self, name, entries):
        self._call(f"updating the dict {name!r}", lambda c: c.dict_update(name, list(entries)))

    def dict_pop(self, name, key):
        found, value = self._call(f"popping from the dict {name!r}", lambda c: c.dict_pop(name, key))
        return bool(found), bytes(value)

    def dict_contains(self, name, key):
        return bool(self._call(f"reading the dict {name!r}", lambda c: c.dict_contains(name, key)))

    def dict_len(self, name):
        return int(self._call(f"counting the dict {name!r}", lambda c: c.dict_len(name)))

    def dict_scan(self, name, cursor, limit, with_values):
        entries, next_cursor, done = self._call(
            f"listing the dict {name!r}",
            lambda c: c.dict_scan(name, cursor, int(limit), bool(with_values)),
        )
        return [(bytes(k), bytes(v)) for k, v in entries], bytes(next_cursor), bool(done)

    def dict_clear(self, name):
        self._call(f"clearing the dict {name!r}", lambda c: c.dict_clear(name))


# --- guest ----------------------------------------------------------------------------------------


def _protocol():
    from ._guest import protocol  # noqa: PLC0415 - only inside containers

    return protocol


def _guest_call(method: str, body: bytes) -> Any:
    """One nested call; returns a reader over the REPLY body."""
    from ._guest import client  # noqa: PLC0415

    if not client.is_active():
        raise InvalidError(
            f"{_transport.GUEST_SOCKET_ENV} is set but this process is not the container's guest "
            "runtime: queues and dicts work only from the function's own process"
        )
    return _protocol().Reader(client.call(method, body))


class _GuestHandle(Handle):
    def __init__(self, transport: "GuestData", kind: str, name: str):
        self._transport = transport
        self._kind = kind
        self.name = name
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._transport.delete(self._kind, self.name)
        except Exception:  # noqa: BLE001 - deleted already, or the container ends (it goes then)
            pass


class GuestData(DataTransport):
    """Nested calls over the guest channel; bodies as in docs/guest-protocol.md."""

    kind = "guest"

    def _w(self):
        return _protocol().Writer()

    def environment(self) -> str:
        return os.environ.get("SHOAL_ENVIRONMENT", "") or "main"

    def lookup(self, kind, name, create_if_missing):
        r = _guest_call(f"{kind}.lookup", self._w().str(name).u8(1 if create_if_missing else 0).getvalue())
        r.finish(f"{kind}.lookup reply")
        return {"name": name, "kind": kind, "environment": self.environment()}

    def ephemeral(self, kind):
        r = _guest_call(f"{kind}.ephemeral", b"")
        name = r.str("name")
        r.finish(f"{kind}.ephemeral reply")
        return _GuestHandle(self, kind, name)

    def delete(self, kind, name):
        _guest_call(f"{kind}.delete", self._w().str(name).getvalue()).finish(f"{kind}.delete reply")

    def queue_put(self, name, partition, items, ttl_ms):
        w = self._w().str(name).str(partition).u64(int(ttl_ms)).u32(len(items))
        for item in items:
            w.bytes(item)
        _guest_call("queue.put", w.getvalue()).finish("queue.put reply")

    def queue_get(self, name, partition, n, block_ms):
        r = _guest_call("queue.get", self._w().str(name).str(partition).u32(int(n)).u64(int(block_ms)).getvalue())
        count = r.count(4, "count")
        items = [r.bytes("item") for _ in range(count)]
        r.finish("queue.get reply")
        return items

    def queue_len(self, name, partition, total):
        r = _guest_call("queue.len", self._w().str(name).str(partition).u8(1 if total else 0).getvalue())
        n = r.u64("count")
        r.finish("queue.len reply")
        return n

    def queue_clear(self, name, partition, all):  # noqa: A002
        body = self._w().str(name).str(partition).u8(1 if all else 0).getvalue()
        _guest_call("queue.clear", body).finish("queue.clear reply")

    def queue_peek(self, name, partition, cursor, limit, block_ms):
        body = self._w().str(name).str(partition).u64(int(cursor)).u32(int(limit)).u64(int(block_ms)).getvalue()
        r = _guest_call("queue.peek", body)
        count = r.count(12, "count")
        items = []
        for _ in range(count):
            seq = r.u64("seq")
            items.append((seq, r.bytes("item")))
        next_cursor = r.u64("next_cursor")
        r.finish("queue.peek reply")
        return items, next_cursor

    def _found_value(self, method, name, key):
        r = _guest_call(method, self._w().str(name).bytes(key).getvalue())
        found = r.u8("found") != 0
        value = r.bytes("value")
        r.finish(f"{method} reply")
        return found, value

    def dict_get(self, name, key):
        return self._found_value("dict.get", name, key)

    def dict_pop(self, name, key):
        return self._found_value("dict.pop", name, key)

    def dict_put(self, name, key, value, skip_if_exists):
        body = self._w().str(name).bytes(key).bytes(value).u8(1 if skip_if_exists else 0).getvalue()
        r = _guest_call("dict.put", body)
        written = r.u8("written") != 0
        r.finish("dict.put reply")
        return written

    def dict_update(self, name, entries):
        w = self._w().str(name).u32(len(entries))
        for k, v in entries:
            w.bytes(k).bytes(v)
        _guest_call("dict.update", w.getvalue()).finish("dict.update reply")

    def dict_contains(self, name, key):
        r = _guest_call("dict.contains", self._w().str(name).bytes(key).getvalue())
        found = r.u8("found") != 0
        r.finish("dict.contains reply")
        return found

    def dict_len(self, name):
        r = _guest_call("dict.len", self._w().str(name).getvalue())
        n = r.u64("count")
        r.finish("dict.len reply")
        return n

    def dict_scan(self, name, cursor, limit, with_values):
        body = self._w().str(name).bytes(cursor).u32(int(limit)).u8(1 if with_values else 0).getvalue()
        r = _guest_call("dict.scan", body)
        count = r.count(8, "count")
        entries = []
        for _ in range(count):
            k = r.bytes("key")
            entries.append((k, r.bytes("value")))
        next_cursor = r.bytes("next_cursor")
        done = r.u8("done") != 0
        r.finish("dict.scan reply")
        return entries, next_cursor, done

    def dict_clear(self, name):
        _guest_call("dict.clear", self._w().str(name).getvalue()).finish("dict.clear reply")


# --- selection ------------------------------------------------------------------------------------

_lock = threading.Lock()
_native: Optional[NativeData] = None
_guest: Optional[GuestData] = None


def still_current(transport: DataTransport) -> bool:
    """Whether ``transport`` is what :func:`current` would return now (no lock: a cheap check
    for callers that cache it)."""
    if isinstance(transport, GuestData):
        return transport is _guest
    return transport is _native and getattr(_transport._host, "connection", None) is transport.connection


def current() -> DataTransport:
    """The guest channel inside a container, else the process-wide connection to shoald."""
    global _native, _guest
    if _transport.in_container():
        with _lock:
            if _guest is None:
                _guest = GuestData()
            return _guest
    host = _transport.host()
    connection = getattr(host, "connection", None)
    if connection is None:
        raise InvalidError("the current shoal transport has no connection to shoald for queues and dicts")
    with _lock:
        if _native is None or _native.connection is not connection:
            _native = NativeData(connection)
        return _native
