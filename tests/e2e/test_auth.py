"""What a user sees when the server cannot be reached or refuses the token."""

from conftest import assert_one_sentence


def test_a_wrong_token_is_refused_with_one_clear_sentence(cli, shoald):
    line = assert_one_sentence(cli("cluster status", env={"SHOAL_TOKEN": "tok-0000.not-a-real-secret"}))
    assert "rejected" in line and shoald.addr in line
    assert "shoal token new" in line
    assert "not-a-real-secret" not in line


def test_a_wrong_token_is_refused_for_every_command(cli):
    for command in ("actor list", "token list", "actor inspect gateway --json"):
        line = assert_one_sentence(cli(command, env={"SHOAL_TOKEN": "wrong"}))
        assert "rejected" in line, command


def test_no_token_anywhere_gives_a_clear_error(cli, shoald):
    line = assert_one_sentence(cli("actor list", env={"SHOAL_TOKEN": None}))
    assert "no token" in line and shoald.addr in line and "SHOAL_TOKEN" in line


def test_an_unreachable_daemon_is_reported_in_one_sentence(run_cli, free_port):
    address = f"127.0.0.1:{free_port}"
    line = assert_one_sentence(run_cli("cluster status", env={"SHOAL_SERVER": address, "SHOAL_TOKEN": "t"}))
    assert f"cannot reach shoald at {address}" in line
    assert "shoal cluster up" in line and "SHOAL_SERVER" in line


def test_an_unreachable_daemon_gives_machine_readable_commands_no_stdout(run_cli, free_port):
    result = run_cli("actor list --json", env={"SHOAL_SERVER": f"127.0.0.1:{free_port}", "SHOAL_TOKEN": "t"})
    assert result.rc == 1 and result.stdout == ""


def test_debug_mode_shows_the_traceback(run_cli, free_port):
    result = run_cli("cluster status", env={
        "SHOAL_SERVER": f"127.0.0.1:{free_port}", "SHOAL_TOKEN": "t", "SHOAL_DEBUG": "1"})
    assert result.rc == 1
    assert "Traceback" in result.stderr and result.stderr_lines[-1].startswith("shoal: cannot reach")
