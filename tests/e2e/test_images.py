"""Images end to end (issue 4): the real shoald builds images from Python declarations in crun
build containers, stores them in its chunk store, and boots functions on them.

All tests share one daemon (`module_shoald`), so the debian_slim base is built once (the .deb
files come from the run's debootstrap cache). Images that pull from a registry use Debian's
`docker-registry`, started by the test on loopback, holding images made with umoci and skopeo.
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import PYTHON_DIR, Result, last_json, ok, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import registry_fixture  # noqa: E402



@pytest.fixture(scope="module")
def shoald(module_shoald):
    return module_shoald


def step_line(output: str, index: int, total: int) -> str:
    """The last progress line of step `index` (1-based) of a build of `total` steps."""
    lines = [l for l in output.splitlines() if f"[{index}/{total}]" in l]
    assert lines, f"no progress line for step {index}/{total} in:\n{output}"
    return lines[-1]


BUILD_SCRIPT = """
import sys
import shoal
from shoal import _transport

{declare}

image_id = image._build(_transport.host().connection)
print("IMAGE", image_id)
"""


def build_script(directory: Path, name: str, declare: str) -> Path:
    return write(directory, name, BUILD_SCRIPT.format(declare=textwrap.dedent(declare).strip()))


def image_id_of(result: Result) -> str:
    for line in ok(result).stdout.splitlines():
        if line.startswith("IMAGE "):
            return line.split()[1]
    raise AssertionError(f"no image id printed:\n{result.stdout}\n{result.stderr}")


CHAIN_APP = """
import os, shutil, json
import shoal

image = (
    shoal.Image.debian_slim()
    .apt_install("jq")
    .run_commands("mkdir -p /opt && echo {version} > /opt/version")
    .env({{"GREETING": "hello from the image"}})
    .workdir("/work")
)
app = shoal.App("images-chain", image=image)


@app.function()
def probe():
    return {{"jq": shutil.which("jq"), "greeting": os.environ.get("GREETING"), "cwd": os.getcwd(),
            "version": open("/opt/version").read().strip()}}


@app.local_entrypoint()
def main():
    print(json.dumps(probe.remote()))
"""


def test_a_chain_of_steps_builds_then_hits_the_cache_then_rebuilds_from_the_changed_step(tmp_path, shoal):
    app = write(tmp_path, "chain.py", CHAIN_APP.format(version="v1"))
    first = shoal(f"run {app}")
    out = last_json(first)
    assert out == {"jq": "/usr/bin/jq", "greeting": "hello from the image", "cwd": "/work", "version": "v1"}
    assert "Built image" in first.stderr, first.stderr

    again = shoal(f"run {app}")
    assert last_json(again)["version"] == "v1"
    assert "is cached" in again.stderr, again.stderr
    assert "building" not in again.stderr

    write(tmp_path, "chain.py", CHAIN_APP.format(version="v2"))
    changed = shoal(f"run {app}")
    assert last_json(changed)["version"] == "v2"
    err = changed.stderr
    # debian_slim and apt_install are reused; the changed step and the ones after it rebuild.
    assert "building" not in step_line(err, 1, 5) and "building" not in step_line(err, 2, 5), err
    assert "no cached layer for this step" in err, err
    assert "its parent was rebuilt" in err, err
    assert "✓" in step_line(err, 3, 5), err


def make_wheel(directory: Path, name: str, version: str, value: str) -> Path:
    """A pure-Python wheel, written by hand (there is no package index here)."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: shoal-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", record)
    return wheel


def test_pip_install_from_a_local_directory_of_wheels(tmp_path, shoal):
    make_wheel(tmp_path / "wheels", "shoalwheel", "1.2.3", "from a wheel")
    app = write(tmp_path, "pipapp.py", f"""
        import json
        import shoal

        image = (
            shoal.Image.debian_slim()
            .add_local_dir({str(tmp_path / 'wheels')!r}, "/wheels", copy=True)
            .pip_install("shoalwheel", find_links="/wheels", extra_options="--no-index")
        )
        app = shoal.App("images-pip", image=image)


        @app.function()
        def check():
            import shoalwheel
            from importlib.metadata import version
            return {{"value": shoalwheel.VALUE, "version": version("shoalwheel")}}


        @app.local_entrypoint()
        def main():
            print(json.dumps(check.remote()))
    """)
    assert last_json(shoal(f"run {app}")) == {"value": "from a wheel", "version": "1.2.3"}


