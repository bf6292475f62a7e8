"""Connecting to shoald: resolves the settings, starts the embedded local cluster when no server
is configured, and turns native ``RpcError``s into :mod:`shoal.exception` errors whose messages
say what to do.

``shoal._native`` (the C++ client core) is imported here, lazily, on the first connection; importing
``shoal`` alone never loads it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from . import __version__, config
from .exception import (
    AuthError,
    ConnectionError,
    InternalError,
    NotFoundError,
    from_rpc_error,
    rpc_code,
    rpc_message,
)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a connection goes, and how that was decided."""

    address: str
    token: str
    embedded: bool
    #: Where the address came from: "SHOAL_SERVER", "profile 'x' in ...", "local cluster".
    source: str
    #: For the embedded cluster: its shoald pid and whether this command started it.
    local_pid: int | None = None
    started: bool = False


def _native_module():
    try:
        from . import _native  # noqa: PLC0415 - lazy by design
    except ImportError as e:
        raise InternalError(
            f"the native extension shoal._native is not available ({e}); build it with "
            "`cmake --build build` in the Shoal source tree, or reinstall shoal"
        ) from None
    return _native


def _one_line(text: str) -> str:
    """Server messages go into one-sentence CLI errors: collapse any line breaks."""
    return re.sub(r"\s*\n\s*", " ", text).strip()


_WRAPPER = re.compile(r"^(?:cannot reach shoald at|lost the connection to shoald at) \S+ \((.*)\)\.?$", re.S)


def _innermost(message: str) -> str:
    """The native client wraps causes ("cannot reach shoald at A (lost the connection to shoald
    at A (connection refused))"); the CLI adds its own context, so keep only the cause."""
    message = message.strip()
    while (match := _WRAPPER.match(message)) is not None:
        message = match.group(1).strip()
    return message


def _reason(message: str) -> str:
    """A short, lowercase reason for a failed connection, from the native message."""
    message = _innermost(message)
    low = message.lower()
    for needle, reason in (
        ("too many segments", "the peer does not speak the Shoal protocol"),
        ("segmentcount", "the peer does not speak the Shoal protocol"),
        ("refused", "connection refused"),
        ("timed out", "connection timed out"),
        ("timeout", "connection timed out"),
        ("no route", "no route to host"),
        ("unreachable", "network unreachable"),
        ("name or service not known", "unknown host"),
        ("getaddrinfo", "cannot resolve the host name"),
        ("resolve", "cannot resolve the host name"),
        ("reset", "connection reset"),
        ("disconnected", "disconnected"),
    ):
        if needle in low:
            return reason
    return _one_line(message) or "unavailable"


def unreachable_message(address: str, reason: str, *, embedded: bool) -> str:
    if embedded:
        return (
            f"cannot reach the local shoald at {address} ({reason}). Restart it with "
            "`shoal cluster down && shoal cluster up`"
        )
    return (
        f"cannot reach shoald at {address} ({reason}). Is it running? Start a local one with "
        "`shoal cluster up`, or check SHOAL_SERVER"
    )


def resolve_target(
    settings: config.Settings | None = None,
    *,
    start: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Target:
    """Decides the address and token to use. With no server configured this finds the embedded
    local cluster, starting it when ``start`` is true (else raising :class:`ConnectionError`)."""
    from . import _embedded  # noqa: PLC0415

    settings = settings or config.resolve()
    if settings.server is not None:
        if not settings.token:
            raise AuthError(
                f"no token is configured for the server {settings.server} "
                f"(from {settings.sources['server']}). Set SHOAL_TOKEN, or run "
                f"`shoal token set --server {settings.server} --token TOKEN` with a token from "
                "`shoal token new`"
            )
        return Target(settings.server, settings.token, embedded=False, source=settings.sources["server"])

    if start:
        kwargs = {} if notify is None else {"notify": notify}
        cluster, started = _embedded.ensure_running(settings.state_dir, **kwargs)
    else:
        cluster, started = _embedded.running(settings.state_dir), False
        if cluster is None:
            raise ConnectionError(
                f"no local cluster is running (state dir {settings.state_dir}); start one with "
                "`shoal cluster up`"
            )
    token = settings.token or cluster.admin_token()
    return Target(
        cluster.address,
        token,
        embedded=True,
        source="local cluster",
        local_pid=cluster.pid,
        started=started,
    )


class Connection:
    """An authenticated session with shoald. Methods return plain dicts and lists, and raise
    :mod:`shoal.exception` errors. Close it (or use ``with``) when done."""

    def __init__(self, target: Target, native_client: Any, native_module: Any):
        self.target = target
        self._client = native_client
        self._native = native_module

    @property
    def address(self) -> str:
        return self.target.address

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a dead connection is not an error
                pass

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._client is None:
            raise ConnectionError("the connection to shoald is closed")
        try:
            return fn(self._client, *args)
        except self._native.RpcError as e:
            code = rpc_code(e)
            message = _one_line(rpc_message(e))
            if code == "unavailable":
                raise from_rpc_error(
                    e, f"lost the connection to shoald at {self.address} while {what} ({_reason(message)})"
                ) from e
            if code == "unauthenticated":
                raise from_rpc_error(
                    e, f"the server at {self.address} no longer accepts the token: {message}"
                ) from e
            raise from_rpc_error(e, message) from e

    def info(self) -> dict:
        return self._call("reading the cluster info", lambda c: c.info())

    def list_actors(self) -> list[dict]:
        return self._call("listing actors", lambda c: c.list_actors())

    def inspect_actor(self, name: str) -> dict:
        try:
            return self._call("inspecting an actor", lambda c: c.inspect_actor(name))
        except NotFoundError as e:
            if name not in str(e):
                raise NotFoundError(f"no actor named {name!r}: {e}") from e
            raise

    def create_token(self, environment: str, label: str) -> tuple[str, dict]:
        return self._call("creating a token", lambda c: c.create_token(environment, label))

    def list_tokens(self) -> list[dict]:
        return self._call("listing tokens", lambda c: c.list_tokens())

    def revoke_token(self, token_id: str) -> None:
        try:
            self._call("revoking a token", lambda c: c.revoke_token(token_id))
        except NotFoundError as e:
            if token_id not in str(e):
                raise NotFoundError(f"no token with id {token_id!r}: {e}") from e
            raise


def connect_to(target: Target) -> Connection:
    """Opens and authenticates a connection to ``target``."""
    native = _native_module()
    try:
        client = native.Client(target.address, target.token, __version__)
    except native.RpcError as e:
        code = rpc_code(e)
        message = _one_line(rpc_message(e))
        if code == "unauthenticated":
            hint = (
                "Create one with `shoal token new` on an authorised machine, then `shoal token set`"
            )
            raise from_rpc_error(
                e, f"the server at {target.address} rejected the token: {message.rstrip('.')}. {hint}"
            ) from None
        if code == "unavailable":
            raise from_rpc_error(
                e, unreachable_message(target.address, _reason(message), embedded=target.embedded)
            ) from None
        raise from_rpc_error(e, f"connecting to shoald at {target.address} failed: {message}") from None
    return Connection(target, client, native)


def connect(
    settings: config.Settings | None = None,
    *,
    start: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Connection:
    """Connects to the configured shoald (starting the embedded local cluster if none is
    configured and ``start`` is true)."""
    return connect_to(resolve_target(settings, start=start, notify=notify))
