"""`shoal run`, `shoal deploy`, `shoal app ...` and `shoal container ...` against the fake
server, and how a local entrypoint's parameters become flags."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Optional

import pytest

from shoal import _app, cli
from shoal.cli import _runner
from shoal.exception import InvalidError


def test_entrypoint_parameters_become_typed_flags():
    def main(n: int, rate: float = 0.5, name: str = "x", verbose: bool = False, dry_run: Optional[bool] = None):
        pass

    assert _runner.parse_flags(main, ["--n", "3"], "prog") == {
        "n": 3, "rate": 0.5, "name": "x", "verbose": False, "dry_run": None,
    }
    got = _runner.parse_flags(
        main, ["--n", "4", "--rate", "2", "--name", "y", "--verbose", "--dry-run"], "prog"
    )
    assert got == {"n": 4, "rate": 2.0, "name": "y", "verbose": True, "dry_run": True}
    assert _runner.parse_flags(main, ["--n", "1", "--no-verbose", "--dry_run"], "prog")["dry_run"] is True


def test_unannotated_parameters_take_the_type_of_their_default_or_str():
    def main(count=3, label=None):
        pass

    assert _runner.parse_flags(main, ["--count", "7", "--label", "z"], "p") == {"count": 7, "label": "z"}


def test_string_annotations_from_future_annotations_resolve():
    namespace: dict = {}
    exec("from __future__ import annotations\ndef main(n: int = 1, flag: bool = False):\n    pass\n", namespace)
    assert _runner.parse_flags(namespace["main"], ["--n", "5", "--flag"], "p") == {"n": 5, "flag": True}


def test_a_missing_required_flag_or_a_bad_value_is_a_usage_error(capsys):
    def main(n: int):
        pass

    with pytest.raises(SystemExit) as info:
        _runner.parse_flags(main, [], "shoal run app.py")
    assert info.value.code == 2
    assert "the following arguments are required: --n" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _runner.parse_flags(main, ["--n", "three"], "shoal run app.py")
    assert "invalid int value: 'three'" in capsys.readouterr().err


def test_unsupported_parameter_types_are_refused_with_the_parameter_named():
    def main(items: list):
        pass

    with pytest.raises(InvalidError, match="'items' of main is annotated"):
        _runner.parse_flags(main, [], "p")

    def star(*args):
        pass

    with pytest.raises(InvalidError, match="\\*args"):
        _runner.parse_flags(star, [], "p")


def test_shoal_run_own_flags_are_separated_from_the_functions():
    assert _runner.split_argv(["--n", "3"]) == ([], ["--n", "3"])
    assert _runner.split_argv(["--detach", "--n", "3"]) == (["--detach"], ["--n", "3"])
    assert _runner.split_argv(["--", "--detach"]) == ([], ["--detach"])
    assert _runner.split_target("app.py::Model.predict") == ("app.py", "Model.predict")
    assert _runner.split_target("app.py") == ("app.py", None)


APP = """
import shoal

app = shoal.App("{name}")

@app.function()
def square(x: int):
    print("squaring", x)
    return x * x

@app.function()
def countdown(n: int):
    yield from range(n, 0, -1)

@app.cls()
class Model:
    @shoal.method()
    def predict(self, x: int = 1):
        return f"predicted {{x}}"

@app.local_entrypoint()
def main(n: int = 3, shout: bool = False):
    results = list(square.map(range(n)))
    text = f"squares {{results}} remote {{square.remote(n)}}"
    print(text.upper() if shout else text)

if __name__ == "__main__":
    raise SystemExit("the __main__ block must not run under shoal run")
