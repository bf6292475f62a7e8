"""Definitions and payloads: what the SDK ships to a container, and how arguments and results
travel. Stdlib + cloudpickle only (the guest imports it inside containers; it never loads
``shoal._native``).

The definition (``FunctionSpec.definition``, handed to the guest in INIT) is ``pickle`` of a dict
holding only builtin types, so it can be inspected anywhere without importing user code::

    {
      "version": 1,
      "kind": "function" | "class",
      "name": "square" | "Model",          # qualname, for messages
      "module": "app" | None,              # import name of the defining module (None: unknown)
      "qualname": "square" | "Model",
      "serialized": bool,                  # True: "object" holds the pickled function/class
      "object": bytes | None,              # cloudpickle of the function/class when serialized
      "is_generator": bool,                # function kind: a (sync or async) generator function
      "is_async": bool,                    # function kind: a coroutine/async generator function
      "constructor": bytes | None,         # class kind: cloudpickle of (args tuple, kwargs dict)
      "methods": {name: {"is_generator": bool, "is_async": bool}},  # class kind: @shoal.method()s
    }

By reference (``serialized=False``), the guest imports ``module`` from ``SHOAL_CODE_DIR`` (first on
``sys.path``), walks ``qualname`` with ``getattr`` and follows ``__shoal_raw__`` from SDK wrappers
(``shoal._partial.unwrap``). A function or class defined in ``__main__`` is recorded under its file's
stem ("app" for ``python app.py``): the container imports that file as a module, so its
``if __name__ == "__main__":`` block does not run there. It is serialized instead when that is
impossible: ``serialized=True``, a ``__main__`` without a file (a REPL, ``python -c``, a notebook),
or a qualname containing ``<locals>``.

Payloads: an input's ``args`` is ``cloudpickle((method_name_or_None, args_tuple, kwargs_dict))``;
a result or an exception is ``cloudpickle(value)``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import cloudpickle

from . import _partial

DEFINITION_VERSION = 1

__all__ = [
    "DEFINITION_VERSION",
    "Definition",
    "make_function_definition",
    "make_class_definition",
    "load_definition",
    "encode_args",
    "decode_args",
    "encode_result",
    "decode_result",
    "encode_exception",
    "main_module_name",
]


def main_module_name() -> Optional[str]:
    """The import name of ``__main__`` when it is a file (its stem: "app" for app.py), else None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None) and spec.name != "__main__":
        return spec.name  # python -m pkg.app: the module's real name
    if not path:
        return None
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if stem.isidentifier() else None


def _module_of(obj: Any, module_name: Optional[str]) -> Optional[str]:
    if module_name:
        return module_name
    module = getattr(obj, "__module__", None)
    if module == "__main__":
        return main_module_name()
    return module


def _must_serialize(module: Optional[str], qualname: str) -> bool:
    return module is None or "<locals>" in qualname


def _generator_flags(fn: Any) -> Tuple[bool, bool]:
    is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    return is_gen, is_async


def make_function_definition(
    fn: Any,
    *,
    serialized: bool = False,
    is_generator: Optional[bool] = None,
    module_name: Optional[str] = None,
) -> bytes:
    """The definition of a function. ``fn`` may be an SDK wrapper (unwrapped first).

    ``is_generator`` overrides detection (a wrapper returning a generator); ``module_name``
    overrides the module the function is imported from (default: ``fn.__module__``, or the file
    stem for ``__main__``)."""
    fn = _partial.unwrap(fn)
    if not callable(fn):
        raise TypeError(f"a function definition needs a callable, not {fn!r}")
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = _module_of(fn, module_name)
    detected_gen, is_async = _generator_flags(fn)
    serialize = serialized or _must_serialize(module, qualname)
    definition = {
        "version": DEFINITION_VERSION,
        "kind": "function",
        "name": qualname,
        "module": module,
        "qualname": qualname,
        "serialized": serialize,
        "object": cloudpickle.dumps(fn) if serialize else None,
        "is_generator": detected_gen if is_generator is None else bool(is_generator),
        "is_async": is_async,
        "constructor": None,
        "methods": {},
    }
    return pickle.dumps(definition, protocol=4)