def test_run_function_writes_a_file_the_function_reads(tmp_path, shoal):
    app = write(tmp_path, "runfn.py", """
        import json
        import shoal


        def prepare():
            import os
            os.makedirs("/opt/data", exist_ok=True)
            with open("/opt/data/prepared.txt", "w") as f:
                f.write("prepared at build time")


        image = shoal.Image.debian_slim().run_function(prepare)
        app = shoal.App("images-runfn", image=image)


        @app.function()
        def read():
            return open("/opt/data/prepared.txt").read()


        @app.local_entrypoint()
        def main():
            print(json.dumps(read.remote()))
    """)
    assert last_json(shoal(f"run {app}")) == "prepared at build time"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A loopback registry holding busybox:1 (open) and a registry with a login."""
    tmp = tmp_path_factory.mktemp("registry")
    proc, addr = registry_fixture.start_registry(tmp / "open")
    auth_proc, auth_addr = registry_fixture.start_registry(tmp / "auth", htpasswd=("shoaluser", "right-pass"))
    try:
        open_ref = registry_fixture.make_busybox_image(tmp, addr, "tools/busybox", "1", env={"FROM_IMAGE": "yes"})
        private_ref = registry_fixture.make_busybox_image(tmp, auth_addr, "private/busybox", "1",
                                                          creds=("shoaluser", "right-pass"))
        yield {"open": open_ref, "private": private_ref, "addr": addr, "auth_addr": auth_addr}
    finally:
        registry_fixture.stop_registry(proc)
        registry_fixture.stop_registry(auth_proc)


def test_from_registry_pulls_layers_and_config_and_builds_on_them(tmp_path, python, shoal, registry):
    script = build_script(tmp_path, "pull.py", f"""
        image = shoal.Image.from_registry({registry['open']!r}).run_commands(
            "cat /etc/motd", "test ! -e /gone.txt && echo whiteout-applied", "echo FROM_IMAGE=$FROM_IMAGE")
    """)
    result = python(script)
    image_id = image_id_of(result)
    assert "whiteout-applied" in result.stderr, result.stderr
    assert "FROM_IMAGE=yes" in result.stderr, result.stderr
    info = shoal(f"image inspect {image_id} --json", timeout_s=60).json()
    assert info["env"].get("FROM_IMAGE") == "yes"
    assert info["workdir"] == "/w"
    assert info["python"] == ""
    assert len(info["layers"]) == 3  # two pulled, one built


def test_from_registry_errors_name_the_problem(tmp_path, python, registry):
    missing = build_script(tmp_path, "missing.py", f"""
        image = shoal.Image.from_registry({registry['open'].replace(':1', ':nope')!r})
    """)
    result = python(missing, timeout_s=120)
    assert result.rc != 0
    assert "nope" in result.stderr and "manifest unknown" in result.stderr, result.stderr

    wrong = build_script(tmp_path, "wrong.py", f"""
        secret = shoal.Secret.from_dict({{"REGISTRY_USERNAME": "shoaluser", "REGISTRY_PASSWORD": "wrong-pass"}})
        image = shoal.Image.from_registry({registry['private']!r}, secret=secret)
    """)
    result = python(wrong, timeout_s=120)
    assert result.rc != 0
    assert "rejected the credentials for user 'shoaluser'" in result.stderr, result.stderr
    assert "wrong-pass" not in result.stderr + result.stdout

    right = build_script(tmp_path, "right.py", f"""
        secret = shoal.Secret.from_dict({{"REGISTRY_USERNAME": "shoaluser", "REGISTRY_PASSWORD": "right-pass"}})
        image = shoal.Image.from_registry({registry['private']!r}, secret=secret)
    """)
    image_id_of(python(right, timeout_s=120))


def test_a_dockerfile_builds_and_an_unsupported_instruction_names_its_line(tmp_path, python, shoal, registry):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "greeting.txt").write_text("hello from COPY\n")
    (tmp_path / "ctx" / "Dockerfile").write_text(textwrap.dedent(f"""
        # a comment
        FROM {registry['open']}
        ARG WHO=docker
        ENV GREETING="hi $WHO" \\
            MODE=test
        WORKDIR /app
        COPY greeting.txt /app/greeting.txt
        RUN cat /app/greeting.txt && echo "greeting is $GREETING"
        CMD ["/bin/sh"]
    """).lstrip())
    script = build_script(tmp_path, "docker.py", f"""
        image = shoal.Image.from_dockerfile({str(tmp_path / 'ctx' / 'Dockerfile')!r})
    """)
    result = python(script)
    image_id = image_id_of(result)
    assert "hello from COPY" in result.stderr, result.stderr
    assert "greeting is hi docker" in result.stderr, result.stderr
    info = shoal(f"image inspect {image_id} --json", timeout_s=60).json()
    assert info["env"]["GREETING"] == "hi docker"
    assert info["workdir"] == "/app"
    assert info["cmd"] == ["/bin/sh"]

    (tmp_path / "ctx" / "Dockerfile.bad").write_text(f"FROM {registry['open']}\nRUN true\nEXPOSE 8080\n")
    bad = build_script(tmp_path, "bad.py", f"""
        image = shoal.Image.from_dockerfile({str(tmp_path / 'ctx' / 'Dockerfile.bad')!r})
    """)
    result = python(bad, timeout_s=60)
    assert result.rc != 0
    assert "Dockerfile.bad:3" in result.stderr or ":3: EXPOSE" in result.stderr, result.stderr
    assert "EXPOSE is not supported" in result.stderr, result.stderr


def test_concurrent_builds_of_one_image_run_its_steps_once(tmp_path, python, shoald):
    token = os.urandom(4).hex()
    script = build_script(tmp_path, "same.py", f"""
        image = shoal.Image.debian_slim().run_commands("sleep 2", "echo concurrent-{token}")
    """)
    results: list[Result] = []
    threads = [threading.Thread(target=lambda: results.append(python(script))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {image_id_of(r) for r in results}
    assert len(ids) == 1
    image_id = ids.pop()
    started = [e for e in shoald.events() if e.get("event") == "image_step_started" and e.get("image") == image_id]
    assert len(started) == 1, started


def test_image_cli_lists_inspects_and_removes(tmp_path, python, shoal):
    script = build_script(tmp_path, "cli.py", """
        image = shoal.Image.debian_slim().env({"CLI_TEST": "1"})
    """)
    image_id = image_id_of(python(script))
    listed = shoal("image list --json", timeout_s=60).json()
    ids = [i["image_id"] for i in listed]
    assert image_id in ids
    info = shoal(f"image inspect {image_id} --json", timeout_s=60).json()
    assert info["env"]["CLI_TEST"] == "1"
    assert info["python"] == "/usr/bin/python3"
    parent = info["parent_id"]
    refused = shoal(f"image rm {parent}", timeout_s=60)
    assert refused.rc != 0 and "is the parent of" in refused.stderr, refused.stderr
    ok(shoal(f"image rm {image_id}", timeout_s=60))
    assert image_id not in [i["image_id"] for i in shoal("image list --json", timeout_s=60).json()]
    missing = shoal(f"image inspect {image_id}", timeout_s=60)
    assert missing.rc != 0 and "no image" in missing.stderr


def test_run_commands_see_secrets_that_never_reach_logs_or_image_records(tmp_path, python, shoal, shoald):
    import hashlib

    planted = "planted-" + os.urandom(6).hex()
    inline_value = "inline-" + os.urandom(6).hex()
    ok(shoal(f"secret create build-creds BUILD_TOKEN={planted}", timeout_s=60))
    script = build_script(tmp_path, "secret.py", f"""
        inline = shoal.Secret.from_dict({{"INLINE_TOKEN": {inline_value!r}}})
        named = shoal.Secret.from_name("build-creds")
        image = shoal.Image.debian_slim().run_commands(
            'printf "%s:%s" "$BUILD_TOKEN" "$INLINE_TOKEN" | sha256sum', secrets=[inline, named])
    """)
    result = python(script)
    image_id = image_id_of(result)
    expected = hashlib.sha256(f"{planted}:{inline_value}".encode()).hexdigest()
    assert expected in result.stderr, result.stderr
    info = shoal(f"image inspect {image_id} --json", timeout_s=60)
    listed = shoal("image list --json", timeout_s=60)
    for text in (result.stdout, result.stderr, info.stdout, listed.stdout, shoald.log()):
        assert planted not in text
        assert inline_value not in text


def test_add_local_python_source_makes_a_local_package_importable_in_the_container(tmp_path, shoal):
    # The package lives outside the app's directory, so only the image can carry it (the app's
    # own directory is shipped as code).
    libs = tmp_path / "libs"
    pkg = libs / "helperlib"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .greet import greet\n")
    (pkg / "greet.py").write_text("def greet(name):\n    return f'hello {name} from helperlib'\n")
    (tmp_path / "app").mkdir()
    app = write(tmp_path / "app", "srcapp.py", """
        import json
        import shoal

        image = shoal.Image.debian_slim().add_local_python_source("helperlib")
        app = shoal.App("images-src", image=image)


        @app.function()
        def use():
            import helperlib
            return {"text": helperlib.greet("shoal"), "file": helperlib.__file__}


        @app.local_entrypoint()
        def main():
            print(json.dumps(use.remote()))
    """)
    out = last_json(shoal(f"run {app}", env={"PYTHONPATH": f"{PYTHON_DIR}:{libs}"}))
    assert out["text"] == "hello shoal from helperlib"
    assert out["file"] == "/root/helperlib/__init__.py", out


def test_an_entrypoint_script_wraps_the_function_runner(tmp_path, shoal):
    entry = write(tmp_path, "entry.sh", """
        #!/bin/sh
        export FROM_ENTRYPOINT="set by entry.sh"
        exec "$@"
    """)
    entry.chmod(0o755)
    app = write(tmp_path, "entryapp.py", f"""
        import json, os
        import shoal

        image = (
            shoal.Image.debian_slim()
            .add_local_file({str(entry)!r}, "/usr/local/bin/entry.sh", copy=True)
            .entrypoint(["/usr/local/bin/entry.sh"])
            .cmd(["/bin/false"])  # not used for functions
        )
        app = shoal.App("images-entrypoint", image=image)


        @app.function()
        def probe():
            pid1 = open("/proc/1/cmdline", "rb").read().split(b"\\0")
            return {{"var": os.environ.get("FROM_ENTRYPOINT"), "pid1": [a.decode() for a in pid1 if a]}}


        @app.local_entrypoint()
        def main():
            print(json.dumps(probe.remote()))
    """)
    out = last_json(shoal(f"run {app}"))
    assert out["var"] == "set by entry.sh"
    # `exec "$@"` replaced the script with the guest: entrypoint + [python, -m, shoal._guest].
    assert out["pid1"][-2:] == ["-m", "shoal._guest"], out

    # An entrypoint that does not run its arguments: the error says what the entrypoint must do.
    broken = write(tmp_path, "brokenentry.py", """
        import shoal

        app = shoal.App("images-entrypoint-broken",
                        image=shoal.Image.debian_slim().entrypoint(["/bin/true"]))


        @app.function()
        def probe():
            return 1


        @app.local_entrypoint()
        def main():
            probe.remote()
    """)
    result = shoal(f"run {broken}", timeout_s=180)
    assert result.rc != 0
    assert "ENTRYPOINT (/bin/true) must run the command it is given" in result.stderr, result.stderr


USER_APP = """
import json, os, tempfile
import shoal

