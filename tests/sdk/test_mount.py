"""Code shipping: which files an app ships (the entry file, its package, the local modules it
imports, nothing from site-packages or a virtualenv), and content addressing (unchanged files
are not uploaded again)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from shoal import _mount
from shoal.exception import InvalidError


def write(root: Path, files: dict) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def shipped(entry: Path) -> list:
    return _mount.collect([entry]).paths


def test_a_single_file_app_ships_only_itself(tmp_path):
    write(tmp_path, {"app.py": "import os, json\nimport shoal\n", "unrelated.py": "x = 1\n"})
    assert shipped(tmp_path / "app.py") == ["app.py"]


def test_local_modules_and_packages_the_entry_imports_are_shipped_transitively(tmp_path):
    write(tmp_path, {
        "app.py": """
            import helpers.util
            from config import SETTINGS

            def f():
                import lazy_mod  # imported inside a function: shipped too
        """,
        "helpers/__init__.py": "",
        "helpers/util.py": "from . import inner\nimport deep\n",
        "helpers/inner.py": "",
        "helpers/data.txt": "not python",
        "config.py": "SETTINGS = {}\n",
        "lazy_mod.py": "",
        "deep.py": "",
        "not_imported.py": "",
    })
    assert shipped(tmp_path / "app.py") == [
        "app.py", "config.py", "deep.py", "helpers/__init__.py", "helpers/inner.py",
        "helpers/util.py", "lazy_mod.py",
    ]


def test_an_entry_file_inside_a_package_ships_the_whole_package_from_above_it(tmp_path):
    write(tmp_path, {
        "proj/pkg/__init__.py": "",
        "proj/pkg/app.py": "from .models import M\n",
        "proj/pkg/models.py": "",
        "proj/pkg/sub/__init__.py": "",
        "proj/pkg/sub/x.py": "",
        "proj/pkg/notapkg/y.py": "",
        "proj/other.py": "",
    })
    entry = tmp_path / "proj/pkg/app.py"
    assert _mount.code_root(entry) == (tmp_path / "proj").resolve()
    assert _mount.module_name(entry, _mount.code_root(entry)) == "pkg.app"
    assert shipped(entry) == [
        "pkg/__init__.py", "pkg/app.py", "pkg/models.py", "pkg/sub/__init__.py", "pkg/sub/x.py",
    ]


def test_third_party_virtualenv_and_shoal_itself_are_never_shipped(tmp_path):
    write(tmp_path, {
        "app.py": "import venvpkg\nimport sitepkg\nimport shoal\nimport mylib\n",
        ".venv/pyvenv.cfg": "home = /usr/bin\n",
        ".venv/lib/python3.11/site-packages/venvpkg.py": "",
        "site-packages/sitepkg.py": "",
        "shoal/__init__.py": "",
        "mylib.py": "",
    })
    assert shipped(tmp_path / "app.py") == ["app.py", "mylib.py"]


def test_namespace_packages_ship_only_the_imported_module(tmp_path):
    write(tmp_path, {"app.py": "import ns.mod\n", "ns/mod.py": "", "ns/other.py": ""})
    assert shipped(tmp_path / "app.py") == ["app.py", "ns/mod.py"]


def test_a_file_outside_the_code_root_is_refused(tmp_path):
    write(tmp_path, {"a/app.py": "", "b/lib.py": ""})
    with pytest.raises(InvalidError, match="outside its code root"):
        _mount.collect([tmp_path / "a/app.py", tmp_path / "b/lib.py"])


def test_files_are_content_addressed_and_carry_their_mode(tmp_path):
    write(tmp_path, {"app.py": "print('hi')\n"})
    (tmp_path / "app.py").chmod(0o755)
    (file,) = _mount.collect([tmp_path / "app.py"]).files
    assert file.sha256 == hashlib.sha256(b"print('hi')\n").hexdigest()
    assert file.wire() == {"path": "app.py", "sha256": file.sha256, "mode": 0o755}


class RecordingConnection:
    def __init__(self):
        self.blobs = {}
        self.put = []

    def missing_blobs(self, hashes):
        return [h for h in hashes if h not in self.blobs]

    def put_blobs(self, blobs):
        self.put.append([d for d, _ in blobs])
        self.blobs.update(blobs)


def test_upload_sends_only_missing_files_and_summarises_what_shipped(tmp_path):
    write(tmp_path, {"app.py": "import helpers.util\n", "helpers/__init__.py": "", "helpers/util.py": "X = 1\n"})
    conn = RecordingConnection()
    first = _mount.upload(conn, _mount.collect([tmp_path / "app.py"]))
    assert sorted(first.new) == ["app.py", "helpers/__init__.py", "helpers/util.py"] and first.cached == []
    assert first.summary() == "Shipped 3 files (3 new, 0 cached): app.py, helpers/__init__.py, helpers/util.py"

    (tmp_path / "helpers/util.py").write_text("X = 2\n")
    second = _mount.upload(conn, _mount.collect([tmp_path / "app.py"]))
    assert second.new == ["helpers/util.py"] and sorted(second.cached) == ["app.py", "helpers/__init__.py"]
    assert second.summary() == "Shipped 3 files (1 new, 2 cached): app.py, helpers/__init__.py, helpers/util.py"
    assert len(conn.put[-1]) == 1

    third = _mount.upload(conn, _mount.collect([tmp_path / "app.py"]))
    assert third.new == [] and len(conn.put) == 2, "nothing is sent when nothing changed"


def test_large_uploads_are_split_into_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(_mount, "UPLOAD_BATCH_BYTES", 100)
    write(tmp_path, {"app.py": "import a, b, c\n", "a.py": "#" * 80, "b.py": "!" * 80, "c.py": "?" * 80})
    conn = RecordingConnection()
    _mount.upload(conn, _mount.collect([tmp_path / "app.py"]))
    assert len(conn.put) >= 3 and sum(len(p) for p in conn.put) == 4


def test_app_run_ships_the_code_and_prints_what_it_shipped(tmp_path, fake, capsys):
    import sys

    write(tmp_path, {
        "shipapp.py": """
            import shoal
            import shiphelpers.util

            app = shoal.App("ship")

            @app.function()
            def f(x):
                return shiphelpers.util.twice(x)
        """,
        "shiphelpers/__init__.py": "",
        "shiphelpers/util.py": "def twice(x):\n    return 2 * x\n",
    })
    sys.path.insert(0, str(tmp_path))
    try:
        import shipapp

        with shipapp.app.run():
            assert shipapp.f.remote(4) == 8
        with shipapp.app.run():
            pass
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("shipapp", "shiphelpers", "shiphelpers.util"):
            sys.modules.pop(name, None)
    err = capsys.readouterr().err
    assert "✓ Initialized app ship (ap-" in err
    assert "Shipped 3 files (3 new, 0 cached): shipapp.py, shiphelpers/__init__.py, shiphelpers/util.py" in err
    assert "Shipped 3 files (0 new, 3 cached)" in err
    assert "✓ Created 1 function: f" in err and "✓ App completed." in err
    code = fake.created[0]["code"]
    assert sorted(c["path"] for c in code) == ["shipapp.py", "shiphelpers/__init__.py", "shiphelpers/util.py"]
