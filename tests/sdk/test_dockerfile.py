"""Image.from_dockerfile: every supported instruction becomes the ImageStep it means, with
``Dockerfile:N`` labels; the rest is refused with the line number."""

from __future__ import annotations

import io
import os
import tarfile
import textwrap

import pytest

import shoal
from shoal import _dockerfile
from shoal.exception import InvalidError


def dockerfile(tmp_path, text: str, name: str = "Dockerfile"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def spec(image) -> list:
    return [(s["kind"], s["args"], s["label"]) for s in image._spec(ignore_cache=False)["steps"]]


def names(image, index: int) -> list:
    step = image._spec(ignore_cache=False)["steps"][index]
    with tarfile.open(fileobj=io.BytesIO(image._blobs()[step["blob"]])) as tar:
        return tar.getnames()


def test_every_supported_instruction(tmp_path):
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "main.py").write_text("print('hi')\n")
    (tmp_path / "src" / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    path = dockerfile(tmp_path, r"""
        # syntax=docker/dockerfile:1.6
        ARG BASE_TAG=3.11-slim
        FROM python:${BASE_TAG} AS runtime
        ARG VERSION=1.0
        ENV APP_HOME=/srv/app \
            GREETING="hello world"
        ENV LEGACY_FORM a value with spaces
        WORKDIR $APP_HOME
        # comments are skipped, also inside a continued instruction
        RUN apt-get update && \
            # this one
            apt-get install -y curl
        RUN ["pip", "install", "-r", "requirements.txt"]
        RUN echo "version $VERSION" > /version
        COPY requirements.txt ./
        COPY src/ ./src/
        ADD src/main.py /opt/main.py
        USER app:app
        ENTRYPOINT ["python", "-m"]
        CMD src.main --port 8000
    """)
    image = shoal.Image.from_dockerfile(path, build_args={"VERSION": "2.5"})
    got = spec(image)
    assert got[0] == ("registry", ["python:3.11-slim"], "Dockerfile:3 FROM python:3.11-slim")
    assert got[1] == ("env", ["APP_HOME=/srv/app", "GREETING=hello world"],
                      'Dockerfile:5 ENV APP_HOME=/srv/app GREETING="hello world"')
    assert got[2] == ("env", ["LEGACY_FORM=a value with spaces"], "Dockerfile:7 ENV LEGACY_FORM a value with spaces")
    assert got[3] == ("workdir", ["/srv/app"], "Dockerfile:8 WORKDIR $APP_HOME")
    assert got[4] == ("run_commands", ["apt-get update &&     apt-get install -y curl"],
                      "Dockerfile:10 RUN apt-get update && apt-get install -y curl")
    assert got[5] == ("run_commands", ["pip install -r requirements.txt"],
                      'Dockerfile:13 RUN ["pip", "install", "-r", "requirements.txt"]')
    # The build arg reaches RUN as an environment variable (Docker's behaviour).
    assert got[6] == ("run_commands", ["export VERSION=2.5\necho \"version $VERSION\" > /version"],
                      'Dockerfile:14 RUN echo "version $VERSION" > /version')
    assert [g[0] for g in got[7:10]] == ["add_files"] * 3
    assert got[7][2] == "Dockerfile:15 COPY requirements.txt ./"
    assert names(image, 7) == ["srv/app/requirements.txt"]
    assert names(image, 8) == ["srv/app/src/lib", "srv/app/src/lib/util.py", "srv/app/src/main.py"]
    assert names(image, 9) == ["opt/main.py"]
    assert got[10] == ("user", ["app:app"], "Dockerfile:18 USER app:app")
    assert got[11] == ("entrypoint", ["python", "-m"], 'Dockerfile:19 ENTRYPOINT ["python", "-m"]')
    assert got[12] == ("cmd", ["/bin/sh", "-c", "src.main --port 8000"], "Dockerfile:20 CMD src.main --port 8000")


def test_arg_defaults_substitution_forms_and_build_args(tmp_path):
    path = dockerfile(tmp_path, """
        ARG REGISTRY
        FROM ${REGISTRY:-docker.io}/library/python:3.11
        ARG A=1
        ARG B=${A}-b
        ENV X=$B Y='$A literal' Z=${UNSET:+never}${A:+set} OLD=$A A=9 NEW=$A
        ENV ESCAPED=\\$A
    """)
    got = spec(shoal.Image.from_dockerfile(path))
    assert got[0][1] == ["docker.io/library/python:3.11"]
    # Later pairs on the same ENV line see the values from before the line (Docker's rule).
    assert got[1][1] == ["A=9", "NEW=1", "OLD=1", "X=1-b", "Y=$A literal", "Z=set"]
    assert got[2][1] == ["ESCAPED=$A"]
    got = spec(shoal.Image.from_dockerfile(path, build_args={"REGISTRY": "reg.local:5000", "A": "7"}))
    assert got[0][1] == ["reg.local:5000/library/python:3.11"]
    assert got[1][1] == ["A=9", "NEW=7", "OLD=7", "X=7-b", "Y=$A literal", "Z=set"]


def test_scratch_and_force_build_and_secrets_reach_every_run(tmp_path):
    (tmp_path / "app").write_text("#!/bin/true\n")
    path = dockerfile(tmp_path, """
        FROM scratch
        COPY app /app
        RUN /app
    """)
    secret = shoal.Secret.from_dict({"NPM_TOKEN": "tok-dockerfile-secret"})
    image = shoal.Image.from_dockerfile(path, force_build=True, secrets=[secret])
    steps = image._spec(ignore_cache=False)["steps"]
    assert [s["kind"] for s in steps] == ["scratch", "add_files", "run_commands"]
    assert all(s["force_build"] for s in steps)
    assert steps[2]["env"] == {"NPM_TOKEN": "tok-dockerfile-secret"} and steps[1]["env"] == {}
    assert "tok-dockerfile-secret" not in repr(image) and all("tok-" not in s["label"] for s in steps)
    assert names(image, 1) == ["app"]


def test_copy_multiple_sources_globs_dockerignore_and_context_dir(tmp_path):
    context = tmp_path / "ctx"
    (context / "pkg" / "__pycache__").mkdir(parents=True)
    (context / "pkg" / "a.py").write_text("")
    (context / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"")
    (context / "one.txt").write_text("1")
    (context / "two.txt").write_text("2")
    (context / "secret.env").write_text("X=1")
    (context / ".dockerignore").write_text("# caches\n**/__pycache__\n*.env\n")
    path = dockerfile(tmp_path, """
        FROM python:3.11-slim
        WORKDIR /w
        COPY pkg /w/pkg
        COPY *.txt data/
        COPY one.txt two.txt /both/
        COPY one.txt renamed.txt
    """, name="app.Dockerfile")
    image = shoal.Image.from_dockerfile(path, context_dir=context)
    assert names(image, 2) == ["w/pkg/a.py"]
    assert names(image, 3) == ["w/data/one.txt", "w/data/two.txt"]
    assert names(image, 4) == ["both/one.txt", "both/two.txt"]
    assert names(image, 5) == ["w/renamed.txt"]
    assert spec(image)[2][2] == "app.Dockerfile:3 COPY pkg /w/pkg"

    bad = dockerfile(tmp_path, "FROM python:3.11-slim\nCOPY secret.env /x\n", name="bad.Dockerfile")
    with pytest.raises(InvalidError, match=r"bad.Dockerfile:2: secret.env is excluded by .dockerignore"):
        shoal.Image.from_dockerfile(bad, context_dir=context)
    outside = dockerfile(tmp_path, "FROM python:3.11-slim\nCOPY ../x /x\n", name="out.Dockerfile")
    with pytest.raises(InvalidError, match="outside the build context"):
        shoal.Image.from_dockerfile(outside, context_dir=context)
    missing = dockerfile(tmp_path, "FROM python:3.11-slim\nCOPY nothing.txt /x\n", name="m.Dockerfile")
    with pytest.raises(InvalidError, match=r"m.Dockerfile:2: nothing.txt does not exist"):
        shoal.Image.from_dockerfile(missing, context_dir=context)


def test_add_extracts_a_local_tar_and_refuses_urls(tmp_path):
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "bin.sh").write_text("echo\n")
    with tarfile.open(tmp_path / "bundle.tar.gz", "w:gz") as tar:
        tar.add(payload / "bin.sh", arcname="tools/bin.sh")
    path = dockerfile(tmp_path, """
        FROM debian:bookworm-slim
        ADD bundle.tar.gz /opt/
    """)
    assert names(shoal.Image.from_dockerfile(path), 1) == ["opt/tools/bin.sh"]
    url = dockerfile(tmp_path, "FROM debian:bookworm-slim\nADD https://example.com/x.tgz /x\n", name="u.Dockerfile")
    with pytest.raises(InvalidError, match=r"u.Dockerfile:2: ADD of a URL \(https://example.com/x.tgz\) is not supported"):
        shoal.Image.from_dockerfile(url)


