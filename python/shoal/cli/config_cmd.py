"""``shoal config show``."""

from __future__ import annotations

import os

from .. import _embedded, config
from . import add_group, add_json_flag, note
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
  SHOAL_PROFILE=prod shoal config show --json
  shoal config set-environment dev"""


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
    set_env = commands.add_parser(
        "set-environment", help="make NAME the profile's environment",
        description="Write environment = NAME into the active profile (SHOAL_PROFILE, else the "
        "file's active_profile, else \"default\") of $SHOAL_HOME/config.toml. Does not contact the "
        "server: `shoal environment list` shows the environments that exist.",
    )
    set_env.add_argument("name", metavar="NAME")
    set_env.add_argument("--profile", metavar="P", help="write this profile instead of the active one")
    set_env.set_defaults(handler=cmd_set_environment)


def cmd_set_environment(args) -> int:
    from .environment_cmd import check_name  # noqa: PLC0415

    check_name(args.name)
    profile = args.profile or config.resolve().profile
    path = config.write_profile(profile, environment=args.name, activate=False)
    print(f"environment {args.name} saved in profile {profile} ({path})")
    if os.environ.get("SHOAL_ENVIRONMENT") and os.environ["SHOAL_ENVIRONMENT"] != args.name:
        note(f"note: SHOAL_ENVIRONMENT={os.environ['SHOAL_ENVIRONMENT']} is set and takes precedence")
    return 0


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
