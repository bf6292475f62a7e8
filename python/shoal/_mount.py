"""Which local files an app ships to its containers, and how they are uploaded.

The **code root** is the directory the container puts first on ``sys.path`` (``SHOAL_CODE_DIR``):
the entry file's directory, or, when that directory is a package (has ``__init__.py``), the
directory above its top-most package. The entry module's import name is its path below the root
("app", "pkg.app").

Shipped (all paths relative to the root, every file a ``.py``):

1. the entry file, and each file defining a registered function or class;
2. the package each of those belongs to, whole (its ``.py`` files and regular sub-packages);
3. local modules they import, transitively (found by reading their ``import`` statements): a
   module or package under the root that is not inside ``site-packages``/``dist-packages``, a
   virtualenv, or the standard library. A package is shipped whole.

Files are content-addressed (sha256): :func:`upload` asks shoald which hashes it lacks and sends
only those.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import stat
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .exception import InvalidError

#: Directory names never searched or shipped.
SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
#: Top-level modules the container provides itself.
PROVIDED = frozenset({"shoal", "cloudpickle"})
#: One ``put_blobs`` batch stays under this many bytes.
UPLOAD_BATCH_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True)
class CodeFile:
    path: str  # relative to the code root, '/'-separated
    data: bytes
    mode: int
    sha256: str

    @classmethod
    def read(cls, root: Path, file: Path) -> "CodeFile":
        data = file.read_bytes()
        mode = stat.S_IMODE(file.stat().st_mode) or 0o644
        return cls(file.relative_to(root).as_posix(), data, mode, hashlib.sha256(data).hexdigest())

    def wire(self) -> Dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "mode": self.mode}


def _is_package_dir(path: Path) -> bool:
    return (path / "__init__.py").is_file()


def code_root(entry_file: Path) -> Path:
    """The directory above the entry file's top-most package, or the entry file's directory."""
    directory = Path(entry_file).resolve().parent
    while _is_package_dir(directory) and directory.parent != directory:
        directory = directory.parent
    return directory


def module_name(file: Path, root: Path) -> str:
    """The import name of ``file`` under ``root`` ("pkg.mod"; a package's ``__init__.py`` is the
    package itself)."""
    rel = Path(file).resolve().relative_to(Path(root).resolve())
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stdlib_dirs() -> Tuple[Path, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(Path(path).resolve())
    return tuple(dirs)


def _excluded(path: Path) -> bool:
    """Third-party or standard-library code, or a virtualenv, even when it sits under the root."""
    parts = set(path.parts)
    if parts & {"site-packages", "dist-packages"}:
        return True
    for directory in _stdlib_dirs():
        if directory == path or directory in path.parents:
            return True
    for parent in path.parents:
        if (parent / "pyvenv.cfg").is_file():
            return True
    return False


def _package_files(package_dir: Path) -> List[Path]:
    """The ``.py`` files of a package and of its regular sub-packages."""
    out = []
    for entry in sorted(package_dir.iterdir()):
        if entry.name.startswith(".") or entry.name in SKIP_DIRS:
            continue
        if entry.is_file() and entry.suffix == ".py":
            out.append(entry)
        elif entry.is_dir() and _is_package_dir(entry):
            out.extend(_package_files(entry))
    return out


def _top_package(file: Path, root: Path) -> Optional[Path]:
    """The top-most package directory under ``root`` containing ``file``, if any."""
    top = None
    directory = file.parent
    while directory != root and root in directory.parents and _is_package_dir(directory):
        top = directory
        directory = directory.parent
    return top


def _imported_names(file: Path) -> Set[str]:
    """Absolute module names a file imports (``import a.b`` → a.b; ``from a import b`` → a, a.b)."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (SyntaxError, ValueError):
        return set()  # Python reports it when the module is imported
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _resolve(name: str, root: Path) -> List[Path]:
    """The local files that importing ``name`` needs, or [] if it is not local."""
    parts = name.split(".")
    if parts[0] in PROVIDED:
        return []
    directory = root
    for i, part in enumerate(parts):
        if not part.isidentifier():
            return []
        package = directory / part
        module = directory / f"{part}.py"
        if _is_package_dir(package):
            if _excluded(package.resolve()):
                return []
            return _package_files(package)  # a package is shipped whole
        if module.is_file():
            return [] if _excluded(module.resolve()) else [module]
        if package.is_dir() and i + 1 < len(parts):  # a namespace package: look further down
            directory = package
            continue
        return []
    return []


@dataclasses.dataclass
class Shipment:
    root: Path
    files: List[CodeFile]

    @property
    def paths(self) -> List[str]:
        return [f.path for f in self.files]

    def wire(self) -> List[Dict[str, object]]:
        return [f.wire() for f in self.files]


def collect(entry_files: Sequence[Path], root: Optional[Path] = None) -> Shipment:
    """What to ship for an app whose code lives in ``entry_files`` (the first one decides the code
    root unless ``root`` is given). Raises :class:`InvalidError` for a file outside the root."""
    entries = [Path(f).resolve() for f in entry_files]
    if not entries and root is None:
        return Shipment(Path.cwd(), [])
    root = Path(root).resolve() if root is not None else code_root(entries[0])

    chosen: Dict[Path, None] = {}
    pending: List[Path] = []

    def add(paths: Iterable[Path]) -> None:
        for path in paths:
            path = path.resolve()
            if path not in chosen:
                chosen[path] = None
                pending.append(path)

    for entry in entries:
        if root not in entry.parents:
            raise InvalidError(
                f"{entry} defines part of the app but lies outside its code root {root}; move it "
                "under that directory, or use serialized=True for the functions it defines"
            )
        top = _top_package(entry, root)
        add(_package_files(top) if top is not None else [entry])
        add([entry])

    while pending:
        file = pending.pop()
        for name in sorted(_imported_names(file)):
            add(_resolve(name, root))

    files = sorted((CodeFile.read(root, p) for p in chosen), key=lambda f: f.path)
    return Shipment(root, files)


@dataclasses.dataclass
class UploadStats:
    new: List[str]
    cached: List[str]

    def summary(self) -> str:
        files = self.new + self.cached
        if not files:
            return "Shipped no files"
        noun = "file" if len(files) == 1 else "files"
        listed = ", ".join(sorted(files))
        return f"Shipped {len(files)} {noun} ({len(self.new)} new, {len(self.cached)} cached): {listed}"


def upload(connection, shipment: Shipment) -> UploadStats:
    """Sends the files shoald does not have yet (durable when this returns)."""
    by_hash: Dict[str, CodeFile] = {}
    for f in shipment.files:
        by_hash.setdefault(f.sha256, f)
    missing = set(connection.missing_blobs(sorted(by_hash))) if by_hash else set()
    batch: List[Tuple[str, bytes]] = []
    size = 0
    for digest in sorted(missing):
        f = by_hash.get(digest)
        if f is None:
            continue
        if batch and size + len(f.data) > UPLOAD_BATCH_BYTES:
            connection.put_blobs(batch)
            batch, size = [], 0
        batch.append((digest, f.data))
        size += len(f.data)
    if batch:
        connection.put_blobs(batch)
    new = [f.path for f in shipment.files if f.sha256 in missing]
    cached = [f.path for f in shipment.files if f.sha256 not in missing]
    return UploadStats(new, cached)


def module_file(module_name_: str) -> Optional[Path]:
    """The source file of an imported module, if it has one."""
    module = sys.modules.get(module_name_)
    path = getattr(module, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    return Path(path).resolve()


def is_local_file(path: Path) -> bool:
    return not _excluded(path.resolve()) and os.path.isfile(path)