def make_class_definition(
    cls: Any,
    *,
    serialized: bool = False,
    constructor_args: Tuple = (),
    constructor_kwargs: Optional[Dict[str, Any]] = None,
    module_name: Optional[str] = None,
) -> bytes:
    """The definition of an ``@app.cls`` class bound to constructor arguments (one definition per
    distinct ``Model(...)``). ``cls`` may be an SDK wrapper (unwrapped first)."""
    cls = _partial.unwrap(cls)
    if not isinstance(cls, type):
        raise TypeError(f"a class definition needs a class, not {cls!r}")
    qualname = cls.__qualname__
    module = _module_of(cls, module_name)
    serialize = serialized or _must_serialize(module, qualname)
    methods = {}
    for name in _partial.marked(cls, _partial.METHOD):
        is_gen, is_async = _generator_flags(getattr(cls, name))
        methods[name] = {"is_generator": is_gen, "is_async": is_async}
    definition = {
        "version": DEFINITION_VERSION,
        "kind": "class",
        "name": qualname,
        "module": module,
        "qualname": qualname,
        "serialized": serialize,
        "object": cloudpickle.dumps(cls) if serialize else None,
        "is_generator": False,
        "is_async": False,
        "constructor": cloudpickle.dumps(
            (tuple(constructor_args), dict(constructor_kwargs or {}))
        ),
        "methods": methods,
    }
    return pickle.dumps(definition, protocol=4)


@dataclass
class Definition:
    """A loaded definition; :meth:`load_object` imports or unpickles the user's code."""

    kind: str
    name: str
    module: Optional[str]
    qualname: str
    serialized: bool
    is_generator: bool
    is_async: bool
    methods: Dict[str, Dict[str, bool]] = field(default_factory=dict)
    object_blob: Optional[bytes] = None
    constructor_blob: Optional[bytes] = None

    def load_object(self) -> Any:
        """The function or class: unpickled, or imported by reference (SHOAL_CODE_DIR must be on
        ``sys.path`` already). Raises what the import raises."""
        if self.serialized:
            obj = cloudpickle.loads(self.object_blob)
        else:
            obj = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                obj = getattr(obj, part)
        obj = _partial.unwrap(obj)
        if self.kind == "class" and not isinstance(obj, type):
            raise TypeError(f"{self.module}.{self.qualname} is not a class but {obj!r}")
        if self.kind == "function" and not callable(obj):
            raise TypeError(f"{self.module}.{self.qualname} is not callable but {obj!r}")
        return obj

    def constructor(self) -> Tuple[Tuple, Dict[str, Any]]:
        """``(args, kwargs)`` for a class; unpickling may import user modules."""
        if not self.constructor_blob:
            return (), {}
        args, kwargs = cloudpickle.loads(self.constructor_blob)
        return tuple(args), dict(kwargs)


def load_definition(blob: bytes) -> Definition:
    """Parses a definition without importing user code; ValueError if it is not one."""
    try:
        d = pickle.loads(blob)
    except Exception as e:
        raise ValueError(f"the function definition does not unpickle: {e}") from e
    if not isinstance(d, dict) or d.get("version") != DEFINITION_VERSION:
        version = d.get("version") if isinstance(d, dict) else None
        raise ValueError(
            f"the function definition has version {version!r}; this guest reads version "
            f"{DEFINITION_VERSION}"
        )
    if d.get("kind") not in ("function", "class"):
        raise ValueError(f"the function definition has kind {d.get('kind')!r}")
    return Definition(
        kind=d["kind"],
        name=d["name"],
        module=d["module"],
        qualname=d["qualname"],
        serialized=d["serialized"],
        is_generator=d["is_generator"],
        is_async=d["is_async"],
        methods=d.get("methods") or {},
        object_blob=d.get("object"),
        constructor_blob=d.get("constructor"),
    )


def encode_args(method: Optional[str], args: Tuple = (), kwargs: Optional[Dict] = None) -> bytes:
    """The ``args`` blob of one input: which method (None for a function) and its arguments."""
    return cloudpickle.dumps((method, tuple(args), dict(kwargs or {})))


def decode_args(blob: bytes) -> Tuple[Optional[str], Tuple, Dict[str, Any]]:
    method, args, kwargs = pickle.loads(blob)
    if method is not None and not isinstance(method, str):
        raise TypeError(f"the method name of an input must be a str or None, not {method!r}")
    return method, tuple(args), dict(kwargs)


def encode_result(value: Any) -> bytes:
    """A return value, a generator item or an exception (status 0, 2, 1)."""
    return cloudpickle.dumps(value)


def decode_result(blob: bytes) -> Any:
    return pickle.loads(blob)


def encode_exception(exc: BaseException) -> bytes:
    """The exception pickled, or b"" if it cannot be (the traceback text still travels)."""
    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)  # an exception that pickles but does not unpickle is as bad
        return data
    except Exception:
        return b""
