"""``shoal cluster up|down|status``."""

from __future__ import annotations

import time

from .. import _client, _embedded, config
from ..exception import InvalidError
from . import add_group, add_json_flag, note
from ._output import format_duration_s, format_time_ms, print_fields, print_json

DESCRIPTION = """\
Start, stop and inspect the shoald you are talking to.

With no server configured (no SHOAL_SERVER, no server in the active profile), these
commands manage the embedded local cluster: one `shoald --roles all` listening on
127.0.0.1, with its state, admin token and log in $SHOAL_HOME/state. With a server
configured, `up` and `status` check that server instead."""

EPILOG = """\
examples:
  shoal cluster up                  start the local cluster, or reuse the running one
  shoal cluster status --json       version, roles, address, pid... as JSON
  shoal cluster down                stop the local cluster (SIGTERM, waits up to 15 s)
  SHOAL_SERVER=10.0.0.5:7650 SHOAL_TOKEN=... shoal cluster status
                                    check a remote shoald"""


def register(subparsers) -> None:
    group = add_group(
        subparsers,
        "cluster",
        help="start, stop and inspect the shoald cluster",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the local cluster (or reuse it), or verify the configured server",
        description="Start the embedded local cluster if it is not running, or verify that the "
        "configured server answers and accepts the token; then print the cluster status.",
    )
    add_json_flag(up)
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser(
        "down",
        help="stop the local cluster",
        description="Stop the embedded local cluster: SIGTERM its shoald and wait up to 15 s for "
        "an orderly shutdown. Its state (tokens, apps, volumes) stays in $SHOAL_HOME/state. "
        "Refuses when a remote server is configured.",
    )
    down.set_defaults(handler=cmd_down)

    status = commands.add_parser(
        "status",
        help="show version, roles, address and uptime",
        description="Show the status of the shoald you are talking to. Does not start the local "
        "cluster: run `shoal cluster up` for that.",
    )
    add_json_flag(status)
    status.set_defaults(handler=cmd_status)


def status_document(conn: _client.Connection, info: dict) -> dict:
    """The `--json` document of `cluster up/status`: shoald's info plus how we reached it."""
    doc = dict(info)
    doc["address"] = conn.target.address
    doc["mode"] = "embedded" if conn.target.embedded else "remote"
    doc["source"] = conn.target.source
    return doc


def print_status(conn: _client.Connection, info: dict) -> None:
    where = "local cluster" if conn.target.embedded else f"from {conn.target.source}"
    print(f"shoald {info.get('version', '?')} at {conn.target.address} ({where})")
    started = info.get("started_at_ms") or 0
    uptime = f" (up {format_duration_s(time.time() - started / 1000)})" if started else ""
    print_fields(
        [
            ("roles", ", ".join(info.get("roles") or []) or "-"),
            ("listening on", info.get("listen_address")),
            ("node", info.get("node_id")),
            ("pid", info.get("pid")),
            ("state dir", info.get("state_dir")),
            ("started", format_time_ms(started) + uptime),
            ("environment", info.get("environment")),
            ("schema version", info.get("schema_version")),
            ("actors", info.get("actor_count")),
        ],
        indent="  ",
    )


def cmd_up(args) -> int:
    settings = config.resolve()
    target = _client.resolve_target(settings, start=True, notify=note)
    with _client.connect_to(target) as conn:
        info = conn.info()
    if args.json:
        doc = status_document(conn, info)
        doc["started"] = target.started
        print_json(doc)
        return 0
    if target.embedded:
        verb = "started" if target.started else "reusing the running"
        print(f"{verb} local shoald (pid {target.local_pid}); log: {settings.state_dir / _embedded.LOG_FILE}")
    else:
        print(f"shoald at {target.address} answers and accepts the token")
    print_status(conn, info)
    return 0


def cmd_status(args) -> int:
    target = _client.resolve_target(config.resolve(), start=False)
    with _client.connect_to(target) as conn:
        info = conn.info()
    if args.json:
        print_json(status_document(conn, info))
    else:
        print_status(conn, info)
    return 0


def cmd_down(args) -> int:
    settings = config.resolve()
    if not settings.embedded:
        raise InvalidError(
            f"a remote server is configured ({settings.server}, from {settings.sources['server']}); "
            "`shoal cluster down` only stops the local cluster, so stop that shoald on its own host"
        )
    pid = _embedded.stop(settings.state_dir)
    if pid is None:
        print("no local cluster is running")
    else:
        print(f"stopped local shoald (pid {pid}); its state stays in {settings.state_dir}")
    return 0
