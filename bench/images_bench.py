"""Image cache-hit benchmark (issue 4): how long `Image._build` takes for a 10-step spec whose
every step is cached already — what `shoal run` pays per image before it can start an app.

    /usr/bin/python3 bench/images_bench.py                 # 200 resolutions
    /usr/bin/python3 bench/images_bench.py --runs 50

The spec: from_scratch → add_local_dir(a busybox tree, 2 MB) → 8 run_commands steps. The first
build runs every step in a crun build container; then each timed resolution declares the chain
anew (a fresh Image object, so no client-side memo) and builds it: the SDK tars and hashes the
local dir, asks which blobs the server lacks, and sends the spec; the server computes 10 ids and
finds 10 records. Reported: p50, p90, p99 and max in milliseconds. Target: p50 ≤ 50 ms.

Needs: shoald (on PATH or build/tools/shoald/shoald), busybox-static, root (crun).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from functions_bench import start_shoald  # noqa: E402  (one way to start a private shoald)


def busybox_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "echo", "mkdir", "cat"):
        os.symlink("busybox", root / "bin" / applet)
    return root


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoal-images-bench-"))
    state = work / "state"
    state.mkdir()
    proc, addr, token = start_shoald(state)
    os.environ.update(SHOAL_SERVER=addr, SHOAL_TOKEN=token, SHOAL_HOME=str(work / "home"))
    try:
        import shoal
        from shoal import _transport

        tree = busybox_tree(work / "busybox")

        def declare():
            image = shoal.Image.from_scratch().add_local_dir(str(tree), "/", copy=True)
            for i in range(8):
                image = image.run_commands(f"mkdir -p /steps && echo {i} > /steps/{i}")
            return image

        conn = _transport.host().connection
        began = time.perf_counter()
        first = declare()._build(conn, show_progress=False)
        cold_s = time.perf_counter() - began

        times_ms = []
        for _ in range(args.runs):
            began = time.perf_counter()
            image_id = declare()._build(conn, show_progress=False)
            times_ms.append((time.perf_counter() - began) * 1000)
            assert image_id == first
        print(f"# image cache-hit resolution, {args.runs} runs, {time.strftime('%Y-%m-%d')}, "
              f"{platform.node()}, {os.cpu_count()} cores")
        print(f"first build (10 steps, 8 in crun): {cold_s:.2f} s")
        print("| spec | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        print(f"| 10 steps, all cached | {percentile(times_ms, 0.5):.1f} | {percentile(times_ms, 0.9):.1f} | "
              f"{percentile(times_ms, 0.99):.1f} | {max(times_ms):.1f} |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
