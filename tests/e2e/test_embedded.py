"""The embedded default: with no server configured, the CLI starts and reuses a local shoald in
$SHOAL_HOME/state, and `shoal cluster down` stops it."""

import os
import signal

import pytest

from conftest import pid_alive, wait_until


@pytest.fixture
def local(run_cli, shoald_path, shoal_home):
    """Runs the CLI with no server configured and the real shoald; stops any local cluster left
    behind by a failing test."""

    def run(args):
        return run_cli(args, env={"SHOAL_SHOALD": shoald_path})

    yield run
    pid_file = shoal_home / "state" / "shoald.pid"
    text = pid_file.read_text().strip() if pid_file.exists() else ""  # shoald empties it at exit
    if text:
        pid = int(text)
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid))


def test_cluster_up_starts_a_local_shoald_that_later_commands_reuse_until_cluster_down(local, shoal_home):
    state = shoal_home / "state"
    up = local("cluster up")
    assert up.rc == 0, up.stderr
    assert "starting local shoald" in up.stderr
    assert "started local shoald" in up.stdout
    pid = int((state / "shoald.pid").read_text().split()[0])
    addr = (state / "shoald.addr").read_text().strip()
    assert addr.startswith("127.0.0.1:") and addr in up.stdout
    assert (state / "shoald.log").stat().st_size > 0

    status = local("cluster status --json").json()
    assert status["pid"] == pid and status["address"] == addr and status["mode"] == "embedded"
    assert local("cluster status --json").json()["pid"] == pid

    again = local("cluster up")
    assert again.rc == 0 and "reusing" in again.stdout and "starting" not in again.stderr
    actors = local("actor list --json").json()  # authenticated with state/admin.token
    assert "gateway" in {a["name"] for a in actors}

    down = local("cluster down")
    assert down.rc == 0, down.stderr
    assert str(pid) in down.stdout
    assert not pid_alive(pid)
    assert not (state / "shoald.addr").exists()
    assert "no local cluster is running" in local("cluster down").stdout
    assert local("cluster status").rc == 1


def test_any_command_starts_the_local_cluster_when_needed(local, shoal_home):
    result = local("actor list --json")
    assert result.rc == 0, result.stderr
    assert "starting local shoald" in result.stderr
    assert {"gateway", "storage_writer"} <= {a["name"] for a in result.json()}
    assert local("cluster down").rc == 0


def test_the_local_cluster_keeps_its_tokens_across_down_and_up(local):
    created = local("token new --label kept --json").json()
    assert local("cluster down").rc == 0
    assert local("cluster up").rc == 0
    assert created["token_id"] in {t["token_id"] for t in local("token list --json").json()}
    assert local("cluster down").rc == 0
