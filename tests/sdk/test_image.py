"""shoal.Image without a server: the ImageStep dicts each method sends (schema/images.capnp),
validation messages, deterministic archives, run_function pickles, progress rendering against the
fake builder, App start building each distinct image once, and secrets never shown."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import textwrap

import pytest

import shoal
from shoal import image as image_mod
from shoal.exception import ImageBuildError, InvalidError

from fake_native import fake_connection
import fake_native

STEP_KEYS = {"kind", "args", "blob", "env", "force_build", "registry_auth", "label"}


def steps(image) -> list:
    spec = image._spec(ignore_cache=False)
    for step in spec["steps"]:
        assert set(step) == STEP_KEYS
    return spec["steps"]


def last(image) -> dict:
    return steps(image)[-1]


def tar_names(data: bytes) -> list:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


# --- bases ---------------------------------------------------------------------------------------------


def test_debian_slim_defaults_to_the_suites_python():
    assert steps(shoal.Image.debian_slim()) == [{
        "kind": "debian_slim", "args": ["3.11"], "blob": "", "env": {}, "force_build": False,
        "registry_auth": None, "label": "debian_slim 3.11",
    }]
    assert steps(shoal.Image.debian_slim("3.11"))[0]["args"] == ["3.11"]


@pytest.mark.parametrize("version", ["3.12", "3.10"])
def test_debian_slim_refuses_other_pythons_and_says_what_is_available(version):
    with pytest.raises(InvalidError) as e:
        shoal.Image.debian_slim(python_version=version)
    assert str(e.value) == (
        f"python_version='{version}' is not available: this cluster's Debian suite (bookworm) "
        "offers Python 3.11; use Image.debian_slim() or python_version='3.11'"
    )


def test_from_registry_with_inline_credentials_and_refusals():
    image = shoal.Image.from_registry(
        "ghcr.io/org/app:1",
        secret=shoal.Secret.from_dict({"REGISTRY_USERNAME": "bob", "REGISTRY_PASSWORD": "hunter2pw"}),
    )
    step = steps(image)[0]
    assert step["kind"] == "registry" and step["args"] == ["ghcr.io/org/app:1"]
    assert step["registry_auth"] == ("bob", "hunter2pw") and step["env"] == {}
    assert step["label"] == "FROM ghcr.io/org/app:1"
    assert "hunter2pw" not in repr(image) and "hunter2pw" not in step["label"]
    assert steps(shoal.Image.from_registry("python:3.11-slim"))[0]["registry_auth"] is None

    with pytest.raises(InvalidError, match="only inline secrets work here for now"):
        shoal.Image.from_registry("x:1", secret=shoal.Secret.from_name("regcreds"))
    with pytest.raises(InvalidError, match="no REGISTRY_PASSWORD"):
        shoal.Image.from_registry("x:1", secret=shoal.Secret.from_dict({"REGISTRY_USERNAME": "u"}))
    with pytest.raises(InvalidError, match="add_python is not supported by Shoal yet"):
        shoal.Image.from_registry("ubuntu:22.04", add_python="3.11")
    with pytest.raises(InvalidError, match="image reference"):
        shoal.Image.from_registry("two words")


def test_from_registry_reads_credentials_from_the_local_environment(monkeypatch):
    monkeypatch.setenv("REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("REGISTRY_PASSWORD", "tok")
    secret = shoal.Secret.from_local_environ(["REGISTRY_USERNAME", "REGISTRY_PASSWORD"])
    assert steps(shoal.Image.from_registry("r/x:1", secret=secret))[0]["registry_auth"] == ("ci", "tok")


def test_from_scratch_and_a_direct_constructor():
    assert steps(shoal.Image.from_scratch())[0]["kind"] == "scratch"
    assert steps(shoal.Image.from_scratch())[0]["args"] == []
    with pytest.raises(InvalidError, match="Image.debian_slim"):
        shoal.Image()


# --- layer steps ----------------------------------------------------------------------------------------


def test_images_are_immutable_builders():
    base = shoal.Image.debian_slim()
    a = base.apt_install("curl")
    b = base.apt_install("git")
    assert len(steps(base)) == 1 and last(a)["args"] == ["curl"] and last(b)["args"] == ["git"]


def test_apt_install_keeps_order_and_flattens_lists():
    step = last(shoal.Image.debian_slim().apt_install("curl", ["git", "make"], force_build=True))
    assert step["kind"] == "apt_install" and step["args"] == ["curl", "git", "make"]
    assert step["force_build"] is True and step["label"] == "RUN apt-get install -y curl git make"
    with pytest.raises(InvalidError, match="give each package as its own argument"):
        shoal.Image.debian_slim().apt_install("curl git")
    assert steps(shoal.Image.debian_slim().apt_install()) == steps(shoal.Image.debian_slim())


def test_pip_install_packages_then_options_then_extra_options():
    step = last(shoal.Image.debian_slim().pip_install(
        "pandas", "numpy==2.1.3",
        index_url="https://pypi.example/simple",
        extra_index_url="https://extra.example/simple",
        find_links="/wheels",
        pre=True,
        extra_options="--no-deps --timeout '30'",
    ))
    assert step["kind"] == "pip_install"
    assert step["args"] == [
        "numpy==2.1.3", "pandas",
        "--index-url=https://pypi.example/simple",
        "--extra-index-url=https://extra.example/simple",
        "--find-links=/wheels",
        "--pre",
        "--", "--no-deps", "--timeout", "30",
    ]
    assert step["label"].startswith("pip install numpy==2.1.3 pandas --index-url=")
    assert last(shoal.Image.debian_slim().pip_install("numpy"))["args"] == ["numpy"]
    with pytest.raises(InvalidError, match="pass pip options as index_url="):
        shoal.Image.debian_slim().pip_install("--upgrade")


def test_credentials_in_an_index_url_stay_out_of_labels_and_reprs():
    image = shoal.Image.debian_slim().pip_install("torch", index_url="https://user:s3cr3t@pypi.corp/simple")
    step = last(image)
    assert "--index-url=https://user:s3cr3t@pypi.corp/simple" in step["args"]
    assert "s3cr3t" not in step["label"] and "***@pypi.corp" in step["label"]
    assert "s3cr3t" not in repr(image)


def test_pip_install_from_requirements_reads_lines_and_nested_files(tmp_path):
    (tmp_path / "base.txt").write_text("requests>=2  # http\n")
    req = tmp_path / "requirements.txt"
    req.write_text("# pinned\n\nnumpy==2.1.3\n-r base.txt\npandas \\\n  >=2\n--extra-index-url https://x/simple\n")
    step = last(shoal.Image.debian_slim().pip_install_from_requirements(req, pre=True))
    assert step["kind"] == "pip_install"
    assert step["args"] == [
        "numpy==2.1.3", "requests>=2", "pandas >=2", "--pre", "--", "--extra-index-url", "https://x/simple",
    ]
    with pytest.raises(InvalidError, match="cannot read the requirements file"):
        shoal.Image.debian_slim().pip_install_from_requirements(tmp_path / "missing.txt")


def test_run_commands_with_secrets_keeps_values_out_of_labels_and_repr():
    secret = shoal.Secret.from_dict({"TOKEN": "tok-very-secret"})
    image = shoal.Image.debian_slim().run_commands(
        "curl -H \"Authorization: $TOKEN\" https://x", "make", secrets=[secret, shoal.Secret.from_name("npm")],
    )
    step = last(image)
    assert step["kind"] == "run_commands"
    assert step["args"] == ["curl -H \"Authorization: $TOKEN\" https://x", "make"]
    assert step["env"] == {"TOKEN": "tok-very-secret", "@secret:npm": "npm"}
    assert step["label"].startswith("RUN curl") and "&& make" in step["label"]
    assert "tok-very-secret" not in step["label"] and "tok-very-secret" not in repr(image)
    with pytest.raises(InvalidError, match="secrets= must hold shoal.Secret"):
        shoal.Image.debian_slim().run_commands("x", secrets=["TOKEN"])


def setup_function_for_image():
    import json  # noqa: F401 - something for the pickle to reference
    with open("/tmp/shoal-image-test-marker", "w") as f:
        f.write("built")


def test_run_function_uploads_the_pickle_and_keys_on_the_source():
    import cloudpickle

    image = shoal.Image.debian_slim().run_function(setup_function_for_image, force_build=True)
    step = last(image)
    blobs = image._blobs()
    assert step["kind"] == "run_function" and step["force_build"] is True
    assert step["blob"] in blobs and hashlib.sha256(blobs[step["blob"]]).hexdigest() == step["blob"]
    import inspect
    source_hash = hashlib.sha256(inspect.getsource(setup_function_for_image).encode()).hexdigest()
    assert step["args"] == [source_hash]
    assert step["label"] == f"run_function {__name__}.setup_function_for_image"
    # Pickled by value: loading it does not need this test module.
    fn = cloudpickle.loads(blobs[step["blob"]])
    assert fn.__code__.co_code == setup_function_for_image.__code__.co_code
    assert fn.__module__ == __name__ and fn is not setup_function_for_image


def test_run_function_without_source_keys_on_the_pickle():
    namespace: dict = {}
    exec("def made():\n    return 42\n", namespace)
    step = last(shoal.Image.debian_slim().run_function(namespace["made"]))
    assert step["args"] == [step["blob"]]
    with pytest.raises(InvalidError, match="takes a function"):
        shoal.Image.debian_slim().run_function(42)


# --- files ----------------------------------------------------------------------------------------------


def make_tree(root):
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "pkg" / "sub" / "b.txt").write_text("b\n")
    (root / "pkg" / "skip.pyc").write_bytes(b"\0")
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "pkg" / "run.sh", 0o755)
    for path in (root / "pkg").rglob("*"):
        os.utime(path, (1_600_000_000, 1_600_000_000))


def test_add_local_dir_is_a_deterministic_tar_under_its_destination(tmp_path):
    make_tree(tmp_path)
    image = shoal.Image.debian_slim().add_local_dir(tmp_path / "pkg", "/app", ignore=["*.pyc"], copy=True)
    step = last(image)
    assert step["kind"] == "add_files" and step["args"] == ["/"]
    assert step["label"] == f"COPY {tmp_path / 'pkg'} /app"
    data = image._blobs()[step["blob"]]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["app/a.py", "app/run.sh", "app/sub", "app/sub/b.txt"]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 1_600_000_000 and not m.pax_headers
    assert {m.name: m.mode for m in members}["app/run.sh"] == 0o755

    # The same directory declared again: the same archive, byte for byte.
    again = shoal.Image.debian_slim().add_local_dir(tmp_path / "pkg", "/app", ignore=["*.pyc"], copy=True)
    assert last(again)["blob"] == step["blob"]
    # A content change: another archive.
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    os.utime(tmp_path / "pkg" / "a.py", (1_600_000_000, 1_600_000_000))
    changed = shoal.Image.debian_slim().add_local_dir(tmp_path / "pkg", "/app", ignore=["*.pyc"], copy=True)
    assert last(changed)["blob"] != step["blob"]


def test_add_local_dir_ignore_callable(tmp_path):
    make_tree(tmp_path)
    image = shoal.Image.debian_slim().add_local_dir(
        str(tmp_path / "pkg"), "/srv/", copy=True, ignore=lambda p: p.name == "sub" or p.suffix == ".pyc",
    )
    assert tar_names(image._blobs()[last(image)["blob"]]) == ["srv/a.py", "srv/run.sh"]
    with pytest.raises(InvalidError, match="is not a directory"):
        shoal.Image.debian_slim().add_local_dir(tmp_path / "nope", "/x")
    with pytest.raises(InvalidError, match="must be an absolute path"):
        shoal.Image.debian_slim().add_local_dir(tmp_path / "pkg", "relative/dir")


def test_add_local_file_to_a_path_or_into_a_directory(tmp_path):
    make_tree(tmp_path)
    image = shoal.Image.debian_slim().add_local_file(tmp_path / "pkg" / "a.py", "/etc/app/config.py", copy=True)
    assert tar_names(image._blobs()[last(image)["blob"]]) == ["etc/app/config.py"]
    into = shoal.Image.debian_slim().add_local_file(tmp_path / "pkg" / "a.py", "/opt/", copy=True)
    assert tar_names(into._blobs()[last(into)["blob"]]) == ["opt/a.py"]
    assert last(into)["label"] == f"COPY {tmp_path / 'pkg' / 'a.py'} /opt/a.py"
    with pytest.raises(InvalidError, match="is not a file"):
        shoal.Image.debian_slim().add_local_file(tmp_path / "pkg", "/x")


def test_add_local_python_source_copies_py_files_to_root(tmp_path, monkeypatch):
    make_tree(tmp_path)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "single.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    image = shoal.Image.debian_slim().add_local_python_source("pkg", "single", copy=True)
    step = last(image)
    assert step["kind"] == "add_files" and step["args"] == ["/"]
    assert tar_names(image._blobs()[step["blob"]]) == [
        "root/pkg/__init__.py", "root/pkg/a.py", "root/pkg/sub", "root/single.py",
    ]
    with pytest.raises(InvalidError, match="no module 'no_such_module_xyz'"):
        shoal.Image.debian_slim().add_local_python_source("no_such_module_xyz")


# --- copy=False: files added at container start ---------------------------------------------------------


def test_copy_false_is_the_default_and_keeps_the_files_out_of_the_image(tmp_path):
    make_tree(tmp_path)
    base = shoal.Image.debian_slim().apt_install("curl")
    image = base.add_local_dir(tmp_path / "pkg", "/app", ignore=["*.pyc"])
    # No step: the image id is the one of the chain without the files, whatever they hold.
    assert steps(image) == steps(base) and image._blobs() == {}
    assert "add_files /app (copy=False)" in repr(image)
    assert image._shoal_image_key() != base._shoal_image_key()  # a with_options variant differs
    files = {f.path: f for entry in image._local_files for f in entry.files()}
    assert sorted(files) == ["app/a.py", "app/run.sh", "app/sub/b.txt"]  # regular files only
    assert files["app/run.sh"].mode == 0o755 and files["app/a.py"].data == b"A = 1\n"


def test_a_build_step_after_copy_false_names_the_step_and_the_fix(tmp_path):
    make_tree(tmp_path)
    image = shoal.Image.debian_slim().add_local_file(tmp_path / "pkg" / "a.py", "/etc/app/a.py")
    with pytest.raises(InvalidError) as e:
        image.run_commands("pip install -e /etc/app")
    message = str(e.value)
    assert message.startswith("RUN pip install -e /etc/app: this build step comes after Image.add_local_file() "
                              f"with copy=False (COPY {tmp_path / 'pkg' / 'a.py'} /etc/app/a.py)")
    assert "Pass copy=True to Image.add_local_file()" in message
    assert "move the copy=False call after the last build step" in message
    with pytest.raises(InvalidError, match="ENV MODE: this build step comes after"):
        image.env({"MODE": "x"})
    # More copy=False files may follow, and copy=True is a layer that steps may follow.
    image.add_local_dir(tmp_path / "pkg", "/srv").add_local_file(tmp_path / "pkg" / "a.py", "/srv/b.py", copy=False)
    layered = shoal.Image.debian_slim().add_local_dir(tmp_path / "pkg", "/srv", copy=True).run_commands("ls /srv")
    assert [s["kind"] for s in steps(layered)] == ["debian_slim", "add_files", "run_commands"]
    with pytest.raises(InvalidError, match="copy= must be True or False"):
        shoal.Image.debian_slim().add_local_dir(tmp_path / "pkg", "/srv", copy="yes")


COPY_FALSE_APP = """
import shoal

