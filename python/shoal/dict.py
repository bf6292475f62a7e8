"""``shoal.Dict``: a durable, distributed key-value map (Modal's ``Dict``).

    d = shoal.Dict.from_name("cache", create_if_missing=True)
    d["model"] = {"version": 3}        # returns once durable
    d.put("lock", "me", skip_if_exists=True)   # False when the key was there already
    d.update({"a": 1}, b=2)
    value = d.get("a", default=0)
    "a" in d, d.contains("a"), d.len()
    for k, v in d.items(): ...         # keys(), values() too; paged from the server

    with shoal.Dict.ephemeral() as d:   # deleted when the block ends
        ...

Keys and values are cloudpickled, so any picklable key works. Two keys are the same key when
their pickles are byte-identical: ``1``, ``1.0`` and ``True`` are three different keys here (a
Python dict treats them as one), and objects whose pickle is not deterministic (sets of strings
across processes with different hash seeds, for example) make poor keys. Strings, numbers, bytes
and tuples of them are safe. A key may be at most 64 KiB pickled and a value 16 MiB.

Every write is acknowledged once durable; operations on one key apply in the order they reach
shoald. Iteration (``keys``/``values``/``items``) walks the entries in key-byte order in pages,
and sees writes made meanwhile or not. Every method has an ``.aio`` twin.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Tuple

from . import _aio
from ._data_object import _DataObject, dumps, loads

_PAGE = 500
_MISSING = object()


class Dict(_DataObject):
    """A distributed dict. Create one with :meth:`from_name` or :meth:`ephemeral`."""

    _kind = "dict"

    @_aio.method
    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent."""
        found, value = self._transport().dict_get(self._resolve(), dumps(key, "a dict key"))
        return loads(value, "a dict value") if found else default

    @_aio.method
    def contains(self, key: Any) -> bool:
        return self._transport().dict_contains(self._resolve(), dumps(key, "a dict key"))

    @_aio.method
    def len(self) -> int:  # noqa: A003
        """The number of entries."""
        return self._transport().dict_len(self._resolve())

    @_aio.method
    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        """Sets ``key`` to ``value``; returns once durable. With ``skip_if_exists`` an existing
        key is left alone and False is returned (an atomic "set if absent")."""
        return self._transport().dict_put(self._resolve(), dumps(key, "a dict key"),
                                          dumps(value, "a dict value"), skip_if_exists)

    @_aio.method
    def update(self, other: Optional[Mapping[Any, Any]] = None, /, **kwargs: Any) -> None:
        """Like ``dict.update``: every entry is written at once, all or nothing."""
        entries = []
        if other is not None:
            pairs = other.items() if hasattr(other, "items") else other
            for k, v in pairs:
                entries.append((dumps(k, "a dict key"), dumps(v, "a dict value")))
        for k, v in kwargs.items():
            entries.append((dumps(k, "a dict key"), dumps(v, "a dict value")))
        if entries:
            self._transport().dict_update(self._resolve(), entries)

    @_aio.method
    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Removes ``key`` and returns its value; ``KeyError`` when absent (unless ``default``
        is given)."""
        found, value = self._transport().dict_pop(self._resolve(), dumps(key, "a dict key"))
        if found:
            return loads(value, "a dict value")
        if default is not _MISSING:
            return default
        raise KeyError(key)

    @_aio.method
    def clear(self) -> None:
        """Removes every entry."""
        self._transport().dict_clear(self._resolve())

    def _scan(self, with_values: bool) -> Iterator[Tuple[bytes, bytes]]:
        name = self._resolve()
        transport = self._transport()
        cursor = b""
        while True:
            entries, cursor, done = transport.dict_scan(name, cursor, _PAGE, with_values)
            yield from entries
            if done or not entries:
                return

    @_aio.method(iterator=True)
    def keys(self) -> Iterator[Any]:
        for k, _ in self._scan(False):
            yield loads(k, "a dict key")

    @_aio.method(iterator=True)
    def values(self) -> Iterator[Any]:
        for _, v in self._scan(True):
            yield loads(v, "a dict value")

    @_aio.method(iterator=True)
    def items(self) -> Iterator[Tuple[Any, Any]]:
        for k, v in self._scan(True):
            yield loads(k, "a dict key"), loads(v, "a dict value")

    # --- the mapping protocol -----------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        found, value = self._transport().dict_get(self._resolve(), dumps(key, "a dict key"))
        if not found:
            raise KeyError(key)
        return loads(value, "a dict value")

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.pop(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)
