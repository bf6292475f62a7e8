"""Fixtures for the end-to-end tests: the real shoald on a temporary state dir, and the `shoal`
CLI run as a subprocess with an isolated SHOAL_HOME.

shoald is found through SHOAL_SHOALD, else `shoald` on PATH, else build/tools/shoald/shoald in
this checkout. Tests that need it fail (not skip) when it is missing: a green run must mean the
daemon was exercised.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import sys

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO / "python"
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))  # the unit-level tests import shoal in-process
PYTHON = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
CLI_TIMEOUT_S = 60.0


# --- shoald ---------------------------------------------------------------------------------------


def find_shoald() -> str | None:
    configured = os.environ.get("SHOAL_SHOALD")
    if configured:
        return configured
    found = shutil.which("shoald")
    if found:
        return found
    built = REPO / "build" / "tools" / "shoald" / "shoald"
    return str(built) if built.is_file() and os.access(built, os.X_OK) else None


@pytest.fixture(scope="session")
def shoald_path() -> str:
    path = find_shoald()
    if path is None:
        pytest.fail(
            "shoald not found: build it (cmake -S . -B build && cmake --build build), put it on PATH, "
            "or set SHOAL_SHOALD=/path/to/shoald",
            pytrace=False,
        )
    return path


def free_port_number() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (at the time of the call)."""
    return free_port_number()


_LOGFMT_PAIR = re.compile(r'(\w[\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    fields = {}
    for key, value in _LOGFMT_PAIR.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[key] = value
    return fields


#: Shared by every daemon of the test run (see Daemon).
DEBOOTSTRAP_CACHE = os.environ.get("SHOAL_DEBOOTSTRAP_CACHE", "/var/tmp/shoal-test-debootstrap-cache")


class Daemon:
    """A shoald process started by the tests. Its stdout and stderr go to `log_path`."""

    def __init__(self, binary: str, state_dir: Path, port: int, log_path: Path, extra_args=()):
        self.binary = binary
        self.state_dir = Path(state_dir)
        self.port = port
        self.log_path = log_path
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        self.args = [
            binary, "--roles", "all", "--listen", f"127.0.0.1:{port}",
            "--state-dir", str(self.state_dir), "--log-level", "debug", *extra_args,
        ]
        # Every test daemon shares one cache of the .deb files debootstrap downloads, so only the
        # first debian_slim build of a run fetches them.
        env = {**os.environ, "SHOAL_DEBOOTSTRAP_CACHE": DEBOOTSTRAP_CACHE}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env)
        self.addr: str | None = None
        self.token: str | None = None

    @property
    def addr_file(self) -> Path:
        return self.state_dir / "shoald.addr"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self) -> list[dict[str, str]]:
        return [parse_logfmt(line) for line in self.log().splitlines() if line.strip()]

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> "Daemon":
        deadline = time.monotonic() + timeout_s
        while not self.addr_file.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"shoald exited with code {self.proc.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"shoald did not write {self.addr_file} within {timeout_s} s:\n{self.log()}")
            time.sleep(0.02)
        self.addr = self.addr_file.read_text().strip()
        self.token = (self.state_dir / "admin.token").read_text().strip()
        return self

    def restart(self, sig: int = signal.SIGKILL, timeout_s: float = READY_TIMEOUT_S) -> "Daemon":
        """Stops the daemon with `sig` (SIGKILL: a crash) and starts it again on the same state dir
        and port; returns self once it listens again."""
        self.stop(sig)
        self.addr_file.unlink(missing_ok=True)  # a killed shoald leaves its address behind
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self.wait_ready(timeout_s)

    def env(self) -> dict[str, str]:
        """What a client process needs to talk to this daemon."""
        return {"SHOAL_SERVER": self.addr, "SHOAL_TOKEN": self.token}

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Sends `sig` and returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"shoald did not exit within {timeout_s} s of signal {sig}:\n{self.log()}")
        return self.proc.returncode


@pytest.fixture
def start_shoald(shoald_path, tmp_path):
    """Starts shoald: `start_shoald(state_dir=None, port=None)` returns a ready Daemon. At teardown
    each one still running gets SIGTERM and must exit 0."""
    daemons: list[Daemon] = []

    def start(state_dir: Path | None = None, port: int | None = None, wait: bool = True) -> Daemon:
        index = len(daemons)
        daemon = Daemon(
            shoald_path,
            state_dir or tmp_path / "state",
            free_port_number() if port is None else port,
            tmp_path / f"shoald-{index}.log",
        )
        daemons.append(daemon)
        return daemon.wait_ready() if wait else daemon

    yield start

    failures = []
    for daemon in daemons:
        if daemon.proc.poll() is None:
            rc = daemon.stop()
            if rc != 0:
                failures.append(f"shoald {daemon.args} exited with {rc} on SIGTERM:\n{daemon.log()}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def module_shoald(shoald_path, tmp_path_factory):
    """One shoald (roles all) shared by every test of a module, on one state dir: what is slow to
    build there (the default container image, ~60 s of debootstrap) is built once per session
    module. A test module opts in by overriding `shoald` with it. At teardown it gets SIGTERM and
    must exit 0."""
    base = tmp_path_factory.mktemp("module-shoald")
    daemon = Daemon(shoald_path, base / "state", free_port_number(), base / "shoald.log")
    daemon.wait_ready()
    yield daemon
    if daemon.proc.poll() is None:
        rc = daemon.stop(timeout_s=60)
        assert rc == 0, f"shoald exited with {rc} on SIGTERM:\n{daemon.log()[-20000:]}"


@pytest.fixture
def shoald(start_shoald) -> Daemon:
    """A running shoald (roles all) on a temp state dir and a free port; `.addr`, `.state_dir`,
    `.token` (the admin token), `.proc`."""
    return start_shoald()


# --- the CLI --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def __iter__(self):  # rc, out, err = cli(...)
        return iter((self.rc, self.stdout, self.stderr))

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json(self):
        assert self.rc == 0, f"exit code {self.rc}; stderr:\n{self.stderr}"
        return json.loads(self.stdout)


def run_shoal(args, *, home: Path, env: dict | None = None, input: str | None = None,
              timeout_s: float = CLI_TIMEOUT_S) -> Result:
    """Runs `python3 -m shoal ARGS` with SHOAL_HOME=home and no other SHOAL_* variable from the
    test runner's environment; `env` adds variables (a None value removes one)."""
    if isinstance(args, str):
        args = args.split()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    full_env["SHOAL_HOME"] = str(home)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PYTHON_DIR), os.environ.get("PYTHONPATH")]))
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = subprocess.run(
        [PYTHON, "-m", "shoal", *args],
        env=full_env, input=input, capture_output=True, text=True, timeout=timeout_s,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def shoal_home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def run_cli(shoal_home):
    """`run_cli("config show --json", env={...})`: the CLI with an isolated, empty SHOAL_HOME and
    no server configured."""

    def run(args, env=None, input=None, timeout_s=CLI_TIMEOUT_S) -> Result:
        return run_shoal(args, home=shoal_home, env=env, input=input, timeout_s=timeout_s)

    return run


@pytest.fixture
def cli(shoald, run_cli):
    """`cli("actor list --json")`: the CLI pointed at the `shoald` fixture through SHOAL_SERVER
    and SHOAL_TOKEN (override or remove them with env={...: None})."""

    def run(args, env=None, input=None, timeout_s=CLI_TIMEOUT_S) -> Result:
        full = {"SHOAL_SERVER": shoald.addr, "SHOAL_TOKEN": shoald.token}
        full.update(env or {})
        return run_cli(args, env=full, input=input, timeout_s=timeout_s)

    return run


def assert_one_sentence(result: Result) -> str:
    """An expected failure: exit 1, exactly one `shoal: ...` line on stderr, no traceback."""
    assert result.rc == 1, f"exit code {result.rc}; stdout: {result.stdout!r}; stderr: {result.stderr!r}"
    assert len(result.stderr_lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = result.stderr_lines[0]
    assert line.startswith("shoal: "), line
    assert "Traceback" not in result.stderr
    return line


def pid_alive(pid: int) -> bool:
    """Live and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] not in "ZX"
    except OSError:
        return False


def wait_until(predicate, timeout_s: float = STOP_TIMEOUT_S, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@pytest.fixture
def fake_shoald(tmp_path) -> Path:
    """An executable named `shoald` that runs tests/e2e/fake_shoald.py (see there)."""
    path = tmp_path / "bin" / "shoald"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nexec {PYTHON} {HERE / "fake_shoald.py"} "$@"\n')
    path.chmod(0o755)
    return path


# -- apps in containers: helpers shared by the modules that run functions (functions, images,
#    secrets). They expect a `shoald` fixture; those modules override it with `module_shoald`.

#: A command that may have to wait for the debian_slim base to be built.
LONG_S = 900.0


def write(directory: Path, name: str, source: str) -> Path:
    """Writes dedented `source` to `directory/name` and returns the path."""
    path = directory / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def ok(result: Result) -> Result:
    assert result.rc == 0, f"exit code {result.rc}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def last_json(result: Result):
    """The last stdout line that is JSON (container log lines are printed too)."""
    for line in reversed(ok(result).stdout.splitlines()):
        if line.startswith(("{", "[", '"')):
            return json.loads(line)
    raise AssertionError(f"no JSON line in stdout:\n{result.stdout}\nstderr:\n{result.stderr}")


@pytest.fixture
def shoal(shoald, shoal_home):
    """`shoal("run app.py --x 1")`: the CLI against the test's daemon."""

    def run(args, env=None, timeout_s=LONG_S) -> Result:
        return run_shoal(args, home=shoal_home, env={**shoald.env(), **(env or {})}, timeout_s=timeout_s)

    return run


@pytest.fixture
def python(shoald, shoal_home):
    """`python(script_path, *args)`: a plain Python process using the SDK against the daemon."""

    def run(script: Path, *args: str, timeout_s: float = LONG_S, env=None) -> Result:
        full = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        full.update(shoald.env())
        full["SHOAL_HOME"] = str(shoal_home)
        full["PYTHONPATH"] = str(PYTHON_DIR)
        full.update(env or {})
        proc = subprocess.run([PYTHON, str(script), *args], env=full, capture_output=True, text=True,
                              timeout=timeout_s, cwd=script.parent)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
