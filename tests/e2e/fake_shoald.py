"""A stand-in for shoald that follows its process contract (pid file + flock, shoald.addr,
admin.token, logfmt on stderr, SIGTERM -> exit 0) without serving RPC. The offline tests use it
to exercise the client's embedded-cluster management without a built daemon.

FAKE_SHOALD_MODE=fail makes it log an error and exit 1 at startup; =hang makes it never listen.
"""

import argparse
import fcntl
import os
import secrets
import signal
import socket
import sys
import threading
import time


def log(level, event, **kv):
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fields = " ".join(f'{k}="{v}"' if " " in str(v) else f"{k}={v}" for k, v in kv.items())
    print(f"ts={ts} level={level} event={event} {fields}".rstrip(), file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(prog="shoald")
    parser.add_argument("--roles", default="all")
    parser.add_argument("--listen", default="127.0.0.1:7650")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    mode = os.environ.get("FAKE_SHOALD_MODE", "")
    state = args.state_dir
    os.makedirs(state, exist_ok=True)

    if mode == "fail":
        log("error", "startup_failed", reason="the disk is on fire")
        sys.exit(1)

    pid_fd = os.open(os.path.join(state, "shoald.pid"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(pid_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(pid_fd, 32, 0).decode().strip()
        print(f"shoald: the state dir {state} is held by another shoald (pid {holder})", file=sys.stderr)
        sys.exit(1)
    os.ftruncate(pid_fd, 0)
    os.pwrite(pid_fd, f"{os.getpid()}\n".encode(), 0)

    token_path = os.path.join(state, "admin.token")
    if not os.path.exists(token_path):
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, f"sht-{secrets.token_hex(16)}\n".encode())
        os.close(fd)

    if mode == "hang":
        while True:
            time.sleep(1)

    host, port = args.listen.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, int(port)))
    server.listen()
    addr = f"{host}:{server.getsockname()[1]}"
    addr_path = os.path.join(state, "shoald.addr")
    with open(addr_path + ".tmp", "w") as f:
        f.write(addr + "\n")
    os.replace(addr_path + ".tmp", addr_path)
    log("info", "ready", addr=addr, pid=os.getpid())

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def serve():
        while True:
            conn, _ = server.accept()
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    while not stop.wait(0.05):
        pass
    log("info", "shutdown_started")
    os.unlink(addr_path)
    log("info", "stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
