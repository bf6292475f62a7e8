"""`shoal cluster status` against a real shoald, and the daemon's process contract."""

import os
import signal
import subprocess
import time

from conftest import free_port_number, parse_logfmt

INFO_KEYS = {"version", "node_id", "roles", "listen_address", "state_dir", "pid", "started_at_ms",
             "environment", "schema_version", "actor_count"}


def test_cluster_status_shows_the_version_roles_and_address(cli, shoald):
    result = cli("cluster status")
    assert result.rc == 0, result.stderr
    assert "0.1.0" in result.stdout
    assert "control" in result.stdout and "worker" in result.stdout
    assert shoald.addr in result.stdout
    assert str(shoald.proc.pid) in result.stdout


def test_cluster_status_json_has_stable_keys(cli, shoald):
    doc = cli("cluster status --json").json()
    assert INFO_KEYS <= doc.keys()
    assert doc["version"] == "0.1.0"
    assert sorted(doc["roles"]) == ["control", "worker"]
    assert doc["address"] == shoald.addr and doc["listen_address"] == shoald.addr
    assert doc["pid"] == shoald.proc.pid
    assert os.path.samefile(doc["state_dir"], shoald.state_dir)
    assert doc["environment"] == "main"
    assert doc["mode"] == "remote" and doc["source"] == "SHOAL_SERVER"
    assert isinstance(doc["actor_count"], int) and doc["actor_count"] >= 2
    assert abs(doc["started_at_ms"] / 1000 - time.time()) < 600


def test_cluster_up_verifies_a_configured_server(cli, shoald):
    result = cli("cluster up")
    assert result.rc == 0, result.stderr
    assert "answers and accepts the token" in result.stdout and shoald.addr in result.stdout


def test_shoald_listens_on_a_free_port_when_asked_for_port_0(start_shoald, run_cli):
    daemon = start_shoald(port=0)
    host, port = daemon.addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    doc = run_cli("cluster status --json", env={"SHOAL_SERVER": daemon.addr, "SHOAL_TOKEN": daemon.token}).json()
    assert doc["listen_address"] == daemon.addr


def test_the_admin_token_is_private_to_its_owner(shoald):
    path = shoald.state_dir / "admin.token"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert len(path.read_text().splitlines()) == 1
    assert int((shoald.state_dir / "shoald.pid").read_text().split()[0]) == shoald.proc.pid


def test_a_second_shoald_on_the_same_state_dir_exits_naming_the_pid_that_holds_it(shoald, shoald_path, cli):
    second = subprocess.run(
        [shoald_path, "--roles", "all", "--listen", f"127.0.0.1:{free_port_number()}",
         "--state-dir", str(shoald.state_dir)],
        capture_output=True, text=True, timeout=30,
    )
    assert second.returncode not in (0, 2), second.stderr  # 1: a runtime failure, not usage
    assert str(shoald.proc.pid) in second.stderr
    # It did not disturb the running one.
    assert (shoald.state_dir / "shoald.addr").read_text().strip() == shoald.addr
    assert cli("cluster status").rc == 0


def test_shoald_rejects_unknown_options_with_a_usage_error(shoald_path, tmp_path):
    result = subprocess.run([shoald_path, "--no-such-option", "--state-dir", str(tmp_path / "s")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip()


#: The shutdown order shoald logs (tools/shoald): stop taking work, drain in-flight calls, stop the
#: actors, then exit. Other events may come in between.
SHUTDOWN_EVENTS = ["signal_received", "rpc_stopped_accepting", "rpc_drained", "actors_stopped", "stopped"]


def test_sigterm_shuts_down_in_order_exits_0_and_removes_the_address_file(start_shoald):
    daemon = start_shoald()
    assert daemon.stop(signal.SIGTERM) == 0
    assert not daemon.addr_file.exists()

    lines = [line for line in daemon.log().splitlines() if line.strip()]
    events = [parse_logfmt(line) for line in lines]
    for line, event in zip(lines, events):
        assert {"ts", "level", "event"} <= event.keys(), f"not a logfmt event line: {line!r}"
    names = [e["event"] for e in events]
    assert "ready" in names
    ready = names.index("ready")
    positions = [names.index(name, ready) if name in names[ready:] else None for name in SHUTDOWN_EVENTS]
    assert None not in positions, f"missing shutdown events; the log has {names}"
    assert positions == sorted(positions), f"shutdown events out of order: {names}"
    assert names[-1] == "stopped", names
    assert next(e for e in events if e["event"] == "signal_received").get("signal") == "SIGTERM"


def test_sigint_also_shuts_down_cleanly(start_shoald):
    daemon = start_shoald()
    assert daemon.stop(signal.SIGINT) == 0
    assert not daemon.addr_file.exists()


def test_a_created_token_and_the_admin_token_survive_a_restart(start_shoald, run_cli, tmp_path):
    first = start_shoald()
    env = {"SHOAL_SERVER": first.addr, "SHOAL_TOKEN": first.token}
    created = run_cli("token new --label survivor --json", env=env).json()
    node_id = run_cli("cluster status --json", env=env).json()["node_id"]
    assert first.stop() == 0

    second = start_shoald(state_dir=first.state_dir)
    assert second.token == first.token  # admin.token is written on first initialisation only
    env = {"SHOAL_SERVER": second.addr, "SHOAL_TOKEN": second.token}
    ids = [t["token_id"] for t in run_cli("token list --json", env=env).json()]
    assert created["token_id"] in ids
    status = run_cli("cluster status --json", env={"SHOAL_SERVER": second.addr, "SHOAL_TOKEN": created["token"]})
    assert status.json()["pid"] == second.proc.pid
    assert status.json()["node_id"] == node_id  # the node id is kept in the state dir


def test_shoald_reports_a_clear_error_for_an_unusable_state_dir(shoald_path, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = subprocess.run(
        [shoald_path, "--listen", "127.0.0.1:0", "--state-dir", str(not_a_dir)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert str(not_a_dir) in result.stderr


def test_a_worker_starts_with_an_empty_code_cache(start_shoald, tmp_path):
    """<state>/code (apps' files materialised from blobs) is a cache: after a restart no container
    uses it, so shoald empties it instead of letting every code change pile up there."""
    state = tmp_path / "state"
    stale = state / "code" / "c-0123456789abcdef"
    (stale / "pkg").mkdir(parents=True)
    (stale / "pkg" / "app.py").write_text("print('old code')\n")
    (state / "code" / "files-0123").mkdir()
    daemon = start_shoald(state_dir=state)
    assert not stale.exists() and not (state / "code" / "files-0123").exists()
    cleared = [e for e in daemon.events() if e.get("event") == "code_cache_cleared"]
    assert cleared and cleared[0]["entries"] == "2", cleared
