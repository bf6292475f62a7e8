"""``shoal token new|set|list|revoke``."""

from __future__ import annotations

import os
import sys

from .. import _client, config
from ..exception import Error, InvalidError
from . import add_group, add_json_flag, note
from ._output import format_time_ms, print_json, print_table

DESCRIPTION = """\
Create, store, list and revoke API tokens.

A token authenticates a client to shoald and scopes it to one environment. shoald keeps
only a hash: the secret is shown once, by `shoal token new`. Each token has a public id
(tok-...) used to list and revoke it. The embedded local cluster creates an admin token
for environment "main" on first start ($SHOAL_HOME/state/admin.token) and the client
uses it automatically."""

EPILOG = """\
examples:
  shoal token new --label laptop                 create a token (shown once)
  shoal token new --environment staging --json   for scripts: {"token": ..., "token_id": ...}
  shoal token set --server build-1:7650 --token SECRET
                                                 store it in the active profile on another machine
  shoal token set --profile prod --server prod-1:7650 --token SECRET --no-activate
  shoal token list
  shoal token revoke tok-4f2a91c0"""


def register(subparsers) -> None:
    group = add_group(
        subparsers,
        "token",
        help="create, store, list and revoke API tokens",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    commands = group.add_subparsers(title="commands", metavar="COMMAND")

    new = commands.add_parser(
        "new",
        help="create a token (its secret is shown once)",
        description="Create a token on the server you are connected to. The secret is printed "
        "once and cannot be shown again; store it right away (e.g. with `shoal token set` on the "
        "machine that will use it).",
    )
    new.add_argument("--environment", "-e", default="", metavar="E",
                     help="environment the token is scoped to (default: your session's, usually main)")
    new.add_argument("--label", "-l", default="", metavar="L", help="a note saying who or what uses the token")
    add_json_flag(new)
    new.set_defaults(handler=cmd_new)

    set_ = commands.add_parser(
        "set",
        help="store a server address and token in a profile",
        description="Store a server address and token in a profile of $SHOAL_HOME/config.toml "
        "(written with mode 0600). By default the token is first checked against the server, and "
        "the profile becomes the active one.",
    )
    set_.add_argument("--server", "-s", required=True, metavar="HOST:PORT", help="address of shoald")
    set_.add_argument("--token", "-t", required=True, metavar="TOKEN",
                      help="the secret from `shoal token new`; '-' reads it from stdin")
    set_.add_argument("--profile", "-p", metavar="P",
                      help="profile to write (default: SHOAL_PROFILE, else the active profile, else 'default')")
    set_.add_argument("--environment", "-e", metavar="E",
                      help="environment to use (default: the token's, as reported by the server)")
    set_.add_argument("--no-verify", dest="verify", action="store_false",
                      help="store the token without checking it against the server")
    set_.add_argument("--no-activate", dest="activate", action="store_false",
                      help="do not make this profile the active one")
    set_.set_defaults(handler=cmd_set)

    list_ = commands.add_parser(
        "list", help="list tokens (never their secrets)",
        description="List the tokens the server knows: id, environment, label, creation time. "
        "Secrets are never shown.",
    )
    add_json_flag(list_)
    list_.set_defaults(handler=cmd_list)

    revoke = commands.add_parser(
        "revoke", help="revoke a token by id",
        description="Revoke a token. Sessions opened with it stop working.",
    )
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="the token's public id (tok-...), from `shoal token list`")
    revoke.set_defaults(handler=cmd_revoke)


TOKEN_INFO_KEYS = ("token_id", "environment", "label", "created_at_ms")


def public_info(info: dict) -> dict:
    """Only the public fields of a token, whatever else the server sends."""
    return {key: info.get(key) for key in TOKEN_INFO_KEYS}


def cmd_new(args) -> int:
    with _client.connect(notify=note) as conn:
        secret, info = conn.create_token(args.environment, args.label)
    info = public_info(info)
    if args.json:
        print_json({"token": secret, **info})
        return 0
    label = f", label {info['label']!r}" if info.get("label") else ""
    print(f"created token {info['token_id']} for environment {info['environment']!r}{label}:")
    print()
    print(f"    {secret}")
    print()
    print("This is the only time the token is shown: store it now. On the machine that will use it, run")
    print(f"`shoal token set --server {conn.address} --token TOKEN`, or set SHOAL_SERVER and SHOAL_TOKEN.")
    return 0


def _default_profile() -> str:
    if os.environ.get("SHOAL_PROFILE"):
        return os.environ["SHOAL_PROFILE"]
    try:
        data = config.load_file(config.config_path())
    except Error:
        data = {}
    return data.get("active_profile") or config.DEFAULT_PROFILE


def cmd_set(args) -> int:
    token = args.token
    if token == "-":
        token = sys.stdin.readline().strip()
    if not token:
        raise InvalidError("the token is empty")
    config.parse_address(args.server)
    profile = args.profile or _default_profile()
    environment = args.environment

    if args.verify:
        target = _client.Target(args.server, token, embedded=False, source="--server")
        try:
            with _client.connect_to(target) as conn:
                info = conn.info()
        except Error as e:
            error = type(e)(
                f"{str(e).rstrip('.')}. Nothing was saved (--no-verify saves the token without checking it)"
            )
            error.code = e.code
            raise error from e
        if environment is None:
            environment = info.get("environment") or None
        note(f"verified: shoald {info.get('version', '?')} at {args.server} accepts the token "
             f"(environment {info.get('environment')!r})")

    path = config.write_profile(
        profile, server=args.server, token=token, environment=environment, activate=args.activate
    )
    active = " (the active profile)" if args.activate else ""
    print(f"saved server {args.server} and token to profile {profile!r}{active} in {path}")
    for var in ("SHOAL_SERVER", "SHOAL_TOKEN", "SHOAL_ENVIRONMENT", "SHOAL_PROFILE"):
        if os.environ.get(var):
            note(f"note: {var} is set in your environment and takes precedence over the config file")
    return 0


def cmd_list(args) -> int:
    with _client.connect(notify=note) as conn:
        tokens = [public_info(t) for t in conn.list_tokens()]
    tokens.sort(key=lambda t: (t.get("created_at_ms") or 0, t.get("token_id") or ""))
    if args.json:
        print_json(tokens)
        return 0
    print_table(
        ["TOKEN_ID", "ENVIRONMENT", "LABEL", "CREATED"],
        [[t["token_id"], t["environment"], t["label"] or "-", format_time_ms(t["created_at_ms"])] for t in tokens],
        empty="no tokens",
    )
    return 0


def cmd_revoke(args) -> int:
    with _client.connect(notify=note) as conn:
        conn.revoke_token(args.token_id)
    print(f"revoked token {args.token_id}; sessions using it stop working")
    return 0
