"""What :class:`shoal.Queue` and :class:`shoal.Dict` share: a name in an environment, lazy
hydration (``from_name`` contacts shoald on first use, as in Modal), ephemeral ownership, the 2023
constructors, pickling (an object passed to a function refers to the same server object), and
value serialization (cloudpickle)."""

from __future__ import annotations

import contextlib
import pickle
import threading
import warnings
from typing import Any, Dict, Iterator, Optional, Type, TypeVar

from . import _data_transport
from .exception import DeserializationError, InvalidError, SerializationError

T = TypeVar("T", bound="_DataObject")


def dumps(value: Any, what: str) -> bytes:
    import cloudpickle  # noqa: PLC0415 - loaded on first use, not on `import shoal`

    try:
        return cloudpickle.dumps(value)
    except Exception as e:  # noqa: BLE001 - any pickling failure
        raise SerializationError(f"cannot serialize {what} of type {type(value).__name__}: {e}") from e


def loads(data: bytes, what: str) -> Any:
    try:
        return pickle.loads(data)
    except Exception as e:  # noqa: BLE001 - any unpickling failure
        raise DeserializationError(
            f"cannot deserialize {what} ({len(data)} bytes): {e}; the writer's Python environment "
            "may have a module this one lacks"
        ) from e


class _DataObject:
    """A named queue or dict in an environment. Not created directly: use ``from_name`` or
    ``ephemeral``."""

    _kind = ""  # "queue" or "dict"

    def __init__(self, name: Optional[str], *, environment_name: Optional[str] = None,
                 create_if_missing: bool = False, _new_ephemeral: bool = False):
        self._name = name
        self._environment_name = environment_name
        self._create_if_missing = create_if_missing
        self._new_ephemeral = _new_ephemeral  # 2023 `.new()`: an ephemeral object made on first use
        self._handle: Optional[_data_transport.Handle] = None
        self._cached_transport: Optional[_data_transport.DataTransport] = None
        self._hydrated = False
        self._lock = threading.Lock()

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_name(cls: Type[T], name: str, *, environment_name: Optional[str] = None,
                  create_if_missing: bool = False) -> T:
        """A reference to the named object in ``environment_name`` (default: the session's).
        Lazy: shoald is contacted on first use, which raises ``NotFoundError`` when the object
        does not exist and ``create_if_missing`` is false."""
        if not isinstance(name, str) or not name:
            raise InvalidError(f"a {cls._kind} name must be a non-empty string, not {name!r}")
        return cls(name, environment_name=environment_name, create_if_missing=create_if_missing)

    @classmethod
    @contextlib.contextmanager
    def ephemeral(cls: Type[T], *, environment_name: Optional[str] = None) -> Iterator[T]:
        """A fresh object that lives for the ``with`` block: deleted when it ends, or when this
        process (or its container) goes away first."""
        obj = cls(None, environment_name=environment_name)
        obj._create_ephemeral()
        try:
            yield obj
        finally:
            obj._release()

    @classmethod
    def lookup(cls: Type[T], name: str, *, environment_name: Optional[str] = None,
               create_if_missing: bool = False) -> T:
        """Deprecated (2023): ``from_name`` followed by an immediate check that it exists."""
        warnings.warn(f"{cls.__name__}.lookup() is deprecated; use {cls.__name__}.from_name()",
                      DeprecationWarning, stacklevel=2)
        obj = cls.from_name(name, environment_name=environment_name, create_if_missing=create_if_missing)
        obj._hydrate()
        return obj

    @classmethod
    def new(cls: Type[T]) -> T:
        """Deprecated (2023): an ephemeral object, created on first use and deleted when this
        process ends. Use ``with {cls}.ephemeral() as x:``."""
        warnings.warn(f"{cls.__name__}.new() is deprecated; use `with {cls.__name__}.ephemeral() as x:`",
                      DeprecationWarning, stacklevel=2)
        return cls(None, _new_ephemeral=True)

    @classmethod
    def persisted(cls: Type[T], label: str, *, environment_name: Optional[str] = None) -> T:
        """Deprecated (2023): ``from_name(label, create_if_missing=True)``."""
        warnings.warn(f"{cls.__name__}.persisted() is deprecated; use "
                      f"{cls.__name__}.from_name(name, create_if_missing=True)",
                      DeprecationWarning, stacklevel=2)
        return cls.from_name(label, environment_name=environment_name, create_if_missing=True)

    @classmethod
    def delete(cls, name: str, *, environment_name: Optional[str] = None) -> None:
        """Deletes the named object and everything in it."""
        transport = _data_transport.current()
        _check_environment(transport, environment_name)
        transport.delete(cls._kind, name)

    # --- identity -----------------------------------------------------------------------------

    @property
    def name(self) -> Optional[str]:
        """The object's name (generated for ephemeral objects once they exist)."""
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})" if self._name else f"{type(self).__name__}(<ephemeral>)"

    def __reduce__(self):
        # Passed to a function (or pickled otherwise), it refers to the same server object; the
        # copy does not own an ephemeral one.
        name = self._resolve()
        return (_rebuild, (type(self), name, self._environment_name))

    # --- internals ----------------------------------------------------------------------------

    def _transport(self) -> _data_transport.DataTransport:
        # Hot path (every put and get): reuse the transport while the process-wide one is the same.
        cached = self._cached_transport
        if cached is not None and _data_transport.still_current(cached):
            return cached
        transport = _data_transport.current()
        _check_environment(transport, self._environment_name)
        self._cached_transport = transport
        return transport

    def _create_ephemeral(self) -> None:
        handle = self._transport().ephemeral(self._kind)
        self._handle = handle
        self._name = handle.name
        self._hydrated = True

    def _release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def _hydrate(self) -> None:
        with self._lock:
            if self._hydrated:
                return
            if self._new_ephemeral:
                self._create_ephemeral()
                return
            self._transport().lookup(self._kind, self._name, self._create_if_missing)
            self._hydrated = True

    def _resolve(self) -> str:
        """The name to use on the wire, after making sure the object exists."""
        if not self._hydrated:
            self._hydrate()
        return self._name  # type: ignore[return-value]

    def __del__(self) -> None:
        # A 2023-style `.new()` object owns its ephemeral server object until it is collected.
        if getattr(self, "_new_ephemeral", False) and getattr(self, "_handle", None) is not None:
            try:
                self._release()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def _check_environment(transport: _data_transport.DataTransport, environment_name: Optional[str]) -> None:
    if not environment_name:
        return
    current = transport.environment()
    if environment_name != current:
        raise InvalidError(
            f"this {'container' if transport.kind == 'guest' else 'session'} works in environment "
            f"{current!r}, not {environment_name!r}: use a token scoped to {environment_name!r} "
            "(SHOAL_TOKEN or `shoal token set`) to reach its objects"
        )


def _rebuild(cls: Type[T], name: str, environment_name: Optional[str]) -> T:
    obj = cls(name, environment_name=environment_name)
    obj._hydrated = True  # it existed when it was pickled; a deleted one fails on use
    return obj
