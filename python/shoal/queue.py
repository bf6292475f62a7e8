"""``shoal.Queue``: a durable, distributed FIFO queue with named partitions (Modal's ``Queue``).

    q = shoal.Queue.from_name("jobs", create_if_missing=True)
    q.put({"id": 1})                  # returns once the item is on disk in shoald
    q.put_many([1, 2, 3], partition="batch-7", partition_ttl=3600)
    item = q.get(timeout=10)          # raises queue.Empty after 10 s without an item
    items = q.get_many(100, block=False)

    with shoal.Queue.ephemeral() as q:   # deleted when the block ends
        f.remote(q)                       # a Queue passed to a function refers to the same queue

Semantics (docs/queues.md):
- Items are cloudpickled; each may be at most 1 MiB pickled, and a partition holds at most
  100,000 items. ``put`` on a full partition waits for room (``block=True``, up to ``timeout``) or
  raises ``queue.Full``.
- A put is acknowledged only once durable; a get removes its items durably before it returns, so
  after a crash nothing acknowledged is lost and nothing delivered comes back.
- Blocking gets are served first come, first served, without polling.
- Partitions are independent FIFOs. ``partition=None`` is the default partition. A partition is
  cleared ``partition_ttl`` seconds (default 24 h) after the last put into it.
- Every blocking method has an ``.aio`` twin: ``await q.get.aio()``.
"""

from __future__ import annotations

import queue as _stdlib_queue
import time
from typing import Any, Iterator, List, Optional

from . import _aio
from ._data_object import _DataObject, dumps, loads
from .exception import InvalidError, ResourceExhaustedError

#: The partition TTL when none is given (Modal's default).
DEFAULT_PARTITION_TTL_S = 24 * 3600
#: A blocking get asks the server to wait at most this long per request, then asks again.
_BLOCK_CHUNK_S = 60.0
#: Backoff while a full partition makes ``put(block=True)`` wait.
_FULL_BACKOFF_S = (0.05, 1.0)
#: Items per page of ``iterate``.
_PAGE = 100


def _partition_key(partition: Optional[str]) -> str:
    if partition is None:
        return ""
    if not isinstance(partition, str) or not partition:
        raise InvalidError(f"a partition key must be a non-empty string (or None), not {partition!r}")
    return partition


def _ttl_ms(partition_ttl: Optional[float]) -> int:
    if partition_ttl is None:
        return 0
    if partition_ttl <= 0:
        raise InvalidError(f"partition_ttl must be positive seconds, not {partition_ttl!r}")
    return max(1, int(partition_ttl * 1000))


