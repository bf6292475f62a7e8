"""``shoal container list|stop``."""

from __future__ import annotations

import time

from .. import _client
from . import add_group, add_json_flag, note
from ._output import format_duration_s, print_json, print_table

DESCRIPTION = """\
List and stop the containers that run functions. Each container serves one function (or
class) of one app; the scheduler starts and stops them as load changes."""

EPILOG = """\
examples:
  shoal container list
  shoal container list --json | jq 'map(select(.app_name == "hello")) | length'
  shoal container stop ct-3f2a9c"""


def register(subparsers) -> None:
    group = add_group(subparsers, "container", help="list and stop function containers", description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    list_ = commands.add_parser("list", help="one line per container: id, app, function, state, inputs",
                                description="List the running containers.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    stop = commands.add_parser("stop", help="stop a container",
                               description="Stop a container: it takes no new inputs, its exit hooks run, and the "
                               "inputs it was running are retried elsewhere.")
    stop.add_argument("container_id", metavar="ID")
    stop.set_defaults(handler=cmd_stop)


def normalize(c: dict) -> dict:
    return {
        "container_id": str(c.get("container_id", "")),
        "app_name": str(c.get("app_name", "")),
        "function_name": str(c.get("function_name", "")),
        "state": str(c.get("state", "")),
        "inflight": int(c.get("inflight") or 0),
        "started_at_ms": int(c.get("started_at_ms") or 0),
        "node_id": str(c.get("node_id", "")),
    }


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        containers = sorted((normalize(c) for c in conn.list_containers()),
                            key=lambda c: (c["app_name"], c["function_name"], c["container_id"]))
    if args.json:
        print_json(containers)
        return 0
    now_ms = time.time() * 1000
    print_table(
        ["CONTAINER ID", "APP", "FUNCTION", "STATE", "INPUTS", "UPTIME", "NODE"],
        [[c["container_id"], c["app_name"], c["function_name"], c["state"], c["inflight"],
          format_duration_s((now_ms - c["started_at_ms"]) / 1000) if c["started_at_ms"] else "-", c["node_id"]]
         for c in containers],
        empty="no containers",
    )
    return 0


def cmd_stop(args) -> int:
    with _client.connect(notify=note) as conn:
        conn.stop_container(args.container_id)
    print(f"stopped container {args.container_id}")
    return 0
