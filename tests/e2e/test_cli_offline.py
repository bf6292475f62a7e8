"""CLI behaviour that needs no real daemon: help, usage errors, config files, and the management
of the embedded local cluster (driven with tests/e2e/fake_shoald.py, which follows shoald's
process contract but serves no RPC)."""

import os
import tomllib

import pytest

from conftest import assert_one_sentence, pid_alive, wait_until


def test_help_teaches_every_command_group_with_examples(run_cli):
    top = run_cli("--help")
    assert top.rc == 0
    for group in ("cluster", "token", "actor", "config"):
        assert group in top.stdout
    assert "examples:" in top.stdout and "SHOAL_SERVER" in top.stdout
    for group in ("cluster", "token", "actor", "config"):
        result = run_cli([group, "--help"])
        assert result.rc == 0, result.stderr
        assert "examples:" in result.stdout, group
    for command in ("cluster up", "cluster down", "cluster status", "token new", "token set",
                    "token list", "token revoke", "actor list", "actor inspect", "config show"):
        result = run_cli(command.split() + ["--help"])
        assert result.rc == 0 and result.stdout.startswith("usage: shoal " + command), command


def test_a_usage_error_exits_2_with_one_line_pointing_at_help(run_cli):
    result = run_cli("actor inspect")
    assert result.rc == 2
    assert result.stderr_lines == [result.stderr_lines[0]]
    assert result.stderr.startswith("shoal: ") and "shoal actor inspect --help" in result.stderr
    assert run_cli("no-such-command").rc == 2
    bare = run_cli("token")
    assert bare.rc == 2 and "new" in bare.stderr


def test_version_is_printed(run_cli):
    result = run_cli("--version")
    assert result.rc == 0 and result.stdout.strip() == "shoal 0.1.0"


def test_token_set_writes_the_config_file_with_mode_0600(run_cli, shoal_home):
    result = run_cli("token set --server 10.1.2.3:7650 --token sekret-0123456789 --profile lab --no-verify")
    assert result.rc == 0, result.stderr
    path = shoal_home / "config.toml"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert tomllib.loads(path.read_text()) == {
        "active_profile": "lab",
        "profiles": {"lab": {"server": "10.1.2.3:7650", "token": "sekret-0123456789"}},
    }


def test_config_show_never_prints_a_token_in_full(run_cli):
    assert run_cli("token set --server h:1 --token sekret-0123456789 --no-verify").rc == 0
    for args in ("config show", "config show --json"):
        result = run_cli(args)
        assert result.rc == 0, result.stderr
        assert "sekret-0123456789" not in result.stdout + result.stderr
        assert "sekret-0…" in result.stdout
    doc = run_cli("config show --json", env={"SHOAL_ENVIRONMENT": "dev"}).json()
    assert doc["server"] == "h:1" and doc["mode"] == "remote" and doc["token"] == "sekret-0…"
    assert doc["environment"] == "dev" and doc["sources"]["environment"] == "SHOAL_ENVIRONMENT"


def test_a_configured_server_without_a_token_is_refused_with_one_clear_sentence(run_cli):
    line = assert_one_sentence(run_cli("cluster status", env={"SHOAL_SERVER": "127.0.0.1:7650"}))
    assert "no token" in line and "SHOAL_TOKEN" in line and "shoal token set" in line


def test_a_malformed_server_address_is_refused_with_one_clear_sentence(run_cli):
    line = assert_one_sentence(run_cli("actor list", env={"SHOAL_SERVER": "localhost", "SHOAL_TOKEN": "t"}))
    assert "'localhost'" in line and "HOST:PORT" in line


def test_a_missing_shoald_binary_is_explained_when_the_local_cluster_must_start(run_cli, shoal_home):
    env = {"SHOAL_SHOALD": None, "PATH": "/usr/bin:/bin"}
    line = assert_one_sentence(run_cli("cluster up", env=env))
    assert "shoald" in line and "SHOAL_SHOALD" in line and "cmake" in line
    line = assert_one_sentence(run_cli("actor list", env={"SHOAL_SHOALD": "/nonexistent/shoald"}))
    assert "/nonexistent/shoald" in line