image = shoal.Image.debian_slim().add_local_dir({data!r}, "/data").add_local_file({extra!r}, "/etc/extra.txt")
app = shoal.App("{{name}}", image=image)

@app.function()
def f(x):
    return x

@app.function(image=shoal.Image.debian_slim())
def plain(x):
    return x
"""


def test_app_start_uploads_copy_false_files_and_sends_them_with_the_functions(fake, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "one.txt").write_text("one v1")
    (tmp_path / "extra.txt").write_text("extra")
    os.chmod(tmp_path / "extra.txt", 0o600)
    source = COPY_FALSE_APP.format(data=str(tmp_path / "data"), extra=str(tmp_path / "extra.txt"))
    module = load_app(tmp_path, "imgapp_files", source)
    try:
        with module.app.run():
            pass
        specs = {s["name"]: s for s in fake.created[-1]["functions"]}
        sent = {f["path"]: f for f in specs["f"]["files"]}
        assert sorted(sent) == ["data/one.txt", "etc/extra.txt"]
        assert sent["etc/extra.txt"]["mode"] == 0o600
        assert fake.blobs[sent["data/one.txt"]["sha256"]] == b"one v1"
        assert specs["plain"]["files"] == []
        # The image built has no step for the files: the same id as debian_slim alone.
        assert specs["f"]["image"] == specs["plain"]["image"]
        err = capsys.readouterr().err
        assert "Added 2 local files (2 new, 0 cached) for f, not built into the image (copy=False)" in err

        # Edited between two starts: read again, no new build, the new content sent.
        builds = len(fake.image_builds)
        (tmp_path / "data" / "one.txt").write_text("one v2")
        with module.app.run():
            pass
        assert len(fake.image_builds) == builds
        sent = {f["path"]: f for s in fake.created[-1]["functions"] if s["name"] == "f" for f in s["files"]}
        assert fake.blobs[sent["data/one.txt"]["sha256"]] == b"one v2"
        assert "(1 new, 1 cached)" in capsys.readouterr().err
    finally:
        sys.modules.pop("imgapp_files", None)


# --- metadata -------------------------------------------------------------------------------------------


def test_metadata_steps():
    image = (
        shoal.Image.debian_slim()
        .env({"B": "2", "A": "x=y"})
        .workdir("/app")
        .entrypoint(["python", "-m", "srv"])
        .cmd(["--port", "80"])
        ._user("app")
    )
    got = [(s["kind"], s["args"], s["label"]) for s in steps(image)[1:]]
    assert got == [
        ("env", ["A=x=y", "B=2"], "ENV A, B"),
        ("workdir", ["/app"], "WORKDIR /app"),
        ("entrypoint", ["python", "-m", "srv"], 'ENTRYPOINT ["python", "-m", "srv"]'),
        ("cmd", ["--port", "80"], 'CMD ["--port", "80"]'),
        ("user", ["app"], "USER app"),
    ]
    with pytest.raises(InvalidError, match="not a valid environment variable name"):
        shoal.Image.debian_slim().env({"1X": "v"})
    with pytest.raises(InvalidError, match="the value of A must be a str"):
        shoal.Image.debian_slim().env({"A": 1})
    with pytest.raises(InvalidError, match="must be absolute"):
        shoal.Image.debian_slim().workdir("app")
    with pytest.raises(InvalidError, match="must be a list of str"):
        shoal.Image.debian_slim().entrypoint("python -m srv")


def test_repr_is_the_chain_truncated():
    image = shoal.Image.debian_slim().apt_install("curl").pip_install("numpy")
    assert repr(image) == "Image(debian_slim 3.11 → apt_install curl → pip_install numpy)"
    long = shoal.Image.debian_slim()
    for i in range(30):
        long = long.run_commands(f"echo step number {i}")
    text = repr(long)
    assert len(text) < 200 and "more" in text and text.startswith("Image(debian_slim 3.11")


def test_ignore_cache_comes_from_the_environment(monkeypatch):
    image = shoal.Image.debian_slim()
    monkeypatch.setenv("SHOAL_IGNORE_CACHE", "yes")
    assert image._spec()["ignore_cache"] is True
    monkeypatch.setenv("SHOAL_IGNORE_CACHE", "0")
    assert image._spec()["ignore_cache"] is False


# --- imports() and containers -----------------------------------------------------------------------------


def test_imports_swallows_import_errors_locally_and_raises_them_in_a_container(monkeypatch):
    image = shoal.Image.debian_slim().pip_install("not-installed-here")
    with image.imports():
        import not_installed_module_xyz  # noqa: F401
    assert "not_installed_module_xyz" in str(image._import_errors[0])
    with image.imports():
        import json  # noqa: F401 - what is there imports normally
    with pytest.raises(ValueError):
        with image.imports():
            raise ValueError("other errors propagate")

    monkeypatch.setenv("SHOAL_GUEST_SOCKET", "/nonexistent/guest.sock")
    with pytest.raises(ImportError):
        with image.imports():
            import not_installed_module_xyz  # noqa: F401,F811


def test_inside_a_container_declarations_read_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOAL_GUEST_SOCKET", "/nonexistent/guest.sock")
    image = (
        shoal.Image.from_registry("x:1", secret=shoal.Secret.from_local_environ(["NOT_SET_ANYWHERE_X"]))
        .add_local_dir(tmp_path / "missing", "/app", copy=True)
        .add_local_file(tmp_path / "missing.txt", "/x", copy=True)
        .pip_install_from_requirements(tmp_path / "missing-requirements.txt")
        .add_local_python_source("not_a_module_here")
    )
    assert "add_files" in repr(image)
    assert repr(shoal.Image.from_dockerfile(tmp_path / "Dockerfile")).startswith("Image(dockerfile")
    with pytest.raises(InvalidError, match="not inside a container"):
        image._build(object())


# --- building against the fake --------------------------------------------------------------------------


@pytest.fixture
def conn():
    client = fake_native.FakeClient()
    yield fake_connection(client)
    client.shutdown()


def test_build_uploads_blobs_sends_the_spec_and_renders_each_step(conn, tmp_path):
    make_tree(tmp_path)
    client = conn._client
    image = (
        shoal.Image.debian_slim()
        .apt_install("curl")
        .add_local_dir(tmp_path / "pkg", "/app", copy=True)
        .run_commands("make")
        .env({"MODE": "prod"})
    )
    lines: list = []
    image_id = image._build(conn, output=lines.append)
    assert image_id.startswith("im-") and image._shoal_image_id() == image_id
    spec = client.image_builds[-1]
    assert [s["kind"] for s in spec["steps"]] == ["debian_slim", "apt_install", "add_files", "run_commands", "env"]
    assert spec["steps"][2]["blob"] in client.blobs
    assert lines[0] == "Building image: 5 steps"
    assert lines[1] == "… [1/5] debian_slim 3.11  building: no cached layer for this step (it or an input changed)"
    assert "✓ [1/5] debian_slim 3.11  built in 2.1s (12.3 MB)" in lines
    assert "… [4/5] RUN make  building: its parent was rebuilt" in lines
    assert "      + make" in lines  # build output, indented, right after its step
    assert lines.index("      + make") == lines.index("… [4/5] RUN make  building: its parent was rebuilt") + 1
    assert "✓ [5/5] ENV MODE  set (configuration only, no new layer)" in lines
    assert lines[-1].startswith(f"✓ Built image {image_id}")

    # The same object again on this server: not sent again.
    builds = len(client.image_builds)
    assert image._build(conn, output=lines.append) == image_id and len(client.image_builds) == builds

    # An equal chain: every step cached, one line.
    lines.clear()
    same = (
        shoal.Image.debian_slim().apt_install("curl").add_local_dir(tmp_path / "pkg", "/app", copy=True)
        .run_commands("make").env({"MODE": "prod"})
    )
    assert same._build(conn, output=lines.append) == image_id
    assert len(lines) == 1 and lines[0].startswith(f"✓ Image {image_id} is cached (debian_slim 3.11 → ")


def test_a_changed_step_shows_why_it_and_later_steps_rebuild(conn):
    lines: list = []
    shoal.Image.debian_slim().apt_install("curl").pip_install("numpy")._build(conn, output=lines.append)
    lines.clear()
    shoal.Image.debian_slim().apt_install("curl", "git").pip_install("numpy")._build(
        conn, output=lines.append, used_by=["f", "g"])
    assert lines[:6] == [
        "Building image for f, g: 3 steps",
        "✓ [1/3] debian_slim 3.11  cached",
        "… [2/3] RUN apt-get install -y curl git  building: no cached layer for this step (it or an input changed)",
        "✓ [2/3] RUN apt-get install -y curl git  built in 2.1s (12.3 MB)",
        "… [3/3] pip install numpy  building: its parent was rebuilt",
        "✓ [3/3] pip install numpy  built in 2.1s (12.3 MB)",
    ]


def test_force_build_and_ignore_cache_reasons(conn, monkeypatch):
    shoal.Image.debian_slim().run_commands("make")._build(conn, output=lambda _l: None)
    lines: list = []
    shoal.Image.debian_slim().run_commands("make", force_build=True)._build(conn, output=lines.append)
    assert "… [2/2] RUN make  building: forced (force_build=True)" in lines
    assert conn._client.image_builds[-1]["steps"][1]["force_build"] is True
    lines.clear()
    monkeypatch.setenv("SHOAL_IGNORE_CACHE", "1")
    shoal.Image.debian_slim().run_commands("make")._build(conn, output=lines.append)
    assert conn._client.image_builds[-1]["ignore_cache"] is True
    assert "… [2/2] RUN make  building: SHOAL_IGNORE_CACHE is set" in lines


def test_a_server_that_sends_no_events_for_cached_steps(conn):
    conn._client.image_cached_events = False
    shoal.Image.debian_slim()._build(conn, output=lambda _l: None)
    lines: list = []
    shoal.Image.debian_slim().run_commands("ls")._build(conn, output=lines.append)
    assert lines[1] == "… [2/2] RUN ls  building: no cached layer for this step (it or an input changed)"
    assert "✓ [1/2] debian_slim 3.11  cached" in lines  # from the result


def test_a_failed_step_raises_image_build_error_with_its_last_output(conn):
    conn._client.image_failures["make"] = (2, ["cc -c main.c", "main.c:3: error: expected ';'"])
    lines: list = []
    image = shoal.Image.debian_slim().apt_install("gcc").run_commands("make").pip_install("numpy")
    with pytest.raises(ImageBuildError) as e:
        image._build(conn, output=lines.append)
    message = str(e.value)
    assert message.splitlines()[0] == "image build failed at step 3/4 (RUN make): exit code 2"
    assert "  main.c:3: error: expected ';'" in message.splitlines()
    assert e.value.step == 3 and e.value.exit_code == 2 and e.value.code == "invalid_argument"
    assert e.value.output[-1] == "main.c:3: error: expected ';'"
    assert "✗ [3/4] RUN make  failed after 2.1s" in lines
    assert "      main.c:3: error: expected ';'" in lines
    assert isinstance(e.value, shoal.exception.Error)
    assert image._shoal_image_id() is None


def test_a_quiet_build_prints_nothing_but_the_error_keeps_the_output(conn):
    conn._client.image_failures["make"] = (1, ["boom"])
    lines: list = []
    with pytest.raises(ImageBuildError, match=r"(?s)step 2/2 \(RUN make\): exit code 1.*  boom"):
        shoal.Image.debian_slim().run_commands("make")._build(conn, show_progress=False, output=lines.append)
    assert lines == []


def test_a_malformed_spec_error_passes_through(conn):
    image = shoal.Image.debian_slim()
    image._steps = (image._steps[0], image._steps[0])  # a base step in the wrong place
    with pytest.raises(InvalidError, match="wrong place") as e:
        image._build(conn, output=lambda _l: None)
    assert not isinstance(e.value, ImageBuildError)


def test_blobs_are_uploaded_in_batches_and_only_when_missing(conn, monkeypatch, tmp_path):
    monkeypatch.setattr(image_mod, "UPLOAD_BATCH_BYTES", 1000)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_bytes(os.urandom(600))
    image = shoal.Image.debian_slim()
    for name in ("a", "b", "c"):
        image = image.add_local_dir(tmp_path / name, f"/{name}", copy=True)
    image._build(conn, output=lambda _l: None)
    assert [len(batch) for batch in conn._client.put_calls] == [1, 1, 1]  # each tar > half a batch
    conn._client.put_calls.clear()
    again = shoal.Image.debian_slim().add_local_dir(tmp_path / "a", "/a", copy=True)
    again._build(conn, output=lambda _l: None)
    assert conn._client.put_calls == []


def test_format_bytes():
    assert [image_mod.format_bytes(n) for n in (0, 999, 1000, 12_300_000, 2_500_000_000)] == [
        "0 B", "999 B", "1.0 kB", "12.3 MB", "2.5 GB",
    ]


# --- apps -------------------------------------------------------------------------------------------------

APP = """
import shoal