class Queue(_DataObject):
    """A distributed FIFO queue. Create one with :meth:`from_name` or :meth:`ephemeral`."""

    _kind = "queue"

    # --- put ----------------------------------------------------------------------------------

    @_aio.method
    def put(self, v: Any, block: bool = True, timeout: Optional[float] = None, *,
            partition: Optional[str] = None, partition_ttl: int = DEFAULT_PARTITION_TTL_S) -> None:
        """Adds ``v`` at the tail; returns once it is durable. On a full partition it waits for
        room (up to ``timeout`` seconds) when ``block``, else raises ``queue.Full``."""
        self._put([v], block, timeout, partition, partition_ttl)

    @_aio.method
    def put_many(self, vs: List[Any], block: bool = True, timeout: Optional[float] = None, *,
                 partition: Optional[str] = None, partition_ttl: int = DEFAULT_PARTITION_TTL_S) -> None:
        """Adds every item of ``vs`` in order, all or nothing; returns once they are durable."""
        vs = list(vs)
        if not vs:
            return
        self._put(vs, block, timeout, partition, partition_ttl)

    def _put(self, values: List[Any], block: bool, timeout: Optional[float],
             partition: Optional[str], partition_ttl: Optional[float]) -> None:
        key = _partition_key(partition)
        items = [dumps(v, "a queue item") for v in values]
        ttl_ms = _ttl_ms(partition_ttl)
        name = self._resolve()
        transport = self._transport()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        delay = _FULL_BACKOFF_S[0]
        while True:
            try:
                transport.queue_put(name, key, items, ttl_ms)
                return
            except ResourceExhaustedError as e:
                # The partition is full (the message states the limit).
                if not block:
                    raise _stdlib_queue.Full(str(e)) from None
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise _stdlib_queue.Full(str(e)) from None
                sleep = delay if deadline is None else min(delay, deadline - now)
                time.sleep(sleep)
                delay = min(delay * 2, _FULL_BACKOFF_S[1])

    # --- get ----------------------------------------------------------------------------------

    @_aio.method
    def get(self, block: bool = True, timeout: Optional[float] = None, *,
            partition: Optional[str] = None) -> Any:
        """Removes and returns the item at the head. With ``block`` (the default) it waits for
        one, forever or up to ``timeout`` seconds, then raises ``queue.Empty``. Without ``block``
        it returns ``None`` at once when the partition is empty (Modal's behaviour)."""
        values = self._get(1, block, timeout, partition)
        if not values:
            return None
        return values[0]

    @_aio.method
    def get_many(self, n_values: int, block: bool = True, timeout: Optional[float] = None, *,
                 partition: Optional[str] = None) -> List[Any]:
        """Removes and returns up to ``n_values`` items from the head (fewer when fewer are
        there). With ``block`` it waits for at least one, forever or up to ``timeout`` seconds,
        then raises ``queue.Empty``; without, it returns ``[]`` at once when empty."""
        if n_values <= 0:
            raise InvalidError(f"n_values must be positive, not {n_values!r}")
        return self._get(int(n_values), block, timeout, partition)

    def _get(self, n: int, block: bool, timeout: Optional[float],
             partition: Optional[str]) -> List[Any]:
        key = _partition_key(partition)
        name = self._resolve()
        transport = self._transport()
        if not block:
            raw = transport.queue_get(name, key, n, 0)
            return [loads(b, "a queue item") for b in raw]
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if deadline is None:
                wait_s = _BLOCK_CHUNK_S
            else:
                wait_s = min(_BLOCK_CHUNK_S, max(0.0, deadline - time.monotonic()))
            raw = transport.queue_get(name, key, n, int(wait_s * 1000))
            if raw:
                return [loads(b, "a queue item") for b in raw]
            if deadline is not None and time.monotonic() >= deadline:
                raise _stdlib_queue.Empty()

    # --- inspection ---------------------------------------------------------------------------

    @_aio.method
    def len(self, *, partition: Optional[str] = None, total: bool = False) -> int:  # noqa: A003
        """Items in ``partition`` (default: the default partition), or in every partition when
        ``total``."""
        if partition is not None and total:
            raise InvalidError("pass either partition= or total=True, not both")
        return self._transport().queue_len(self._resolve(), _partition_key(partition), total)

    @_aio.method
    def clear(self, *, partition: Optional[str] = None, all: bool = False) -> None:  # noqa: A002
        """Removes every item of ``partition`` (default: the default partition), or of every
        partition when ``all``."""
        if partition is not None and all:
            raise InvalidError("pass either partition= or all=True, not both")
        self._transport().queue_clear(self._resolve(), _partition_key(partition), all)

    @_aio.method(iterator=True)
    def iterate(self, *, partition: Optional[str] = None,
                item_poll_timeout: float = 0.0) -> Iterator[Any]:
        """Yields the items of a partition in order without removing them. At the end it waits up
        to ``item_poll_timeout`` seconds for more (without polling) and stops when none come."""
        key = _partition_key(partition)
        name = self._resolve()
        transport = self._transport()
        cursor = 0
        while True:
            items, cursor = transport.queue_peek(name, key, cursor, _PAGE, 0)
            if not items and item_poll_timeout > 0:
                items, cursor = transport.queue_peek(name, key, cursor, _PAGE,
                                                     int(item_poll_timeout * 1000))
            if not items:
                return
            for _, data in items:
                yield loads(data, "a queue item")