image = shoal.Image.debian_slim().dockerfile_commands(
    "RUN useradd --uid 1234 --no-create-home alice",
    "USER {user}",
)
app = shoal.App("images-user-{name}", image=image)


@app.function()
def whoami():
    home = os.environ["HOME"]
    with open(os.path.join(home, "written"), "w") as f:  # HOME is writable
        f.write("ok")
    with tempfile.NamedTemporaryFile(dir="/tmp") as f:  # and /tmp
        f.write(b"ok")
    return {{"uid": os.getuid(), "gid": os.getgid(), "home": home,
             "home_owner": os.stat(home).st_uid}}


@app.local_entrypoint()
def main():
    print(json.dumps(whoami.remote()))
"""


def test_a_dockerfile_user_runs_the_function_as_that_user(tmp_path, shoal):
    app = write(tmp_path, "userapp.py", USER_APP.format(user="alice", name="alice"))
    out = last_json(shoal(f"run {app}"))
    # useradd without a home: the container gets one of its own, owned by the user.
    assert out == {"uid": 1234, "gid": 1234, "home": "/home/alice", "home_owner": 1234}, out

    numeric = write(tmp_path, "uidapp.py", USER_APP.format(user="4321:4321", name="uid"))
    assert last_json(shoal(f"run {numeric}")) == {"uid": 4321, "gid": 4321, "home": "/tmp", "home_owner": 0}

    unknown = write(tmp_path, "ghostapp.py", USER_APP.format(user="ghost", name="ghost"))
    result = shoal(f"run {unknown}", timeout_s=180)
    assert result.rc != 0
    err = result.stderr
    assert "runs as USER 'ghost': no user 'ghost' in /etc/passwd" in err, err
    assert "image im-" in err and "create it in an earlier step" in err, err


COPY_FALSE_APP = """
import json, os
import shoal

