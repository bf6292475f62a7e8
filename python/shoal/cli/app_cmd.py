"""``shoal app list|stop|logs``."""

from __future__ import annotations

import time

from .. import _client
from .._app import print_log_lines
from ..exception import ConnectionError
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_json, print_table

DESCRIPTION = """\
List, stop and read the logs of apps: deployed apps (versioned, they survive daemon
restarts), detached runs and the ephemeral apps of running `shoal run` commands."""

EPILOG = """\
examples:
  shoal app list
  shoal app list --json | jq '.[] | select(.mode == "deployed") | .name'
  shoal app logs hello -f
  shoal app stop hello"""

LOG_POLL_S = 0.5


def register(subparsers) -> None:
    group = add_group(subparsers, "app", help="list, stop and read the logs of apps", description=DESCRIPTION, epilog=EPILOG)
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    list_ = commands.add_parser("list", help="one line per app: name, id, mode, state, version",
                                description="List the apps of your environment.")
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    stop = commands.add_parser("stop", help="stop an app and its containers",
                               description="Stop an app: its containers are shut down (exit hooks run) and its "
                               "functions no longer take calls.")
    stop.add_argument("name", metavar="NAME")
    stop.set_defaults(handler=cmd_stop)

    logs = commands.add_parser("logs", help="print an app's container logs",
                               description="Print the recent output of an app's containers, each line prefixed "
                               "by its container id; -f keeps following new lines until Ctrl-C.")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(handler=cmd_logs)


def normalize(app: dict) -> dict:
    return {
        "app_id": str(app.get("app_id", "")),
        "name": str(app.get("name", "")),
        "mode": str(app.get("mode", "")),
        "state": str(app.get("state", "")),
        "version": int(app.get("version") or 0),
        "created_at_ms": int(app.get("created_at_ms") or 0),
        "function_names": [str(f) for f in app.get("function_names") or []],
        "environment": str(app.get("environment", "")),
    }


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        apps = sorted((normalize(a) for a in conn.list_apps()), key=lambda a: (a["name"], a["version"]))
    if args.json:
        print_json(apps)
        return 0
    print_table(
        ["NAME", "APP ID", "MODE", "STATE", "VERSION", "CREATED", "FUNCTIONS"],
        [[a["name"], a["app_id"], a["mode"], a["state"], a["version"] or "-", format_time_ms(a["created_at_ms"]),
          ", ".join(a["function_names"]) or "-"] for a in apps],
        empty="no apps",
    )
    return 0


def cmd_stop(args) -> int:
    with _client.connect(notify=note) as conn:
        conn.stop_app(args.name)
    print(f"stopped app {args.name}")
    return 0


def cmd_logs(args) -> int:
    with _client.connect(notify=note) as conn:
        stream = conn.app_logs(args.name, args.follow)
        try:
            while True:
                lines, done = stream.poll(LOG_POLL_S)
                print_log_lines(lines)
                if done:
                    if args.follow and getattr(stream, "ended", False):
                        note(f"shoal: app {args.name} stopped; that was the end of its output.")
                    return 0
        except ConnectionError:
            if not args.follow:
                raise
            note(f"shoal: lost the connection to shoald; stopped following {args.name}.")
            time.sleep(0)
            return 1
        finally:
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass
