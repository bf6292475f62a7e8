"""A real OCI registry for end-to-end tests: Debian's `docker-registry` on a free loopback port,
images built with `umoci` and pushed with `skopeo` (the same tools as
tests/registry/registry_fixture.hpp).

    proc, registry = start_registry(tmp_path)                  # "127.0.0.1:PORT"
    ref = make_busybox_image(tmp_path, registry, "busybox", "1", env={"A": "1"})
    ...                                                        # shoal.Image.from_registry(ref)
    stop_registry(proc)

With `htpasswd=("user", "pass")` the registry demands Basic auth; pass the same pair as
`creds=` to make_busybox_image. Every helper raises RuntimeError carrying the tool's output.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "start_registry",
    "stop_registry",
    "make_busybox_image",
    "BUSYBOX_MOTD",
]

#: The text of etc/motd in images made by make_busybox_image.
BUSYBOX_MOTD = "hello from a shoal test image\n"


def _run(*args: str, input: bytes | None = None) -> str:
    proc = subprocess.run(list(args), input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(args)}\n"
                           f"{proc.stdout.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(tmpdir, htpasswd: tuple[str, str] | None = None,
                   timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Starts docker-registry storing under `tmpdir`/registry; returns (process, "127.0.0.1:PORT")
    once GET /v2/ answers (200, or 401 when `htpasswd` = (user, password) turns on Basic auth).
    Stop it with stop_registry(process)."""
    root = Path(tmpdir) / "registry"
    (root / "data").mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{_free_port()}"
    config = ("version: 0.1\n"
              "log:\n  level: warn\n"
              f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
              f"http:\n  addr: {address}\n")
    if htpasswd is not None:
        user, password = htpasswd
        (root / "htpasswd").write_text(_run("htpasswd", "-Bbn", user, password))
        config += f"auth:\n  htpasswd:\n    realm: shoal\n    path: {root / 'htpasswd'}\n"
    (root / "config.yml").write_text(config)
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(root / "config.yml")],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2):
                break
        except urllib.error.HTTPError as e:
            if e.code == 401:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_registry(proc)
            raise RuntimeError(f"docker-registry did not start on {address}:\n"
                               + (root / "registry.log").read_text(errors="replace"))
        time.sleep(0.05)
    return proc, address


def stop_registry(proc: subprocess.Popen) -> None:
    """Terminates a registry started by start_registry (SIGKILL after 5 s) and reaps it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_busybox_image(tmpdir, registry: str, name: str, tag: str,
                       creds: tuple[str, str] | None = None,
                       env: dict[str, str] | None = None,
                       extra_files: dict[str, str | bytes] | None = None,
                       workdir: str = "/w") -> str:
    """Builds a two-layer image and pushes it to `registry` as NAME:TAG; returns the reference
    "REGISTRY/NAME:TAG".

    Layer 1: bin/busybox (a copy of /bin/busybox), bin/sh -> busybox, etc/motd (BUSYBOX_MOTD),
    gone.txt, and `extra_files` (relative path -> content). Layer 2 deletes gone.txt (an OCI
    whiteout) and adds data/two.txt ("two\\n"). Config: `env`, WorkingDir `workdir`,
    Cmd ["/bin/sh"]. `creds` = (user, password) for a registry started with htpasswd."""
    work = Path(tmpdir) / f"image-{name.replace('/', '_')}-{tag}"
    layout = work / "layout"
    bundle = work / "bundle"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    image = f"{layout}:{tag}"
    unpack = ["umoci", "unpack"] + (["--rootless"] if os.geteuid() != 0 else [])
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", image)
    _run(*unpack, "--image", image, str(bundle))
    root = bundle / "rootfs"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    (root / "etc" / "motd").write_text(BUSYBOX_MOTD)
    (root / "gone.txt").write_text("this file is deleted by layer 2\n")
    for path, content in (extra_files or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    _run("umoci", "repack", "--refresh-bundle", "--image", image, str(bundle))
    (root / "gone.txt").unlink()
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "two.txt").write_text("two\n")
    _run("umoci", "repack", "--image", image, str(bundle))
    config = ["umoci", "config", "--image", image, "--config.workingdir", workdir,
              "--config.cmd", "/bin/sh"]
    for key, value in (env or {}).items():
        config += ["--config.env", f"{key}={value}"]
    _run(*config)
    push = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds is not None:
        push += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    _run(*push, f"oci:{image}", f"docker://{registry}/{name}:{tag}")
    shutil.rmtree(bundle, ignore_errors=True)
    return f"{registry}/{name}:{tag}"
