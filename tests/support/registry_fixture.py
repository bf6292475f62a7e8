"""A real OCI registry for end-to-end tests: Debian's `docker-registry` on a free loopback port,
images built with `umoci` and pushed with `skopeo` (the same tools as
tests/registry/registry_fixture.hpp).

    proc, registry = start_registry(tmp_path)                  # "127.0.0.1:PORT"
    ref = make_busybox_image(tmp_path, registry, "busybox", "1", env={"A": "1"})
    ...                                                        # shoal.Image.from_registry(ref)
    stop_registry(proc)

With `htpasswd=("user", "pass")` the registry demands Basic auth; pass the same pair as
`creds=` to make_busybox_image. With `token=("user", "pass")` it demands a bearer token from a
token server the fixture runs beside it (the Docker token flow: a 401 naming the realm, a GET of
the realm with Basic credentials, a signed JWT back); `creds=` works the same way. Every helper
raises RuntimeError carrying the tool's output.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenServer:
    """A Docker token server on loopback: GET /token?service=S&scope=repository:NAME:ACTIONS with
    Basic credentials (user, password) answers {"token": JWT}; wrong credentials get 401. The JWT
    is ES256-signed by a key whose self-signed certificate is the registry's rootcertbundle (and
    rides in the header's x5c). `requests` counts the tokens handed out."""

    SERVICE = "shoal-test-registry"
    ISSUER = "shoal-test-token-server"

    def __init__(self, root: Path, user: str, password: str):
        from cryptography import x509  # noqa: PLC0415 - Debian's python3-cryptography
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import NameOID  # noqa: PLC0415
        import datetime  # noqa: PLC0415

        self._hashes, self._ec = hashes, ec
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.ISSUER)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(self.key, hashes.SHA256()))
        self.cert_path = root / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.user = user
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                url = urllib.parse.urlparse(self.path)
                if url.path != "/token" or self.headers.get("Authorization") != server.expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(url.query)
                body = json.dumps({"token": server.sign(query.get("scope", [])),
                                   "expires_in": 300}).encode()
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def sign(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: PLC0415

        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        claims = {"iss": self.ISSUER, "sub": self.user, "aud": self.SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(),
                                                  self._ec.ECDSA(self._hashes.SHA256())))
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_registry(tmpdir, htpasswd: tuple[str, str] | None = None,
                   token: tuple[str, str] | None = None,
                   timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Starts docker-registry storing under `tmpdir`/registry; returns (process, "127.0.0.1:PORT")
    once GET /v2/ answers (200, or 401 when `htpasswd` = (user, password) turns on Basic auth, or
    `token` = (user, password) bearer tokens from a token server started beside it; its object is
    `process.token_server`). Stop it with stop_registry(process)."""
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
    token_server = None
    if token is not None:
        token_server = _TokenServer(root, *token)
        config += (f"auth:\n  token:\n    realm: {token_server.realm}\n"
                   f"    service: {_TokenServer.SERVICE}\n    issuer: {_TokenServer.ISSUER}\n"
                   f"    rootcertbundle: {token_server.cert_path}\n")
    (root / "config.yml").write_text(config)
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(root / "config.yml")],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    proc.token_server = token_server
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
    if getattr(proc, "token_server", None) is not None:
        proc.token_server.stop()
        proc.token_server = None
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
