"""`shoal actor list|inspect` against a real shoald."""

from conftest import assert_one_sentence

ACTOR_KEYS = {"name", "kind", "state", "mailbox_depth", "counters", "details"}


def test_actor_list_json_lists_the_running_actors_with_integer_mailbox_depths(cli):
    actors = cli("actor list --json").json()
    assert isinstance(actors, list)
    names = [a["name"] for a in actors]
    assert {"gateway", "storage_writer"} <= set(names)
    assert len(names) == len(set(names))
    for actor in actors:
        assert set(actor) == ACTOR_KEYS
        assert isinstance(actor["mailbox_depth"], int) and actor["mailbox_depth"] >= 0
        assert actor["state"] and actor["kind"]
        assert all(isinstance(v, int) for v in actor["counters"].values())
        assert all(isinstance(v, str) for v in actor["details"].values())


def test_actor_list_prints_a_table_with_one_row_per_actor(cli):
    actors = cli("actor list --json").json()
    result = cli("actor list")
    assert result.rc == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "STATE", "MAILBOX"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(a["name"] for a in actors)


def test_actor_count_in_cluster_status_matches_the_actor_list(cli):
    assert cli("cluster status --json").json()["actor_count"] == len(cli("actor list --json").json())


def test_inspecting_the_gateway_shows_its_counters(cli):
    gateway = cli("actor inspect gateway --json").json()
    assert set(gateway) == {"name", "kind", "state", "mailbox_depth", "counters", "details"}
    assert gateway["name"] == "gateway" and gateway["state"] == "running"
    assert gateway["counters"], "the gateway reports no counters"
    human = cli("actor inspect gateway")
    assert human.rc == 0 and "counters:" in human.stdout
    for name in gateway["counters"]:
        assert name in human.stdout


def test_inspecting_an_unknown_actor_fails_with_a_sentence_naming_it(cli):
    line = assert_one_sentence(cli("actor inspect gatway"))
    assert "gatway" in line
    assert "Traceback" not in line
