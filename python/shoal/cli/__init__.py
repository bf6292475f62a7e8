"""The ``shoal`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function; handlers take
the parsed arguments and return an exit code. Expected failures are :mod:`shoal.exception` errors:
``main`` prints them as one ``shoal: ...`` sentence on stderr and exits 1 (2 for usage errors).
Set ``SHOAL_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from typing import Sequence

from .. import __version__
from ..exception import Error

DESCRIPTION = """\
Shoal runs your Python functions on your own machines, Modal-style.

The client talks to a shoald daemon. With no server configured it uses an embedded
local cluster: a shoald started on demand with its state in $SHOAL_HOME/state
(default ~/.shoal/state)."""

EPILOG = """\
where shoal connects (highest precedence first):
  SHOAL_SERVER, SHOAL_TOKEN, SHOAL_ENVIRONMENT   environment variables
  [profiles.NAME] in $SHOAL_HOME/config.toml      picked by SHOAL_PROFILE or active_profile
  defaults                                       the local cluster, environment "main"

examples:
  shoal run app.py                 run app.py's local entrypoint; its functions run in containers
  shoal deploy app.py              deploy its functions under the app's name
  shoal app list                   deployed and running apps
  shoal cluster up                 start (or find) the local cluster and show its status
  shoal actor list                 what is running inside shoald
  shoal queue list                 named queues (and `shoal dict list` for dicts)
  shoal image list                 the images built for your functions
  shoal token new --label ci       create a token for another machine
  shoal token set --server build-1:7650 --token tok-...
                                   use a remote shoald from this machine
  shoal config show                which server, token and environment are in effect

Run `shoal COMMAND --help` for the options of each command. Set SHOAL_DEBUG=1 to
see tracebacks."""


class Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs to the terminal width but keeps paragraphs with indented lines
    (examples, tables) exactly as written."""

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line[:1].isspace() for line in lines) or any(line.endswith(":") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(
                    textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(paragraphs)


class Parser(argparse.ArgumentParser):
    """argparse with Shoal's error format: one line, exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"shoal: {message} (see `{self.prog} --help`).\n")
        sys.exit(2)


def add_group(subparsers, name: str, *, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """Adds a command group (``shoal cluster``) whose bare invocation prints its help."""
    group = subparsers.add_parser(name, help=help, description=description, epilog=epilog)
    group.set_defaults(handler=None, group_parser=group)
    return group


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON (stable keys)")


def note(message: str) -> None:
    """Progress and side notes go to stderr, so stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)


def build_parser() -> Parser:
    from . import actor, app_cmd, cluster, config_cmd, container, run, token  # noqa: PLC0415
    from . import dict_cmd, environment_cmd, image_cmd, queue_cmd, secret_cmd  # noqa: PLC0415

    parser = Parser(prog="shoal", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    parser.add_argument(
        "-e", "--env", metavar="NAME", default=None,
        help="the environment to use (overrides SHOAL_ENVIRONMENT and the profile)",
    )
    parser.set_defaults(handler=None, group_parser=parser)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    run.register(subparsers)
    app_cmd.register(subparsers)
    container.register(subparsers)
    cluster.register(subparsers)
    token.register(subparsers)
    actor.register(subparsers)
    config_cmd.register(subparsers)
    queue_cmd.register(subparsers)
    dict_cmd.register(subparsers)
    secret_cmd.register(subparsers)
    environment_cmd.register(subparsers)
    image_cmd.register(subparsers)
    _add_env_option(subparsers)
    return parser


def _add_env_option(subparsers) -> None:
    """Lets `-e/--env NAME` also follow a command (`shoal queue list -e dev`) wherever the command
    does not use `-e` itself (`shoal token new -e` names the new token's environment)."""
    for sub in subparsers.choices.values():
        taken = {flag for action in sub._actions for flag in action.option_strings}
        if not any(flag == "-e" or flag.startswith("--env") for flag in taken):
            sub.add_argument("-e", "--env", dest="env", metavar="NAME", default=argparse.SUPPRESS,
                             help="the environment to use (overrides SHOAL_ENVIRONMENT and the profile)")
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_env_option(action)


def _sentence(message: str) -> str:
    """Ends a one-line message with a full stop; multi-line messages (log tails) stay as they are."""
    message = message.strip() or "unknown error"
    if "\n" not in message and message[-1] not in ".!?:":
        message += "."
    return message


def main(argv: Sequence[str] | None = None) -> int:
    debug = os.environ.get("SHOAL_DEBUG", "") not in ("", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:
        args.group_parser.print_help(sys.stderr)
        return 2
    if getattr(args, "env", None):
        # The environment variable has the highest precedence in config.resolve(), so every
        # connection this command makes (the CLI's and the SDK's) uses the environment.
        os.environ["SHOAL_ENVIRONMENT"] = args.env
    try:
        return int(args.handler(args) or 0)
    except Error as e:
        if debug:
            traceback.print_exc()
        print(f"shoal: {_sentence(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shoal: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`shoal actor list | head`): not an error. Point stdout at devnull
        # so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
