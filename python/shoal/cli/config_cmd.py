"""``shoal config show``."""

from __future__ import annotations

from .. import _embedded, config
from . import add_group, add_json_flag
from ._output import mask_token, print_fields, print_json

DESCRIPTION = """\
Show the client configuration in effect, and where each value comes from.

Precedence, highest first: the environment variables SHOAL_SERVER, SHOAL_TOKEN and
SHOAL_ENVIRONMENT; then the active profile in $SHOAL_HOME/config.toml (chosen by
SHOAL_PROFILE, else the file's active_profile, else "default"); then the defaults
(the embedded local cluster, environment "main"). Tokens are never shown in full."""

EPILOG = """\
examples:
  shoal config show
  SHOAL_PROFILE=prod shoal config show --json"""


def register(subparsers) -> None:
    group = add_group(
        subparsers, "config", help="show the configuration in effect", description=DESCRIPTION, epilog=EPILOG
    )
    commands = group.add_subparsers(title="commands", metavar="COMMAND")
    show = commands.add_parser(
        "show", help="server, token (masked), environment and their sources",
        description="Show the resolved server, token (first 8 characters), environment and profile, "
        "and where each comes from. Does not contact the server.",
    )
    add_json_flag(show)
    show.set_defaults(handler=cmd_show)


def cmd_show(args) -> int:
    settings = config.resolve()
    token, token_source = settings.token, settings.sources["token"]
    if token is None and settings.embedded:
        try:
            token = _embedded.read_admin_token(settings.state_dir)
            token_source = f"admin token of the local cluster ({settings.state_dir / _embedded.TOKEN_FILE})"
        except Exception:  # noqa: BLE001 - not started yet, or unreadable: nothing to show
            token_source = "the local cluster's admin token, once it has started"
    doc = {
        "config_path": str(settings.config_path),
        "config_exists": settings.config_path.exists(),
        "profile": settings.profile,
        "mode": "embedded" if settings.embedded else "remote",
        "server": settings.server,
        "state_dir": str(settings.state_dir),
        "token": mask_token(token),
        "environment": settings.environment,
        "sources": {**settings.sources, "token": token_source},
    }
    if args.json:
        print_json(doc)
        return 0
    exists = "" if doc["config_exists"] else " (does not exist yet)"
    server = settings.server or f"embedded local cluster (state dir {settings.state_dir})"
    print_fields(
        [
            ("config file", f"{settings.config_path}{exists}"),
            ("profile", f"{settings.profile}    [{settings.sources['profile']}]"),
            ("server", f"{server}    [{settings.sources['server']}]"),
            ("token", f"{doc['token'] or '-'}    [{token_source}]"),
            ("environment", f"{settings.environment}    [{settings.sources['environment']}]"),
        ]
    )
    return 0
