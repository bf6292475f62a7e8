"""Image.from_registry against a registry that wants bearer tokens (the Docker token flow): the
real shoald asks the token server named in the registry's challenge, with the secret's Basic
credentials, and pulls with the token. Debian's docker-registry verifies the token's signature
against the fixture's certificate (tests/support/registry_fixture.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import ok, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import registry_fixture  # noqa: E402

BUILD = """
import shoal
from shoal import _transport

secret = {secret}
image = shoal.Image.from_registry({ref!r}, secret=secret)
print("IMAGE", image._build(_transport.host().connection))
"""


@pytest.fixture
def token_registry(tmp_path):
    proc, addr = registry_fixture.start_registry(tmp_path / "token", token=("tokuser", "tok-pass"))
    try:
        ref = registry_fixture.make_busybox_image(tmp_path, addr, "private/busybox", "1",
                                                  creds=("tokuser", "tok-pass"), env={"VIA": "token"})
        yield proc, ref
    finally:
        registry_fixture.stop_registry(proc)


def build(python, tmp_path, name, ref, secret):
    return python(write(tmp_path, name, BUILD.format(ref=ref, secret=secret)), timeout_s=120)


def test_from_registry_gets_a_bearer_token_and_pulls(tmp_path, python, shoal, token_registry):
    proc, ref = token_registry
    # Failures first: once pulled, the image is cached for everyone (its id is its reference).
    wrong = build(python, tmp_path, "wrong.py", ref,
                  'shoal.Secret.from_dict({"REGISTRY_USERNAME": "tokuser", "REGISTRY_PASSWORD": "bad-pass"})')
    assert wrong.rc != 0
    assert "rejected the credentials for user 'tokuser'" in wrong.stderr, wrong.stderr
    assert "bad-pass" not in wrong.stderr + wrong.stdout

    anonymous = build(python, tmp_path, "anonymous.py", ref, "None")
    assert anonymous.rc != 0
    assert "requires a login" in anonymous.stderr, anonymous.stderr

    before = proc.token_server.requests
    right = ok(build(python, tmp_path, "right.py", ref,
                     'shoal.Secret.from_dict({"REGISTRY_USERNAME": "tokuser", "REGISTRY_PASSWORD": "tok-pass"})'))
    assert proc.token_server.requests > before  # the pull went through the token server
    image_id = next(l.split()[1] for l in right.stdout.splitlines() if l.startswith("IMAGE "))
    info = shoal(f"image inspect {image_id} --json", timeout_s=60).json()
    assert info["env"].get("VIA") == "token" and len(info["layers"]) == 2
