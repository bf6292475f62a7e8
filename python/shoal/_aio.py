"""``.aio`` twins of blocking SDK methods: ``await f.remote.aio(x)``, ``async for y in
f.map.aio(xs)``. The blocking implementation runs in a worker thread, so the event loop stays free
while a call waits on the network."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, AsyncIterator, Callable, Iterator, Optional

#: Items a background iterator may run ahead of its async consumer.
PREFETCH = 64


async def to_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def iterate_in_thread(make_iterator: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
    """Runs ``make_iterator()`` and its iteration in a thread; yields its items here. Leaving the
    ``async for`` early closes the iterator (in its thread)."""
    loop = asyncio.get_running_loop()
    items: "asyncio.Queue[tuple]" = asyncio.Queue()
    room = threading.Semaphore(PREFETCH)
    stop = threading.Event()

    def post(entry: tuple) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, entry)
        except RuntimeError:
            stop.set()  # the loop is gone: nobody is listening

    def pump() -> None:
        iterator: Optional[Iterator[Any]] = None
        try:
            iterator = make_iterator()
            for item in iterator:
                room.acquire()
                if stop.is_set():
                    break
                post(("item", item))
                if stop.is_set():
                    break
        except BaseException as e:  # noqa: B902 - re-raised in the consumer
            post(("error", e))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - the consumer has gone
                    pass
        post(("end", None))

    thread = threading.Thread(target=pump, name="shoal-aio-iter", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await items.get()
            if kind == "item":
                room.release()
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        room.release()  # unblocks a pump waiting for room


class Method:
    """Decorates a method so that ``obj.method(...)`` blocks and ``obj.method.aio(...)`` is its
    asyncio twin: a coroutine, or an async iterator when ``iterator=True``. ``aio`` may be given
    an explicit async implementation instead."""

    def __init__(self, fn: Callable[..., Any], *, iterator: bool = False,
                 aio: Optional[Callable[..., Any]] = None):
        self.fn = fn
        self.iterator = iterator
        self.aio_impl = aio
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> "BoundMethod":
        target = objtype if obj is None else obj
        return BoundMethod(self, target)


class BoundMethod:
    __slots__ = ("_method", "_self", "__doc__")

    def __init__(self, method: Method, target: Any):
        self._method = method
        self._self = target
        self.__doc__ = method.fn.__doc__

    @property
    def __name__(self) -> str:  # noqa: A003
        return self._method.fn.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method.fn(self._self, *args, **kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        m = self._method
        if m.aio_impl is not None:
            return m.aio_impl(self._self, *args, **kwargs)
        if m.iterator:
            return iterate_in_thread(lambda: m.fn(self._self, *args, **kwargs))
        return to_thread(m.fn, self._self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<shoal method {self._method.fn.__qualname__} of {self._self!r}>"


def method(fn: Optional[Callable[..., Any]] = None, *, iterator: bool = False,
           aio: Optional[Callable[..., Any]] = None) -> Any:
    if fn is None:
        return lambda f: Method(f, iterator=iterator, aio=aio)
    return Method(fn, iterator=iterator, aio=aio)


class StaticMethod:
    """Like :class:`Method` for class-level constructors (``Function.from_name.aio``)."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> "_BoundStatic":
        return _BoundStatic(self.fn, objtype if objtype is not None else type(obj))


class _BoundStatic:
    __slots__ = ("_fn", "_cls")

    def __init__(self, fn: Callable[..., Any], cls: type):
        self._fn = fn
        self._cls = cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self._cls, *args, **kwargs)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        return to_thread(self._fn, self._cls, *args, **kwargs)
