"""``shoal.Image``: the root file system of a function's containers, declared as a chain of steps
(Modal's ``Image``).

    image = (
        shoal.Image.debian_slim()
        .apt_install("curl")
        .pip_install("numpy==2.1.3")
        .env({"MODE": "prod"})
        .add_local_dir("./assets", "/assets")   # copy=False: added at container start, last
    )

    @app.function(image=image)
    def f(): ...

An ``Image`` is immutable: each method returns a new one holding its parent's steps plus one. Each
step maps 1:1 onto an ``ImageStep`` of ``schema/images.capnp`` (``_spec()`` is the dict the native
``build_image`` takes). Steps are cached by shoald: the image id of a step is a hash of its parent's
id, its kind and arguments and the content of what it reads (uploaded files, the pickled
function), so an unchanged chain is a cache hit and a change rebuilds that step and every step
after it. The build prints, per step, whether it was cached and why it (re)built.

Declaring is cheap and has no side effects: local files are read and archived, and functions
pickled, when the image is built (``App._start``). Inside a container the module is imported again
and the same declarations run without reading anything (the files are not there).

``add_local_*(copy=False)`` (the default, as in Modal) is not a step: its files are kept beside the
steps (``Image._local_files``), left out of the image id, read and uploaded at every app start like
the app's own code (:mod:`shoal._mount`), and sent as each function's ``FunctionSpec.files``; the
container supervisor lays them over the image. No build step may follow them.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import hashlib
import importlib.util
import inspect
import io
import json
import os
import re
import shlex
import stat
import sys
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import _transport
from .exception import Error, ImageBuildError, InvalidError
from .secret import NAMED_PREFIX, check_key

#: The only Python the Debian suite of ``debian_slim`` offers.
DEBIAN_SUITE = "bookworm"
DEBIAN_PYTHON = "3.11"
#: One ``put_blobs`` batch stays under this many bytes (a single larger blob is sent alone).
UPLOAD_BATCH_BYTES = 8 << 20
#: How often the build handle is polled.
POLL_S = 0.25
#: Output lines kept per step for the error of a failed step.
TAIL_LINES = 20
#: Environment variable that rebuilds every layer step.
IGNORE_CACHE_ENV = "SHOAL_IGNORE_CACHE"

STEP_KEYS = ("kind", "args", "blob", "env", "force_build", "registry_auth", "label")
LAYER_KINDS = frozenset({"apt_install", "pip_install", "run_commands", "run_function", "add_files"})
METADATA_KINDS = frozenset({"env", "workdir", "user", "entrypoint", "cmd"})
BASE_KINDS = frozenset({"debian_slim", "registry", "scratch"})

PathLike = Union[str, "os.PathLike[str]"]


def _in_container() -> bool:
    return _transport.in_container()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def format_bytes(n: int) -> str:
    """``12.3 MB``: decimal units, one decimal below 100."""
    n = int(n or 0)
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000.0
        if value < 1000 or unit == "PB":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n} B"  # pragma: no cover


def _format_seconds(ms: int) -> str:
    seconds = max(0, int(ms or 0)) / 1000.0
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """Credentials in URLs (``https://user:token@host``) never reach a label, repr or error."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _flatten(caller: str, values: Iterable[Any], what: str = "argument") -> List[str]:
    """Strings, or lists/tuples of strings (Modal accepts both), flattened."""
    out: List[str] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            out.extend(_flatten(caller, value, what))
            continue
        if not isinstance(value, str):
            raise InvalidError(f"{caller}: each {what} must be a str, not {type(value).__name__} ({value!r})")
        if not value.strip():
            raise InvalidError(f"{caller}: an empty {what} was given")
        if "\0" in value:
            raise InvalidError(f"{caller}: the {what} {value[:40]!r} contains a NUL byte")
        out.append(value)
    return out


def _check_str_list(caller: str, value: Any, what: str) -> List[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidError(f"{caller}: {what} must be a list of str (an argv), not {value!r}")
    for item in value:
        if not isinstance(item, str):
            raise InvalidError(f"{caller}: every item of {what} must be a str, not {item!r}")
        if "\0" in item:
            raise InvalidError(f"{caller}: an item of {what} contains a NUL byte")
    return list(value)


def _secrets_env(caller: str, secrets: Any) -> Dict[str, str]:
    """The step's ``env``: the secrets' variables in order (later wins); a named secret is the
    entry ``@secret:NAME`` that shoald resolves."""
    from ._options import _secret_env  # noqa: PLC0415

    if secrets is None:
        return {}
    if not isinstance(secrets, (list, tuple)):
        raise InvalidError(f"{caller}: secrets= must be a list of shoal.Secret")
    env: Dict[str, str] = {}
    for secret in secrets:
        values = _secret_env(secret)
        if values is None:
            raise InvalidError(f"{caller}: secrets= must hold shoal.Secret objects, not {type(secret).__name__}")
        for k, v in values.items():
            env.pop(k, None)
            env[k] = v
    return env


# --- files -> deterministic tar ---------------------------------------------------------------------


class _Member:
    """A member taken from a local archive (``ADD file.tar``)."""

    def __init__(self, info: tarfile.TarInfo, data: bytes):
        self.info = info
        self.data = data


#: Archive path (relative, '/'-separated, below "/") -> a local file/dir/symlink or a _Member.
Entries = Dict[str, Union[Path, _Member]]


def _dest(remote: str) -> str:
    """An absolute container path as an archive path ("/app/x" -> "app/x"), normalised."""
    path = PurePosixPath("/") / remote
    parts: List[str] = []
    for part in path.parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def ignore_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """``.dockerignore``-style patterns over '/'-separated relative paths: ``*``/``?``/``[...]``
    globs, ``**/`` for any depth, a matching directory excludes everything below it, ``!pattern``
    re-includes; the last matching pattern decides."""
    compiled: List[Tuple[bool, str]] = []
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        if negate:
            pattern = pattern[1:].strip()
        pattern = pattern.lstrip("/")
        while pattern.startswith("./"):
            pattern = pattern[2:]
        pattern = pattern.rstrip("/")
        if pattern:
            compiled.append((negate, pattern))

    def one(path: str, pattern: str) -> bool:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        while pattern.startswith("**/"):
            pattern = pattern[3:]
            if fnmatch.fnmatchcase(path, pattern):
                return True
        return False

    def matches(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negate, pattern in compiled:
            if any(one(prefix, pattern) for prefix in prefixes):
                excluded = not negate
        return excluded

    return matches


def _ignore_callable(caller: str, ignore: Any) -> Callable[[Path], bool]:
    if ignore is None:
        return lambda _p: False
    if callable(ignore):
        return ignore
    if isinstance(ignore, str):
        ignore = [ignore]
    if isinstance(ignore, (list, tuple)) and all(isinstance(p, str) for p in ignore):
        matcher = ignore_matcher(list(ignore))
        return lambda p: matcher(PurePosixPath(p).as_posix())
    raise InvalidError(f"{caller}: ignore= must be a list of glob patterns or a callable(Path) -> bool")


def collect_dir(local_dir: Path, dest: str, ignore: Callable[[Path], bool], entries: Entries) -> None:
    """Adds the contents of ``local_dir`` below archive path ``dest`` (its sub-directories as
    directory entries; ``dest`` itself is not an entry: the builder creates missing parents).
    ``ignore`` gets paths relative to ``local_dir``."""
    for root, dirs, files in os.walk(local_dir, followlinks=False):
        root_path = Path(root)
        rel_root = root_path.relative_to(local_dir)
        kept = []
        for name in sorted(dirs):
            rel = rel_root / name
            if ignore(rel):
                continue
            full = root_path / name
            entries[_join(dest, rel.as_posix())] = full
            if not full.is_symlink():
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            rel = rel_root / name
            if ignore(rel):
                continue
            entries[_join(dest, rel.as_posix())] = root_path / name


def _join(dest: str, rel: str) -> str:
    return "/".join(p for p in (dest, rel) if p and p != ".")


def add_archive(archive: Path, dest: str, entries: Entries) -> None:
    """The members of a local tar archive (plain, gzip, bzip2, xz) below ``dest`` (``ADD``)."""
    with tarfile.open(archive, "r:*") as tar:
        for info in tar.getmembers():
            name = _dest(info.name)
            if not name or info.name.startswith("/") or ".." in PurePosixPath(info.name).parts:
                if not name:
                    continue
                raise InvalidError(f"{archive}: the member {info.name!r} leaves the archive")
            data = b""
            if info.isreg() or info.islnk():
                handle = tar.extractfile(info)
                data = handle.read() if handle is not None else b""
                new = tarfile.TarInfo(name)
                new.type = tarfile.REGTYPE
            elif info.isdir():
                new = tarfile.TarInfo(name)
                new.type = tarfile.DIRTYPE
            elif info.issym():
                new = tarfile.TarInfo(name)
                new.type = tarfile.SYMTYPE
                new.linkname = info.linkname
            else:
                continue  # devices and fifos are never put into a layer
            new.mode = info.mode & 0o7777
            new.mtime = int(info.mtime)
            entries[_join(dest, name)] = _Member(new, data)


def make_tar(entries: Entries) -> bytes:
    """A deterministic tar of ``entries``: sorted members, uid/gid 0, empty user/group names,
    mode and whole-second mtime kept, PAX format (a header only where a name needs one)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            source = entries[name]
            data: Optional[bytes] = None
            if isinstance(source, _Member):
                info = tarfile.TarInfo(name)
                info.type = source.info.type
                info.mode = source.info.mode
                info.mtime = source.info.mtime
                info.linkname = source.info.linkname
                if info.type == tarfile.REGTYPE:
                    data = source.data
            else:
                st = os.lstat(source)
                info = tarfile.TarInfo(name)
                info.mode = stat.S_IMODE(st.st_mode)
                info.mtime = int(st.st_mtime)
                if stat.S_ISLNK(st.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(source)
                elif stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                elif stat.S_ISREG(st.st_mode):
                    info.type = tarfile.REGTYPE
                    data = Path(source).read_bytes()
                else:
                    continue  # sockets, fifos, devices
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.pax_headers = {}
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.size = 0
                tar.addfile(info)
    return buf.getvalue()


# --- steps ------------------------------------------------------------------------------------------


class _Step:
    """One ``ImageStep``. ``resolver`` (lazy, run once when the image is built) returns the final
    ``(args, blob_bytes)`` of a step that reads local files or pickles a function."""

    __slots__ = ("kind", "args", "label", "force_build", "secrets", "registry_auth", "_resolver",
                 "_resolved", "short")

    def __init__(
        self,
        kind: str,
        args: Sequence[str] = (),
        *,
        label: str,
        short: Optional[str] = None,
        force_build: bool = False,
        secrets: Sequence[Any] = (),
        registry_auth: Optional[Tuple[str, str]] = None,
        resolver: Optional[Callable[[], Tuple[List[str], Optional[bytes]]]] = None,
    ):
        self.kind = kind
        self.args = tuple(args)
        self.label = label
        self.short = short or _shorten(" ".join([kind, *self.args]), 40)
        self.force_build = bool(force_build)
        self.secrets = tuple(secrets or ())
        self.registry_auth = registry_auth
        self._resolver = resolver
        self._resolved: Optional[Tuple[List[str], str, Optional[bytes]]] = None

    def resolve(self) -> Tuple[List[str], str, Optional[bytes]]:
        """``(args, blob sha256 hex or "", blob bytes or None)``."""
        if self._resolved is None:
            args: List[str] = list(self.args)
            data: Optional[bytes] = None
            if self._resolver is not None:
                args, data = self._resolver()
            digest = hashlib.sha256(data).hexdigest() if data is not None else ""
            self._resolved = (list(args), digest, data)
        return self._resolved

    def wire(self) -> Dict[str, Any]:
        if self.kind == "dockerfile":
            raise InvalidError("an image declared from a Dockerfile inside a container cannot be built there")
        args, digest, _ = self.resolve()
        return {
            "kind": self.kind,
            "args": list(args),
            "blob": digest,
            "env": _secrets_env(self.label, list(self.secrets)),
            "force_build": self.force_build,
            "registry_auth": tuple(self.registry_auth) if self.registry_auth else None,
            "label": self.label,
        }


class _LocalFiles:
    """An ``add_local_*(copy=False)`` entry: files that are NOT part of the image. They are read
    when the app starts, uploaded like the app's own code (:mod:`shoal._mount`), and laid over the
    image in each of the function's containers, so editing them never rebuilds the image.
    ``entries`` (lazy) returns the archive paths (the container path without its leading '/')
    and their local sources."""

    __slots__ = ("caller", "label", "short", "entries")

    def __init__(self, caller: str, label: str, short: str, entries: Callable[[], "Entries"]):
        self.caller = caller
        self.label = label
        self.short = short
        self.entries = entries

    def files(self) -> List[Any]:
        """The regular files, read now (a symlink is read through; directories, sockets and
        dangling links are left out)."""
        from ._mount import CodeFile  # noqa: PLC0415

        out = []
        for path, source in sorted(self.entries().items()):
            if isinstance(source, _Member):
                if source.info.type != tarfile.REGTYPE:
                    continue
                data, mode = source.data, source.info.mode & 0o7777
            else:
                try:
                    st = os.stat(source)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    data, mode = Path(source).read_bytes(), stat.S_IMODE(st.st_mode)
                except OSError as e:
                    if isinstance(e, FileNotFoundError) and os.path.islink(source):
                        continue  # a dangling symlink
                    raise InvalidError(f"{self.caller}: cannot read {source}: {e.strerror}") from None
            out.append(CodeFile(path, data, mode or 0o644, hashlib.sha256(data).hexdigest()))
        return out


# --- the native image service -----------------------------------------------------------------------


class _Service:
    """The image calls of a connection: a :class:`shoal._client.Connection` (errors mapped to
    :mod:`shoal.exception` by its ``_call``), or an object with the native methods."""

    def __init__(self, connection: Any):
        self.connection = connection

    def _call(self, what: str, name: str, *args: Any) -> Any:
        call = getattr(self.connection, "_call", None)
        if callable(call):
            return call(what, lambda c: getattr(c, name)(*args))
        return getattr(self.connection, name)(*args)

    def has_builder(self) -> bool:
        has = getattr(self.connection, "has", None)
        if callable(has):
            return bool(has("build_image"))
        return hasattr(self.connection, "build_image")

    def build(self, spec: Dict[str, Any]) -> Any:
        handle = self._call("building an image", "build_image", spec)
        if callable(getattr(self.connection, "_guard", None)):
            from ._client import Remote  # noqa: PLC0415

            return Remote(self.connection, handle, "building an image")
        return handle

    def missing_blobs(self, hashes: List[str]) -> List[str]:
        return list(self.connection.missing_blobs(list(hashes)))

    def put_blobs(self, blobs: List[Tuple[str, bytes]]) -> None:
        self.connection.put_blobs(list(blobs))

    def list(self) -> List[Dict[str, Any]]:
        return [dict(i) for i in self._call("listing images", "list_images")]

    def inspect(self, image_id: str) -> Dict[str, Any]:
        return dict(self._call(f"inspecting the image {image_id}", "inspect_image", image_id))

    def remove(self, image_id: str) -> None:
        self._call(f"removing the image {image_id}", "remove_image", image_id)

    def collect_garbage(self) -> Dict[str, Any]:
        return dict(self._call("collecting image garbage", "collect_image_garbage"))


def service(connection: Any) -> _Service:
    return _Service(connection)


def upload_blobs(connection: Any, blobs: Dict[str, bytes]) -> List[str]:
    """Sends the blobs shoald lacks, in batches of at most :data:`UPLOAD_BATCH_BYTES` (a larger
    blob goes alone); returns the hashes sent."""
    if not blobs:
        return []
    missing = sorted(set(connection.missing_blobs(sorted(blobs))) & set(blobs))
    batch: List[Tuple[str, bytes]] = []
    size = 0
    for digest in missing:
        data = blobs[digest]
        if batch and size + len(data) > UPLOAD_BATCH_BYTES:
            connection.put_blobs(batch)
            batch, size = [], 0
        batch.append((digest, data))
        size += len(data)
    if batch:
        connection.put_blobs(batch)
    return missing


def ignore_cache_from_env() -> bool:
    return os.environ.get(IGNORE_CACHE_ENV, "").strip().lower() in ("1", "true", "yes")


# --- progress ---------------------------------------------------------------------------------------


class _Progress:
    """Renders build events: one line per step (cached / building and why / built / failed), the
    step's output indented below it as it arrives. "cached" lines are held back until something
    builds: an image that is cached whole gets one summary line instead."""

    def __init__(self, labels: List[str], output: Optional[Callable[[str], None]], show: bool,
                 kinds: Optional[List[str]] = None, header: str = ""):
        self.labels = labels
        self.kinds = kinds or []
        self.header = header
        self.total = len(labels)
        self.out = output or _say
        self.show = show
        self.status: Dict[int, Dict[str, Any]] = {}
        self.tails: Dict[int, collections.deque] = {}
        self.held: List[Dict[str, Any]] = []
        self.announced: set = set()
        self.building = False
        self.failed: Optional[int] = None

    def _label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < self.total else f"step {index + 1}"

    def _head(self, mark: str, index: int) -> str:
        return f"{mark} [{index + 1}/{self.total}] {self._label(index)}"

    def event(self, event: Dict[str, Any]) -> None:
        kind = event.get("type")
        index = int(event.get("index") or 0)
        if kind == "line":
            text = str(event.get("text", "")).rstrip("\n")
            tail = self.tails.setdefault(index, collections.deque(maxlen=TAIL_LINES))
            for part in text.split("\n") if text else [""]:
                tail.append(part)
                if self.show:
                    self.out(f"      {part}")
            return
        if kind != "step":
            return
        self.status[index] = dict(event)
        self.step(event)

    def step(self, event: Dict[str, Any]) -> None:
        status = event.get("status")
        if status == "cached" and not self.building:
            self.held.append(event)
            return
        if status in ("building", "built", "failed") and not self.building:
            self.building = True
            if self.show and self.header:
                self.out(self.header)
            for held in self.held:
                self.render(held)
            self.held = []
        if status == "failed":
            self.failed = int(event.get("index") or 0)
        self.render(event)

    def render(self, event: Dict[str, Any]) -> None:
        if not self.show:
            return
        index = int(event.get("index") or 0)
        status = event.get("status")
        reason = str(event.get("reason") or "")
        took = _format_seconds(int(event.get("duration_ms") or 0))
        if status == "cached":
            self.out(f"{self._head('✓', index)}  cached")
        elif status == "building":
            self.announced.add(index)
            self.out(f"{self._head('…', index)}  building" + (f": {reason}" if reason else ""))
        elif status == "built" and 0 <= index < len(self.kinds) and self.kinds[index] in METADATA_KINDS:
            self.out(f"{self._head('✓', index)}  set (configuration only, no new layer)")
        elif status == "built":
            size = int(event.get("layer_bytes") or 0)
            extra = f" ({format_bytes(size)})" if size else ""
            why = f" ({reason})" if reason and index not in self.announced else ""
            self.out(f"{self._head('✓', index)}  built in {took}{extra}{why}")
        elif status == "failed":
            self.out(f"{self._head('✗', index)}  failed after {took}")

    def finish(self, steps: List[Dict[str, Any]]) -> None:
        """Steps the server answered without an event are shown from the result."""
        for step in steps:
            index = int(step.get("index") or 0)
            if index not in self.status:
                self.status[index] = dict(step)
                self.step(step)


# --- Image ------------------------------------------------------------------------------------------


class Image:
    """A container image, declared as a chain of cached steps. Start from ``Image.debian_slim()``,
    ``Image.from_registry(tag)``, ``Image.from_dockerfile(path)`` or ``Image.from_scratch()``."""

    def __init__(self) -> None:
        raise InvalidError(
            "create an image with Image.debian_slim(), Image.from_registry(tag), "
            "Image.from_dockerfile(path) or Image.from_scratch()"
        )

    @classmethod
    def _new(cls, steps: Tuple[_Step, ...], local_files: Tuple[_LocalFiles, ...] = ()) -> "Image":
        image = object.__new__(cls)
        image._steps = tuple(steps)
        image._local_files = tuple(local_files)
        image._built = {}
        image._last_id = None
        image._files_wire = None
        image._import_errors = []
        return image

    def _then(self, step: _Step) -> "Image":
        if self._local_files:
            last = self._local_files[-1]
            raise InvalidError(
                f"{step.label}: this build step comes after {last.caller} with copy=False "
                f"({last.label}), whose files are added when a container starts and are not part "
                f"of the image, so no build step can see them. Pass copy=True to {last.caller} to "
                "build the files into an image layer, or move the copy=False call after the last "
                "build step"
            )
        return Image._new(self._steps + (step,))

    def _then_local_files(self, entry: _LocalFiles) -> "Image":
        return Image._new(self._steps, self._local_files + (entry,))

    # --- bases ---

    @staticmethod
    def debian_slim(python_version: Optional[str] = None, force_build: bool = False) -> "Image":
        """Debian 12 (bookworm) slim with Python 3.11 (Debian's own ``python3``) and pip."""
        if python_version is None:
            version = DEBIAN_PYTHON
        else:
            version = python_version if isinstance(python_version, str) else str(python_version)
            if version != DEBIAN_PYTHON:
                raise InvalidError(
                    f"python_version={version!r} is not available: this cluster's Debian suite "
                    f"({DEBIAN_SUITE}) offers Python {DEBIAN_PYTHON}; use Image.debian_slim() or "
                    f"python_version='{DEBIAN_PYTHON}'"
                )
        return Image._new((_Step("debian_slim", [version], label=f"debian_slim {version}",
                                 force_build=force_build),))

    @staticmethod
    def from_registry(tag: str, *, secret: Any = None, add_python: Optional[str] = None,
                      force_build: bool = False, **kwargs: Any) -> "Image":
        """An image from an OCI registry (``"python:3.11-slim"``, ``"ghcr.io/org/img:1"``).
        ``secret``: a ``Secret.from_dict``/``from_local_environ``/``from_dotenv`` with
        ``REGISTRY_USERNAME`` and ``REGISTRY_PASSWORD`` for a private registry."""
        caller = "Image.from_registry()"
        if kwargs:
            raise InvalidError(f"{caller}: unsupported arguments {', '.join(sorted(kwargs))}")
        if not isinstance(tag, str) or not tag.strip() or any(c.isspace() for c in tag):
            raise InvalidError(f"{caller}: the tag must be an image reference like 'python:3.11-slim', not {tag!r}")
        if add_python is not None:
            raise InvalidError(
                f"Image.from_registry({tag!r}, add_python={add_python!r}): add_python is not "
                "supported by Shoal yet; use an image that has Python (e.g. 'python:3.11-slim'), "
                "or Image.debian_slim()"
            )
        auth = _registry_auth(caller, secret)
        return Image._new((_Step("registry", [tag], label=f"FROM {redact(tag)}", short=f"registry {redact(tag)}",
                                 force_build=force_build, registry_auth=auth),))

    @staticmethod
    def from_scratch() -> "Image":
        """An empty file system (for static binaries or ``add_local_*`` only)."""
        return Image._new((_Step("scratch", [], label="FROM scratch", short="scratch"),))

    @staticmethod
    def from_dockerfile(
        path: PathLike,
        context_dir: Optional[PathLike] = None,
        *,
        build_args: Optional[Dict[str, str]] = None,
        force_build: bool = False,
        secrets: Sequence[Any] = (),
        add_python: Optional[str] = None,
        ignore: Any = None,
    ) -> "Image":
        """The steps of a Dockerfile (one stage; FROM, RUN, ENV, ARG, WORKDIR, COPY, ADD, USER,
        ENTRYPOINT, CMD). ``context_dir`` defaults to the Dockerfile's directory; its
        ``.dockerignore`` applies unless ``ignore=`` is given."""
        if add_python is not None:
            raise InvalidError(
                f"Image.from_dockerfile(add_python={add_python!r}): add_python is not supported by "
                "Shoal yet; start the Dockerfile FROM an image that has Python"
            )
        if _in_container():
            return Image._new((_Step("dockerfile", [str(path)], label=f"Dockerfile {path}"),))
        from . import _dockerfile  # noqa: PLC0415

        return _dockerfile.image_from_dockerfile(
            Path(path), Path(context_dir) if context_dir is not None else None,
            build_args=dict(build_args or {}), force_build=force_build, secrets=list(secrets or ()),
            ignore=ignore,
        )

    # --- layer steps ---

    def apt_install(self, *packages: Union[str, List[str]], force_build: bool = False,
                    secrets: Sequence[Any] = ()) -> "Image":
        """``apt-get install -y PACKAGES`` (after ``apt-get update``)."""
        pkgs = _flatten("Image.apt_install()", packages, "package")
        for p in pkgs:
            if any(c.isspace() for c in p) or p.startswith("-"):
                raise InvalidError(
                    f"Image.apt_install(): {p!r} is not a package name; give each package as its own "
                    "argument (apt_install('curl', 'git'))"
                )
        if not pkgs:
            return self
        _secrets_env("Image.apt_install()", list(secrets))
        return self._then(_Step("apt_install", pkgs, label=_shorten("RUN apt-get install -y " + " ".join(pkgs), 100),
                                force_build=force_build, secrets=secrets))

    def pip_install(
        self,
        *packages: Union[str, List[str]],
        index_url: Optional[str] = None,
        extra_index_url: Optional[str] = None,
        find_links: Optional[str] = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        secrets: Sequence[Any] = (),
    ) -> "Image":
        """``pip install PACKAGES`` (sorted: the order does not matter to pip, and a sorted list
        caches better). Options become ``--index-url=…``, ``--extra-index-url=…``,
        ``--find-links=…``, ``--pre``, then ``--`` and the shell-split ``extra_options``."""
        caller = "Image.pip_install()"
        pkgs = sorted(_flatten(caller, packages, "package"))
        for p in pkgs:
            if "\n" in p or p.startswith("-"):
                raise InvalidError(
                    f"{caller}: {p!r} is not a requirement; pass pip options as index_url=, "
                    "extra_index_url=, find_links=, pre= or extra_options="
                )
        if not pkgs:
            return self
        options = _pip_options(caller, index_url, extra_index_url, find_links, pre, extra_options)
        _secrets_env(caller, list(secrets))
        return self._then(_Step("pip_install", pkgs + options, label=_pip_label(pkgs, options),
                                force_build=force_build, secrets=secrets))

    def pip_install_from_requirements(
        self,
        requirements_txt: PathLike,
        find_links: Optional[str] = None,
        *,
        index_url: Optional[str] = None,
        extra_index_url: Optional[str] = None,
        pre: bool = False,
        extra_options: str = "",
        force_build: bool = False,
        secrets: Sequence[Any] = (),
    ) -> "Image":
        """``pip install`` of the requirements in a local file (read here; ``-r`` includes are
        followed, comments and blank lines dropped)."""
        if _in_container():
            return self._then(_Step("pip_install", [], label=f"pip install -r {requirements_txt}"))
        caller = "Image.pip_install_from_requirements()"
        lines = read_requirements(Path(requirements_txt))
        pkgs = [ln for ln in lines if not ln.startswith("-")]
        file_options = [ln for ln in lines if ln.startswith("-")]
        options = _pip_options(caller, index_url, extra_index_url, find_links, pre, extra_options)
        if file_options:
            # Options written in the file (--index-url, -f ...) go after "--" verbatim.
            if "--" not in options:
                options.append("--")
            for opt in file_options:
                options.extend(shlex.split(opt))
        if not pkgs and not file_options:
            return self
        _secrets_env(caller, list(secrets))
        label = _shorten(f"pip install -r {requirements_txt} ({len(pkgs)} requirements)", 100)
        return self._then(_Step("pip_install", pkgs + options, label=redact(label),
                                force_build=force_build, secrets=secrets))

    def run_commands(self, *commands: Union[str, List[str]], secrets: Sequence[Any] = (),
                     force_build: bool = False) -> "Image":
        """Shell commands, each run with ``sh -c`` in order; the first failure fails the step."""
        cmds = _flatten("Image.run_commands()", commands, "command")
        if not cmds:
            return self
        _secrets_env("Image.run_commands()", list(secrets))
        return self._then(_Step("run_commands", cmds, label=_shorten("RUN " + " && ".join(cmds), 100),
                                force_build=force_build, secrets=secrets))

    def run_function(self, raw_f: Callable[[], Any], *, secrets: Sequence[Any] = (),
                     force_build: bool = False, **kwargs: Any) -> "Image":
        """Runs ``raw_f()`` (no arguments) in a build container and keeps what it writes as a
        layer. The function is pickled by value; the step's cache key is a hash of its source
        code (of the pickle when the source is not available)."""
        caller = "Image.run_function()"
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, {}, (), [])}
        if unsupported:
            raise InvalidError(f"{caller}: {', '.join(sorted(unsupported))}= not supported by Shoal yet")
        if not callable(raw_f):
            raise InvalidError(f"{caller} takes a function, not {raw_f!r}")
        _secrets_env(caller, list(secrets))
        name = f"{getattr(raw_f, '__module__', '?')}.{getattr(raw_f, '__qualname__', repr(raw_f))}"

        def resolve() -> Tuple[List[str], Optional[bytes]]:
            data = pickle_function(raw_f)
            return [function_source_hash(raw_f, data)], data

        return self._then(_Step("run_function", [], label=f"run_function {name}", short=f"run_function {name}",
                                force_build=force_build, secrets=secrets, resolver=resolve))

    def add_local_file(self, local_path: PathLike, remote_path: str, *, copy: bool = False) -> "Image":
        """Puts a local file at ``remote_path`` (absolute; ending with ``/``: into that directory).

        ``copy=False`` (the default, as in Modal): the file is not part of the image; it is read
        and uploaded when the app starts and added to each of the function's containers, so
        editing it never rebuilds the image. No build step may follow. ``copy=True``: the file is
        copied into an image layer (later build steps see it)."""
        caller = "Image.add_local_file()"
        remote = _remote(caller, remote_path)
        local = Path(local_path).expanduser()
        if remote_path.endswith("/"):
            remote = remote.rstrip("/") + "/" + local.name
        if not _in_container() and not local.is_file():
            raise InvalidError(f"{caller}: {local} is not a file")

        def entries() -> Entries:
            return {_dest(remote): local.resolve()}

        return self._add_local(caller, copy, entries, label=f"COPY {local_path} {remote}",
                               short=f"add_files {remote}")

    def add_local_dir(self, local_path: PathLike, remote_path: str, *, copy: bool = False,
                      ignore: Any = None) -> "Image":
        """Puts the contents of a local directory at ``remote_path`` (absolute). ``ignore``: glob
        patterns (``["*.pyc", "**/node_modules"]``) or a callable taking each path relative to
        ``local_path`` and returning True to leave it out.

        ``copy=False`` (the default): added when each container starts, not part of the image (see
        :meth:`add_local_file`; only regular files are added, empty directories are not).
        ``copy=True``: an image layer."""
        caller = "Image.add_local_dir()"
        remote = _remote(caller, remote_path)
        local = Path(local_path).expanduser()
        if not _in_container() and not local.is_dir():
            raise InvalidError(f"{caller}: {local} is not a directory")
        skip = _ignore_callable(caller, ignore)

        def entries() -> Entries:
            out: Entries = {}
            collect_dir(local.resolve(), _dest(remote), skip, out)
            return out

        return self._add_local(caller, copy, entries, label=f"COPY {local_path} {remote}",
                               short=f"add_files {remote}")

    def add_local_python_source(self, *module_names: str, copy: bool = False, ignore: Any = None) -> "Image":
        """Puts local Python modules or packages (their ``.py`` files) at ``/root/<name>``, as
        Modal does; ``/root`` is on the functions' ``PYTHONPATH``. (The app's own code is shipped
        automatically; this is for other code.) ``copy=False`` (the default): added when each
        container starts; ``copy=True``: an image layer."""
        caller = "Image.add_local_python_source()"
        names = _flatten(caller, module_names, "module name")
        if not names:
            return self
        for name in names:
            if not all(part.isidentifier() for part in name.split(".")):
                raise InvalidError(f"{caller}: {name!r} is not a module name")
        skip = _ignore_callable(caller, ignore)
        found: List[Tuple[str, Path, bool]] = []
        if not _in_container():
            for name in names:
                found.append(_find_module(caller, name))

        def entries() -> Entries:
            out: Entries = {}
            for name, path, is_package in found:
                dest = "root/" + name.replace(".", "/")
                if is_package:
                    def python_only(rel: Path) -> bool:
                        if rel.name == "__pycache__" or rel.name.startswith("."):
                            return True
                        full = path / rel
                        return (not full.is_dir() and rel.suffix != ".py") or skip(rel)
                    collect_dir(path, dest, python_only, out)
                else:
                    out[dest + ".py"] = path
            return out

        return self._add_local(caller, copy, entries, label=f"COPY python source {', '.join(names)} /root",
                               short=f"add_python_source {','.join(names)}")

    def _add_local(self, caller: str, copy: Any, entries: Callable[[], Entries], *, label: str,
                   short: str) -> "Image":
        """An ``add_files`` layer (``copy=True``) or local files added at container start."""
        if not isinstance(copy, bool):
            raise InvalidError(f"{caller}: copy= must be True or False, not {copy!r}")
        if copy:
            return self._add_entries(entries, label=label, short=short)
        return self._then_local_files(_LocalFiles(caller, label, short + " (copy=False)", entries))

    def _add_entries(self, resolver: Callable[[], Entries], *, label: str, short: str,
                     force_build: bool = False) -> "Image":
        """An ``add_files`` step from a lazy entries builder (used by the Dockerfile's COPY)."""

        def resolve() -> Tuple[List[str], Optional[bytes]]:
            return ["/"], make_tar(resolver())

        return self._then(_Step("add_files", ["/"], label=label, short=short, force_build=force_build,
                                resolver=resolve))

    def dockerfile_commands(self, *dockerfile_commands: Union[str, List[str]],
                            context_dir: Optional[PathLike] = None, secrets: Sequence[Any] = (),
                            force_build: bool = False, ignore: Any = None, **kwargs: Any) -> "Image":
        """Dockerfile instructions on top of this image, each a cached step as in
        :meth:`from_dockerfile` (RUN, ENV, ARG, WORKDIR, COPY, ADD, USER, ENTRYPOINT, CMD; not
        FROM): ``image.dockerfile_commands("RUN useradd -m app", "USER app")``. COPY and ADD read
        from ``context_dir`` (default: the current directory)."""
        caller = "Image.dockerfile_commands()"
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, {}, (), [])}
        if unsupported:
            raise InvalidError(f"{caller}: {', '.join(sorted(unsupported))}= not supported by Shoal yet")
        commands = _flatten(caller, dockerfile_commands, "command")
        if not commands:
            return self
        if _in_container():
            return self._then(_Step("dockerfile", ["commands"], label="dockerfile_commands"))
        from . import _dockerfile  # noqa: PLC0415

        return _dockerfile.image_with_commands(
            self, commands, Path(context_dir) if context_dir is not None else None,
            force_build=force_build, secrets=list(secrets or ()), ignore=ignore,
        )

    # --- metadata steps ---

    def env(self, vars: Dict[str, str], *, _label: Optional[str] = None) -> "Image":  # noqa: A002
        """Environment variables of the image (and of later build steps)."""
        caller = "Image.env()"
        if not isinstance(vars, dict):
            raise InvalidError(f"{caller} takes a dict of str -> str")
        if not vars:
            return self
        pairs = []
        for key in sorted(vars):
            check_key(key, caller)
            value = vars[key]
            if not isinstance(value, str):
                raise InvalidError(f"{caller}: the value of {key} must be a str, not {type(value).__name__}")
            if "\0" in value:
                raise InvalidError(f"{caller}: the value of {key} contains a NUL byte")
            pairs.append(f"{key}={value}")
        # The label names the variables only: values may be tokens someone put there.
        label = _label or _shorten("ENV " + ", ".join(sorted(vars)), 100)
        return self._then(_Step("env", pairs, label=label, short=_shorten("env " + ",".join(sorted(vars)), 40)))

    def workdir(self, path: str, *, _label: Optional[str] = None) -> "Image":
        """The working directory of later steps and of the containers (absolute)."""
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise InvalidError(f"Image.workdir({path!r}): the path must be absolute (start with '/')")
        return self._then(_Step("workdir", [path], label=_label or f"WORKDIR {path}"))

    def entrypoint(self, entrypoint_commands: List[str], *, _label: Optional[str] = None) -> "Image":
        """The image's ENTRYPOINT (an argv list)."""
        argv = _check_str_list("Image.entrypoint()", entrypoint_commands, "the entrypoint")
        return self._then(_Step("entrypoint", argv, label=_label or _shorten("ENTRYPOINT " + json.dumps(argv), 100)))

    def cmd(self, cmd: List[str], *, _label: Optional[str] = None) -> "Image":
        """The image's CMD (an argv list)."""
        argv = _check_str_list("Image.cmd()", cmd, "the command")
        return self._then(_Step("cmd", argv, label=_label or _shorten("CMD " + json.dumps(argv), 100)))

    def _user(self, user: str, *, label: Optional[str] = None) -> "Image":
        """The user later steps and the containers run as (Dockerfile ``USER``)."""
        if not isinstance(user, str) or not user.strip() or any(c.isspace() for c in user):
            raise InvalidError(f"USER {user!r}: expected a user name or uid (optionally :group)")
        return self._then(_Step("user", [user], label=label or f"USER {user}"))

    def _relabel(self, label: str, *, force_build: Optional[bool] = None,
                 secrets: Optional[Sequence[Any]] = None) -> "Image":
        """This image with its last step labelled ``label`` (the Dockerfile's ``Dockerfile:N``)."""
        last = self._steps[-1]
        step = _Step(last.kind, last.args, label=label, short=last.short,
                     force_build=last.force_build if force_build is None else (force_build or last.force_build),
                     secrets=last.secrets if secrets is None else tuple(secrets),
                     registry_auth=last.registry_auth, resolver=last._resolver)
        return Image._new(self._steps[:-1] + (step,), self._local_files)

    # --- imports ---

    @contextlib.contextmanager
    def imports(self) -> Iterator[None]:
        """``with image.imports(): import torch``: here, where the package may be missing, the
        ImportError is swallowed (and remembered); inside the container it propagates."""
        try:
            yield
        except ImportError as e:
            if _in_container():
                raise
            self._import_errors.append(e)

    # --- what is sent ---

    def _spec(self, ignore_cache: Optional[bool] = None) -> Dict[str, Any]:
        """The ``ImageSpec`` dict for the native ``build_image`` (resolves lazy steps)."""
        if ignore_cache is None:
            ignore_cache = ignore_cache_from_env()
        return {"steps": [s.wire() for s in self._steps], "ignore_cache": bool(ignore_cache)}

    def _blobs(self) -> Dict[str, bytes]:
        blobs: Dict[str, bytes] = {}
        for step in self._steps:
            _, digest, data = step.resolve()
            if data is not None:
                blobs[digest] = data
        return blobs

    def _shoal_image_id(self) -> Optional[str]:
        """The id of the last build of this image in this process (None before it is built)."""
        return self._last_id

    def _shoal_image_key(self) -> str:
        """A stable digest of the declared chain (no secret values): ``with_options`` names."""
        text = "\n".join(f"{s.kind}\0{chr(1).join(s.args)}\0{s.label}" for s in self._steps)
        text += "".join(f"\nlocal\0{f.label}" for f in self._local_files)
        return "im:" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def _ship_local_files(self, connection: Any) -> Optional[Any]:
        """Reads the ``copy=False`` files now and uploads what shoald lacks, as the app's own code
        is (:func:`shoal._mount.upload`); :meth:`_shoal_files` then lists them for the functions'
        specs. Called at every app start, so an edited file is picked up without a build. Returns
        the upload's stats (None when the image has no such files). Later entries win a path."""
        if not self._local_files:
            self._files_wire = []
            return None
        from . import _mount  # noqa: PLC0415

        by_path: Dict[str, Any] = {}
        for entry in self._local_files:
            for f in entry.files():
                by_path[f.path] = f
        shipment = _mount.Shipment(Path("/"), [by_path[p] for p in sorted(by_path)])
        stats = _mount.upload(connection, shipment)
        self._files_wire = shipment.wire()
        return stats

    def _shoal_files(self) -> List[Dict[str, Any]]:
        """The ``FunctionSpec.files`` of a function on this image (``path`` is the container
        path without its leading '/'): what the last :meth:`_ship_local_files` uploaded (none
        before an app using the image started)."""
        return list(self._files_wire or [])

    @property
    def object_id(self) -> Optional[str]:
        return self._last_id

    def __repr__(self) -> str:
        parts = [s.short for s in self._steps] + [f.short for f in self._local_files]
        text = " → ".join(parts)
        if len(text) > 160:
            head = " → ".join(parts[:2])
            text = f"{head} → … ({len(parts) - 3} more) → {parts[-1]}" if len(parts) > 3 else _shorten(text, 160)
        return f"Image({text})"

    # --- building ---

    def _build(self, connection: Any, show_progress: bool = True,
               output: Optional[Callable[[str], None]] = None, used_by: Sequence[str] = ()) -> str:
        """Builds (or finds cached) every step on the server behind ``connection``; returns the
        image id and remembers it for this connection's address. ``used_by``: the functions
        named in the progress lines."""
        if _in_container():
            raise InvalidError("images are built by the client that starts the app, not inside a container")
        key = str(getattr(connection, "address", None) or id(connection))
        if key in self._built and not ignore_cache_from_env():  # SHOAL_IGNORE_CACHE, --no-cache: ask again
            self._last_id = self._built[key]
            return self._last_id
        svc = service(connection)
        spec = self._spec()
        upload_blobs(svc, self._blobs())
        labels = [s["label"] for s in spec["steps"]]
        users = f" for {', '.join(used_by)}" if used_by else ""
        header = f"Building image{users}: {len(labels)} step{'s' if len(labels) != 1 else ''}"
        progress = _Progress(labels, output, show_progress, [s["kind"] for s in spec["steps"]], header)
        began = time.monotonic()
        handle = svc.build(spec)
        try:
            while True:
                events, done = handle.poll(POLL_S)
                for event in events:
                    progress.event(dict(event))
                if done:
                    break
        except BaseException:
            close = getattr(handle, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
            raise
        try:
            result = dict(handle.result())
        except Error as e:
            raise _build_error(e, progress) from e
        steps = [dict(s) for s in result.get("steps") or []]
        progress.finish(steps)
        image_id = str(result.get("image_id") or "")
        if not image_id:
            raise ImageBuildError(f"the server built {self!r} but returned no image id")
        if show_progress:
            out = output or _say
            if progress.building:
                out(f"✓ Built image {image_id}{users} in {time.monotonic() - began:.1f}s")
            else:
                out(f"✓ Image {image_id}{users} is cached ({_shorten(' → '.join(labels), 100)})")
        self._built[key] = image_id
        self._last_id = image_id
        return image_id


def default_image() -> Image:
    """The image of functions that name none: ``Image.debian_slim()`` (one object per process, so
    it is built once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Image.debian_slim()
    return _DEFAULT


_DEFAULT: Optional[Image] = None


def _build_error(e: Error, progress: _Progress) -> Error:
    """A failed step becomes :class:`ImageBuildError` ("image build failed at step 3/4 (RUN make):
    exit code 2", then the step's last output lines); other errors pass through."""
    message = str(e)
    match = re.match(r"^\s*step (\d+)\b", message)
    index = progress.failed
    if index is None and match is None:
        return e
    if index is None:
        index = int(match.group(1)) - 1
    label = progress._label(index)
    code = re.search(r"exit(?:ed with)? (?:code|status) (-?\d+)", message)
    cause = f"exit code {code.group(1)}" if code else _server_cause(message)
    text = f"image build failed at step {index + 1}/{progress.total} ({label}): {cause}"
    tail = list(progress.tails.get(index, ()))
    if tail:
        text += "\nlast output of the step:\n" + "\n".join(f"  {line}" for line in tail)
    error = ImageBuildError(text)
    error.code = getattr(e, "code", None)
    error.step = index + 1
    error.exit_code = int(code.group(1)) if code else None
    error.output = tail
    return error


def _server_cause(message: str) -> str:
    """The server's message without its "step N (label)" prefix."""
    return re.sub(r"^\s*step \d+ \(.*?\)\s*:?\s*", "", message).strip() or message


def _registry_auth(caller: str, secret: Any) -> Optional[Tuple[str, str]]:
    if secret is None:
        return None
    name = getattr(secret, "name", None)
    if isinstance(name, str) and name:
        raise InvalidError(
            f"{caller}: secret=Secret.from_name({name!r}) cannot carry registry credentials yet: only "
            "inline secrets work here for now (Secret.from_dict, Secret.from_local_environ, "
            "Secret.from_dotenv) with REGISTRY_USERNAME and REGISTRY_PASSWORD"
        )
    from ._options import _secret_env  # noqa: PLC0415

    env = _secret_env(secret)
    if env is None:
        raise InvalidError(f"{caller}: secret= must be a shoal.Secret")
    if _in_container():
        return None  # declared only; the values stayed on the client
    if any(k.startswith(NAMED_PREFIX) for k in env):
        raise InvalidError(f"{caller}: only inline secrets can carry registry credentials for now")
    missing = [k for k in ("REGISTRY_USERNAME", "REGISTRY_PASSWORD") if k not in env]
    if missing:
        raise InvalidError(
            f"{caller}: the secret has no {' and no '.join(missing)} (it needs REGISTRY_USERNAME and "
            "REGISTRY_PASSWORD for the registry's login)"
        )
    return (env["REGISTRY_USERNAME"], env["REGISTRY_PASSWORD"])


def _remote(caller: str, remote_path: Any) -> str:
    if not isinstance(remote_path, str) or not remote_path.startswith("/") or "\0" in remote_path:
        raise InvalidError(f"{caller}: remote_path must be an absolute path in the image, not {remote_path!r}")
    if ".." in PurePosixPath(remote_path).parts:
        raise InvalidError(f"{caller}: remote_path {remote_path!r} must not contain '..'")
    dest = _dest(remote_path)
    if not dest:
        return "/"
    return "/" + dest


def _pip_options(caller: str, index_url: Optional[str], extra_index_url: Optional[str],
                 find_links: Optional[str], pre: bool, extra_options: str) -> List[str]:
    options: List[str] = []
    for flag, value in (("--index-url", index_url), ("--extra-index-url", extra_index_url),
                        ("--find-links", find_links)):
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\0"):
            raise InvalidError(f"{caller}: {flag[2:].replace('-', '_')}= must be a non-empty str")
        options.append(f"{flag}={value}")
    if pre:
        options.append("--pre")
    if extra_options:
        if not isinstance(extra_options, str):
            raise InvalidError(f"{caller}: extra_options= must be a str of pip options")
        try:
            extra = shlex.split(extra_options)
        except ValueError as e:
            raise InvalidError(f"{caller}: extra_options= cannot be split like a shell line: {e}") from None
        if extra:
            options.append("--")
            options.extend(extra)
    return options


def _pip_label(pkgs: List[str], options: List[str]) -> str:
    return redact(_shorten("pip install " + " ".join(pkgs + [o for o in options if o != "--"]), 100))


def read_requirements(path: Path, _seen: Optional[set] = None) -> List[str]:
    """The requirement lines of a requirements file, ``-r``/``--requirement`` includes followed
    (relative to the including file); comments, blank lines and ``\\`` continuations handled."""
    seen = _seen if _seen is not None else set()
    path = path.expanduser()
    try:
        resolved = path.resolve()
        text = resolved.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidError(f"cannot read the requirements file {path}: {e.strerror}") from None
    if resolved in seen:
        return []
    seen.add(resolved)
    out: List[str] = []
    joined = re.sub(r"\\\r?\n", " ", text)
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = " ".join(re.sub(r"\s+#.*$", "", line).split())
        for prefix in ("-r ", "--requirement ", "--requirement=", "-r"):
            if line.startswith(prefix):
                include = line[len(prefix):].strip()
                out.extend(read_requirements(resolved.parent / include, seen))
                break
        else:
            if line.startswith(("-c ", "--constraint")):
                raise InvalidError(f"{path}: constraints files (-c) are not supported; pin the versions in the requirements")
            out.append(line)
    return out


def _find_module(caller: str, name: str) -> Tuple[str, Path, bool]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        raise InvalidError(f"{caller}: cannot find the module {name!r}: {e}") from None
    if spec is None:
        raise InvalidError(f"{caller}: there is no module {name!r} on this machine's sys.path")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return name, Path(locations[0]).resolve(), True
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        raise InvalidError(f"{caller}: {name!r} has no Python source file ({origin or 'built in'})")
    return name, Path(origin).resolve(), False


def pickle_function(fn: Callable[[], Any]) -> bytes:
    """cloudpickle of ``fn`` with its own module pickled by value when that module is local code
    (not an installed package): the build container does not have the app's code."""
    import cloudpickle  # noqa: PLC0415

    from . import _mount  # noqa: PLC0415

    module_name = getattr(fn, "__module__", None)
    module = sys.modules.get(module_name) if module_name else None
    by_value = False
    if module is not None and module_name not in ("__main__", "builtins"):
        path = _mount.module_file(module_name)
        if path is not None and _mount.is_local_file(path) and module_name.split(".")[0] not in ("shoal", "cloudpickle"):
            try:
                cloudpickle.register_pickle_by_value(module)
                by_value = True
            except (ValueError, TypeError):
                by_value = False
    try:
        return cloudpickle.dumps(fn, protocol=4)
    except Exception as e:  # noqa: BLE001 - anything cloudpickle refuses
        raise InvalidError(f"Image.run_function(): cannot pickle {fn!r}: {e}") from None
    finally:
        if by_value:
            with contextlib.suppress(ValueError):
                cloudpickle.unregister_pickle_by_value(module)


def function_source_hash(fn: Callable[[], Any], pickled: bytes) -> str:
    """sha256 of the function's source code; of its pickle when there is no source."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return hashlib.sha256(pickled).hexdigest()
    return hashlib.sha256(source.encode("utf-8")).hexdigest()
