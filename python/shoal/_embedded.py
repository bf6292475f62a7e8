"""The embedded local cluster: a ``shoald --roles all`` that the client starts on demand.

Its state dir is ``$SHOAL_HOME/state``; shoald keeps there

- ``shoald.pid``: its pid, flock-ed while it runs;
- ``shoald.addr``: ``127.0.0.1:PORT``, written (atomically) once it listens, removed at shutdown;
- ``admin.token``: the admin token of environment ``main``, written on first initialisation.

The client appends shoald's stdout/stderr to ``shoald.log`` in the same directory. The daemon is
started in its own session, so it outlives the command that started it; ``shoal cluster down``
stops it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .config import parse_address
from .exception import Error, ExecutionError, NotFoundError, TimeoutError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 12

ADDR_FILE = "shoald.addr"
PID_FILE = "shoald.pid"
TOKEN_FILE = "admin.token"
LOG_FILE = "shoald.log"


@dataclasses.dataclass(frozen=True)
class LocalCluster:
    """A running local shoald."""

    state_dir: Path
    address: str
    pid: int

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    def admin_token(self) -> str:
        """The admin token shoald wrote on first start."""
        return read_admin_token(self.state_dir)


def find_shoald() -> str:
    """The shoald executable: ``$SHOAL_SHOALD``, else ``shoald`` on ``PATH``."""
    configured = os.environ.get("SHOAL_SHOALD")
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise NotFoundError(
                f"SHOAL_SHOALD is set to {configured}, which is not an executable file; "
                "point it at a built shoald (e.g. build/tools/shoald/shoald) or unset it"
            )
        return str(path)
    found = shutil.which("shoald")
    if found:
        return found
    raise NotFoundError(
        "cannot start a local cluster: the shoald executable is not on PATH. Build it with "
        "`cmake -S . -B build && cmake --build build` in the Shoal source tree and install it "
        "(or set SHOAL_SHOALD=/path/to/shoald), or point the client at a running server with "
        "SHOAL_SERVER / `shoal token set`"
    )


def read_admin_token(state_dir: Path) -> str:
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NotFoundError(
            f"the local cluster has no admin token at {path}; set SHOAL_TOKEN to a token it accepts"
        ) from None
    except PermissionError:
        raise ExecutionError(f"cannot read the local cluster's admin token {path}: permission denied") from None
    if not token:
        raise NotFoundError(f"the local cluster's admin token file {path} is empty")
    return token


def _read_pid(state_dir: Path) -> int | None:
    try:
        text = (state_dir / PID_FILE).read_text(encoding="ascii").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _read_addr(state_dir: Path) -> str | None:
    try:
        text = (state_dir / ADDR_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text.splitlines()[0].strip() if text else None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process. A zombie shoald has released its lock: its
    parent (often a PID 1 that does not reap) just has not collected it yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The state letter follows the parenthesised command name, which may contain spaces.
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def _is_shoald(pid: int) -> bool:
    """Whether ``pid`` runs shoald, guarding against a stale pid file whose pid was reused."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return any(b"shoald" in os.path.basename(arg) for arg in args)


def _holder(state_dir: Path) -> int | None:
    """The pid of the live shoald named by the pid file, if any."""
    pid = _read_pid(state_dir)
    if pid is None or not pid_alive(pid) or not _is_shoald(pid):
        return None
    return pid


def _answers(address: str, timeout_s: float = 1.0) -> bool:
    try:
        host, port = parse_address(address)
    except Error:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def running(state_dir: Path) -> LocalCluster | None:
    """The local cluster, if its shoald is alive and its address answers."""
    pid = _holder(state_dir)
    addr = _read_addr(state_dir)
    if pid is None or addr is None:
        return None
    if not _answers(addr):
        return None
    return LocalCluster(state_dir=state_dir, address=addr, pid=pid)


def log_tail(state_dir: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(state_dir / LOG_FILE, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _stderr_note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_running(
    state_dir: Path,
    *,
    notify: Callable[[str], None] | None = _stderr_note,
    timeout_s: float = START_TIMEOUT_S,
) -> tuple[LocalCluster, bool]:
    """Returns the running local cluster, starting shoald if needed; the flag says whether this
    call started it. ``notify`` receives the progress message shown while starting."""
    cluster = running(state_dir)
    if cluster is not None:
        return cluster, False

    holder = _holder(state_dir)
    if holder is not None:
        # Another shoald holds the state dir but does not answer yet: it is starting (or stuck).
        if notify:
            notify(f"waiting for local shoald (pid {holder}) to start…")
        return _wait_for(state_dir, holder, None, timeout_s), False

    shoald = find_shoald()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A crashed shoald may have left its address behind; it must not be mistaken for the new one.
    try:
        (state_dir / ADDR_FILE).unlink()
    except FileNotFoundError:
        pass
    if notify:
        notify(f"starting local shoald (state dir {state_dir}, log {state_dir / LOG_FILE})…")
    with open(state_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [shoald, "--roles", "all", "--listen", "127.0.0.1:0", "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    return _wait_for(state_dir, proc.pid, proc, timeout_s), True


def _wait_for(
    state_dir: Path, pid: int, proc: subprocess.Popen | None, timeout_s: float
) -> LocalCluster:
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        cluster = running(state_dir)
        if cluster is not None and (state_dir / TOKEN_FILE).exists():
            return cluster
        exited = proc.poll() is not None if proc is not None else not pid_alive(pid)
        if exited:
            other = _holder(state_dir)
            if other is not None and other != pid:
                # Lost a race with another client that started shoald at the same time.
                return _wait_for(state_dir, other, None, max(0.0, deadline - time.monotonic()))
            how = f" with exit code {proc.returncode}" if proc is not None else ""
            raise ExecutionError(_with_log(f"local shoald (pid {pid}) exited during startup{how}", state_dir))
        if time.monotonic() >= deadline:
            raise TimeoutError(
                _with_log(
                    f"local shoald (pid {pid}) did not become ready within {timeout_s:.0f} s",
                    state_dir,
                )
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def _with_log(sentence: str, state_dir: Path) -> str:
    tail = log_tail(state_dir)
    log = state_dir / LOG_FILE
    if not tail:
        return f"{sentence}; its log {log} is empty"
    indented = "\n".join("    " + line for line in tail.splitlines())
    return f"{sentence}; the end of {log}:\n{indented}"


def stop(state_dir: Path, *, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """Stops the local shoald with SIGTERM and waits for it to exit. Returns its pid, or None
    when none was running."""
    pid = _holder(state_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            raise TimeoutError(
                _with_log(
                    f"local shoald (pid {pid}) did not stop within {timeout_s:.0f} s of SIGTERM; "
                    f"`kill -KILL {pid}` forces it",
                    state_dir,
                )
            )
        time.sleep(0.05)
    return pid
