"""``Image.from_dockerfile``: a single-stage Dockerfile as a chain of Image steps.

Supported: ``FROM`` (one stage; ``scratch`` or a registry reference; ``AS name`` ignored), ``RUN``
(shell and JSON exec form), ``ENV`` (``K=V ...`` and the legacy ``K V``), ``ARG`` (defaults,
``build_args`` override them), ``WORKDIR``, ``COPY`` and ``ADD`` of files in the build context
(``ADD`` of a local tar archive extracts it; URLs are refused), ``USER``, ``ENTRYPOINT`` and ``CMD``
(JSON and shell forms). ``\\`` continuations, comments, the ``# escape=`` directive, and
``$VAR``/``${VAR}``/``${VAR:-default}``/``${VAR:+alt}`` in FROM, ENV, ARG, WORKDIR, COPY, ADD and
USER. ARG values referenced by a RUN command are exported to it (as Docker passes build args to RUN
as environment variables). ``.dockerignore`` in the context applies to COPY and ADD.

Anything else is an :class:`~shoal.exception.InvalidError` naming the file and line. Each step is
labelled ``Dockerfile:N INSTRUCTION ...``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import re
import shlex
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .exception import InvalidError
from .image import Entries, Image, _dest, add_archive, collect_dir, ignore_matcher

SUPPORTED = ("FROM", "RUN", "ENV", "ARG", "WORKDIR", "COPY", "ADD", "USER", "ENTRYPOINT", "CMD")
KNOWN_UNSUPPORTED = ("EXPOSE", "HEALTHCHECK", "ONBUILD", "VOLUME", "LABEL", "SHELL", "STOPSIGNAL",
                     "MAINTAINER")


@dataclasses.dataclass
class Instruction:
    line: int      # 1-based line of the instruction's first line
    name: str      # upper case
    rest: str      # the text after the instruction, continuations joined
    text: str      # the whole instruction as written (continuations joined), for labels


def parse(text: str, source: str = "Dockerfile") -> List[Instruction]:
    """Logical instructions: parser directives at the top, comments and blank lines dropped,
    escaped line ends joined."""
    lines = text.splitlines()
    escape = "\\"
    i = 0
    # Parser directives: "# key=value" lines before anything else.
    while i < len(lines):
        match = re.match(r"^\s*#\s*([a-zA-Z]+)\s*=\s*(.*?)\s*$", lines[i])
        if not match:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key == "escape":
            if value not in ("\\", "`"):
                raise InvalidError(f"{source}:{i + 1}: the escape directive must be '\\' or '`', not {value!r}")
            escape = value
        i += 1  # syntax=, check= ... are ignored
    out: List[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts = []
        line = raw
        while True:
            body = line.rstrip()
            if _ends_with_escape(body, escape):
                parts.append(body[:-1])
                i += 1
                # Skip comment and blank lines inside a continued instruction.
                while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                    i += 1
                if i >= len(lines):
                    break
                line = lines[i]
                continue
            parts.append(line)
            i += 1
            break
        joined = "".join(parts).strip()
        match = re.match(r"^(\S+)\s*(.*)$", joined, re.S)
        assert match is not None
        out.append(Instruction(start, match.group(1).upper(), match.group(2).strip(), joined))
    return out


def _ends_with_escape(body: str, escape: str) -> bool:
    """A line ending with an odd number of escape characters continues."""
    n = len(body) - len(body.rstrip(escape))
    return n % 2 == 1


# --- variable substitution and words -----------------------------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def _lookup(expr: str, variables: Dict[str, str], where: str) -> str:
    match = re.fullmatch(rf"({_NAME})(?:(:?[-+])(.*))?", expr, re.S)
    if not match:
        raise InvalidError(f"{where}: unsupported substitution ${{{expr}}} (use ${{VAR}}, ${{VAR:-default}} or ${{VAR:+alt}})")
    name, op, word = match.group(1), match.group(2), match.group(3)
    value = variables.get(name)
    if op is None:
        return value or ""
    if op in (":-", "-"):
        unset = value is None or (op == ":-" and value == "")
        return expand(word or "", variables, where) if unset else value
    # ":+" / "+": the word when set
    is_set = value is not None and (op == "+" or value != "")
    return expand(word or "", variables, where) if is_set else ""


def _dollar(text: str, i: int, variables: Dict[str, str], where: str) -> Tuple[str, int]:
    """Expands the ``$...`` at ``text[i]``; returns (value, next index)."""
    if i + 1 < len(text) and text[i + 1] == "{":
        depth, j = 1, i + 2
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        if depth:
            raise InvalidError(f"{where}: missing '}}' in {text!r}")
        return _lookup(text[i + 2 : j - 1], variables, where), j
    match = re.match(_NAME, text[i + 1 :])
    if match:
        return variables.get(match.group(0), ""), i + 1 + match.end()
    return "$", i + 1


def expand(text: str, variables: Dict[str, str], where: str) -> str:
    """``$VAR`` substitution in a string, quotes kept: single-quoted text is literal, ``\\$`` is
    a literal ``$``."""
    out: List[str] = []
    i, quote = 0, ""
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and quote != "'":
            if text[i + 1] == "$":
                out.append("$")
            else:
                out.append(text[i : i + 2])
            i += 2
            continue
        if c == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
        elif c == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
        if c == "$" and quote != "'":
            value, i = _dollar(text, i, variables, where)
            out.append(value)
            continue
        out.append(c)
        i += 1
    return "".join(out)


def words(text: str, variables: Dict[str, str], where: str) -> List[str]:
    """Splits like a shell (quotes removed, ``\\`` escapes) with ``$VAR`` substitution outside
    single quotes."""
    out: List[str] = []
    current: List[str] = []
    has_word = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            if has_word:
                out.append("".join(current))
                current, has_word = [], False
            i += 1
            continue
        has_word = True
        if c == "\\" and i + 1 < n:
            current.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise InvalidError(f"{where}: unterminated single quote")
            current.append(text[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\$':
                    current.append(text[i + 1])
                    i += 2
                elif text[i] == "$":
                    value, i = _dollar(text, i, variables, where)
                    current.append(value)
                else:
                    current.append(text[i])
                    i += 1
            if i >= n:
                raise InvalidError(f"{where}: unterminated double quote")
            i += 1
        elif c == "$":
            value, i = _dollar(text, i, variables, where)
            current.append(value)
        else:
            current.append(c)
            i += 1
    if has_word:
        out.append("".join(current))
    return out


def _json_list(rest: str) -> Optional[List[str]]:
    """The exec (JSON array) form, or None for the shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


