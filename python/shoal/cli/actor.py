"""``shoal actor list|inspect``."""

from __future__ import annotations

from .. import _client
from . import add_group, add_json_flag, note
from ._output import print_fields, print_json, print_table

DESCRIPTION = """\
List and inspect the actors inside shoald.

Every service in shoald (the gateway, the storage writer, node agents, schedulers...)
is an actor. Each reports its kind, its lifecycle state, how many messages wait in its
mailbox, and counters and details of its own. A growing mailbox is the first sign of an
overloaded service."""

EPILOG = """\
examples:
  shoal actor list
  shoal actor list --json | jq '.[] | select(.mailbox_depth > 100)'
  shoal actor inspect gateway"""

#: At most this many counters are shown per actor in the `list` table; `inspect` shows all.
LIST_COUNTERS = 3


def register(subparsers) -> None:
    group = add_group(
        subparsers, "actor", help="list and inspect the actors inside shoald", description=DESCRIPTION, epilog=EPILOG
    )
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    list_ = commands.add_parser(
        "list", help="one line per actor: name, kind, state, mailbox depth, counters",
        description="List the actors running in shoald with their state, mailbox depth and main counters.",
    )
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    inspect = commands.add_parser(
        "inspect", help="everything one actor reports",
        description="Show one actor's state, mailbox depth, and all its counters and details.",
    )
    inspect.add_argument("name", metavar="NAME", help="the actor's name, as shown by `shoal actor list`")
    add_json_flag(inspect)
    inspect.set_defaults(handler=cmd_inspect)


def normalize(actor: dict) -> dict:
    """The stable JSON shape of an actor snapshot."""
    return {
        "name": actor.get("name", ""),
        "kind": actor.get("kind", ""),
        "state": actor.get("state", ""),
        "mailbox_depth": int(actor.get("mailbox_depth") or 0),
        "counters": {str(k): int(v) for k, v in dict(actor.get("counters") or {}).items()},
        "details": {str(k): str(v) for k, v in dict(actor.get("details") or {}).items()},
    }


def _counter_summary(counters: dict) -> str:
    items = [f"{k}={v}" for k, v in counters.items()]
    if len(items) > LIST_COUNTERS:
        items = items[:LIST_COUNTERS] + [f"(+{len(counters) - LIST_COUNTERS})"]
    return " ".join(items) or "-"


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        actors = sorted((normalize(a) for a in conn.list_actors()), key=lambda a: a["name"])
    if args.json:
        print_json(actors)
        return 0
    print_table(
        ["NAME", "KIND", "STATE", "MAILBOX", "COUNTERS"],
        [[a["name"], a["kind"], a["state"], a["mailbox_depth"], _counter_summary(a["counters"])] for a in actors],
        empty="no actors",
    )
    return 0


def cmd_inspect(args) -> int:
    with _client.connect(notify=note) as conn:
        actor = normalize(conn.inspect_actor(args.name))
    if args.json:
        print_json(actor)
        return 0
    print_fields(
        [
            ("name", actor["name"]),
            ("kind", actor["kind"]),
            ("state", actor["state"]),
            ("mailbox", actor["mailbox_depth"]),
        ]
    )
    for title, values in (("counters", actor["counters"]), ("details", actor["details"])):
        print(f"{title}:")
        if values:
            print_fields(list(values.items()), indent="  ")
        else:
            print("  (none)")
    return 0
