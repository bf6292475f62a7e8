"""What ``shoal run`` and ``shoal deploy`` share: importing the user's file, finding its app and
the function to run, and turning an entrypoint's parameters into command-line flags."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import _mount
from .._app import App, LocalEntrypoint
from .._cls import Cls
from .._functions import Function
from ..exception import InvalidError

#: Annotation types a flag can have.
FLAG_TYPES = (int, float, str, bool)


def import_file(path: str) -> Any:
    """Imports ``path`` as the module the container will import: its name below the code root
    ("app", "pkg.app"), with the root first on ``sys.path``. Its ``if __name__ == "__main__":``
    block does not run."""
    file = Path(path)
    if not file.is_file():
        raise InvalidError(f"no such file: {path}")
    if file.suffix != ".py":
        raise InvalidError(f"{path} is not a Python file (.py)")
    file = file.resolve()
    root = _mount.code_root(file)
    name = _mount.module_name(file, root)
    if not all(part.isidentifier() for part in name.split(".")):
        raise InvalidError(f"{path} cannot be imported as a module: {name!r} is not a valid module name")
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None)
        if existing_file and Path(existing_file).resolve() == file:
            return existing
        raise InvalidError(
            f"{path} would be imported as {name!r}, which is already the module {existing_file or name}; "
            "rename the file"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if "." in name:
        importlib.import_module(name.rpartition(".")[0])
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise InvalidError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    for value in vars(module).values():
        if isinstance(value, App):
            value._entry_file = file
    return module


def find_app(module: Any, path: str, app_var: Optional[str] = None) -> App:
    apps = {k: v for k, v in vars(module).items() if isinstance(v, App)}
    if app_var is not None:
        if app_var not in apps:
            raise InvalidError(f"{path} has no shoal.App named {app_var!r}")
        return apps[app_var]
    if not apps:
        raise InvalidError(f"{path} defines no shoal.App (write `app = shoal.App(...)` at module level)")
    if len(apps) > 1:
        if "app" in apps:
            return apps["app"]
        raise InvalidError(
            f"{path} defines several apps ({', '.join(sorted(apps))}); name one: {path}::APP.function"
        )
    return next(iter(apps.values()))


def split_target(target: str) -> Tuple[str, Optional[str]]:
    path, sep, ref = target.partition("::")
    return path, (ref or None) if sep else None


def resolve(module: Any, path: str, ref: Optional[str]) -> Tuple[App, Any, Optional[str]]:
    """``(app, runnable, method)``: a LocalEntrypoint, a Function, or a Cls with a method name."""
    app_var = None
    if ref and "." in ref:
        head, _, rest = ref.partition(".")
        if isinstance(getattr(module, head, None), App):
            app_var, ref = head, rest
    app = find_app(module, path, app_var)
    entrypoints, functions, classes = app._entrypoints, app._functions, app._classes
    choices = sorted(entrypoints) + sorted(functions) + [f"{c}.METHOD" for c in sorted(classes)]
    if ref is None:
        if len(entrypoints) == 1:
            return app, next(iter(entrypoints.values())), None
        if not entrypoints and len(functions) == 1 and not classes:
            return app, next(iter(functions.values())), None
        what = "several local entrypoints" if entrypoints else "no local entrypoint"
        raise InvalidError(
            f"{path} has {what}; say which to run: "
            + ", ".join(f"{path}::{c}" for c in choices)
        )
    if ref in entrypoints:
        return app, entrypoints[ref], None
    if ref in functions:
        return app, functions[ref], None
    cls_name, _, method = ref.partition(".")
    if cls_name in classes:
        methods = classes[cls_name]._methods() or {}
        if not method:
            raise InvalidError(f"{cls_name} is a class; name a method: {path}::{cls_name}.METHOD ({', '.join(sorted(methods))})")
        if method not in methods:
            raise InvalidError(f"{cls_name} has no @shoal.method() named {method!r} (methods: {', '.join(sorted(methods)) or 'none'})")
        return app, classes[cls_name], method
    raise InvalidError(f"{path} has no local entrypoint, function or class {ref!r}; choose from: {', '.join(choices) or 'nothing'}")


def _flag_type(fn: Callable[..., Any], param: inspect.Parameter, hints: Dict[str, Any]) -> type:
    annotation = hints.get(param.name, param.annotation)
    if annotation is inspect.Parameter.empty:
        default = param.default
        if default is not inspect.Parameter.empty and type(default) in FLAG_TYPES:
            return type(default)
        return str
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            annotation = args[0]
    if isinstance(annotation, str):  # an annotation that did not resolve
        by_name = {t.__name__: t for t in FLAG_TYPES}
        annotation = by_name.get(annotation.replace("Optional[", "").rstrip("]").strip(), annotation)
    if annotation in FLAG_TYPES:
        return annotation
    raise InvalidError(
        f"the parameter {param.name!r} of {fn.__name__} is annotated {annotation!r}; command-line "
        "flags support int, float, str and bool"
    )


def flag_parser(fn: Callable[..., Any], prog: str, *, skip_self: bool = False) -> argparse.ArgumentParser:
    from . import Parser  # noqa: PLC0415

    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: use the raw ones
        hints = {}
    parser = Parser(prog=prog, description=inspect.getdoc(fn) or None, add_help=True)
    params = list(inspect.signature(fn).parameters.values())
    if skip_self:
        params = params[1:]
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidError(f"{fn.__name__} takes *args/**kwargs, which cannot become flags")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise InvalidError(f"{fn.__name__} has the positional-only parameter {param.name!r}")
        kind = _flag_type(fn, param, hints)
        names = [f"--{param.name.replace('_', '-')}"]
        if "_" in param.name:
            names.append(f"--{param.name}")
        required = param.default is inspect.Parameter.empty
        if kind is bool:
            parser.add_argument(
                *names, dest=param.name, action=argparse.BooleanOptionalAction,
                default=False if required else param.default, help="(bool)",
            )
            continue
        parser.add_argument(
            *names, dest=param.name, type=kind, required=required,
            default=None if required else param.default,
            help=f"({kind.__name__}{', required' if required else f', default {param.default!r}'})",
        )
    return parser


def parse_flags(fn: Callable[..., Any], argv: Sequence[str], prog: str, *, skip_self: bool = False) -> Dict[str, Any]:
    """The keyword arguments for ``fn`` from ``--name value`` flags (``--flag/--no-flag`` for
    bools). Usage errors exit 2 with one ``shoal: ...`` line."""
    return vars(flag_parser(fn, prog, skip_self=skip_self).parse_args(list(argv)))


def signature_target(runnable: Any, method: Optional[str]) -> Tuple[Callable[..., Any], bool]:
    """The user function whose parameters become flags, and whether its first one is ``self``."""
    if isinstance(runnable, LocalEntrypoint):
        return runnable.raw_f, False
    if isinstance(runnable, Function):
        return runnable.get_raw_f(), False
    if isinstance(runnable, Cls):
        return getattr(runnable._user_cls, method), True
    raise InvalidError(f"cannot run {runnable!r}")


def split_argv(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Separates ``shoal run``'s own flags from the function's: before a ``--``, ``--detach`` (``-d``)
    and ``--no-cache`` are shoal's; everything else (and all that follows ``--``) is the
    function's."""
    args = list(argv)
    if "--" in args:
        i = args.index("--")
        head, tail = args[:i], args[i + 1:]
    else:
        head, tail = args, []
    own = [a for a in head if a in OWN_RUN_FLAGS]
    rest = [a for a in head if a not in OWN_RUN_FLAGS] + tail
    return own, rest


#: ``shoal run`` flags that may also follow the target.
OWN_RUN_FLAGS = ("--detach", "-d", "--no-cache")
