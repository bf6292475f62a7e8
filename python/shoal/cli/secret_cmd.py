"""``shoal secret create|list|delete``. Values go to shoald and never come back: no command
prints one, and errors name variables, not values."""

from __future__ import annotations

from pathlib import Path

from .. import _client
from ..exception import InvalidError
from ..secret import check_key, check_name, parse_dotenv
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_json, print_table
from .queue_cmd import confirm

DESCRIPTION = """\
Create, list and delete named secrets.

A secret is a set of environment variables stored in shoald, named within your environment.
Functions get them with secrets=[shoal.Secret.from_name(NAME)]; shoald reads the values when a
container starts. Listings show names and variable names, never values."""

EPILOG = """\
examples:
  shoal secret create stripe STRIPE_KEY=sk_test_123 STRIPE_ACCOUNT=acct_1
  shoal secret create aws --from-dotenv .env.aws
  shoal secret create stripe STRIPE_KEY=sk_live_456 --force
  shoal secret list --json
  shoal secret delete stripe --yes"""


def register(subparsers) -> None:
    group = add_group(subparsers, "secret", help="create, list and delete named secrets",
                      description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    create = commands.add_parser(
        "create", help="store a named secret",
        description="Store the secret NAME with the given KEY=VALUE variables (and those of "
        "--from-dotenv; KEY=VALUE arguments win). Refused if NAME exists, unless --force, which "
        "replaces all of its variables.")
    create.add_argument("name", metavar="NAME")
    create.add_argument("pairs", metavar="KEY=VALUE", nargs="*")
    create.add_argument("--from-dotenv", metavar="FILE", help="read variables from a dotenv file")
    create.add_argument("--force", action="store_true", help="replace the secret if it exists")
    add_json_flag(create)
    create.set_defaults(handler=cmd_create)

    list_ = commands.add_parser("list", help="secrets with their variable names",
                                description="List the secrets of your environment: name, "
                                "variable names, creation time. Values are never shown.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    delete = commands.add_parser("delete", help="delete a secret",
                                 description="Delete the secret NAME. Containers that start "
                                 "afterwards and name it fail to start.")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_delete)


def normalize(info: dict) -> dict:
    """The stable JSON shape of a secret (no values, ever)."""
    return {
        "name": info.get("name", ""),
        "environment": info.get("environment", ""),
        "keys": list(info.get("keys") or []),
        "created_at_ms": int(info.get("created_at_ms") or 0),
    }


def _entries(args) -> dict:
    entries: dict = {}
    if args.from_dotenv:
        path = Path(args.from_dotenv).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidError(f"cannot read {path}: {e.strerror}") from None
        entries.update(parse_dotenv(text, str(path)))
    for i, pair in enumerate(args.pairs, 1):
        key, sep, value = pair.partition("=")
        if not sep:
            # Never echo the argument: it may be a value typed without its KEY=.
            raise InvalidError(f"argument {i} after NAME is not KEY=VALUE (it has no '=')")
        check_key(key, f"argument {i} after NAME")
        entries[key] = value
    if not entries:
        raise InvalidError("give at least one KEY=VALUE (or --from-dotenv FILE)")
    return entries


def cmd_create(args) -> int:
    check_name(args.name)
    entries = _entries(args)
    with _client.connect(notify=note) as conn:
        info = normalize(conn.create_secret(args.name, entries, bool(args.force)))
    if args.json:
        print_json(info)
    else:
        print(f"created secret {info['name']} in environment {info['environment']} "
              f"with {len(info['keys'])} variable(s): {', '.join(info['keys'])}")
    return 0


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        secrets = [normalize(s) for s in conn.list_secrets()]
    if args.json:
        print_json(secrets)
        return 0
    print_table(
        ["NAME", "KEYS", "CREATED"],
        [[s["name"], ",".join(s["keys"]), format_time_ms(s["created_at_ms"])] for s in secrets],
        empty="no secrets",
    )
    return 0


def cmd_delete(args) -> int:
    if not confirm(f"delete secret {args.name}?", args.yes):
        note("not deleted")
        return 1
    with _client.connect(notify=note) as conn:
        conn.delete_secret(args.name)
    print(f"deleted secret {args.name}")
    return 0
