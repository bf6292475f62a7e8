"""Secrets end to end (issue 5): `shoal secret create|list|delete`, Secret.from_dict / from_dotenv /
from_local_environ / from_name injected into real containers, and the promise that a secret's
value never shows: the tests plant unique values, have functions return only their sha256, and
grep the daemon's log, every CLI output, `actor list --json` and every actor's `inspect` for them.

All tests share one daemon (`module_shoald`); the first container pays for the default image.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest

from conftest import Result, last_json, ok, run_shoal, write

LONG_S = 900.0


@pytest.fixture(scope="module")
def shoald(module_shoald):
    return module_shoald


#: Every CLI result of this module, for the final leak check.
OUTPUTS: list[Result] = []
#: Every planted value.
PLANTED: list[str] = []


def plant(label: str) -> str:
    value = f"planted-{label}-{uuid.uuid4().hex}"
    PLANTED.append(value)
    return value


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def shoal(shoald, shoal_home):
    def run(args, env=None, timeout_s=LONG_S, cwd=None) -> Result:
        result = run_shoal(args, home=shoal_home, env={**shoald.env(), **(env or {})}, timeout_s=timeout_s)
        OUTPUTS.append(result)
        return result

    return run


HASHER = """
    import hashlib
    import json
    import os
    import shoal

    def digest(names):
        return {n: (hashlib.sha256(os.environ[n].encode()).hexdigest() if n in os.environ else None)
                for n in names}