def test_a_shoald_that_dies_at_start_shows_the_end_of_its_log(run_cli, fake_shoald, shoal_home):
    result = run_cli("cluster up", env={"SHOAL_SHOALD": str(fake_shoald), "FAKE_SHOALD_MODE": "fail"})
    assert result.rc == 1
    assert "starting local shoald" in result.stderr
    assert "exited during startup with exit code 1" in result.stderr
    assert "the disk is on fire" in result.stderr  # the log tail
    assert "Traceback" not in result.stderr
    assert (shoal_home / "state" / "shoald.log").exists()


def test_cluster_down_without_a_local_cluster_says_so(run_cli):
    result = run_cli("cluster down")
    assert result.rc == 0 and "no local cluster is running" in result.stdout


def test_cluster_status_does_not_start_a_local_cluster(run_cli, fake_shoald, shoal_home):
    line = assert_one_sentence(run_cli("cluster status", env={"SHOAL_SHOALD": str(fake_shoald)}))
    assert "no local cluster is running" in line and "shoal cluster up" in line
    assert not (shoal_home / "state" / "shoald.pid").exists()


def test_cluster_down_refuses_when_a_remote_server_is_configured(run_cli):
    line = assert_one_sentence(run_cli("cluster down", env={"SHOAL_SERVER": "10.0.0.9:7650", "SHOAL_TOKEN": "t"}))
    assert "10.0.0.9:7650" in line and "SHOAL_SERVER" in line


def test_the_local_cluster_is_started_once_reused_and_stopped_by_cluster_down(
    run_cli, fake_shoald, shoal_home, monkeypatch
):
    from shoal import _embedded

    monkeypatch.setenv("SHOAL_SHOALD", str(fake_shoald))
    state = shoal_home / "state"
    notes = []
    cluster, started = _embedded.ensure_running(state, notify=notes.append)
    try:
        assert started and notes and "starting local shoald" in notes[0]
        assert cluster.pid == int((state / "shoald.pid").read_text())
        assert cluster.address == (state / "shoald.addr").read_text().strip()
        assert cluster.admin_token().startswith("sht-")
        assert (state.stat().st_mode & 0o777) == 0o700

        again, started_again = _embedded.ensure_running(state, notify=notes.append)
        assert not started_again and again == cluster and len(notes) == 1

        doc = run_cli("config show --json").json()
        assert doc["mode"] == "embedded" and doc["token"] == cluster.admin_token()[:8] + "…"

        down = run_cli("cluster down")
        assert down.rc == 0, down.stderr
        assert f"stopped local shoald (pid {cluster.pid})" in down.stdout
        assert not pid_alive(cluster.pid)
        assert not (state / "shoald.addr").exists()
        assert "no local cluster is running" in run_cli("cluster down").stdout
    finally:
        if pid_alive(cluster.pid):
            os.kill(cluster.pid, 15)


def test_a_stale_address_file_from_a_dead_shoald_is_not_trusted(fake_shoald, shoal_home, monkeypatch):
    from shoal import _embedded

    monkeypatch.setenv("SHOAL_SHOALD", str(fake_shoald))
    state = shoal_home / "state"
    state.mkdir(parents=True)
    (state / "shoald.addr").write_text("127.0.0.1:1\n")
    (state / "shoald.pid").write_text("999999999\n")  # no such process
    assert _embedded.running(state) is None
    cluster, started = _embedded.ensure_running(state, notify=None)
    try:
        assert started and cluster.address != "127.0.0.1:1"
    finally:
        assert _embedded.stop(state) == cluster.pid


def test_a_local_shoald_that_never_listens_times_out_with_its_log(fake_shoald, shoal_home, monkeypatch):
    from shoal import _embedded
    from shoal.exception import TimeoutError

    monkeypatch.setenv("SHOAL_SHOALD", str(fake_shoald))
    monkeypatch.setenv("FAKE_SHOALD_MODE", "hang")
    state = shoal_home / "state"
    with pytest.raises(TimeoutError, match="did not become ready within 1 s"):
        _embedded.ensure_running(state, notify=None, timeout_s=1.0)
    pid = int((state / "shoald.pid").read_text())
    assert _embedded.stop(state) == pid  # SIGTERM's default action ends the hung fake
    assert wait_until(lambda: not pid_alive(pid))


def test_the_shoal_script_runs_the_cli_through_a_symlink_without_pythonpath(tmp_path):
    import subprocess

    from conftest import PYTHON_DIR

    link = tmp_path / "shoal"
    link.symlink_to(PYTHON_DIR / "bin" / "shoal")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(link), "--version"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "shoal 0.1.0"