@pytest.mark.parametrize("instruction", ["EXPOSE 8000", "HEALTHCHECK CMD true", "VOLUME /data",
                                         "LABEL a=b", "SHELL [\"/bin/bash\", \"-c\"]", "STOPSIGNAL SIGTERM",
                                         "ONBUILD RUN x", "MAINTAINER me"])
def test_unsupported_instructions_name_the_line(tmp_path, instruction):
    path = dockerfile(tmp_path, f"FROM python:3.11-slim\n\n# x\n{instruction}\n")
    name = instruction.split()[0]
    with pytest.raises(InvalidError) as e:
        shoal.Image.from_dockerfile(path)
    assert str(e.value) == (
        f"Dockerfile:4: {name} is not supported by Shoal (supported: FROM, RUN, ENV, ARG, WORKDIR, "
        "COPY, ADD, USER, ENTRYPOINT, CMD)"
    )


def test_structural_errors(tmp_path):
    cases = {
        "FROM a:1\nRUN x\nFROM b:2\n": r"Dockerfile:3: a second FROM: multi-stage builds are not supported",
        "RUN x\n": r"Dockerfile:1: RUN before FROM",
        "ARG X=1\n": r"Dockerfile: no FROM instruction",
        "FROM a:1\nCOPY --chown=app:app x /x\n": r"Dockerfile:2: COPY --chown is not supported by Shoal",
        "FROM a:1\nCOPY --from=build /x /x\n": r"Dockerfile:2: COPY --from is not supported",
        "FROM a:1\nRUN <<EOF\nls\nEOF\n": r"Dockerfile:2: RUN heredocs",
        "FROM a:1\nFOO bar\n": r"Dockerfile:2: unknown instruction FOO",
        "FROM --platform=linux/amd64 a:1\n": r"Dockerfile:1: FROM --platform=linux/amd64 is not supported",
    }
    for text, message in cases.items():
        path = dockerfile(tmp_path, text)
        with pytest.raises(InvalidError, match=message):
            shoal.Image.from_dockerfile(path)
    with pytest.raises(InvalidError, match="cannot read"):
        shoal.Image.from_dockerfile(tmp_path / "missing")