"""


@pytest.fixture
def app_file(tmp_path, request):
    name = f"cliapp_{request.node.name[-20:].replace('[', '_').replace(']', '_')}"
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(APP.format(name=name.replace("_", "-"))))
    yield path
    for module in [m for m in sys.modules if m == name]:
        del sys.modules[module]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_run_calls_the_local_entrypoint_with_flags_inside_an_ephemeral_app(fake, app_file, capsys):
    assert cli.main(["run", str(app_file), "--n", "4", "--shout"]) == 0
    out, err = capsys.readouterr()
    assert "SQUARES [0, 1, 4, 9] REMOTE 16" in out
    assert "✓ Initialized app" in err and f"Shipped 1 file (1 new, 0 cached): {app_file.name}" in err
    assert "✓ App completed." in err
    created = fake.created[-1]
    assert created["mode"] == "ephemeral" and created["app"].state == "stopped"
    assert {f["name"] for f in created["functions"]} == {"square", "countdown", "Model"}


def test_run_with_detach_keeps_the_app_running(fake, app_file, capsys):
    assert cli.main(["run", "--detach", str(app_file)]) == 0
    assert fake.created[-1]["mode"] == "detached" and fake.created[-1]["app"].state == "running"
    assert "keeps running (detached)" in capsys.readouterr().err


def test_run_a_named_function_prints_its_result(fake, app_file, capsys):
    assert cli.main(["run", f"{app_file}::square", "--", "--x", "9"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "81"
    assert cli.main(["run", f"{app_file}::countdown", "--n", "2"]) == 0
    assert capsys.readouterr().out.split() == ["2", "1"]
    assert cli.main(["run", f"{app_file}::Model.predict", "--x", "5"]) == 0
    assert "predicted 5" in capsys.readouterr().out


def test_run_an_unknown_target_lists_the_choices(fake, app_file, capsys):
    assert cli.main(["run", f"{app_file}::nope"]) == 1
    err = capsys.readouterr().err
    assert "has no local entrypoint, function or class 'nope'" in err and "main, countdown, square, Model.METHOD" in err
    assert cli.main(["run", str(app_file.parent / "missing.py")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_deploy_prints_the_app_its_version_and_each_function(fake, app_file, capsys):
    assert cli.main(["deploy", str(app_file), "--name", "prod"]) == 0
    out = capsys.readouterr().out
    assert "✓ Deployed app prod version 1 (ap-" in out
    for name in ("square", "countdown", "Model"):
        assert name in out
    assert cli.main(["deploy", str(app_file), "--name", "prod", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "prod" and data["version"] == 2 and data["uploaded"] == []
    assert {f["name"]: f["kind"] for f in data["functions"]} == {
        "square": "function", "countdown": "generator", "Model": "class",
    }


def test_app_list_stop_and_logs(fake, app_file, capsys):
    assert cli.main(["deploy", str(app_file), "--name", "listed"]) == 0
    capsys.readouterr()
    assert cli.main(["app", "list", "--json"]) == 0
    apps = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in apps] == ["listed"] and apps[0]["mode"] == "deployed" and apps[0]["version"] == 1
    assert cli.main(["app", "list"]) == 0
    assert "listed" in capsys.readouterr().out

    fake.log_lines = [
        {"at_ms": 1, "container_id": "ct-abc", "stream": 1, "text": "hello from the container\n"},
        {"at_ms": 2, "container_id": "ct-abc", "stream": 2, "text": "a warning"},
    ]
    assert cli.main(["app", "logs", "listed"]) == 0
    out, err = capsys.readouterr()
    assert "[ct-abc] hello from the container" in out and "[ct-abc] a warning" in err

    assert cli.main(["app", "stop", "listed"]) == 0
    assert "stopped app listed" in capsys.readouterr().out
    assert cli.main(["app", "stop", "listed"]) == 1
    assert "no running app named 'listed'" in capsys.readouterr().err


def test_container_list_and_stop(fake, app_file, capsys):
    assert cli.main(["deploy", str(app_file), "--name", "boxes"]) == 0
    capsys.readouterr()
    assert cli.main(["container", "list", "--json"]) == 0
    containers = json.loads(capsys.readouterr().out)
    assert containers and set(containers[0]) == {
        "container_id", "app_name", "function_name", "state", "inflight", "started_at_ms", "node_id",
    }
    assert cli.main(["container", "stop", "ct-000001"]) == 0
    assert fake.stopped_containers == ["ct-000001"]


def test_logs_stream_into_the_terminal_during_run(fake, app_file, capsys):
    fake.log_lines = [{"at_ms": 1, "container_id": "ct-42", "stream": 1, "text": "squaring 3"}]
    assert cli.main(["run", str(app_file)]) == 0
    assert "[ct-42] squaring 3" in capsys.readouterr().out


def test_run_shows_what_containers_print_after_the_app_stops(fake, app_file, capsys):
    # Exit hooks print after the entrypoint returned, while the app stops: `shoal run` waits for
    # the server to end the log stream, which comes after those lines.
    fake.log_lines_after_stop = [
        {"at_ms": 2, "container_id": "ct-42", "stream": 1, "text": "goodbye from an exit hook"},
    ]
    assert cli.main(["run", str(app_file)]) == 0
    out, err = capsys.readouterr()
    assert "[ct-42] goodbye from an exit hook" in out
    assert "did not finish their output" not in err and "✓ App completed." in err


def test_run_says_so_when_the_end_of_the_output_does_not_come(fake, app_file, capsys, monkeypatch):
    monkeypatch.setattr(_app, "LOG_END_TIMEOUT_S", 0.2)
    fake.log_end = False
    assert cli.main(["run", str(app_file)]) == 0
    err = capsys.readouterr().err
    assert "did not finish their output within 0.2 s of the app stopping" in err
    assert "`shoal app logs" in err and "✓ App completed." in err


def test_app_logs_follow_ends_when_the_app_stops(fake, app_file, capsys):
    assert cli.main(["deploy", str(app_file), "--name", "followed"]) == 0
    fake.log_lines = [{"at_ms": 1, "container_id": "ct-7", "stream": 1, "text": "working"}]
    fake.log_lines_after_stop = [{"at_ms": 2, "container_id": "ct-7", "stream": 1, "text": "bye"}]
    fake.apps[-1].state = "stopped"
    capsys.readouterr()
    assert cli.main(["app", "logs", "followed", "-f"]) == 0
    out, err = capsys.readouterr()
    assert "[ct-7] working" in out and "[ct-7] bye" in out
    assert "app followed stopped; that was the end of its output" in err


def test_run_and_deploy_no_cache_rebuild_every_layer_step(fake, app_file, capsys, monkeypatch):
    # setenv records the variable's absence, so the "1" --no-cache sets is undone after the test.
    monkeypatch.setenv("SHOAL_IGNORE_CACHE", "")
    assert cli.main(["run", "--no-cache", str(app_file)]) == 0
    assert fake.image_builds[-1]["ignore_cache"] is True
    for argv in (["run", str(app_file), "--no-cache", "--n", "2"],  # after the target too
                 ["deploy", str(app_file), "--no-cache"]):
        monkeypatch.setenv("SHOAL_IGNORE_CACHE", "")
        builds = len(fake.image_builds)
        assert cli.main(argv) == 0
        assert len(fake.image_builds) > builds  # not answered from the image's memo
        assert fake.image_builds[-1]["ignore_cache"] is True
    capsys.readouterr()
