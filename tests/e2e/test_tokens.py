"""`shoal token new|list|revoke|set` against a real shoald."""

import tomllib

from conftest import assert_one_sentence


def test_token_new_prints_a_token_once_that_then_works(cli, shoald):
    result = cli("token new --label e2e")
    assert result.rc == 0, result.stderr
    secret_lines = [line.strip() for line in result.stdout.splitlines() if line.startswith("    ")]
    assert len(secret_lines) == 1, result.stdout
    secret = secret_lines[0]
    assert result.stdout.count(secret) == 1
    assert "only time" in result.stdout
    status = cli("cluster status --json", env={"SHOAL_TOKEN": secret})
    assert status.json()["environment"] == "main"


def test_token_new_json_gives_the_secret_and_its_public_info(cli):
    doc = cli("token new --label scripted --json").json()
    assert set(doc) == {"token", "token_id", "environment", "label", "created_at_ms"}
    assert doc["token_id"].startswith("tok-") and doc["label"] == "scripted" and doc["environment"] == "main"
    assert doc["token"] and doc["token"] != doc["token_id"]
    assert cli("actor list --json", env={"SHOAL_TOKEN": doc["token"]}).rc == 0


def test_token_list_json_never_contains_secrets(cli, shoald):
    created = [cli(f"token new --label t{i} --json").json() for i in range(2)]
    result = cli("token list --json")
    tokens = result.json()
    ids = {t["token_id"] for t in tokens}
    assert {c["token_id"] for c in created} <= ids
    for token in tokens:
        assert set(token) == {"token_id", "environment", "label", "created_at_ms"}
    for secret in [c["token"] for c in created] + [shoald.token]:
        assert secret not in result.stdout
    human = cli("token list")
    assert human.rc == 0 and all(c["token_id"] in human.stdout for c in created)
    assert all(c["token"] not in human.stdout for c in created)


def test_a_revoked_token_stops_working(cli):
    doc = cli("token new --label doomed --json").json()
    with_token = {"SHOAL_TOKEN": doc["token"]}
    assert cli("cluster status", env=with_token).rc == 0
    revoked = cli(["token", "revoke", doc["token_id"]])
    assert revoked.rc == 0, revoked.stderr
    line = assert_one_sentence(cli("cluster status", env=with_token))
    assert "rejected" in line
    assert doc["token_id"] not in {t["token_id"] for t in cli("token list --json").json()}


def test_revoking_an_unknown_token_names_it(cli):
    line = assert_one_sentence(cli("token revoke tok-doesnotexist"))
    assert "tok-doesnotexist" in line


def test_token_set_verifies_the_token_and_writes_a_private_profile(run_cli, shoald, shoal_home):
    result = run_cli(["token", "set", "--server", shoald.addr, "--token", shoald.token])
    assert result.rc == 0, result.stderr
    path = shoal_home / "config.toml"
    assert (path.stat().st_mode & 0o777) == 0o600
    profile = tomllib.loads(path.read_text())["profiles"]["default"]
    assert profile == {"server": shoald.addr, "token": shoald.token, "environment": "main"}
    # The profile alone (no SHOAL_* variables) now reaches the server.
    doc = run_cli("cluster status --json").json()
    assert doc["address"] == shoald.addr and doc["source"].startswith("profile 'default'")


def test_token_set_with_a_wrong_token_saves_nothing(run_cli, shoald, shoal_home):
    line = assert_one_sentence(run_cli(["token", "set", "--server", shoald.addr, "--token", "wrong"]))
    assert "rejected" in line and "Nothing was saved" in line
    assert not (shoal_home / "config.toml").exists()


def test_token_set_reads_the_token_from_stdin(run_cli, shoald, shoal_home):
    result = run_cli(["token", "set", "--server", shoald.addr, "--token", "-", "--profile", "piped"],
                     input=shoald.token + "\n")
    assert result.rc == 0, result.stderr
    data = tomllib.loads((shoal_home / "config.toml").read_text())
    assert data["active_profile"] == "piped" and data["profiles"]["piped"]["token"] == shoald.token
