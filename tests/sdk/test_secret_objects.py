"""shoal.Secret without a server: constructors, dotenv parsing, the env a function spec carries
(merge order, named secrets as "@secret:NAME" entries), and reprs that never show a value."""

from __future__ import annotations

import pytest

import shoal
from shoal.exception import InvalidError, NotFoundError
from shoal.secret import parse_dotenv


def spec_env(function) -> dict:
    return function._handle.spec()["env"]


def test_from_dict_keeps_str_values_skips_none_and_checks_names():
    s = shoal.Secret.from_dict({"A": "1", "B": None})
    assert s._shoal_env() == {"A": "1"}
    with pytest.raises(InvalidError, match="not a valid environment variable name"):
        shoal.Secret.from_dict({"1BAD": "x"})
    with pytest.raises(InvalidError, match="the value of A must be a str, not int") as e:
        shoal.Secret.from_dict({"A": 12345})
    assert "12345" not in str(e.value)


def test_parse_dotenv_handles_quotes_comments_and_export():
    text = (
        "# comment\n\n"
        "PLAIN=value # trailing comment\n"
        "export EXPORTED=yes\n"
        "SINGLE='a # not a comment $x'\n"
        'DOUBLE="line1\\nline2 \\"q\\""\n'
        "EMPTY=\n"
        "  SPACED = padded  \n"
        "URL=http://h/p#frag\n"
    )
    assert parse_dotenv(text) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SINGLE": "a # not a comment $x",
        "DOUBLE": 'line1\nline2 "q"',
        "EMPTY": "",
        "SPACED": "padded",
        "URL": "http://h/p#frag",
    }


def test_parse_dotenv_errors_name_the_line_not_the_value():
    with pytest.raises(InvalidError, match=r"f.env:2: expected KEY=VALUE") as e:
        parse_dotenv("A=1\nsupersecretvalue\n", "f.env")
    with pytest.raises(InvalidError, match="no closing quote") as e:
        parse_dotenv("A='supersecretvalue\n", "f.env")
    assert "supersecretvalue" not in str(e.value)


def test_from_dotenv_reads_a_file_a_directory_and_the_default(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("X=1\n")
    (tmp_path / "other.env").write_text("Y=2\n")
    assert shoal.Secret.from_dotenv(tmp_path / "other.env")._shoal_env() == {"Y": "2"}
    assert shoal.Secret.from_dotenv(tmp_path)._shoal_env() == {"X": "1"}
    monkeypatch.chdir(tmp_path)
    assert shoal.Secret.from_dotenv()._shoal_env() == {"X": "1"}
    with pytest.raises(NotFoundError, match="no dotenv file at"):
        shoal.Secret.from_dotenv(tmp_path / "missing.env")


def test_from_local_environ_copies_named_variables_and_names_a_missing_one(monkeypatch):
    monkeypatch.setenv("SHOAL_TEST_PRESENT", "here")
    monkeypatch.delenv("SHOAL_TEST_ABSENT", raising=False)
    assert shoal.Secret.from_local_environ(["SHOAL_TEST_PRESENT"])._shoal_env() == {
        "SHOAL_TEST_PRESENT": "here"
    }
    with pytest.raises(InvalidError, match="SHOAL_TEST_ABSENT"):
        shoal.Secret.from_local_environ(["SHOAL_TEST_PRESENT", "SHOAL_TEST_ABSENT"])


def test_inside_a_container_client_side_constructors_do_not_fail(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOAL_GUEST_SOCKET", str(tmp_path / "nope.sock"))
    monkeypatch.delenv("SHOAL_TEST_ABSENT", raising=False)
    assert shoal.Secret.from_local_environ(["SHOAL_TEST_ABSENT"])._shoal_env() == {}
    assert shoal.Secret.from_dotenv(tmp_path / "missing.env")._shoal_env() == {}


def test_from_name_is_resolved_by_the_server_and_checks_its_name():
    s = shoal.Secret.from_name("stripe")
    assert s._shoal_env() == {"@secret:stripe": "stripe"}
    assert repr(s) == "Secret.from_name('stripe')"
    with pytest.raises(InvalidError, match="secret name"):
        shoal.Secret.from_name("bad/name")


def test_repr_shows_keys_never_values():
    s = shoal.Secret.from_dict({"TOKEN": "hunter2"})
    assert "hunter2" not in repr(s) and "TOKEN" in repr(s)


def test_app_then_function_secrets_in_order_later_wins():
    app = shoal.App(
        "sec",
        secrets=[shoal.Secret.from_dict({"A": "app", "B": "app"}), shoal.Secret.from_name("shared")],
    )

    @app.function(secrets=[shoal.Secret.from_dict({"A": "fn"}), shoal.Secret.from_name("mine")])
    def f():
        pass

    @app.function()
    def g():
        pass

    env = spec_env(f)
    # Order is application order: a key set again moves to the end, so the supervisor's in-order
    # application gives the later secret the last word (the named "shared" may set A too).
    assert list(env.items()) == [
        ("B", "app"),
        ("@secret:shared", "shared"),
        ("A", "fn"),
        ("@secret:mine", "mine"),
    ]
    assert spec_env(g) == {"A": "app", "B": "app", "@secret:shared": "shared"}


def test_cls_secrets_reach_the_spec():
    app = shoal.App("sec2")

    @app.cls(secrets=[shoal.Secret.from_dict({"K": "v"})])
    class C:
        @shoal.method()
        def m(self):
            pass

    assert spec_env(C) == {"K": "v"}