slim = shoal.Image.debian_slim().pip_install("numpy")
other = shoal.Image.debian_slim().apt_install("curl")
app = shoal.App("{name}", image=slim)

@app.function()
def uses_app_image(x):
    return x

@app.function(image=slim)
def same_image(x):
    return x

@app.function(image=other)
def other_image(x):
    return x

@app.cls(image=other)
class Model:
    @shoal.method()
    def predict(self):
        return 1
"""


def load_app(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source.format(name=name)))
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
    finally:
        sys.path.remove(str(tmp_path))
    return module


def test_app_start_builds_each_distinct_image_once_and_passes_ids(fake, tmp_path, capsys):
    module = load_app(tmp_path, "imgapp_one", APP)
    try:
        with module.app.run():
            pass
    finally:
        sys.modules.pop("imgapp_one", None)
    assert len(fake.image_builds) == 2
    kinds = sorted(tuple(s["kind"] for s in spec["steps"]) for spec in fake.image_builds)
    assert kinds == [("debian_slim", "apt_install"), ("debian_slim", "pip_install")]
    images = {f["name"]: f["image"] for f in fake.created[-1]["functions"]}
    slim_id, other_id = module.slim._shoal_image_id(), module.other._shoal_image_id()
    assert slim_id and other_id and slim_id != other_id
    assert images == {"uses_app_image": slim_id, "same_image": slim_id, "other_image": other_id, "Model": other_id}
    err = capsys.readouterr().err
    assert "pip install numpy  building" in err and "note:" not in err


def test_functions_without_an_image_get_debian_slim(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(image_mod, "_DEFAULT", None)
    module = load_app(tmp_path, "imgapp_two", """
