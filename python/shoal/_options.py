"""The options of ``@app.function`` / ``@app.cls`` / ``.with_options``: validation, the 2023
aliases, and the ``FunctionSpec`` dict that ``create_app`` sends (schema/functions.capnp).

Units: the user gives seconds, MiB and cores (Modal's units); the wire takes milliseconds, MiB and
millicores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .exception import InvalidError

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_SCALEDOWN_WINDOW_S = 60.0

#: 2023 names → current names (DeprecationWarning when used).
ALIASES = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
}


class Retries:
    """How often a failed input is retried, and how long to wait between attempts:
    attempt n (n ≥ 1) waits ``min(initial_delay × backoff_coefficient^(n-1), max_delay)`` seconds.

    ``retries=N`` on a function means ``Retries(max_retries=N, backoff_coefficient=1.0,
    initial_delay=1.0)``: N retries, one second apart."""

    def __init__(
        self,
        max_retries: int,
        *,
        backoff_coefficient: float = 2.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
    ):
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidError(f"Retries(max_retries={max_retries!r}): must be an int >= 0")
        if not _is_number(backoff_coefficient) or not 1.0 <= backoff_coefficient <= 10.0:
            raise InvalidError(
                f"Retries(backoff_coefficient={backoff_coefficient!r}): must be a number from 1.0 "
                "to 10.0"
            )
        if not _is_number(initial_delay) or initial_delay < 0:
            raise InvalidError(
                f"Retries(initial_delay={initial_delay!r}): must be a number of seconds >= 0"
            )
        if not _is_number(max_delay) or max_delay < 0:
            raise InvalidError(f"Retries(max_delay={max_delay!r}): must be a number of seconds >= 0")
        if max_delay < initial_delay:
            raise InvalidError(
                f"Retries(max_delay={max_delay!r}) is shorter than initial_delay={initial_delay!r}"
            )
        self.max_retries = max_retries
        self.backoff_coefficient = float(backoff_coefficient)
        self.initial_delay = float(initial_delay)
        self.max_delay = float(max_delay)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry)."""
        return min(self.initial_delay * self.backoff_coefficient ** (attempt - 1), self.max_delay)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retries) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> Tuple:
        return (self.max_retries, self.backoff_coefficient, self.initial_delay, self.max_delay)

    def __repr__(self) -> str:
        return (
            f"Retries(max_retries={self.max_retries}, backoff_coefficient="
            f"{self.backoff_coefficient}, initial_delay={self.initial_delay}, "
            f"max_delay={self.max_delay})"
        )


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclasses.dataclass(frozen=True)
class Options:
    """Validated options of one function or class (what the user asked for, in user units)."""

    image: Any = None
    secrets: Tuple[Any, ...] = ()
    volumes: Tuple[Tuple[str, Any], ...] = ()
    network_file_systems: Tuple[Tuple[str, Any], ...] = ()
    cpu: Optional[float] = None
    memory: Optional[int] = None
    gpu: Any = None
    timeout: float = DEFAULT_TIMEOUT_S
    retries: Optional[Retries] = None
    min_containers: int = 0
    max_containers: Optional[int] = None
    buffer_containers: int = 0
    scaledown_window: float = DEFAULT_SCALEDOWN_WINDOW_S
    max_inputs: Optional[int] = None
    target_inputs: Optional[int] = None
    region: Any = None
    cloud: Optional[str] = None
    schedule: Any = None
    serialized: bool = False
    env: Tuple[Tuple[str, str], ...] = ()

    def replace(self, **changes: Any) -> "Options":
        return dataclasses.replace(self, **changes)

    def unsupported(self) -> Dict[str, Any]:
        """Options this server stores but does not act on yet (shown as a note at start)."""
        out = {}
        for name in ("gpu", "region", "cloud", "schedule"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.volumes:
            out["volumes"] = dict(self.volumes)
        if self.network_file_systems:
            out["network_file_systems"] = dict(self.network_file_systems)
        unresolved = [s for s in self.secrets if _secret_env(s) is None]
        if unresolved:
            out["secrets"] = unresolved
        return out

    def spec(
        self,
        *,
        name: str,
        definition: bytes,
        is_class: bool = False,
        is_generator: bool = False,
    ) -> Dict[str, Any]:
        """The ``FunctionSpec`` dict for ``create_app``."""
        retries = self.retries
        # Insertion order is application order (the supervisor applies entries in order, later
        # wins), so a key set again moves to the end; "@secret:NAME" entries are named secrets.
        env: Dict[str, str] = {}
        for k, v in [kv for s in self.secrets for kv in (_secret_env(s) or {}).items()] + list(self.env):
            env.pop(k, None)
            env[k] = v
        spec: Dict[str, Any] = {
            "name": name,
            "is_class": bool(is_class),
            "is_generator": bool(is_generator),
            "definition": definition,
            "timeout_ms": int(round(self.timeout * 1000)),
            "max_retries": retries.max_retries if retries else 0,
            "retry_initial_delay_ms": int(round((retries.initial_delay if retries else 1.0) * 1000)),
            "retry_backoff_coefficient": retries.backoff_coefficient if retries else 1.0,
            "retry_max_delay_ms": int(round((retries.max_delay if retries else 60.0) * 1000)),
            "min_containers": self.min_containers,
            "max_containers": self.max_containers or 0,
            "buffer_containers": self.buffer_containers,
            "scaledown_window_ms": int(round(self.scaledown_window * 1000)),
            "max_inputs": self.max_inputs or 1,
            "cpu_millis": int(round(self.cpu * 1000)) if self.cpu else 0,
            "memory_mb": self.memory or 0,
            "image": _image_id(self.image) or "",
            "env": env,
            "files": _image_files(self.image),
        }
        return spec

    def digest(self, base: "Options") -> str:
        """A short, stable name suffix for a ``with_options`` variant of ``base``."""
        changed = sorted(
            (f.name, _canonical(getattr(self, f.name)))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(base, f.name)
        )
        return hashlib.sha256(repr(changed).encode()).hexdigest()[:10]


def _canonical(value: Any) -> str:
    if isinstance(value, (str, int, float, bool, type(None), Retries)):
        return repr(value)
    key = getattr(value, "_shoal_image_key", None)
    if callable(key):  # a shoal.Image: its declared steps
        return str(key())
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_canonical(v) for v in value) + ")"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _image_id(image: Any) -> Optional[str]:
    """The image id to send: a string, or the id a built ``shoal.Image`` reports (None before
    ``App._start`` built it)."""
    if image is None:
        return None
    if isinstance(image, str):
        return image
    getter = getattr(image, "_shoal_image_id", None)
    return getter() if callable(getter) else None