# --- building the Image -------------------------------------------------------------------------------


class _Builder:
    def __init__(self, path: Path, context: Path, build_args: Dict[str, str], force_build: bool,
                 secrets: Sequence[Any], ignore: Callable[[str], bool]):
        self.path = path
        self.source = path.name
        self.context = context
        self.build_args = build_args
        self.force_build = force_build
        self.secrets = list(secrets)
        self.ignore = ignore
        self.args: Dict[str, str] = {}
        self.env: Dict[str, str] = {}
        self.workdir = "/"
        self.image: Optional[Image] = None
        self.line = 0

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def label(self, ins: Instruction) -> str:
        text = " ".join(ins.text.split())
        if len(text) > 100:
            text = text[:99] + "…"
        return f"{self.source}:{ins.line} {text}"

    def variables(self) -> Dict[str, str]:
        return {**self.args, **self.env}

    def error(self, message: str) -> InvalidError:
        return InvalidError(f"{self.where}: {message}")

    def run(self, instructions: List[Instruction]) -> Image:
        from_allowed = self.image is None  # dockerfile_commands builds on a given image
        for ins in instructions:
            self.line = ins.line
            name = ins.name
            if name == "FROM" and not from_allowed:
                raise self.error("FROM is not allowed here: the commands build on the image "
                                 "dockerfile_commands() is called on")
            if name not in SUPPORTED:
                if name in KNOWN_UNSUPPORTED:
                    raise self.error(
                        f"{name} is not supported by Shoal (supported: {', '.join(SUPPORTED)})"
                    )
                raise self.error(f"unknown instruction {name} (supported: {', '.join(SUPPORTED)})")
            if name == "ARG":
                self.do_arg(ins)
                continue
            if name == "FROM":
                self.do_from(ins)
                continue
            if self.image is None:
                raise self.error(f"{name} before FROM; a Dockerfile starts with FROM (ARG may come first)")
            getattr(self, f"do_{name.lower()}")(ins)
        if self.image is None:
            raise InvalidError(f"{self.source}: no FROM instruction")
        return self.image

    def _then(self, image: Image, ins: Instruction, *, secrets: bool = False) -> None:
        self.image = image._relabel(self.label(ins), force_build=self.force_build,
                                    secrets=self.secrets if secrets else None)

    def do_arg(self, ins: Instruction) -> None:
        items = words(ins.rest, self.variables(), self.where)
        if not items:
            raise self.error("ARG needs a name (ARG NAME or ARG NAME=default)")
        for item in items:
            name, sep, default = item.partition("=")
            if not re.fullmatch(_NAME, name):
                raise self.error(f"{name!r} is not a valid ARG name")
            if name in self.build_args:
                self.args[name] = str(self.build_args[name])
            else:
                self.args[name] = default if sep else self.args.get(name, "")

    def do_from(self, ins: Instruction) -> None:
        if self.image is not None:
            raise self.error(
                "a second FROM: multi-stage builds are not supported by Shoal; use one stage "
                "(build artifacts elsewhere and COPY them in)"
            )
        items = words(ins.rest, self.variables(), self.where)
        if items and items[0].startswith("--"):
            raise self.error(f"FROM {items[0]} is not supported")
        if len(items) == 3 and items[1].lower() == "as":
            items = items[:1]
        if len(items) != 1:
            raise self.error("expected FROM IMAGE [AS NAME]")
        ref = items[0]
        if ref == "scratch":
            base = Image.from_scratch()
        else:
            base = Image.from_registry(ref, force_build=self.force_build)
        # The label shows the reference with its build args substituted.
        label = f"{self.source}:{ins.line} FROM {ref}"
        self.image = base._relabel(label, force_build=self.force_build)

    def do_run(self, ins: Instruction) -> None:
        rest = ins.rest
        if rest.startswith("--"):
            raise self.error(f"RUN {rest.split()[0]} is not supported")
        if rest.startswith("<<"):
            raise self.error("RUN heredocs (<<EOF) are not supported; use a shell form RUN with && or a script file")
        argv = _json_list(rest)
        command = shlex.join(argv) if argv is not None else rest
        if not command.strip():
            raise self.error("RUN needs a command")
        # Build args reach RUN as environment variables, as in Docker (those the command names).
        exports = [
            f"{k}={shlex.quote(v)}" for k, v in sorted(self.args.items())
            if k not in self.env and re.search(rf"\$(?:{k}\b|\{{{k}\b)", command)
        ]
        if exports:
            command = f"export {' '.join(exports)}\n{command}"
        self._then(self.image.run_commands(command), ins, secrets=True)

    def do_env(self, ins: Instruction) -> None:
        variables = self.variables()
        first = ins.rest.split(None, 1)
        if not first:
            raise self.error("ENV needs NAME=VALUE")
        pairs: Dict[str, str] = {}
        if "=" not in first[0]:
            # The legacy form: ENV NAME the rest of the line
            name = first[0]
            value = " ".join(words(first[1], variables, self.where)) if len(first) > 1 else ""
            pairs[name] = value
        else:
            for item in words(ins.rest, variables, self.where):
                name, sep, value = item.partition("=")
                if not sep:
                    raise self.error(f"expected NAME=VALUE, found {item!r}")
                pairs[name] = value
        for name in pairs:
            if not re.fullmatch(_NAME, name):
                raise self.error(f"{name!r} is not a valid environment variable name")
        self.env.update(pairs)
        self._then(self.image.env(pairs), ins)

    def do_workdir(self, ins: Instruction) -> None:
        items = words(ins.rest, self.variables(), self.where)
        if len(items) != 1:
            raise self.error("expected WORKDIR PATH")
        self.workdir = self._absolute(items[0])
        self._then(self.image.workdir(self.workdir), ins)

    def do_user(self, ins: Instruction) -> None:
        items = words(ins.rest, self.variables(), self.where)
        if len(items) != 1:
            raise self.error("expected USER NAME[:GROUP]")
        self._then(self.image._user(items[0]), ins)

    def do_entrypoint(self, ins: Instruction) -> None:
        argv = _json_list(ins.rest)
        if argv is None:
            argv = ["/bin/sh", "-c", ins.rest]
        self._then(self.image.entrypoint(argv), ins)

    def do_cmd(self, ins: Instruction) -> None:
        argv = _json_list(ins.rest)
        if argv is None:
            argv = ["/bin/sh", "-c", ins.rest]
        self._then(self.image.cmd(argv), ins)

    def do_copy(self, ins: Instruction) -> None:
        self._copy(ins, add=False)

    def do_add(self, ins: Instruction) -> None:
        self._copy(ins, add=True)

    def _absolute(self, path: str) -> str:
        joined = PurePosixPath(self.workdir) / path
        return "/" + _dest(str(joined))

    def _copy(self, ins: Instruction, *, add: bool) -> None:
        name = ins.name
        argv = _json_list(ins.rest)
        items = argv if argv is not None else words(ins.rest, self.variables(), self.where)
        if argv is not None:
            items = [expand(x, self.variables(), self.where) for x in items]
        while items and items[0].startswith("--"):
            flag = items.pop(0)
            if flag == "--link" or flag.startswith("--link="):
                continue
            what = flag.split("=")[0]
            detail = {
                "--chown": "files are copied as root:root with their local modes; add a RUN chown",
                "--chmod": "files keep their local modes; add a RUN chmod",
                "--from": "multi-stage builds are not supported",
            }.get(what, "")
            raise self.error(f"{name} {what} is not supported by Shoal" + (f" ({detail})" if detail else ""))
        if len(items) < 2:
            raise self.error(f"expected {name} SOURCE... DEST")
        sources, dest = items[:-1], items[-1]
        dest_is_dir = dest.endswith("/") or len(sources) > 1
        dest_abs = self._absolute(dest)
        plan: List[Tuple[str, Path]] = []  # (kind, local path) with kind file|dir|archive
        for src in sources:
            if re.match(r"^[a-z][a-z0-9+.-]*://", src) or src.startswith("git@"):
                raise self.error(f"{name} of a URL ({src}) is not supported; download it in a RUN step")
            matches = self._sources(src)
            if len(matches) > 1 or glob.has_magic(src):
                dest_is_dir = True
            plan.extend(matches)
        ignore = self.ignore
        context = self.context

        entries_plan: List[Tuple[str, Path, str]] = []
        for local in [p for p in plan]:
            rel = local.relative_to(context).as_posix() if local != context else "."
            if local.is_dir():
                entries_plan.append(("dir", local, rel))
            elif add and _is_archive(local):
                entries_plan.append(("archive", local, rel))
            else:
                entries_plan.append(("file", local, rel))
        if not entries_plan:
            raise self.error(f"{name}: no source file matched")
        dest_arc = _dest(dest_abs)

        def resolve() -> Entries:
            entries: Entries = {}
            for kind, local, rel in entries_plan:
                if kind == "dir":
                    prefix = "" if rel == "." else rel
                    collect_dir(local, dest_arc,
                                lambda p, prefix=prefix: ignore("/".join(x for x in (prefix, p.as_posix()) if x)),
                                entries)
                elif kind == "archive":
                    add_archive(local, dest_arc, entries)
                else:
                    target = f"{dest_arc}/{local.name}" if dest_is_dir else dest_arc
                    entries[target.lstrip("/")] = local
            return entries

        short = f"add_files {dest_abs}"
        assert self.image is not None
        self.image = self.image._add_entries(resolve, label=self.label(ins), short=short,
                                             force_build=self.force_build)

    def _sources(self, src: str) -> List[Path]:
        context = self.context
        rel = src.lstrip("/")
        if ".." in PurePosixPath(rel).parts:
            candidate = (context / rel).resolve()
            if candidate != context and context not in candidate.parents:
                raise self.error(f"{src} is outside the build context {context}")
        if glob.has_magic(rel):
            found = sorted(Path(p) for p in glob.glob(str(context / rel)))
            found = [p for p in found if not self.ignore(p.relative_to(context).as_posix())]
            if not found:
                raise self.error(f"no file in the build context {context} matches {src}")
            return [p.resolve() if not p.is_symlink() else p for p in found]
        path = (context / rel) if rel not in ("", ".") else context
        if not path.exists():
            raise self.error(f"{src} does not exist in the build context {context}")
        if path != context and self.ignore(path.relative_to(context).as_posix()):
            raise self.error(f"{src} is excluded by .dockerignore")
        return [path.resolve()]


