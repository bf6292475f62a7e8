"""Environments (issue 5, "Environments and scoped access") against a real shoald: the registry
(`shoal environment create|list|delete`), admin versus scoped tokens at authentication, isolation
of named objects between environments, `-e/--env` and `shoal config set-environment`."""

from __future__ import annotations

import tomllib

import pytest

from conftest import assert_one_sentence


def connect(daemon, token=None, environment=""):
    from shoal import _client

    target = _client.Target(daemon.addr, token or daemon.token, embedded=False, source="test",
                            environment=environment)
    return _client.connect_to(target)


def test_environments_are_created_listed_and_deleted(cli):
    assert [e["name"] for e in cli("environment list --json").json()] == ["main"]
    created = cli("environment create dev --json").json()
    assert created["name"] == "dev" and created["created_at_ms"] > 0
    assert cli("environment create prod").rc == 0
    assert [e["name"] for e in cli("environment list --json").json()] == ["dev", "main", "prod"]
    human = cli("environment list")
    assert human.rc == 0 and "dev" in human.stdout and "prod" in human.stdout

    line = assert_one_sentence(cli("environment create dev"))
    assert "already exists" in line
    line = assert_one_sentence(cli("environment create Bad!"))
    assert "invalid" in line
    line = assert_one_sentence(cli("environment delete main --yes"))
    assert "main" in line and "cannot be deleted" in line

    assert cli("environment delete prod --yes").rc == 0
    assert [e["name"] for e in cli("environment list --json").json()] == ["dev", "main"]
    line = assert_one_sentence(cli("environment delete prod --yes"))
    assert "does not exist" in line


def test_the_environments_survive_a_restart(cli, shoald):
    assert cli("environment create staging").rc == 0
    shoald.restart()
    assert "staging" in [e["name"] for e in cli("environment list --json").json()]


def test_a_token_for_dev_cannot_open_prod(cli, shoald):
    from shoal.exception import PermissionDeniedError

    assert cli("environment create dev").rc == 0
    assert cli("environment create prod").rc == 0
    token = cli("token new -e dev --label scoped --json").json()
    assert token["environment"] == "dev"

    # Real RPC: Gateway.authenticate with environment = "prod".
    with pytest.raises(PermissionDeniedError) as e:
        connect(shoald, token["token"], "prod")
    message = str(e.value)
    assert f"token {token['token_id']} is scoped to environment 'dev'; it cannot open 'prod'" in message
    assert token["token"].split(".")[1] not in message

    with connect(shoald, token["token"]) as conn:  # its own environment by default
        assert conn.info()["environment"] == "dev"
        assert [x["name"] for x in conn.list_environments()] == ["dev"]
        with pytest.raises(PermissionDeniedError):
            conn.create_environment("mine")

    # The CLI says the same, in one sentence.
    line = assert_one_sentence(cli("-e prod cluster status", env={"SHOAL_TOKEN": token["token"]}))
    assert "scoped to environment 'dev'" in line and "'prod'" in line
    status = cli("-e dev cluster status --json", env={"SHOAL_TOKEN": token["token"]})
    assert status.json()["environment"] == "dev"


def test_an_unknown_environment_is_not_found_with_the_fix(cli, shoald):
    from shoal.exception import NotFoundError

    with pytest.raises(NotFoundError) as e:
        connect(shoald, environment="nowhere")
    assert "shoal environment create nowhere" in str(e.value)
    line = assert_one_sentence(cli("token new -e nowhere"))
    assert "does not exist" in line


def test_the_admin_token_opens_any_environment_and_queues_do_not_leak(cli, shoald):
    import shoal
    from shoal import _transport
    from shoal.exception import NotFoundError

    assert cli("environment create dev").rc == 0
    with connect(shoald) as main_conn:
        assert main_conn.info()["environment"] == "main"
    dev_conn = connect(shoald, environment="dev")
    assert dev_conn.info()["environment"] == "dev"
    previous = _transport.set_host(_transport.NativeTransport(dev_conn))
    try:
        q = shoal.Queue.from_name("jobs", create_if_missing=True)
        q.put("in dev")
        assert q.len() == 1
    finally:
        _transport.set_host(previous)
        dev_conn.close()

    main_conn = connect(shoald)
    previous = _transport.set_host(_transport.NativeTransport(main_conn))
    try:
        with pytest.raises(NotFoundError):
            shoal.Queue.from_name("jobs", create_if_missing=False).len()
    finally:
        _transport.set_host(previous)
        main_conn.close()

    # The CLI sees the same split.
    assert "jobs" in cli("-e dev queue list").stdout
    assert "jobs" in cli("queue list -e dev").stdout
    assert "jobs" not in cli("queue list").stdout


def test_dash_e_overrides_shoal_environment_and_the_profile(cli):
    assert cli("environment create dev").rc == 0
    assert cli("cluster status --json").json()["environment"] == "main"
    assert cli("-e dev cluster status --json").json()["environment"] == "dev"
    assert cli("--env dev cluster status --json", env={"SHOAL_ENVIRONMENT": "main"}).json()[
        "environment"
    ] == "dev"
    assert cli("cluster status --json", env={"SHOAL_ENVIRONMENT": "dev"}).json()["environment"] == "dev"


def test_config_set_environment_persists(cli, shoal_home):
    assert cli("environment create dev").rc == 0
    result = cli("config set-environment dev")
    assert result.rc == 0, result.stderr
    doc = tomllib.loads((shoal_home / "config.toml").read_text())
    assert doc["profiles"][doc["active_profile"]]["environment"] == "dev"
    shown = cli("config show --json").json()
    assert shown["environment"] == "dev"
    assert cli("cluster status --json").json()["environment"] == "dev"
    assert cli("-e main cluster status --json").json()["environment"] == "main"
    line = assert_one_sentence(cli("config set-environment Not-Valid"))
    assert "invalid" in line


def test_admin_sessions_mint_tokens_for_other_environments_and_deletion_waits_for_them(cli):
    assert cli("environment create ci").rc == 0
    token = cli("token new -e ci --label bot --json").json()
    assert token["environment"] == "ci"
    assert token["token_id"] in {t["token_id"] for t in cli("token list --json").json()}
    line = assert_one_sentence(cli("environment delete ci --yes"))
    assert "token" in line
    assert cli(["token", "revoke", token["token_id"]]).rc == 0
    assert cli("environment delete ci --yes").rc == 0


def test_deleting_an_environment_waits_for_its_queues_and_dicts(cli):
    assert cli("environment create scratchpad").rc == 0
    assert cli("-e scratchpad queue create jobs").rc == 0
    assert cli("-e scratchpad dict create cache").rc == 0
    line = assert_one_sentence(cli("environment delete scratchpad --yes"))
    assert "queue 'jobs'" in line and "dict 'cache'" in line, line
    assert cli("-e scratchpad queue delete jobs --yes").rc == 0
    line = assert_one_sentence(cli("environment delete scratchpad --yes"))
    assert "queue 'jobs'" not in line and "dict 'cache'" in line, line
    assert cli("-e scratchpad dict delete cache --yes").rc == 0
    assert cli("environment delete scratchpad --yes").rc == 0
    assert "scratchpad" not in [e["name"] for e in cli("environment list --json").json()]
