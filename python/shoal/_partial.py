"""Markers that user classes and functions carry, shared by the SDK and the guest runtime.

Stdlib only: the guest imports this inside containers. The SDK re-exports the decorators as
``shoal.enter()``, ``shoal.exit()``, ``shoal.method()``, ``shoal.concurrent()`` and
``shoal.parameter()``.

The contract (attribute names are the wire between SDK and guest; do not rename):

- ``fn.__shoal_enter__ = True``: run once after the instance is created, before the container
  takes inputs. Legacy ``__enter__`` / ``__aenter__`` run after the marked hooks.
- ``fn.__shoal_exit__ = True``: run once at container shutdown. Legacy ``__exit__(None, None,
  None)`` / ``__aexit__`` run after the marked hooks.
- ``fn.__shoal_method__ = True``: the method may be called remotely (``Model().f.remote()``).
- ``obj.__shoal_concurrent__ = {"max_inputs": int, "target_inputs": int | None}``: set on a
  function or class by ``@shoal.concurrent``; the SDK turns it into ``FunctionSpec.maxInputs``.
- ``wrapper.__shoal_raw__``: an SDK wrapper object (what ``@app.function`` / ``@app.cls`` return
  and what a module attribute then holds) points at the user's own function or class here; the
  guest follows it (:func:`unwrap`) after importing a definition by reference.

Hooks and methods are plain functions with an attribute: the decorators return the function
itself, so a decorated class stays an ordinary class.

Constructor parameters (:func:`parameter`) are class attributes holding a :class:`Parameter`
marker. :func:`instantiate` builds an instance the same way locally and in the container: a class
with its own ``__init__`` is called as ``cls(*args, **kwargs)``; a class without one but with
parameters takes keyword arguments only, each set as an instance attribute (a missing one takes its
default, or is a ``TypeError``); any other class is called as ``cls(*args, **kwargs)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

ENTER = "__shoal_enter__"
EXIT = "__shoal_exit__"
METHOD = "__shoal_method__"
CONCURRENT = "__shoal_concurrent__"
RAW = "__shoal_raw__"


def _marker(attribute: str, what: str) -> Callable[[Callable], Callable]:
    def decorate(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"@shoal.{what}() decorates a method, not {fn!r}")
        setattr(fn, attribute, True)
        return fn

    return decorate


def enter(*, snap: bool = False) -> Callable[[Callable], Callable]:
    """Marks a method to run once when the container starts, before it takes inputs.

    ``snap`` is accepted for Modal compatibility and must be False (no memory snapshots)."""
    if snap:
        raise ValueError("@shoal.enter(snap=True): memory snapshots are not supported")
    return _marker(ENTER, "enter")


def exit() -> Callable[[Callable], Callable]:  # noqa: A001 - the public name is shoal.exit
    """Marks a method to run once when the container shuts down."""
    return _marker(EXIT, "exit")


def method(*, is_generator: Optional[bool] = None) -> Callable[[Callable], Callable]:
    """Marks a method of an ``@app.cls`` class as remotely callable.

    ``is_generator`` is accepted for Modal compatibility; generator-ness is detected from the
    function itself."""
    return _marker(METHOD, "method")


def concurrent(*, max_inputs: int, target_inputs: Optional[int] = None) -> Callable[[Any], Any]:
    """Lets one container run up to ``max_inputs`` inputs at once (threads for sync functions,
    asyncio tasks for async ones)."""
    if not isinstance(max_inputs, int) or max_inputs < 1:
        raise ValueError(f"@shoal.concurrent(max_inputs={max_inputs!r}): must be an int >= 1")
    if target_inputs is not None and (
        not isinstance(target_inputs, int) or not 1 <= target_inputs <= max_inputs
    ):
        raise ValueError(
            f"@shoal.concurrent(target_inputs={target_inputs!r}): must be an int in 1..max_inputs"
        )

    def decorate(obj: Any) -> Any:
        setattr(obj, CONCURRENT, {"max_inputs": max_inputs, "target_inputs": target_inputs})
        return obj

    return decorate


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Parameter:
    """The class attribute ``shoal.parameter()`` returns."""

    __slots__ = ("default", "name")

    def __init__(self, default: Any = MISSING) -> None:
        self.default = default
        self.name: Optional[str] = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"shoal.parameter(default={self.default!r})"


def parameter(*, default: Any = MISSING) -> Any:
    """Declares a constructor parameter of an ``@app.cls`` class: ``size: int =
    shoal.parameter(default=3)``; ``Model(size=5)`` then has ``self.size == 5``."""
    return Parameter(default)


# --- helpers the SDK and the guest share ---------------------------------------------------------


def unwrap(obj: Any) -> Any:
    """Follows ``__shoal_raw__`` from SDK wrappers to the user's own function or class."""
    seen = 0
    while True:
        try:
            raw = inspect.getattr_static(obj, RAW)
        except AttributeError:
            return obj
        if isinstance(raw, property):
            raw = getattr(obj, RAW)
        obj = raw
        seen += 1
        if seen > 16:
            raise TypeError("__shoal_raw__ chain is longer than 16 (a cycle?)")


def _class_attributes(cls: type) -> Dict[str, Any]:
    """Attributes defined on ``cls`` and its bases, most-derived wins; base order first."""
    out: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        out.update(vars(klass))
    return out


def parameters(cls: type) -> Dict[str, Parameter]:
    """The ``shoal.parameter()`` attributes of ``cls`` (bases included), in definition order."""
    return {k: v for k, v in _class_attributes(cls).items() if isinstance(v, Parameter)}


def _function_of(value: Any) -> Any:
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    return value


def marked(cls: type, attribute: str) -> List[str]:
    """Names of the methods of ``cls`` carrying ``attribute`` (ENTER, EXIT or METHOD), bases
    first, in definition order; an override in a subclass replaces the base's entry."""
    return [
        name
        for name, value in _class_attributes(cls).items()
        if getattr(_function_of(value), attribute, False) is True
    ]


def has_own_init(cls: type) -> bool:
    return any("__init__" in vars(klass) for klass in cls.__mro__ if klass is not object)


def instantiate(cls: type, args: Tuple = (), kwargs: Optional[Dict[str, Any]] = None) -> Any:
    """Creates an instance of an ``@app.cls`` class from constructor arguments (module docstring)."""
    kwargs = dict(kwargs or {})
    params = parameters(cls)
    if not params or has_own_init(cls):
        return cls(*args, **kwargs)
    if args:
        raise TypeError(
            f"{cls.__name__}() takes its parameters as keyword arguments only "
            f"({', '.join(params)}), got {len(args)} positional"
        )
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise TypeError(
            f"{cls.__name__}() got unexpected parameter(s) {', '.join(map(repr, unknown))}; "
            f"its parameters are {', '.join(params)}"
        )
    obj = cls()
    for name, p in params.items():
        if name in kwargs:
            value = kwargs[name]
        elif p.default is not MISSING:
            value = p.default
        else:
            raise TypeError(f"{cls.__name__}() is missing the parameter {name!r}")
        setattr(obj, name, value)
    return obj