image = (
    shoal.Image.debian_slim()
    .run_commands("mkdir -p /srv/data && echo from-the-image > /srv/data/baked.txt")
    .add_local_dir({data!r}, "/srv/data")
    .add_local_file({tool!r}, "/root/bin/tool.sh")
)
app = shoal.App("images-copy-false", image=image)


@app.function()
def read():
    data = "/srv/data"
    return {{name: open(os.path.join(data, name)).read().strip() for name in sorted(os.listdir(data))
            if os.path.isfile(os.path.join(data, name))}} | {{
        "nested": open("/srv/data/sub/nested.txt").read().strip(),
        "tool_mode": oct(os.stat("/root/bin/tool.sh").st_mode & 0o777),
        "root_mode": oct(os.stat("/root").st_mode & 0o7777),
    }}


@app.local_entrypoint()
def main():
    print(json.dumps(read.remote()))
"""


def test_add_local_dir_copy_false_adds_files_at_start_without_rebuilding(tmp_path, shoal):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "config.txt").write_text("version 1\n")
    (data / "sub" / "nested.txt").write_text("nested\n")
    tool = write(tmp_path, "tool.sh", "#!/bin/sh\necho tool\n")
    tool.chmod(0o750)
    app = write(tmp_path, "copyfalse.py", COPY_FALSE_APP.format(data=str(data), tool=str(tool)))
    first = shoal(f"run {app}")
    out = last_json(first)
    # The files merge into what the image has there, like a layer; directories the image has keep
    # its mode (Debian's /root is 0700), files keep theirs plus read for everyone.
    assert out == {"baked.txt": "from-the-image", "config.txt": "version 1", "nested": "nested",
                   "tool_mode": "0o754", "root_mode": "0o700"}, out
    assert "Added 3 local files" in first.stderr, first.stderr

    (data / "config.txt").write_text("version 2\n")
    again = shoal(f"run {app}")
    assert last_json(again)["config.txt"] == "version 2"
    assert "is cached" in again.stderr and "building" not in again.stderr, again.stderr
    assert "(1 new, 2 cached)" in again.stderr, again.stderr


def test_a_build_step_after_copy_false_is_an_error(tmp_path, python):
    (tmp_path / "data").mkdir()
    script = build_script(tmp_path, "after.py", f"""
        image = shoal.Image.debian_slim().add_local_dir({str(tmp_path / 'data')!r}, "/data").run_commands("ls /data")
    """)
    result = python(script, timeout_s=60)
    assert result.rc != 0
    assert "RUN ls /data: this build step comes after Image.add_local_dir() with copy=False" in result.stderr
    assert "Pass copy=True to Image.add_local_dir()" in result.stderr, result.stderr