"""


# --- the CLI --------------------------------------------------------------------------------------


def test_create_list_delete_and_list_never_shows_values(shoal, tmp_path):
    value = plant("cli")
    dotenv_value = plant("cli-dotenv")
    dotenv = tmp_path / "creds.env"
    dotenv.write_text(f"# a comment\nexport FROM_FILE='{dotenv_value}'\nOTHER=\"x y\"\n")
    created = ok(shoal(["secret", "create", "e2e-cli", f"API_KEY={value}", "--from-dotenv", str(dotenv),
                        "--json"])).json()
    assert created["name"] == "e2e-cli" and created["environment"] == "main"
    assert created["keys"] == ["API_KEY", "FROM_FILE", "OTHER"]

    again = shoal(["secret", "create", "e2e-cli", f"API_KEY={value}"])
    assert again.rc != 0 and "already exists" in again.stderr and "--force" in again.stderr
    ok(shoal(["secret", "create", "e2e-cli", f"API_KEY={value}", "--force"]))

    listed = ok(shoal("secret list --json")).json()
    mine = [s for s in listed if s["name"] == "e2e-cli"]
    assert mine and mine[0]["keys"] == ["API_KEY"] and mine[0]["created_at_ms"] > 0
    assert set(mine[0]) == {"name", "environment", "keys", "created_at_ms"}
    table = ok(shoal("secret list"))
    assert "e2e-cli" in table.stdout and "API_KEY" in table.stdout

    bad = shoal(["secret", "create", "e2e-bad", value])  # a value typed without KEY=
    assert bad.rc != 0 and "KEY=VALUE" in bad.stderr

    ok(shoal("secret delete e2e-cli --yes"))
    assert "e2e-cli" not in [s["name"] for s in ok(shoal("secret list --json")).json()]
    gone = shoal("secret delete e2e-cli --yes")
    assert gone.rc != 0 and "does not exist" in gone.stderr


# --- injection into containers -------------------------------------------------------------------


def test_every_kind_of_secret_reaches_the_container_in_merge_order(shoal, tmp_path):
    stored = plant("stored")
    from_dict = plant("dict")
    from_file = plant("dotenv")
    from_env = plant("environ")
    ok(shoal(["secret", "create", "e2e-stored", f"STORED={stored}", "SHARED=from-stored"]))
    (tmp_path / ".env").write_text(f"# dotenv\nexport DOTENV_VAR=\"{from_file}\"\n")
    app = write(tmp_path, "inject.py", HASHER + """
    app = shoal.App("e2e-secrets", secrets=[shoal.Secret.from_name("e2e-stored"),
                                            shoal.Secret.from_dict({"APP_ONLY": "app"})])

    @app.function(secrets=[
        shoal.Secret.from_dict({"DICT_VAR": os.environ.get("PLANT_DICT", ""), "SHARED": "from-function"}),
        shoal.Secret.from_dotenv(),
        shoal.Secret.from_local_environ(["LOCAL_VAR"]),
    ])
    def show():
        names = ["STORED", "DICT_VAR", "DOTENV_VAR", "LOCAL_VAR", "APP_ONLY", "SHARED"]
        out = digest(names)
        out["SHARED_IS"] = os.environ.get("SHARED")  # not secret: shows the merge order
        return out

    @app.local_entrypoint()
    def main():
        print(json.dumps(show.remote()))
    """)
    got = last_json(shoal(f"run {app}", env={"PLANT_DICT": from_dict, "LOCAL_VAR": from_env}))
    assert got["STORED"] == sha(stored)
    assert got["DICT_VAR"] == sha(from_dict)
    assert got["DOTENV_VAR"] == sha(from_file)
    assert got["LOCAL_VAR"] == sha(from_env)
    assert got["APP_ONLY"] == sha("app")
    assert got["SHARED_IS"] == "from-function"  # app secrets first, the function's win


def test_a_missing_named_secret_fails_the_call_naming_it(shoal, tmp_path):
    app = write(tmp_path, "missing.py", HASHER + """
    app = shoal.App("e2e-secret-missing")

    @app.function(secrets=[shoal.Secret.from_name("e2e-never-created")], retries=0)
    def show():
        return 1

    @app.local_entrypoint()
    def main():
        try:
            show.remote()
            print("no error")
        except Exception as e:
            print("ERROR", type(e).__name__, e)
    """)
    result = ok(shoal(f"run {app}"))
    line = next(line for line in result.stdout.splitlines() if line.startswith(("ERROR", "no error")))
    assert "secret 'e2e-never-created' does not exist in environment 'main'" in line, line
    assert "shoal secret create e2e-never-created KEY=VALUE" in line, line


def test_from_local_environ_names_the_missing_variable(shoal, tmp_path):
    app = write(tmp_path, "noenv.py", """
    import shoal
    app = shoal.App("e2e-secret-noenv")

    @app.function(secrets=[shoal.Secret.from_local_environ(["E2E_SURELY_UNSET_VAR"])])
    def f():
        return 1

    @app.local_entrypoint()
    def main():
        f.remote()
    """)
    result = shoal(f"run {app}", env={"E2E_SURELY_UNSET_VAR": None})
    assert result.rc != 0 and "E2E_SURELY_UNSET_VAR" in result.stderr


def test_a_deleted_secret_no_longer_reaches_new_containers(shoal, tmp_path):
    value = plant("deleted")
    ok(shoal(["secret", "create", "e2e-temp", f"TEMP={value}"]))
    ok(shoal("secret delete e2e-temp --yes"))
    app = write(tmp_path, "deleted.py", HASHER + """
    app = shoal.App("e2e-secret-deleted")

    @app.function(secrets=[shoal.Secret.from_name("e2e-temp")], retries=0)
    def show():
        return digest(["TEMP"])

    @app.local_entrypoint()
    def main():
        try:
            print(json.dumps(show.remote()))
        except Exception as e:
            print("ERROR", e)
    """)
    result = ok(shoal(f"run {app}"))
    assert "secret 'e2e-temp' does not exist" in result.stdout


# --- never shown ---------------------------------------------------------------------------------


def test_no_planted_value_appears_in_logs_cli_output_or_inspect(shoal, shoald):
    assert len(PLANTED) >= 5, "run the whole module: the earlier tests plant the values"
    actors = ok(shoal("actor list --json"))
    inspected = [ok(shoal(["actor", "inspect", a["name"], "--json"])) for a in actors.json()]
    assert inspected
    haystacks = {"daemon log": shoald.log()}
    for i, r in enumerate(OUTPUTS):
        haystacks[f"cli output {i}"] = r.stdout + "\n" + r.stderr
    for value in PLANTED:
        for where, text in haystacks.items():
            assert value not in text, f"a planted secret value appears in the {where}"
    # The hash-only replies did reach the terminal (the check above is not vacuous).
    assert any("STORED" in r.stdout for r in OUTPUTS)
