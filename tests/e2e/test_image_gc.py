"""`shoal image gc` end to end: removing images and collecting frees their chunks on the real
shoald, keeps what other images use, and needs an admin token.

Images here are made of local files only (`Image.from_scratch().add_local_dir`), so no debian_slim
base is built; the tree side of the collection (materialised trees, mounted ones kept) is tested
in tests/actors/image_builder against real overlay mounts.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from conftest import ok, write

BUILD = """
import sys
import shoal
from shoal import _transport

image = shoal.Image.from_scratch().add_local_dir(sys.argv[1], "/data", copy=True)
print("IMAGE", image._build(_transport.host().connection))
"""


def make_dir(path: Path, seed: int, shared: bytes) -> Path:
    path.mkdir()
    (path / "own.bin").write_bytes(os.urandom(3 << 20))   # 3 chunks of 1 MiB: this image's own
    (path / "shared.bin").write_bytes(shared)             # the same bytes in both images
    (path / "seed.txt").write_text(str(seed))
    return path


def build(python, script: Path, directory: Path) -> str:
    result = ok(python(script, str(directory)))
    return next(l.split()[1] for l in result.stdout.splitlines() if l.startswith("IMAGE "))


def test_gc_frees_a_removed_images_chunks_and_keeps_the_shared_ones(tmp_path, python, shoal, shoald):
    script = write(tmp_path, "build.py", BUILD)
    shared = os.urandom(2 << 20)
    first = build(python, script, make_dir(tmp_path / "one", 1, shared))
    second = build(python, script, make_dir(tmp_path / "two", 2, shared))

    nothing = shoal("image gc --json", timeout_s=120).json()
    assert nothing["chunks_removed"] == 0 and nothing["trees_removed"] == 0, nothing

    ok(shoal(f"image rm {first} --yes", timeout_s=60))
    report = shoal("image gc --json", timeout_s=120).json()
    # The first image's own files (3 chunks + seed.txt) and its layer manifest go; the shared file
    # stays.
    assert report["chunks_removed"] == 5, report
    assert report["chunk_bytes_removed"] >= 3 << 20, report
    assert report["images"] >= 2, report

    human = shoal("image gc", timeout_s=120)
    ok(human)
    assert "removed 0 chunk(s)" in human.stdout and "kept" in human.stdout, human.stdout

    # The second image is whole: building it again is a cache hit, and the first builds anew.
    again = ok(python(script, str(tmp_path / "two")))
    assert second in again.stdout and "is cached" in again.stderr, again.stderr
    rebuilt = ok(python(script, str(tmp_path / "one")))
    assert first in rebuilt.stdout and "is cached" not in rebuilt.stderr.splitlines()[-1], rebuilt.stderr
    assert shoal(f"image inspect {first} --json", timeout_s=60).json()["image_id"] == first


def test_gc_needs_an_admin_token(tmp_path, shoal, shoald):
    created = ok(shoal("token new --json", timeout_s=60))
    token = created.json()["token"]
    refused = shoal("image gc", env={"SHOAL_TOKEN": token}, timeout_s=60)
    assert refused.rc != 0
    assert "needs an admin token" in refused.stderr, refused.stderr
