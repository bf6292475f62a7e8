"""A fake supervisor for tests: listens on a guest socket, runs `python3 -m shoal._guest` as a plain
child process (no container) and exchanges frames with it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from shoal._guest import protocol as p

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
TIMEOUT_S = 20.0


class Guest:
    def __init__(self, tmp: Path, code_dir: Path, container_id: str = "ct-test",
                 env: Optional[Dict[str, str]] = None) -> None:
        self.tmp = tmp
        self.socket_path = str(tmp / "guest.sock")
        self.log_path = tmp / "guest.log"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.socket_path)
        self.server.listen(1)
        child_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO / "python"),
            "PYTHONUNBUFFERED": "1",
            "SHOAL_GUEST_SOCKET": self.socket_path,
            "SHOAL_CODE_DIR": str(code_dir),
            "SHOAL_CONTAINER_ID": container_id,
            "SHOAL_FUNCTION_NAME": "f",
            "SHOAL_APP_NAME": "test",
        }
        child_env.update(env or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "shoal._guest"], env=child_env, stdout=self.log,
            stderr=subprocess.STDOUT, cwd=str(tmp),
        )
        self.server.settimeout(TIMEOUT_S)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(TIMEOUT_S)
        self.decoder = p.FrameDecoder()

    def send(self, frame: p.Frame) -> None:
        self.conn.sendall(p.encode(frame))

    def recv(self) -> Optional[p.Frame]:
        """The next frame, or None when the guest closed the connection."""
        while True:
            f = self.decoder.next()
            if f is not None:
                return f
            data = self.conn.recv(1 << 16)
            if not data:
                return None
            self.decoder.feed(data)

    def expect(self, cls):
        f = self.recv()
        assert isinstance(f, cls), f"expected {cls.__name__}, got {f!r}; log:\n{self.output()}"
        return f

    def start(self, definition: bytes, max_inputs: int = 1) -> p.Ready:
        hello = self.expect(p.Hello)
        assert hello.protocol == p.PROTOCOL_VERSION
        self.send(p.Init(definition, max_inputs))
        return self.expect(p.Ready)

    def collect(self, ids, on_call=None) -> Dict[int, List[p.Output]]:
        """Outputs until every id in `ids` has a terminal one; `on_call(call)` answers CALLs."""
        ids = set(ids)
        got: Dict[int, List[p.Output]] = {i: [] for i in ids}
        open_ids = set(ids)
        self.frames_seen = 0
        while open_ids:
            f = self.recv()
            assert f is not None, f"guest hung up; log:\n{self.output()}"
            if isinstance(f, p.Call):
                assert on_call is not None, f"unexpected {f!r}"
                self.send(on_call(f))
                continue
            assert isinstance(f, p.Outputs), f"expected OUTPUTS, got {f!r}"
            self.frames_seen += 1
            for out in f.items:
                assert out.id in got, f"output for unknown input {out.id}"
                assert out.id in open_ids, f"output after the terminal one: {out!r}"
                got[out.id].append(out)
                if out.status != p.ITEM:
                    open_ids.discard(out.id)
        return got

    def run_one(self, input_id: int, args: bytes, on_call=None) -> List[p.Output]:
        self.send(p.Inputs([p.Input(input_id, args)]))
        return self.collect([input_id], on_call)[input_id]

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        self.server.close()
        self.log.close()