def _image_files(image: Any) -> List[Dict[str, Any]]:
    """The image's ``copy=False`` files as uploaded at app start (``FunctionSpec.files``)."""
    getter = getattr(image, "_shoal_files", None)
    return getter() if callable(getter) else []


def _secret_env(secret: Any) -> Optional[Dict[str, str]]:
    """The variables a secret injects: a dict, or what a Secret object (a later issue) reports."""
    if isinstance(secret, Mapping):
        return {str(k): str(v) for k, v in secret.items()}
    getter = getattr(secret, "_shoal_env", None)
    return dict(getter()) if callable(getter) else None


# --- validation -------------------------------------------------------------------------------------


def _where(caller: str, name: str, value: Any) -> str:
    return f"{caller}({name}={value!r})"


def _count(caller: str, name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidError(f"{_where(caller, name, value)}: must be an int >= {minimum}")
    return value


def _seconds(caller: str, name: str, value: Any, *, positive: bool = True) -> float:
    if not _is_number(value) or (value <= 0 if positive else value < 0):
        raise InvalidError(
            f"{_where(caller, name, value)}: must be a number of seconds "
            f"{'> 0' if positive else '>= 0'}"
        )
    return float(value)


def _limit(caller: str, name: str, value: Any, unit: str, *, integer: bool) -> Any:
    """``cpu=`` / ``memory=``: a number, or Modal's ``(request, limit)`` (the limit is enforced)."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidError(f"{_where(caller, name, value)}: give a number or (request, limit)")
        request, value = value
        _limit(caller, name, request, unit, integer=integer)
    ok = _is_number(value) and value > 0 and (not integer or float(value).is_integer())
    if not ok:
        kind = "an int" if integer else "a number"
        raise InvalidError(f"{_where(caller, name, value)}: must be {kind} of {unit} > 0")
    return int(value) if integer else float(value)


def _names(caller: str, name: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidError(f"{_where(caller, name, value)}: must be a str or a list of str")


def _mapping(caller: str, name: str, value: Any) -> Tuple[Tuple[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidError(f"{_where(caller, name, value)}: must be a dict of mount path -> object")
    for path in value:
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidError(f"{caller}({name}=...): the mount path {path!r} must be absolute")
    return tuple(value.items())


def deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} is deprecated; use {new} instead", DeprecationWarning, stacklevel=stacklevel + 1
    )


def build(caller: str, base: Optional[Options] = None, *, stacklevel: int = 3, **given: Any) -> Options:
    """Validates ``given`` (the keyword arguments of ``caller``, None meaning "not given") on top of
    ``base``; the 2023 aliases warn and map onto the current names."""
    base = base or Options()
    given = {k: v for k, v in given.items() if v is not None}
    for old, new in ALIASES.items():
        if old in given:
            deprecated(f"{old}=", f"{new}=", stacklevel=stacklevel)
            value = given.pop(old)
            if new in given and given[new] != value:
                raise InvalidError(f"{caller}: give {new}= or its old name {old}=, not both")
            given[new] = value
    if "allow_concurrent_inputs" in given:
        deprecated("allow_concurrent_inputs=", "@shoal.concurrent(max_inputs=...)", stacklevel=stacklevel)
        given["max_inputs"] = _count(
            caller, "allow_concurrent_inputs", given.pop("allow_concurrent_inputs"), minimum=1
        )

    changes: Dict[str, Any] = {}
    for name, value in given.items():
        if name == "image":
            if not (isinstance(value, str) or hasattr(value, "_shoal_image_id") or _looks_like_image(value)):
                raise InvalidError(f"{_where(caller, name, value)}: must be a shoal.Image or an image id")
            changes[name] = value
        elif name == "secrets":
            if not isinstance(value, (list, tuple)):
                raise InvalidError(f"{_where(caller, name, value)}: must be a list of secrets")
            # App secrets first, then the function's (later wins for a variable both set).
            changes[name] = tuple(base.secrets) + tuple(value)
        elif name in ("volumes", "network_file_systems"):
            changes[name] = _mapping(caller, name, value)
        elif name == "cpu":
            changes[name] = _limit(caller, name, value, "cores", integer=False)
        elif name == "memory":
            changes[name] = _limit(caller, name, value, "MiB", integer=True)
        elif name == "gpu":
            changes[name] = _names(caller, name, value)
        elif name == "timeout":
            changes[name] = _seconds(caller, name, value)
        elif name == "retries":
            if isinstance(value, Retries):
                changes[name] = value
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                changes[name] = Retries(value, backoff_coefficient=1.0, initial_delay=1.0) if value else None
            else:
                raise InvalidError(
                    f"{_where(caller, name, value)}: must be an int >= 0 or a shoal.Retries(...)"
                )
        elif name in ("min_containers", "buffer_containers"):
            changes[name] = _count(caller, name, value)
        elif name == "max_containers":
            changes[name] = _count(caller, name, value, minimum=1)
        elif name == "scaledown_window":
            changes[name] = _seconds(caller, name, value)
        elif name == "max_inputs":
            changes[name] = _count(caller, name, value, minimum=1)
        elif name == "target_inputs":
            changes[name] = _count(caller, name, value, minimum=1)
        elif name == "region":
            changes[name] = _names(caller, name, value)
        elif name == "cloud":
            if not isinstance(value, str):
                raise InvalidError(f"{_where(caller, name, value)}: must be a str")
            changes[name] = value
        elif name == "schedule":
            changes[name] = value
        elif name == "serialized":
            changes[name] = bool(value)
        elif name == "env":
            if not isinstance(value, Mapping):
                raise InvalidError(f"{_where(caller, name, value)}: must be a dict of str -> str")
            changes[name] = tuple((str(k), str(v)) for k, v in value.items())
        else:  # pragma: no cover - callers pass only the names above
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    options = base.replace(**changes)
    if options.max_containers is not None and options.min_containers > options.max_containers:
        raise InvalidError(
            f"{caller}: min_containers={options.min_containers} is more than "
            f"max_containers={options.max_containers}"
        )
    if options.target_inputs is not None and options.max_inputs is not None and (
        options.target_inputs > options.max_inputs
    ):
        raise InvalidError(
            f"{caller}: target_inputs={options.target_inputs} is more than "
            f"max_inputs={options.max_inputs}"
        )
    return options


def _looks_like_image(value: Any) -> bool:
    return type(value).__name__ == "Image"


def concurrency_of(*objects: Any) -> Dict[str, Optional[int]]:
    """What ``@shoal.concurrent`` left on any of ``objects`` (the wrapper or the user's object)."""
    from . import _partial  # noqa: PLC0415

    for obj in objects:
        marker = getattr(obj, _partial.CONCURRENT, None)
        if isinstance(marker, dict):
            return {"max_inputs": marker.get("max_inputs"), "target_inputs": marker.get("target_inputs")}
    return {}