def _is_archive(path: Path) -> bool:
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


def image_from_dockerfile(
    path: Path,
    context_dir: Optional[Path],
    *,
    build_args: Dict[str, str],
    force_build: bool = False,
    secrets: Sequence[Any] = (),
    ignore: Any = None,
) -> Image:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidError(f"Image.from_dockerfile(): cannot read {path}: {e.strerror}") from None
    context = (Path(context_dir).expanduser() if context_dir is not None else path.parent).resolve()
    if not context.is_dir():
        raise InvalidError(f"Image.from_dockerfile(): the build context {context} is not a directory")
    for key, value in build_args.items():
        if not isinstance(key, str) or not re.fullmatch(_NAME, key) or not isinstance(value, str):
            raise InvalidError("Image.from_dockerfile(): build_args must map ARG names to str values")
    matcher = _context_matcher("Image.from_dockerfile()", context, ignore)
    builder = _Builder(path, context, build_args, force_build, secrets, matcher)
    return builder.run(parse(text, path.name))


def _context_matcher(caller: str, context: Path, ignore: Any) -> Callable[[str], bool]:
    """What COPY and ADD leave out: ``ignore=`` patterns or callable, else the context's
    ``.dockerignore``."""
    if ignore is None:
        dockerignore = context / ".dockerignore"
        patterns = dockerignore.read_text(encoding="utf-8").splitlines() if dockerignore.is_file() else []
        return ignore_matcher(patterns)
    if callable(ignore):
        return lambda rel: bool(ignore(Path(rel)))
    if isinstance(ignore, (list, tuple)) and all(isinstance(p, str) for p in ignore):
        return ignore_matcher(list(ignore))
    raise InvalidError(f"{caller}: ignore= must be a list of patterns or a callable(Path) -> bool")


