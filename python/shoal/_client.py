"""Connecting to shoald: resolves the settings, starts the embedded local cluster when no server
is configured, and turns native ``RpcError``s into :mod:`shoal.exception` errors whose messages
say what to do.

``shoal._native`` (the C++ client core) is imported here, lazily, on the first connection; importing
``shoal`` alone never loads it.
"""

from __future__ import annotations

import dataclasses
import os
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
    #: The environment to open; "" means the token's own ("main" for an admin token).
    environment: str = ""


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
    # Only an environment someone chose is sent: with none configured a scoped token opens its own.
    environment = "" if settings.sources.get("environment") == "default" else settings.environment
    if settings.server is not None:
        if not settings.token:
            raise AuthError(
                f"no token is configured for the server {settings.server} "
                f"(from {settings.sources['server']}). Set SHOAL_TOKEN, or run "
                f"`shoal token set --server {settings.server} --token TOKEN` with a token from "
                "`shoal token new`"
            )
        return Target(
            settings.server,
            settings.token,
            embedded=False,
            source=settings.sources["server"],
            environment=environment,
        )

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
        environment=environment,
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
        client = self._client
        try:
            return self._guard(what, lambda: fn(client, *args))
        except AttributeError as e:
            if getattr(e, "obj", None) is client and not hasattr(client, getattr(e, "name", "") or ""):
                raise InternalError(
                    f"this build of shoal._native has no {e.name}() (needed for {what}); rebuild it "
                    "with `cmake --build build`, or reinstall shoal"
                ) from None
            raise

    def has(self, method: str) -> bool:
        """Whether the native client offers ``method`` (a newer extension may offer more)."""
        return self._client is not None and hasattr(self._client, method)

    def _guard(self, what: str, thunk: Callable[[], Any]) -> Any:
        """Runs ``thunk`` and maps a native ``RpcError`` onto :mod:`shoal.exception`."""
        try:
            return thunk()
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

    def create_environment(self, name: str) -> dict:
        return dict(
            self._call(f"creating the environment {name!r}", lambda c: c.create_environment(name))
        )

    def list_environments(self) -> list[dict]:
        return [dict(e) for e in self._call("listing environments", lambda c: c.list_environments())]

    def delete_environment(self, name: str) -> None:
        self._call(f"deleting the environment {name!r}", lambda c: c.delete_environment(name))

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


    # --- secrets (Session.secrets, schema/gateway.capnp): values go in, never out ---------------

    def create_secret(self, name: str, entries: dict, force: bool = False) -> dict:
        return self._call("creating a secret", lambda c: c.create_secret(name, list(entries.items()), force))

    def list_secrets(self) -> list[dict]:
        return self._call("listing secrets", lambda c: c.list_secrets())

    def delete_secret(self, name: str) -> None:
        self._call("deleting a secret", lambda c: c.delete_secret(name))

    # --- functions (schema/functions.capnp) ------------------------------------------------------

    def missing_blobs(self, hashes: list[str]) -> list[str]:
        return list(self._call("checking which code files shoald has", lambda c: c.missing_blobs(list(hashes))))

    def put_blobs(self, blobs: list[tuple[str, bytes]]) -> None:
        self._call("uploading code files", lambda c: c.put_blobs(list(blobs)))

    def create_app(self, name: str, mode: str, functions: list[dict], code: list[dict]) -> tuple["Remote", dict, list[dict]]:
        app, info, refs = self._call(
            f"creating the app {name!r}", lambda c: c.create_app(name, mode, list(functions), list(code))
        )
        return Remote(self, app, f"talking to the app {name!r}"), dict(info), [dict(r) for r in refs]

    def lookup(self, app_name: str, name: str) -> dict:
        return dict(self._call(f"looking up {app_name}.{name}", lambda c: c.lookup(app_name, name)))

    def call_function(self, function_id: str, args: bytes) -> dict:
        return dict(self._call("waiting for a function call", lambda c: c.call(function_id, args)))

    def map(self, function_id: str) -> "Remote":
        return Remote(self, self._call("starting a map", lambda c: c.map(function_id)), "mapping inputs")

    def spawn(self, function_id: str, args: bytes) -> str:
        return str(self._call("spawning a function call", lambda c: c.spawn(function_id, args)))

    def get_outputs(self, call_id: str, timeout_ms: int) -> tuple[list[dict], bool]:
        outputs, done = self._call(
            f"waiting for the call {call_id}", lambda c: c.get_outputs(call_id, int(timeout_ms))
        )
        return [dict(o) for o in outputs], bool(done)

    def cancel(self, call_id: str) -> None:
        self._call(f"cancelling the call {call_id}", lambda c: c.cancel(call_id))

    def derive_function(self, function_id: str, name: str, overrides: dict) -> dict:
        return dict(
            self._call(f"registering {name}", lambda c: c.derive_function(function_id, name, overrides))
        )

    def list_apps(self) -> list[dict]:
        return [dict(a) for a in self._call("listing apps", lambda c: c.list_apps())]

    def stop_app(self, name: str) -> None:
        self._call(f"stopping the app {name!r}", lambda c: c.stop_app(name))

    def app_logs(self, name: str, follow: bool) -> "Remote":
        stream = self._call(f"reading the logs of {name!r}", lambda c: c.app_logs(name, bool(follow)))
        return Remote(self, stream, f"reading the logs of {name!r}")

    def list_containers(self) -> list[dict]:
        return [dict(c) for c in self._call("listing containers", lambda c: c.list_containers())]

    def stop_container(self, container_id: str) -> None:
        self._call(f"stopping the container {container_id}", lambda c: c.stop_container(container_id))


class Remote:
    """A native object handed out by the connection (an ``App``, a ``MapCall``, a
    ``LogStream``): its methods raise :mod:`shoal.exception` errors like the connection's."""

    def __init__(self, connection: Connection, obj: Any, what: str):
        self._connection = connection
        self._obj = obj
        self._what = what

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if not callable(attr):
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._connection._guard(self._what, lambda: attr(*args, **kwargs))

        guarded.__name__ = name
        return guarded


def _reply_poll_us() -> int:
    """``SHOAL_REPLY_POLL_US``: how long a queue call may busy-poll for its reply (-1: default)."""
    raw = os.environ.get("SHOAL_REPLY_POLL_US", "").strip()
    if not raw:
        return -1
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"SHOAL_REPLY_POLL_US={raw!r} is not a number of microseconds; set it to 0 to "
            "turn busy-polling off, or unset it for the default (400)"
        )
    return value


def connect_to(target: Target) -> Connection:
    """Opens and authenticates a connection to ``target``."""
    native = _native_module()
    try:
        client = native.Client(
            target.address, target.token, __version__, target.environment, _reply_poll_us()
        )
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
