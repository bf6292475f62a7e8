"""Unit-level tests of the Python package that need no daemon: imports, exceptions, config."""

import builtins
import os
import subprocess
import textwrap

import pytest

from conftest import PYTHON, PYTHON_DIR


def test_importing_shoal_does_not_load_the_native_extension():
    code = textwrap.dedent(
        """
        import sys
        import shoal, shoal.exception, shoal.config, shoal._client, shoal._embedded, shoal.cli
        shoal.cli.build_parser()
        loaded = sorted(m for m in sys.modules if m.startswith("shoal._native"))
        assert not loaded, loaded
        print(shoal.__version__)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0.1.0"


class FakeRpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


@pytest.mark.parametrize(
    "code, name",
    [
        ("invalid_argument", "InvalidError"),
        ("not_found", "NotFoundError"),
        ("already_exists", "AlreadyExistsError"),
        ("unauthenticated", "AuthError"),
        ("permission_denied", "PermissionDeniedError"),
        ("unavailable", "ConnectionError"),
        ("storage_failure", "ExecutionError"),
        ("incompatible_state", "ExecutionError"),
        ("state_dir_locked", "ExecutionError"),
        ("resource_exhausted", "ResourceExhaustedError"),
        ("timeout", "TimeoutError"),
        ("cancelled", "ExecutionError"),
        ("internal", "InternalError"),
        ("a_code_from_a_newer_server", "InternalError"),
    ],
)
def test_every_wire_code_becomes_a_shoal_exception_that_keeps_the_code(code, name):
    from shoal import exception

    error = exception.from_rpc_error(FakeRpcError(code, f"[{code}] something about 'x'"))
    assert type(error) is getattr(exception, name)
    assert isinstance(error, exception.Error)
    assert error.code == code
    assert str(error) == "something about 'x'"


def test_shoal_timeout_errors_are_also_builtin_timeout_errors():
    from shoal import exception

    assert issubclass(exception.TimeoutError, builtins.TimeoutError)
    assert issubclass(exception.FunctionTimeoutError, exception.TimeoutError)
    with pytest.raises(builtins.TimeoutError):
        raise exception.FunctionTimeoutError("took 301 s, timeout=300")
    assert str(exception.TimeoutError("slow")) == "slow"
    # Modal's names, so `import shoal as modal` code keeps catching what it expects.
    assert not issubclass(exception.ConnectionError, builtins.ConnectionError)
    assert not issubclass(exception.InputCancellation, Exception)
    for name in ("RemoteError", "ExecutionError", "SerializationError", "NotFoundError", "AuthError"):
        assert issubclass(getattr(exception, name), exception.Error)


def test_environment_variables_override_the_profile_which_overrides_the_defaults(tmp_path):
    from shoal import config

    env = {"SHOAL_HOME": str(tmp_path)}
    defaults = config.resolve(env)
    assert (defaults.server, defaults.token, defaults.environment, defaults.profile) == (None, None, "main", "default")
    assert defaults.embedded and defaults.state_dir == tmp_path / "state"

    config.write_profile("default", server="a:1", token="tok-default", env=env)
    config.write_profile("prod", server="p:2", token="tok-prod", environment="live", activate=False, env=env)
    from_file = config.resolve(env)
    assert (from_file.profile, from_file.server, from_file.token, from_file.environment) == (
        "default", "a:1", "tok-default", "main")

    prod = config.resolve({**env, "SHOAL_PROFILE": "prod"})
    assert (prod.server, prod.token, prod.environment) == ("p:2", "tok-prod", "live")

    overridden = config.resolve({**env, "SHOAL_PROFILE": "prod", "SHOAL_SERVER": "e:3", "SHOAL_ENVIRONMENT": "dev"})
    assert (overridden.server, overridden.token, overridden.environment) == ("e:3", "tok-prod", "dev")
    assert overridden.sources["server"] == "SHOAL_SERVER"
    assert "prod" in overridden.sources["token"]

    with pytest.raises(config.InvalidError, match="nope"):
        config.resolve({**env, "SHOAL_PROFILE": "nope"})
    with pytest.raises(config.InvalidError, match="HOST:PORT"):
        config.resolve({**env, "SHOAL_SERVER": "no-port"})


def test_the_config_file_is_private_and_round_trips_awkward_strings(tmp_path):
    import tomllib

    from shoal import config

    env = {"SHOAL_HOME": str(tmp_path / "home")}
    awkward = 'quote " backslash \\ newline \n tab \t unicode é bell \x07'
    path = config.write_profile("weird.name-1", server="[::1]:7650", token=awkward, environment="é", env=env)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    data = tomllib.loads(path.read_text())
    assert data == {
        "active_profile": "weird.name-1",
        "profiles": {"weird.name-1": {"server": "[::1]:7650", "token": awkward, "environment": "é"}},
    }
    # Rewriting keeps the other profiles and keys.
    config.write_profile("other", token="t2", activate=False, env=env)
    data = tomllib.loads(path.read_text())
    assert data["active_profile"] == "weird.name-1"
    assert data["profiles"]["weird.name-1"]["token"] == awkward
    assert data["profiles"]["other"] == {"token": "t2"}
