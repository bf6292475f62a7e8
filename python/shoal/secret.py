"""``shoal.Secret``: environment variables for a function's containers (Modal's ``Secret``).

    app = shoal.App("billing", secrets=[shoal.Secret.from_name("stripe")])

    @app.function(secrets=[shoal.Secret.from_dict({"MODE": "test"}),
                           shoal.Secret.from_dotenv(),            # .env next to the entry file
                           shoal.Secret.from_local_environ(["AWS_PROFILE"])])
    def charge(): ...

Semantics (docs/sdk.md "Secrets"):
- The variables of every secret are set in the function's containers. Order: the app's secrets,
  then the function's, each in list order; a later secret wins for a variable both set.
- ``from_dict``, ``from_dotenv`` and ``from_local_environ`` are read here, on the client, and travel
  with the function's definition. ``from_name`` refers to a secret stored in shoald
  (``shoal secret create``): the server reads it when a container starts, in the app's
  environment; a missing secret fails the container start with an error that names it.
- A secret's values are never printed: ``repr`` shows its variable names only.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .exception import InvalidError, NotFoundError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The spec's env key prefix that stands for a named secret, resolved by shoald (functions.capnp).
NAMED_PREFIX = "@secret:"


def _in_container() -> bool:
    from . import _transport  # noqa: PLC0415

    return _transport.in_container()


def check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidError(
            f"{where}: {key!r} is not a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return key


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidError(
            f"secret name {name!r} is invalid: use 1-64 characters from A-Z, a-z, 0-9, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    return name


def parse_dotenv(text: str, source: str = ".env") -> Dict[str, str]:
    """``KEY=VALUE`` lines: ``#`` comments and blank lines skipped, an ``export `` prefix allowed,
    single quotes literal, double quotes with ``\\n``/``\\"``/``\\\\`` escapes, unquoted values
    end at `` #``. Errors name the file and line, never a value."""
    out: Dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise InvalidError(f"{source}:{lineno}: expected KEY=VALUE, found no '=' after {key!r}")
        check_key(key, f"{source}:{lineno}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            if quote == '"':
                # find the closing quote that is not escaped
                i, buf = 1, []
                while i < len(value):
                    c = value[i]
                    if c == "\\" and i + 1 < len(value):
                        nxt = value[i + 1]
                        buf.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                        i += 2
                        continue
                    if c == '"':
                        break
                    buf.append(c)
                    i += 1
                else:
                    raise InvalidError(f"{source}:{lineno}: the value of {key} has no closing quote")
                value = "".join(buf)
            else:
                if end < 0:
                    raise InvalidError(f"{source}:{lineno}: the value of {key} has no closing quote")
                value = value[1:end]
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        out[key] = value
    return out


class Secret:
    """A set of environment variables for a function's containers; build one with a ``from_*``
    constructor."""

    def __init__(self, *, env: Optional[Dict[str, str]] = None, name: Optional[str] = None,
                 origin: str = "") -> None:
        self._env: Dict[str, str] = dict(env or {})
        self._name = name
        self._origin = origin
        self._environment_name: Optional[str] = None
        self._required_keys: Tuple[str, ...] = ()

    # --- constructors ---

    @staticmethod
    def from_dict(env_dict: Dict[str, Optional[str]]) -> "Secret":
        """The variables of ``env_dict``; ``None`` values are skipped (Modal's behaviour)."""
        if not isinstance(env_dict, dict):
            raise InvalidError(f"Secret.from_dict() takes a dict of str -> str, not {type(env_dict).__name__}")
        env: Dict[str, str] = {}
        for key, value in env_dict.items():
            check_key(key, "Secret.from_dict()")
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidError(
                    f"Secret.from_dict(): the value of {key} must be a str, not {type(value).__name__}"
                )
            if "\0" in value:
                raise InvalidError(f"Secret.from_dict(): the value of {key} contains a NUL byte")
            env[key] = value
        return Secret(env=env, origin="from_dict")

    @staticmethod
    def from_dotenv(path: "Optional[os.PathLike | str]" = None, *, filename: str = ".env") -> "Secret":
        """The variables of a ``.env`` file. ``path`` is the file, or a directory holding
        ``filename``; by default the directory of the entry file, then the working directory."""
        if _in_container():
            # The module is imported again inside the container: the values already travelled
            # with the function's definition, and the file is not there.
            return Secret(origin="from_dotenv")
        candidates: List[Path] = []
        if path is not None:
            p = Path(path).expanduser()
            candidates.append(p / filename if p.is_dir() else p)
        else:
            # The entry file is the module calling us (`shoal run app.py` imports app.py; a plain
            # `python app.py` runs it as __main__), then the working directory.
            caller = sys._getframe(1).f_globals.get("__file__")
            main = getattr(sys.modules.get("__main__"), "__file__", None)
            for entry in (caller, main):
                if entry:
                    candidate = Path(entry).resolve().parent / filename
                    if candidate not in candidates:
                        candidates.append(candidate)
            if Path.cwd() / filename not in candidates:
                candidates.append(Path.cwd() / filename)
        for candidate in candidates:
            if candidate.is_file():
                try:
                    text = candidate.read_text(encoding="utf-8")
                except OSError as e:
                    raise InvalidError(f"Secret.from_dotenv(): cannot read {candidate}: {e.strerror}") from None
                return Secret(env=parse_dotenv(text, str(candidate)), origin=f"from_dotenv({candidate})")
        raise NotFoundError(
            "Secret.from_dotenv(): no dotenv file at " + " or ".join(str(c) for c in candidates)
        )

    @staticmethod
    def from_local_environ(env_keys: Iterable[str]) -> "Secret":
        """The named variables of this process's environment; a missing one is an error."""
        if isinstance(env_keys, str):
            env_keys = [env_keys]
        keys = [check_key(k, "Secret.from_local_environ()") for k in env_keys]
        if _in_container():
            return Secret(origin="from_local_environ")
        missing = [k for k in keys if k not in os.environ]
        if missing:
            raise InvalidError(
                "Secret.from_local_environ(): the local environment has no variable "
                + ", ".join(missing)
                + "; set it before running, or leave it out of the list"
            )
        return Secret(env={k: os.environ[k] for k in keys}, origin="from_local_environ")

    @staticmethod
    def from_name(name: str, *, environment_name: Optional[str] = None,
                  required_keys: Sequence[str] = ()) -> "Secret":
        """A secret stored in shoald (``shoal secret create NAME K=V``), read when a container
        starts, in the app's environment. ``environment_name``: the token decides the environment;
        a different name is refused when the secret is checked."""
        check_name(name)
        for k in required_keys:
            check_key(k, "Secret.from_name(required_keys=)")
        secret = Secret(name=name, origin="from_name")
        secret._environment_name = environment_name
        secret._required_keys = tuple(required_keys)
        return secret

    # Modal 2023 name.
    @staticmethod
    def lookup(name: str, environment_name: Optional[str] = None) -> "Secret":
        return Secret.from_name(name, environment_name=environment_name)

    # --- what the function spec carries ---

    def _shoal_env(self) -> Dict[str, str]:
        if self._name is not None:
            return {NAMED_PREFIX + self._name: self._name}
        return dict(self._env)

    @property
    def name(self) -> Optional[str]:
        return self._name

    def keys(self) -> List[str]:
        """The variable names a client-side secret sets (a named secret's live in shoald)."""
        return sorted(self._env)

    def __repr__(self) -> str:
        if self._name is not None:
            return f"Secret.from_name({self._name!r})"
        return f"Secret.{self._origin or 'from_dict'}(keys={self.keys()!r})"

    __str__ = __repr__