def test_parser_continuations_directives_and_escape(tmp_path):
    text = "# escape=`\nFROM a:1\nRUN echo a `\n  b\n\nrun   lower case\n"
    got = _dockerfile.parse(text)
    assert [(i.line, i.name, i.rest) for i in got] == [
        (2, "FROM", "a:1"), (3, "RUN", "echo a   b"), (6, "RUN", "lower case"),
    ]
    # An escaped backslash at the end does not continue the line.
    got = _dockerfile.parse("FROM a\nRUN echo \\\\\nRUN next\n")
    assert [i.name for i in got] == ["FROM", "RUN", "RUN"]


def test_words_and_expand():
    variables = {"A": "1", "E": ""}
    assert _dockerfile.words('a "b c" \'$A\' $A ${A} ${E:-d} ${A:+x} \\$A', variables, "w") == [
        "a", "b c", "$A", "1", "1", "d", "x", "$A",
    ]
    assert _dockerfile.expand("x${A}y '$A'", variables, "w") == "x1y '$A'"
    with pytest.raises(InvalidError, match="unsupported substitution"):
        _dockerfile.words("${A#pat}", variables, "w")


def test_the_dockerfile_image_builds_against_the_fake(tmp_path):
    import fake_native
    from fake_native import fake_connection

    (tmp_path / "x.txt").write_text("x")
    os.utime(tmp_path / "x.txt", (1_600_000_000, 1_600_000_000))
    path = dockerfile(tmp_path, "FROM python:3.11-slim\nCOPY x.txt /x.txt\nRUN make\n")
    client = fake_native.FakeClient()
    lines: list = []
    try:
        shoal.Image.from_dockerfile(path)._build(fake_connection(client), output=lines.append)
    finally:
        client.shutdown()
    assert "… [3/3] Dockerfile:3 RUN make  building: its parent was rebuilt" in lines


def test_dockerfile_commands_build_on_the_image_they_are_called_on(tmp_path):
    (tmp_path / "entry.sh").write_text("#!/bin/sh\nexec \"$@\"\n")
    base = shoal.Image.debian_slim().env({"APP": "/srv"}).workdir("/srv")
    image = base.dockerfile_commands(
        ["RUN useradd -m app", "COPY entry.sh ./"],
        "USER app:app",
        'ENTRYPOINT ["/srv/entry.sh"]',
        context_dir=tmp_path,
    )
    assert spec(image)[3:] == [
        ("run_commands", ["useradd -m app"], "dockerfile_commands:1 RUN useradd -m app"),
        ("add_files", ["/"], "dockerfile_commands:2 COPY entry.sh ./"),
        ("user", ["app:app"], "dockerfile_commands:3 USER app:app"),
        ("entrypoint", ["/srv/entry.sh"], 'dockerfile_commands:4 ENTRYPOINT ["/srv/entry.sh"]'),
    ]
    assert names(image, 4) == ["srv/entry.sh"]  # relative to the base image's WORKDIR
    assert base.dockerfile_commands() is base
    with pytest.raises(InvalidError, match="dockerfile_commands:1: FROM is not allowed here"):
        base.dockerfile_commands("FROM scratch")
    with pytest.raises(InvalidError, match="dockerfile_commands:2: EXPOSE is not supported"):
        base.dockerfile_commands("RUN true", "EXPOSE 80")
    with pytest.raises(InvalidError, match="gpu= not supported"):
        base.dockerfile_commands("RUN true", gpu="A10G")
