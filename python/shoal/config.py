"""Client configuration: which shoald to talk to, with which token, in which environment.

Settings come from, highest precedence first:

1. environment variables ``SHOAL_SERVER``, ``SHOAL_TOKEN``, ``SHOAL_ENVIRONMENT``;
2. the active profile in ``$SHOAL_HOME/config.toml`` (``SHOAL_PROFILE`` picks the profile, else
   the file's ``active_profile``, else ``"default"``);
3. defaults: no server (the embedded local cluster in ``$SHOAL_HOME/state``), environment ``main``.

The file looks like::

    active_profile = "default"

    [profiles.default]
    server = "host:port"      # absent: the embedded local cluster
    token = "..."
    environment = "main"

It holds secrets, so it is always written with mode 0600 (and ``$SHOAL_HOME`` is created 0700).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

from .exception import InvalidError

DEFAULT_PROFILE = "default"
DEFAULT_ENVIRONMENT = "main"
PROFILE_KEYS = ("server", "token", "environment")


def shoal_home(env: Mapping[str, str] | None = None) -> Path:
    """``$SHOAL_HOME``, or ``~/.shoal``."""
    env = os.environ if env is None else env
    home = env.get("SHOAL_HOME")
    return Path(home).expanduser() if home else Path.home() / ".shoal"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    return shoal_home(env) / "config.toml"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The state dir of the embedded local cluster."""
    return shoal_home(env) / "state"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved client settings, with where each value came from."""

    profile: str
    server: str | None  # "host:port"; None means the embedded local cluster
    token: str | None  # None: none configured (embedded mode then uses the admin token)
    environment: str
    config_path: Path
    state_dir: Path
    #: field name ("profile", "server", "token", "environment") -> human description of its source,
    #: e.g. "SHOAL_SERVER", "profile 'default' in /home/me/.shoal/config.toml", "default".
    sources: dict[str, str]

    @property
    def embedded(self) -> bool:
        return self.server is None


def parse_address(text: str, *, what: str = "server address") -> tuple[str, int]:
    """Splits ``host:port`` (``[v6]:port`` also accepted); raises InvalidError otherwise."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text.strip())
    if not match:
        raise InvalidError(f"the {what} {text!r} is not of the form HOST:PORT (e.g. 127.0.0.1:7650)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise InvalidError(f"the {what} {text!r} has port {port}, outside 1-65535")
    return host, port


def load_file(path: Path) -> dict[str, Any]:
    """The parsed config file; ``{}`` when it does not exist."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise InvalidError(f"{path} is not valid TOML ({e}); fix or delete it") from None
    except OSError as e:
        raise InvalidError(f"cannot read {path}: {e.strerror or e}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise InvalidError(f"{path}: [profiles] must hold tables like [profiles.default]")
    for name, profile in profiles.items():
        for key in PROFILE_KEYS:
            if key in profile and not isinstance(profile[key], str):
                raise InvalidError(f"{path}: profiles.{name}.{key} must be a string")
    if "active_profile" in data and not isinstance(data["active_profile"], str):
        raise InvalidError(f"{path}: active_profile must be a string")
    return data


def resolve(env: Mapping[str, str] | None = None) -> Settings:
    """Resolves the settings from the environment and the config file (see the module doc)."""
    env = os.environ if env is None else env
    path = config_path(env)
    data = load_file(path)
    profiles: dict[str, dict[str, str]] = data.get("profiles", {})
    sources: dict[str, str] = {}

    if env.get("SHOAL_PROFILE"):
        profile_name = env["SHOAL_PROFILE"]
        sources["profile"] = "SHOAL_PROFILE"
        if profile_name not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise InvalidError(
                f"SHOAL_PROFILE names profile {profile_name!r}, which {path} does not define "
                f"(profiles: {known}); create it with `shoal token set --profile {profile_name} ...`"
            )
    elif data.get("active_profile"):
        profile_name = data["active_profile"]
        sources["profile"] = f"active_profile in {path}"
        if profile_name not in profiles:
            raise InvalidError(
                f"{path} sets active_profile = {profile_name!r} but defines no [profiles.{profile_name}]"
            )
    else:
        profile_name = DEFAULT_PROFILE
        sources["profile"] = "default"
    profile = profiles.get(profile_name, {})
    in_profile = f"profile {profile_name!r} in {path}"

    def pick(key: str, var: str) -> str | None:
        if env.get(var):
            sources[key] = var
            return env[var]
        if profile.get(key):
            sources[key] = in_profile
            return profile[key]
        return None

    server = pick("server", "SHOAL_SERVER")
    if server is not None:
        parse_address(server, what=f"server address from {sources['server']}")
    else:
        sources["server"] = "default"
    token = pick("token", "SHOAL_TOKEN")
    if token is None:
        sources["token"] = "none configured"
    environment = pick("environment", "SHOAL_ENVIRONMENT")
    if environment is None:
        environment = DEFAULT_ENVIRONMENT
        sources["environment"] = "default"

    return Settings(
        profile=profile_name,
        server=server,
        token=token,
        environment=environment,
        config_path=path,
        state_dir=state_dir(env),
        sources=sources,
    )


def write_profile(
    profile: str,
    *,
    server: str | None = None,
    token: str | None = None,
    environment: str | None = None,
    activate: bool = True,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Sets the given keys of ``[profiles.<profile>]`` (others keep their values), optionally
    makes it the active profile, and rewrites the file atomically with mode 0600."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", profile):
        raise InvalidError(f"profile name {profile!r} may only hold letters, digits, '_', '-' and '.'")
    path = config_path(env)
    data = load_file(path)
    profiles = data.setdefault("profiles", {})
    entry = profiles.setdefault(profile, {})
    for key, value in (("server", server), ("token", token), ("environment", environment)):
        if value is not None:
            entry[key] = value
    if activate or not data.get("active_profile"):
        data["active_profile"] = profile
    _write_private(path, dump_toml(data))
    return path


def _write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --- a minimal TOML writer (tomllib only reads) -------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: Mapping[str, Any]) -> str:
    """Serializes nested dicts of strings, numbers, booleans and lists; tables become
    ``[a.b]`` headers. Enough for config.toml; round-trips through tomllib."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, dict)]
        if prefix and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(k) for k in prefix) + "]")
        for k, v in scalars:
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in tables:
            emit(v, prefix + (k,))

    emit(data, ())
    return "\n".join(lines) + "\n"
