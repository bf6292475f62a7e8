"""``@app.cls`` classes: ``Model(size=5).predict.remote(x)``.

A class is one server-side function whose inputs name a method (``encode_args(method, ...)``);
the container creates one instance, runs its ``@shoal.enter()`` hooks once, and serves every
method. Constructor arguments are part of the definition, so each distinct set of arguments is its
own server-side function, named ``Model-<digest of the arguments>``:

- ``Model()`` (no arguments) is registered when the app starts, if the class can be built without
  arguments;
- ``Model(size=5)`` made *before* the app starts (at module level, say) is registered with it, and
  found by name afterwards, from any process and inside containers;
- ``Model(size=5)`` made while the app runs, or on a class from ``Cls.from_name``, needs shoald to
  derive a function from the registered one (``_Handle.resolve`` → ``Transport.derive``), which it
  does not offer yet: the call raises InvalidError saying so (docs/sdk.md, "Limitations").
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, Optional, Tuple

from . import _aio, _options, _partial, _transport
from ._functions import Function, _check_name, _Handle, _method_is_generator
from .exception import InvalidError


def _user_methods(user_cls: type) -> Dict[str, bool]:
    """``@shoal.method()`` names → whether each is a generator."""
    out = {}
    for name in _partial.marked(user_cls, _partial.METHOD):
        fn = inspect.getattr_static(user_cls, name)
        fn = getattr(fn, "__func__", fn)
        out[name] = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    return out


def check_constructor(user_cls: type, args: Tuple, kwargs: Dict[str, Any]) -> None:
    """Raises TypeError here, as ``_partial.instantiate`` would in the container."""
    params = _partial.parameters(user_cls)
    if params and not _partial.has_own_init(user_cls):
        if args:
            raise TypeError(
                f"{user_cls.__name__}() takes its parameters as keyword arguments only "
                f"({', '.join(params)}), got {len(args)} positional"
            )
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise TypeError(
                f"{user_cls.__name__}() got unexpected parameter(s) "
                f"{', '.join(map(repr, unknown))}; its parameters are {', '.join(params)}"
            )
        missing = [n for n, p in params.items() if n not in kwargs and p.default is _partial.MISSING]
        if missing:
            raise TypeError(f"{user_cls.__name__}() is missing the parameter(s) {', '.join(map(repr, missing))}")
        return
    if _partial.has_own_init(user_cls):
        try:
            inspect.signature(user_cls.__init__).bind(None, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{user_cls.__name__}(): {e}") from None
    elif args or kwargs:
        raise TypeError(f"{user_cls.__name__}() takes no arguments")


def constructible_without_arguments(user_cls: type) -> bool:
    try:
        check_constructor(user_cls, (), {})
    except TypeError:
        return False
    return True


class Cls:
    """What ``@app.cls()`` returns: call it with constructor arguments to get an instance whose
    methods are :class:`shoal.Function` s (``Model(x=1).predict.remote(...)``)."""

    def __init__(self, handle: _Handle, *, user_cls: Optional[type] = None):
        self._handle = handle
        self._user_cls = user_cls
        self._instances: Dict[str, _Handle] = {}
        if user_cls is not None:
            self.__shoal_raw__ = user_cls
            for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
                try:
                    object.__setattr__(self, attr, getattr(user_cls, attr))
                except AttributeError:
                    pass

    def __repr__(self) -> str:
        return f"<shoal.Cls {self._handle.tag}>"

    @property
    def object_id(self) -> Optional[str]:
        ref = self._handle.ref
        return ref.function_id if ref else None

    def _methods(self) -> Optional[Dict[str, bool]]:
        """Method name → is_generator; None when unknown (looked up without a definition)."""
        if self._user_cls is not None:
            return _user_methods(self._user_cls)
        _, ref = self._handle.resolve()
        if ref.definition is None:
            return None
        from . import _definition  # noqa: PLC0415

        try:
            methods = _definition.load_definition(ref.definition).methods
        except ValueError:
            return None
        return {name: bool(info.get("is_generator")) for name, info in methods.items()}

    def __call__(self, *args: Any, **kwargs: Any) -> "Obj":
        if self._user_cls is not None:
            check_constructor(self._user_cls, args, kwargs)
        if not args and not kwargs:
            return Obj(self, self._handle, (), {})
        probe = self._handle.instance(args, kwargs)
        handle = self._instances.setdefault(probe.tag, probe)
        app = handle.app
        if app is not None and not _transport.in_container() and not app._is_live():
            app._register_variant(handle)
        return Obj(self, handle, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        # 2023 style: Model.predict.remote() on a class without constructor arguments.
        if name.startswith("__") or name in ("_handle", "_user_cls", "_instances"):
            raise AttributeError(name)
        methods = self._methods() if self._user_cls is not None else None
        if methods is not None and name in methods:
            return getattr(self(), name)
        if self._user_cls is not None:
            return getattr(self._user_cls, name)
        raise AttributeError(f"{self._handle.tag} has no attribute {name!r}")

    @_aio.StaticMethod
    def from_name(cls, app_name: str, name: str, *, environment_name: Optional[str] = None) -> "Cls":
        """A class of a deployed app, looked up lazily: ``Cls.from_name("app", "Model")()``."""
        del environment_name
        _check_name("Cls.from_name", app_name, name)
        return cls(_Handle(name, kind="class", app_name=app_name))

    @_aio.StaticMethod
    def lookup(cls, app_name: str, name: str, *, environment_name: Optional[str] = None) -> "Cls":
        _options.deprecated("Cls.lookup()", "Cls.from_name()", stacklevel=3)
        found = Cls.from_name(app_name, name, environment_name=environment_name)
        found.hydrate()
        return found

    def hydrate(self) -> "Cls":
        self._handle.resolve()
        return self

    def with_options(self, **options: Any) -> "Cls":
        """A copy of the class with other options; see ``Function.with_options``."""
        from ._functions import _spec_overrides  # noqa: PLC0415

        handle = self._handle
        new_options = _options.build("with_options", handle.options, stacklevel=3, **options)
        if new_options == handle.options:
            return self
        variant = handle.variant(new_options, _spec_overrides(new_options, options))
        if handle.app is not None:
            handle.app._register_variant(variant)
        return Cls(variant, user_cls=self._user_cls)


class Obj:
    """An instance of an ``@app.cls`` class: its ``@shoal.method()`` s are Functions; ``.local``
    runs them on a local instance (built on first use, ``@enter`` hooks run once)."""

    def __init__(self, cls: Cls, handle: _Handle, args: Tuple, kwargs: Dict[str, Any]):
        self._cls = cls
        self._handle = handle
        self._args = args
        self._kwargs = kwargs
        self._local_instance: Any = None
        self._functions: Dict[str, Function] = {}

    def __repr__(self) -> str:
        return f"<shoal.Obj {self._handle.tag}>"

    def _local(self) -> Any:
        if self._local_instance is None:
            user_cls = self._cls._user_cls
            if user_cls is None:
                raise InvalidError(f"{self._handle.tag} was looked up by name and has no local code")
            instance = _partial.instantiate(user_cls, self._args, self._kwargs)
            for name in _partial.marked(user_cls, _partial.ENTER):
                _run(getattr(instance, name)())
            if hasattr(user_cls, "__enter__"):
                _run(instance.__enter__())
            self._local_instance = instance
        return self._local_instance

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        found = self._functions.get(name)
        if found is not None:
            return found
        methods = self._cls._methods()
        if methods is not None and name not in methods:
            user_cls = self._cls._user_cls
            if user_cls is not None and name in _partial.parameters(user_cls):
                return self._kwargs.get(name, _partial.parameters(user_cls)[name].default)
            known = ", ".join(sorted(methods)) or "none"
            raise AttributeError(
                f"{self._handle.tag} has no @shoal.method() named {name!r} (methods: {known})"
            )
        is_generator = methods.get(name) if methods is not None else None
        raw = None
        if self._cls._user_cls is not None:
            raw = getattr(self._cls._user_cls, name)
        function = Function(
            self._handle,
            method=name,
            raw=raw,
            local=lambda *a, **k: getattr(self._local(), name)(*a, **k),
            is_generator=is_generator,
            name=f"{self._cls._handle.tag}.{name}",
        )
        if is_generator is None:
            # Looked up without a definition: decide when the function is resolved.
            function._is_generator_hint = None
        self._functions[name] = function
        return function


def _run(result: Any) -> Any:
    if inspect.isawaitable(result):
        import asyncio  # noqa: PLC0415

        async def wait() -> Any:
            return await result

        return asyncio.run(wait())
    return result


def warn_legacy_hooks(user_cls: type) -> None:
    for legacy, current in (("__enter__", "@shoal.enter()"), ("__aenter__", "@shoal.enter()"),
                            ("__exit__", "@shoal.exit()"), ("__aexit__", "@shoal.exit()")):
        if any(legacy in vars(k) for k in user_cls.__mro__ if k is not object):
            warnings.warn(
                f"{user_cls.__name__}.{legacy} as a container hook is deprecated; decorate a "
                f"method with {current} instead",
                DeprecationWarning,
                stacklevel=4,
            )


__all__ = ["Cls", "Obj", "_method_is_generator"]
