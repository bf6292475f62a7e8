"""Unit tests of the SDK and CLI: no daemon. Calls go to ``fake_native.FakeClient`` through the
real ``_client.Connection`` and ``_transport.NativeTransport``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO / "python"
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))
PYTHON = "/usr/bin/python3"

from shoal import _client, _transport  # noqa: E402

import fake_native  # noqa: E402


fake_connection = fake_native.fake_connection


@pytest.fixture
def fake(monkeypatch):
    """A FakeClient behind the process-wide host transport (and behind `_client.connect`, for
    the CLI commands that open their own connection)."""
    monkeypatch.delenv("SHOAL_GUEST_SOCKET", raising=False)
    client = fake_native.FakeClient()
    previous = _transport.set_host(_transport.NativeTransport(fake_connection(client)))
    monkeypatch.setattr(_client, "connect", lambda *a, **k: fake_connection(client))
    yield client
    _transport.set_host(previous)
    client.shutdown()
