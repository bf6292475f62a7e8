"""``shoal environment create|list|delete``: the environments of a cluster (admin token)."""

from __future__ import annotations

import re

from .. import _client
from ..exception import InvalidError
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_json, print_table
from .queue_cmd import confirm

DESCRIPTION = """\
Create, list and delete environments.

An environment is a namespace for apps, functions, queues, dicts and secrets: the same name in
two environments is two different objects. Every cluster has "main". Creating and deleting need
an admin token (the cluster's admin.token); a token scoped to one environment lists only its own.
Pick the environment of a command with `shoal -e NAME ...`, SHOAL_ENVIRONMENT or
`shoal config set-environment NAME`."""

EPILOG = """\
examples:
  shoal environment create dev
  shoal environment list --json
  shoal -e dev queue list
  shoal environment delete dev --yes"""

_NAME = re.compile(r"[a-z0-9_-]{1,64}")


def register(subparsers) -> None:
    group = add_group(subparsers, "environment", help="create, list and delete environments",
                      description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    create = commands.add_parser("create", help="create an environment",
                                 description="Create the environment NAME (1-64 characters from "
                                 "a-z, 0-9, '-' and '_'). Needs an admin token.")
    create.add_argument("name", metavar="NAME")
    add_json_flag(create)
    create.set_defaults(handler=cmd_create)

    list_ = commands.add_parser("list", help="the environments you can open",
                                description="List the environments: every one for an admin "
                                "token, only its own for a scoped token.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    delete = commands.add_parser("delete", help="delete an environment",
                                 description="Delete the environment NAME. Refused for 'main' and "
                                 "while it still has secrets or tokens. Needs an admin token.")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_delete)


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidError(
            f"environment name {name[:64]!r} is invalid: use 1-64 characters from a-z, 0-9, '-' and '_'"
        )


def normalize(info: dict) -> dict:
    """The stable JSON shape of an environment."""
    return {"name": info.get("name", ""), "created_at_ms": int(info.get("created_at_ms") or 0)}


def cmd_create(args) -> int:
    check_name(args.name)
    with _client.connect(notify=note) as conn:
        info = normalize(conn.create_environment(args.name))
    if args.json:
        print_json(info)
    else:
        print(f"created environment {info['name']}")
    return 0


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        envs = [normalize(e) for e in conn.list_environments()]
    if args.json:
        print_json(envs)
        return 0
    print_table(["NAME", "CREATED"], [[e["name"], format_time_ms(e["created_at_ms"])] for e in envs],
                empty="no environments")
    return 0


def cmd_delete(args) -> int:
    if not confirm(f"delete environment {args.name}?", args.yes):
        note("not deleted")
        return 1
    with _client.connect(notify=note) as conn:
        conn.delete_environment(args.name)
    print(f"deleted environment {args.name}")
    return 0
