"""``shoal run`` and ``shoal deploy``."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from typing import Any

from .._app import LocalEntrypoint
from .._cls import Cls
from .._functions import Function
from ..image import IGNORE_CACHE_ENV
from . import _runner, add_json_flag, note
from ._output import print_json, print_table

RUN_DESCRIPTION = """\
Run an app: its local entrypoint (or the named function) runs on this machine inside an
ephemeral app whose functions run in containers. The app's code is shipped first (only
files the server does not have yet are uploaded); the containers' output is shown here,
each line prefixed by its container id. The app stops when the command ends, unless
--detach is given."""

RUN_EPILOG = """\
target:
  app.py                     the file's only local entrypoint (or its only function)
  app.py::main               a local entrypoint or a function, by name
  app.py::Model.predict      a method of a class (the class is built without arguments)

The parameters of the entrypoint or function become flags: `def main(n: int, name: str =
"x", verbose: bool = False)` takes `--n 3 --name y --verbose`. Flags may follow `--`.

examples:
  shoal run app.py
  shoal run app.py::square --x 7
  shoal run --detach app.py::main -- --n 100
  shoal run --no-cache app.py      rebuild the images' layers (each says why it rebuilt)"""

DEPLOY_DESCRIPTION = """\
Deploy an app: ship its code and register its functions under the app's name as a new
version. Deployed functions keep running across daemon restarts and are called by name
(shoal.Function.from_name("app", "square")) until `shoal app stop`."""

DEPLOY_EPILOG = """\
examples:
  shoal deploy app.py
  shoal deploy app.py --name prod-hello
  shoal deploy app.py --json"""


NO_CACHE_HELP = ("rebuild every layer step of the app's images instead of using cached layers "
                 "(SHOAL_IGNORE_CACHE=1; force_build=True does it for one step)")


def _no_cache(enabled: bool) -> None:
    """--no-cache: the images built by this command ignore the layer cache (image.py reads it)."""
    if enabled:
        os.environ[IGNORE_CACHE_ENV] = "1"


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run", help="run an app's local entrypoint or one of its functions",
        description=RUN_DESCRIPTION, epilog=RUN_EPILOG,
    )
    run.add_argument("--detach", "-d", action="store_true", help="keep the app running after this command ends")
    run.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    run.add_argument("target", metavar="FILE[::NAME]", help="the app file, optionally ::entrypoint, ::function or ::Class.method")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="flags for the entrypoint or function")
    run.set_defaults(handler=cmd_run)

    deploy = subparsers.add_parser(
        "deploy", help="deploy an app (a new version under its name)",
        description=DEPLOY_DESCRIPTION, epilog=DEPLOY_EPILOG,
    )
    deploy.add_argument("target", metavar="FILE", help="the app file (FILE::APP picks one of several apps)")
    deploy.add_argument("--name", help="deploy under this name instead of the app's own")
    deploy.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    add_json_flag(deploy)
    deploy.set_defaults(handler=cmd_deploy)


def _print_result(value: Any) -> None:
    if value is not None:
        print(value, flush=True)


def _invoke(runnable: Any, method: str | None, kwargs: dict) -> None:
    if isinstance(runnable, LocalEntrypoint):
        result = runnable(**kwargs)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
        return
    function: Function = getattr(runnable(), method) if isinstance(runnable, Cls) else runnable
    if function.is_generator:
        for item in function.remote_gen(**kwargs):
            _print_result(item)
        return
    _print_result(function.remote(**kwargs))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def cmd_run(args) -> int:
    own, rest = _runner.split_argv(args.args)
    detach = args.detach or "--detach" in own or "-d" in own
    _no_cache(args.no_cache or "--no-cache" in own)
    path, ref = _runner.split_target(args.target)
    module = _runner.import_file(path)
    app, runnable, method = _runner.resolve(module, path, ref)
    fn, skip_self = _runner.signature_target(runnable, method)
    kwargs = _runner.parse_flags(fn, rest, f"shoal run {args.target}", skip_self=skip_self)
    with app.run(detach=detach):
        _invoke(runnable, method, kwargs)
    return 0


def cmd_deploy(args) -> int:
    path, ref = _runner.split_target(args.target)
    module = _runner.import_file(path)
    app = _runner.find_app(module, path, ref)
    _no_cache(args.no_cache)
    app.deploy(name=args.name, show_progress=False)
    info = app._deployed or {}
    stats = app._last_upload
    functions = [
        {
            "name": r.get("name", ""),
            "function_id": r.get("function_id", ""),
            "kind": "class" if r.get("is_class") else ("generator" if r.get("is_generator") else "function"),
        }
        for r in app._last_refs
    ]
    notes = app._notes(app._handles())
    if args.json:
        print_json(
            {
                "app_id": info.get("app_id", ""),
                "name": info.get("name", ""),
                "version": int(info.get("version") or 0),
                "functions": functions,
                "shipped": sorted((stats.new + stats.cached) if stats else []),
                "uploaded": sorted(stats.new if stats else []),
            }
        )
    else:
        print(f"✓ Deployed app {info.get('name', '')} version {info.get('version', '?')} ({info.get('app_id', '')})")
        if stats is not None:
            print(f"✓ {stats.summary()}")
        print_table(["FUNCTION", "KIND", "ID"], [[f["name"], f["kind"], f["function_id"]] for f in functions])
        print(f"Call it with shoal.Function.from_name({info.get('name', '')!r}, NAME); stop it with "
              f"`shoal app stop {info.get('name', '')}`.")
    for line in notes:
        note(f"note: {line}")
    sys.stdout.flush()
    return 0
