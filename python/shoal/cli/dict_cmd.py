"""``shoal dict create|list|get|items|clear|delete``."""

from __future__ import annotations

from .. import _client
from .._data_transport import NativeData
from ..exception import InvalidError, NotFoundError
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_json, print_table
from .queue_cmd import confirm, describe, json_value

DESCRIPTION = """\
Create, inspect, clear and delete dicts.

A dict is a durable key-value map named within your environment, used from code as
shoal.Dict.from_name(NAME). Keys and values are Python objects (pickled); on the command
line a KEY is a string."""

EPILOG = """\
examples:
  shoal dict create cache
  shoal dict list --json
  shoal dict get cache model-version
  shoal dict items cache 50 --json
  shoal dict clear cache --yes
  shoal dict delete cache --yes"""

#: Entries `items` shows when N is not given.
DEFAULT_ITEMS = 20


def register(subparsers) -> None:
    group = add_group(subparsers, "dict", help="create, inspect, clear and delete dicts",
                      description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    create = commands.add_parser("create", help="create a named dict",
                                 description="Create an empty dict named NAME in your environment.")
    create.add_argument("name", metavar="NAME")
    add_json_flag(create)
    create.set_defaults(handler=cmd_create)

    list_ = commands.add_parser("list", help="named dicts with their sizes",
                                description="List the named dicts of your environment (ephemeral "
                                "dicts are not listed): entries, size, creation time.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    get = commands.add_parser("get", help="the value of one key",
                              description="Print the value stored under KEY (a string key).")
    get.add_argument("name", metavar="NAME")
    get.add_argument("key", metavar="KEY")
    add_json_flag(get)
    get.set_defaults(handler=cmd_get)

    items = commands.add_parser("items", help="the first entries, in key order",
                                description=f"Show the first N entries (default {DEFAULT_ITEMS}).")
    items.add_argument("name", metavar="NAME")
    items.add_argument("n", metavar="N", type=int, nargs="?", default=DEFAULT_ITEMS,
                       help=f"how many entries (default {DEFAULT_ITEMS})")
    add_json_flag(items)
    items.set_defaults(handler=cmd_items)

    clear = commands.add_parser("clear", help="remove every entry",
                                description="Remove every entry of the dict NAME.")
    clear.add_argument("name", metavar="NAME")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    clear.set_defaults(handler=cmd_clear)

    delete = commands.add_parser("delete", help="delete a dict and its entries",
                                 description="Delete the dict NAME and every entry in it.")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_delete)


def normalize(info: dict) -> dict:
    """The stable JSON shape of a dict."""
    return {
        "name": info.get("name", ""),
        "environment": info.get("environment", ""),
        "entries": int(info.get("item_count") or 0),
        "bytes": int(info.get("byte_count") or 0),
        "created_at_ms": int(info.get("created_at_ms") or 0),
    }


def cmd_create(args) -> int:
    with _client.connect(notify=note) as conn:
        info = normalize(NativeData(conn).create("dict", args.name))
    if args.json:
        print_json(info)
    else:
        print(f"created dict {info['name']} in environment {info['environment']}")
    return 0


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        dicts = [normalize(d) for d in NativeData(conn).list("dict")]
    if args.json:
        print_json(dicts)
        return 0
    print_table(
        ["NAME", "ENTRIES", "BYTES", "CREATED"],
        [[d["name"], d["entries"], d["bytes"], format_time_ms(d["created_at_ms"])] for d in dicts],
        empty="no dicts",
    )
    return 0


def cmd_get(args) -> int:
    from .._data_object import dumps, loads  # noqa: PLC0415

    with _client.connect(notify=note) as conn:
        data = NativeData(conn)
        data.lookup("dict", args.name, False)
        found, raw = data.dict_get(args.name, dumps(args.key, "a dict key"))
    if not found:
        raise NotFoundError(f"dict {args.name} has no key {args.key!r}")
    value = loads(raw, "a dict value")
    if args.json:
        print_json({"key": args.key, "value": json_value(value)})
    else:
        print(describe(value))
    return 0


def cmd_items(args) -> int:
    from .._data_object import loads  # noqa: PLC0415

    if args.n <= 0:
        raise InvalidError(f"N must be positive, not {args.n}")
    with _client.connect(notify=note) as conn:
        data = NativeData(conn)
        data.lookup("dict", args.name, False)
        entries, cursor, done = [], b"", False
        while len(entries) < args.n and not done:
            page, cursor, done = data.dict_scan(args.name, cursor, min(500, args.n - len(entries)), True)
            entries.extend(page)
            if not page:
                break
    pairs = [(loads(k, "a dict key"), loads(v, "a dict value")) for k, v in entries[: args.n]]
    if args.json:
        print_json([{"key": json_value(k), "value": json_value(v)} for k, v in pairs])
        return 0
    print_table(["KEY", "VALUE"], [[describe(k), describe(v)] for k, v in pairs], empty="the dict is empty")
    return 0


def cmd_clear(args) -> int:
    if not confirm(f"remove every entry of dict {args.name}?", args.yes):
        print("nothing cleared")
        return 1
    with _client.connect(notify=note) as conn:
        data = NativeData(conn)
        data.lookup("dict", args.name, False)
        data.dict_clear(args.name)
    print(f"cleared dict {args.name}")
    return 0


def cmd_delete(args) -> int:
    if not confirm(f"delete dict {args.name} and every entry in it?", args.yes):
        print("nothing deleted")
        return 1
    with _client.connect(notify=note) as conn:
        NativeData(conn).delete("dict", args.name)
    print(f"deleted dict {args.name}")
    return 0