def image_with_commands(
    base: Image,
    commands: List[str],
    context_dir: Optional[Path],
    *,
    force_build: bool = False,
    secrets: Sequence[Any] = (),
    ignore: Any = None,
) -> Image:
    """``Image.dockerfile_commands``: Dockerfile instructions (all but FROM) on top of ``base``,
    labelled ``dockerfile_commands:N ...``; COPY and ADD read from ``context_dir`` (default: the
    current directory)."""
    caller = "Image.dockerfile_commands()"
    context = (Path(context_dir).expanduser() if context_dir is not None else Path.cwd()).resolve()
    if not context.is_dir():
        raise InvalidError(f"{caller}: the build context {context} is not a directory")
    builder = _Builder(Path("dockerfile_commands"), context, {}, force_build, secrets,
                       _context_matcher(caller, context, ignore))
    builder.image = base
    # Variables and WORKDIR as the base image set them, for $VAR and relative COPY destinations.
    for step in base._steps:
        if step.kind == "workdir" and step.args:
            builder.workdir = step.args[0]
        elif step.kind == "env":
            for pair in step.args:
                key, _, value = pair.partition("=")
                builder.env[key] = value
    return builder.run(parse("\n".join(commands), "dockerfile_commands"))


__all__ = ["Instruction", "expand", "image_from_dockerfile", "image_with_commands", "parse", "words"]
