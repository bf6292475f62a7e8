"""Functions benchmark (issue 3): Shoal beside Dask distributed on the same workloads, same run.

    /usr/bin/python3 bench/functions_bench.py            # needs shoald + shoal on PATH (tools/dev setup)
    /usr/bin/python3 bench/functions_bench.py --quick    # smaller counts, for a smoke run

Workloads (each against a warm worker unless stated):
  remote   `.remote` round trip of a no-op, p50/p99 over 500 sequential calls
  map      `.map` of a no-op over 20,000 inputs, inputs/s
  spawn    spawn 2,000 calls, then collect every result, calls/s
  cold     cold start from a cached image to the first result (new container, no warm one)

Dask: a LocalCluster with 2 single-threaded worker processes; `client.submit(...).result()` for
remote, `client.map` + `gather` for map, `submit` x N then `gather` for spawn; cold = a new
LocalCluster to the first result.

Shoal runs on a private shoald (its own state dir under /tmp, reused across runs so the default
image is built once) started by this script. Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def noop(x):
    return x


def percentile(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def bench_dask(n_remote, n_map, n_spawn):
    from dask.distributed import Client, LocalCluster

    out = {}
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.submit(noop, 0, pure=False).result()
    out["cold_s"] = time.perf_counter() - t0

    lat = []
    for i in range(n_remote):
        t = time.perf_counter()
        client.submit(noop, i, pure=False).result()
        lat.append(time.perf_counter() - t)
    out["remote_p50_us"] = percentile(lat, 50) * 1e6
    out["remote_p99_us"] = percentile(lat, 99) * 1e6

    t = time.perf_counter()
    results = client.gather(client.map(noop, range(n_map), pure=False))
    assert len(results) == n_map
    out["map_per_s"] = n_map / (time.perf_counter() - t)

    t = time.perf_counter()
    futures = [client.submit(noop, i, pure=False) for i in range(n_spawn)]
    results = client.gather(futures)
    assert results == list(range(n_spawn))
    out["spawn_per_s"] = n_spawn / (time.perf_counter() - t)

    client.close()
    cluster.close()
    return out


APP = textwrap.dedent(
    """
    import shoal

    app = shoal.App("bench-functions")

    @app.function(min_containers=1, max_containers=2, scaledown_window=600)
    def noop(x):
        return x

    @app.function(scaledown_window=2)
    def cold(x):
        return x
    """
)


def start_shoald(state_dir: Path):
    shoald = shutil.which("shoald") or str(HERE.parent / "build/tools/shoald/shoald")
    log = open(state_dir.parent / "shoald.log", "ab")
    proc = subprocess.Popen(
        [shoald, "--state-dir", str(state_dir), "--listen", "127.0.0.1:0", "--log-level", "warn"],
        stdout=log, stderr=log)
    addr_file = state_dir / "shoald.addr"
    for _ in range(300):
        if addr_file.exists() and addr_file.read_text().strip():
            return proc, addr_file.read_text().strip(), (state_dir / "admin.token").read_text().strip()
        if proc.poll() is not None:
            raise SystemExit(f"shoald exited with {proc.returncode}; see {state_dir.parent / 'shoald.log'}")
        time.sleep(0.1)
    raise SystemExit("shoald did not start")


def bench_shoal(n_remote, n_map, n_spawn, work: Path):
    state = work / "state"
    state.mkdir(parents=True, exist_ok=True)
    proc, addr, token = start_shoald(state)
    os.environ.update(SHOAL_SERVER=addr, SHOAL_TOKEN=token, SHOAL_HOME=str(work / "home"))
    out = {}
    try:
        import importlib.util

        app_path = work / "bench_app.py"
        app_path.write_text(APP)
        spec = importlib.util.spec_from_file_location("bench_app", app_path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_app"] = mod
        spec.loader.exec_module(mod)
        import shoal

        with mod.app.run():
            # Warm up: the first call may build the default image once per state dir.
            mod.noop.remote(0)
            for i in range(50):
                mod.noop.remote(i)

            lat = []
            for i in range(n_remote):
                t = time.perf_counter()
                mod.noop.remote(i)
                lat.append(time.perf_counter() - t)
            out["remote_p50_us"] = percentile(lat, 50) * 1e6
            out["remote_p99_us"] = percentile(lat, 99) * 1e6

            t = time.perf_counter()
            results = list(mod.noop.map(range(n_map)))
            assert results == list(range(n_map))
            out["map_per_s"] = n_map / (time.perf_counter() - t)

            t = time.perf_counter()
            calls = [mod.noop.spawn(i) for i in range(n_spawn)]
            results = [c.get() for c in calls]
            assert results == list(range(n_spawn))
            out["spawn_per_s"] = n_spawn / (time.perf_counter() - t)

            # Cold start: a function with no container yet, image cached.
            t = time.perf_counter()
            mod.cold.remote(1)
            out["cold_s"] = time.perf_counter() - t
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    parser.add_argument("--work", default="/tmp/shoal-bench-functions",
                        help="shoald state for the benchmark (kept: the image is built once)")
    args = parser.parse_args()
    n_remote, n_map, n_spawn = (50, 1000, 200) if args.quick else (500, 20000, 2000)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    shoal_r = bench_shoal(n_remote, n_map, n_spawn, work)
    dask_r = bench_dask(n_remote, n_map, n_spawn)

    def row(name, key, fmt, better_low):
        s, d = shoal_r[key], dask_r[key]
        ratio = (d / s) if better_low else (s / d)
        return f"| {name} | {fmt.format(s)} | {fmt.format(d)} | {ratio:.2f}x |"

    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, counts: remote {n_remote}, map {n_map}, spawn {n_spawn}\n")
    print("| workload | Shoal | Dask LocalCluster (2x1) | Shoal advantage |")
    print("|---|---|---|---|")
    print(row(".remote p50 (µs)", "remote_p50_us", "{:.0f}", True))
    print(row(".remote p99 (µs)", "remote_p99_us", "{:.0f}", True))
    print(row(".map no-op (inputs/s)", "map_per_s", "{:.0f}", False))
    print(row("spawn + collect (calls/s)", "spawn_per_s", "{:.0f}", False))
    print(row("cold start to first result (s)", "cold_s", "{:.3f}", True))


if __name__ == "__main__":
    main()
