"""``shoal queue create|list|len|peek|clear|delete``."""

from __future__ import annotations

import sys

from .. import _client
from .._data_transport import NativeData
from ..exception import InvalidError
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_json, print_table

DESCRIPTION = """\
Create, inspect, clear and delete queues.

A queue is a durable FIFO named within your environment, used from code as
shoal.Queue.from_name(NAME). Items are Python objects (pickled); each partition of a
queue is its own FIFO, and the default partition has no name. A partition is cleared
24 hours (or its partition_ttl) after the last put into it."""

EPILOG = """\
examples:
  shoal queue create jobs
  shoal queue list --json
  shoal queue len jobs --total
  shoal queue peek jobs 5                 the first 5 items, without removing them
  shoal queue peek jobs --partition user-7
  shoal queue clear jobs --all --yes
  shoal queue delete jobs --yes"""

#: Characters of an item's repr shown in tables.
REPR_WIDTH = 100


def register(subparsers) -> None:
    group = add_group(subparsers, "queue", help="create, inspect, clear and delete queues",
                      description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    create = commands.add_parser("create", help="create a named queue",
                                 description="Create an empty queue named NAME in your environment.")
    create.add_argument("name", metavar="NAME")
    add_json_flag(create)
    create.set_defaults(handler=cmd_create)

    list_ = commands.add_parser("list", help="named queues with their item counts",
                                description="List the named queues of your environment (ephemeral "
                                "queues are not listed): items, partitions, size, creation time.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    len_ = commands.add_parser("len", help="the number of items in a partition (or all)",
                               description="Print the number of items in the default partition, "
                               "in --partition P, or in every partition with --total.")
    len_.add_argument("name", metavar="NAME")
    len_.add_argument("--partition", "-p", metavar="P", help="a named partition (default: the default one)")
    len_.add_argument("--total", "-t", action="store_true", help="count every partition")
    add_json_flag(len_)
    len_.set_defaults(handler=cmd_len)

    peek = commands.add_parser("peek", help="show the first items without removing them",
                               description="Show the first N items (default 1) of a partition, "
                               "in order, without removing them.")
    peek.add_argument("name", metavar="NAME")
    peek.add_argument("n", metavar="N", type=int, nargs="?", default=1, help="how many items (default 1)")
    peek.add_argument("--partition", "-p", metavar="P", help="a named partition (default: the default one)")
    add_json_flag(peek)
    peek.set_defaults(handler=cmd_peek)

    clear = commands.add_parser("clear", help="remove every item of a partition (or all)",
                                description="Remove every item of the default partition, of "
                                "--partition P, or of every partition with --all.")
    clear.add_argument("name", metavar="NAME")
    clear.add_argument("--partition", "-p", metavar="P", help="a named partition (default: the default one)")
    clear.add_argument("--all", "-a", action="store_true", help="clear every partition")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    clear.set_defaults(handler=cmd_clear)

    delete = commands.add_parser("delete", help="delete a queue and its items",
                                 description="Delete the queue NAME and every item in it.")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=cmd_delete)


def confirm(question: str, yes: bool) -> bool:
    """Asks on a terminal unless --yes; scripts (no terminal) are not asked."""
    if yes or not sys.stdin.isatty():
        return True
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def normalize(info: dict) -> dict:
    """The stable JSON shape of a queue."""
    return {
        "name": info.get("name", ""),
        "environment": info.get("environment", ""),
        "items": int(info.get("item_count") or 0),
        "bytes": int(info.get("byte_count") or 0),
        "partitions": int(info.get("partition_count") or 0),
        "created_at_ms": int(info.get("created_at_ms") or 0),
    }


def describe(value) -> str:
    text = repr(value)
    return text if len(text) <= REPR_WIDTH else text[: REPR_WIDTH - 1] + "…"


def json_value(value):
    """A JSON-friendly form of an item: itself when it is plain data, else its repr."""
    import json  # noqa: PLC0415

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def partition_of(args) -> str:
    partition = getattr(args, "partition", None)
    if partition is not None and not partition:
        raise InvalidError("--partition needs a non-empty name (omit it for the default partition)")
    return partition or ""


def cmd_create(args) -> int:
    with _client.connect(notify=note) as conn:
        info = normalize(NativeData(conn).create("queue", args.name))
    if args.json:
        print_json(info)
    else:
        print(f"created queue {info['name']} in environment {info['environment']}")
    return 0


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        queues = [normalize(q) for q in NativeData(conn).list("queue")]
    if args.json:
        print_json(queues)
        return 0
    print_table(
        ["NAME", "ITEMS", "PARTITIONS", "BYTES", "CREATED"],
        [[q["name"], q["items"], q["partitions"], q["bytes"], format_time_ms(q["created_at_ms"])] for q in queues],
        empty="no queues",
    )
    return 0


def cmd_len(args) -> int:
    if args.total and args.partition is not None:
        raise InvalidError("pass either --partition or --total, not both")
    with _client.connect(notify=note) as conn:
        data = NativeData(conn)
        data.lookup("queue", args.name, False)
        n = data.queue_len(args.name, partition_of(args), bool(args.total))
    if args.json:
        print_json({"name": args.name, "partition": args.partition, "total": bool(args.total), "len": n})
    else:
        print(n)
    return 0


def cmd_peek(args) -> int:
    from .._data_object import loads  # noqa: PLC0415

    if args.n <= 0:
        raise InvalidError(f"N must be positive, not {args.n}")
    with _client.connect(notify=note) as conn:
        data = NativeData(conn)
        data.lookup("queue", args.name, False)
        items, _ = data.queue_peek(args.name, partition_of(args), 0, args.n, 0)
    values = [(seq, loads(raw, "a queue item")) for seq, raw in items[: args.n]]
    if args.json:
        print_json([{"seq": seq, "value": json_value(v)} for seq, v in values])
        return 0
    if not values:
        print("the partition is empty")
    for _, v in values:
        print(describe(v))
    return 0


def cmd_clear(args) -> int:
    if args.all and args.partition is not None:
        raise InvalidError("pass either --partition or --all, not both")
    what = "every partition" if args.all else (f"partition {args.partition!r}" if args.partition else "the default partition")
    if not confirm(f"remove every item of {what} of queue {args.name}?", args.yes):
        print("nothing cleared")
        return 1
    with _client.connect(notify=note) as conn:
        data = NativeData(conn)
        data.lookup("queue", args.name, False)
        data.queue_clear(args.name, partition_of(args), bool(args.all))
    print(f"cleared {what} of queue {args.name}")
    return 0


def cmd_delete(args) -> int:
    if not confirm(f"delete queue {args.name} and every item in it?", args.yes):
        print("nothing deleted")
        return 1
    with _client.connect(notify=note) as conn:
        NativeData(conn).delete("queue", args.name)
    print(f"deleted queue {args.name}")
    return 0
