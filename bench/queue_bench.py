"""Queue benchmark (issue 5): Shoal's durable queue beside redis-server on the same machine, same run.

    /usr/bin/python3 bench/queue_bench.py                 # 1 and 50 clients, 10 s each
    /usr/bin/python3 bench/queue_bench.py --seconds 3     # a quicker smoke run
    /usr/bin/python3 bench/queue_bench.py --rounds 3      # Shoal and Redis alternating, medians

Workload: every client loops `put(item)` then `get()` (blocking, 30 s limit) on one shared queue;
items are ~100-byte pickled dicts. Reported: completed put+get pairs per second (all clients
together) and the latency of the put's acknowledgement (p50, p99), i.e. the time until the
server said the item is durable.

- Shoal: `shoal.Queue.put` / `.get` through the SDK (pickling included) against a private shoald
  (`--roles control`, state dir on the same disk as Redis's). A put returns after its group
  commit's fsync.
- Redis (Debian's redis-server): `LPUSH` / `BRPOP` with redis-py (pickling included), AOF on,
  once with `appendfsync always` (fsync before replying; Redis batches the clients of one event
  loop turn into one fsync) and once with `appendfsync everysec` (a reply may precede the fsync by
  up to a second: not durable on acknowledgement).

Clients: N threads spread over processes (1 client: one process; 50: 5 processes x 10 threads), the
same for both systems, so both pay the same Python overhead. Prints a Markdown table for
bench/RESULTS.md.

Needs: shoald (SHOAL_SHOALD, `shoald` on PATH or build*/tools/shoald/shoald) and the Debian
packages redis-server and python3-redis (tools/dev installs them).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import pickle
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "python"))

ITEM = {"id": 0, "body": "x" * 64, "tags": ["bench", "queue"]}


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- clients (run in worker processes) ------------------------------------------------------------


def _run_threads(make_client, threads, start_at, stop_at, out):
    """Each thread: its own client; loops put+get between start_at and stop_at."""
    results = []
    lock = threading.Lock()

    def loop(index):
        put, get = make_client()
        item = dict(ITEM)
        put_lat = []
        pairs = 0
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            now = time.time()
            if now >= stop_at:
                break
            item["id"] = pairs
            t0 = time.perf_counter()
            put(item)
            t1 = time.perf_counter()
            get()
            put_lat.append(t1 - t0)
            pairs += 1
        with lock:
            results.append((pairs, put_lat))

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    cpu_before = _cpu_seconds()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    # This process's CPU over the run (connecting before it is not counted).
    out.put((results, _cpu_seconds() - cpu_before))


def _cpu_seconds(pid="self"):
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shoal_worker(addr, token, threads, start_at, stop_at, out):
    import shoal
    from shoal import _client, _transport

    conn = _client.connect_to(_client.Target(addr, token, embedded=False, source="bench"))
    _transport.set_host(_transport.NativeTransport(conn))
    queue = shoal.Queue.from_name("bench", create_if_missing=True)
    queue.len()

    def make_client():
        return (lambda v: queue.put(v)), (lambda: queue.get(timeout=30))

    _run_threads(make_client, threads, start_at, stop_at, out)


def redis_worker(port, threads, start_at, stop_at, out):
    import redis

    def make_client():
        r = redis.Redis(host="127.0.0.1", port=port)

        def put(v):
            r.lpush("bench", pickle.dumps(v))

        def get():
            item = r.brpop("bench", timeout=30)
            return pickle.loads(item[1]) if item else None

        return put, get

    _run_threads(make_client, threads, start_at, stop_at, out)


def measure(worker, args, clients, seconds, per_proc, server_pid):
    procs_n = max(1, (clients + per_proc - 1) // per_proc)
    out = mp.Queue()
    start_at = time.time() + 1.5  # every process connected and ready
    stop_at = start_at + seconds
    procs = []
    left = clients
    for _ in range(procs_n):
        n = min(per_proc, left)
        left -= n
        p = mp.Process(target=worker, args=(*args, n, start_at, stop_at, out))
        p.start()
        procs.append(p)
    server_before = _cpu_seconds(server_pid)
    results = []
    client_cpu = 0.0
    for _ in procs:
        proc_results, cpu = out.get(timeout=seconds + 120)
        results.extend(proc_results)
        client_cpu += cpu
    server_cpu = _cpu_seconds(server_pid) - server_before
    for p in procs:
        p.join(30)
    pairs = sum(r[0] for r in results)
    lat = [x for r in results for x in r[1]]
    return {
        "pairs_per_s": pairs / seconds,
        "put_p50_ms": percentile(lat, 50) * 1000,
        "put_p99_ms": percentile(lat, 99) * 1000,
        "pairs": pairs,
        # CPU per completed pair, in microseconds (the server's includes its idle-time wakeups
        # during the 1.5 s start-up, a small share).
        "client_us": client_cpu / max(pairs, 1) * 1e6,
        "server_us": server_cpu / max(pairs, 1) * 1e6,
    }


# --- servers --------------------------------------------------------------------------------------


def find_shoald():
    if os.environ.get("SHOAL_SHOALD"):
        return os.environ["SHOAL_SHOALD"]
    for candidate in ("build", "build-queue"):
        path = REPO / candidate / "tools" / "shoald" / "shoald"
        if path.is_file():
            return str(path)
    found = shutil.which("shoald")
    if found:
        return found
    sys.exit("shoald not found: build it or set SHOAL_SHOALD")


class Shoald:
    def __init__(self, base: Path):
        self.state = base / "shoald"
        self.port = free_port()
        self.log = open(base / "shoald.log", "ab")
        self.proc = subprocess.Popen(
            [find_shoald(), "--roles", "control", "--listen", f"127.0.0.1:{self.port}",
             "--state-dir", str(self.state), "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        addr_file = self.state / "shoald.addr"
        deadline = time.time() + 30
        while not addr_file.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"shoald did not start; see {base / 'shoald.log'}")
            time.sleep(0.05)
        self.addr = addr_file.read_text().strip()
        self.token = (self.state / "admin.token").read_text().strip()

    def batches(self):
        from shoal import _client

        conn = _client.connect_to(_client.Target(self.addr, self.token, embedded=False, source="bench"))
        try:
            return dict(conn.inspect_actor("queue_writer")["counters"])
        finally:
            conn.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


class Redis:
    def __init__(self, base: Path, fsync: str):
        self.dir = base / f"redis-{fsync}"
        self.dir.mkdir()
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.time() + 15
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=self.port).ping()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.time() > deadline:
                    sys.exit(f"redis-server did not start; see {self.dir / 'redis.log'}")
                time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per configuration")
    parser.add_argument("--clients", default="1,50", help="client counts, comma-separated")
    parser.add_argument("--threads-per-process", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate Shoal and Redis `always` this many times per client count and "
                             "report each row's median (this VM drifts between minutes)")
    parser.add_argument("--dir", default="/var/tmp", help="parent of the data dirs (a real disk, not tmpfs)")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    base = Path(tempfile.mkdtemp(prefix="queue-bench-", dir=args.dir))
    runs = {}  # (label, clients) -> [result, ...]
    notes = []

    def record(label, n, r):
        runs.setdefault((label, n), []).append(r)
        print(f"{label} {n}: {r}", file=sys.stderr, flush=True)

    try:
        shoald = Shoald(base)
        always = Redis(base, "always")
        for _ in range(args.rounds):
            for n in clients:
                before = shoald.batches()
                r = measure(shoal_worker, (shoald.addr, shoald.token), n, args.seconds,
                            args.threads_per_process, shoald.proc.pid)
                after = shoald.batches()
                fsyncs = after["batches_committed"] - before["batches_committed"]
                writes = after["writes_committed"] - before["writes_committed"]
                notes.append(f"shoal, {n} client(s): {writes} writes in {fsyncs} fsyncs "
                             f"({writes / max(fsyncs, 1):.1f} per fsync)")
                record("Shoal (fsync before ack)", n, r)
                record("Redis appendfsync always", n,
                       measure(redis_worker, (always.port,), n, args.seconds, args.threads_per_process,
                               always.proc.pid))
        shoald.stop()
        always.stop()
        everysec = Redis(base, "everysec")
        for n in clients:
            record("Redis appendfsync everysec", n,
                   measure(redis_worker, (everysec.port,), n, args.seconds, args.threads_per_process,
                           everysec.proc.pid))
        everysec.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def median_of(results):
        ordered = sorted(results, key=lambda r: r["pairs_per_s"])
        return ordered[len(ordered) // 2]

    today = datetime.date.today().isoformat()
    print(f"Run {today} on {platform.node()}: {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}; {args.seconds:.0f} s per row; data on {args.dir}; "
          f"{args.rounds} round(s), Shoal and Redis `always` alternating"
          + ("; each row is the median round by pairs/s" if args.rounds > 1 else "") + ".")
    print()
    print("| system | clients | put+get pairs/s | put ack p50 (ms) | put ack p99 (ms) "
          "| client CPU/pair (µs) | server CPU/pair (µs) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in ("Shoal (fsync before ack)", "Redis appendfsync always", "Redis appendfsync everysec"):
        for n in clients:
            r = median_of(runs[(label, n)])
            print(f"| {label} | {n} | {r['pairs_per_s']:.0f} | {r['put_p50_ms']:.2f} | {r['put_p99_ms']:.2f} "
                  f"| {r['client_us']:.0f} | {r['server_us']:.0f} |")
    print()
    if args.rounds > 1:
        for (label, n), results in runs.items():
            if len(results) > 1:
                print(f"- {label}, {n} client(s), every round: "
                      + ", ".join(f"{r['pairs_per_s']:.0f}" for r in results) + " pairs/s")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