import shoal
app = shoal.App("{name}")

@app.function()
def f(x):
    return x

@app.function(image="im-given")
def g(x):
    return x
""")
    try:
        with module.app.run(show_progress=False):
            pass
        with module.app.run(show_progress=False):
            pass
    finally:
        sys.modules.pop("imgapp_two", None)
    assert len(fake.image_builds) == 1  # built once per process and server
    assert [s["kind"] for s in fake.image_builds[0]["steps"]] == ["debian_slim"]
    assert fake.image_builds[0]["steps"][0]["args"] == ["3.11"]
    images = {f["name"]: f["image"] for f in fake.created[-1]["functions"]}
    assert images["g"] == "im-given" and images["f"] == image_mod.default_image()._shoal_image_id()
    assert images["f"].startswith("im-")


def test_a_failed_build_stops_the_app_start(fake, tmp_path):
    module = load_app(tmp_path, "imgapp_three", """
import shoal
app = shoal.App("{name}")

@app.function(image=shoal.Image.debian_slim().run_commands("exit 3"))
def f(x):
    return x
""")
    fake.image_failures["exit 3"] = (3, [])
    try:
        with pytest.raises(ImageBuildError, match=r"step 2/2 \(RUN exit 3\): exit code 3"):
            with module.app.run(show_progress=False):
                pass
    finally:
        sys.modules.pop("imgapp_three", None)
    assert fake.created == []


def test_with_options_variants_of_different_images_get_different_names(fake):
    app = shoal.App("variants")

    @app.function(serialized=True)
    def f(x):
        return x

    a = f.with_options(image=shoal.Image.debian_slim().pip_install("a"))
    b = f.with_options(image=shoal.Image.debian_slim().pip_install("b"))
    assert a._handle.tag != b._handle.tag


class _OldNativeClient(fake_native.FakeClient):
    """A native extension from before images: no build_image."""

    def __getattribute__(self, name):
        if name == "build_image":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_an_older_native_extension_skips_the_default_image_but_not_an_explicit_one(monkeypatch):
    from shoal import _transport
    from shoal.exception import InternalError

    monkeypatch.delenv("SHOAL_GUEST_SOCKET", raising=False)
    client = _OldNativeClient()
    previous = _transport.set_host(_transport.NativeTransport(fake_connection(client)))
    try:
        app = shoal.App("old-native")

        @app.function(serialized=True)
        def f(x):
            return x

        with app.run(show_progress=False):
            pass
        assert client.created[-1]["functions"][0]["image"] == ""

        @app.function(serialized=True, image=shoal.Image.debian_slim().apt_install("curl"))
        def g(x):
            return x

        with pytest.raises(InternalError, match="has no build_image"):
            with app.run(show_progress=False):
                pass
    finally:
        _transport.set_host(previous)
        client.shutdown()
