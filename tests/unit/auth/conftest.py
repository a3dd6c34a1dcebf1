"""Fixtures for the auth unit tests: a key ring in a temp dir and an authority over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlake.auth.authority import Authority
from agentlake.auth.events import AuthEvents
from agentlake.auth.keys import KeyRing


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing(tmp_path / "keys")


@pytest.fixture
def auth(keys: KeyRing) -> Authority:
    return Authority(keys, AuthEvents(keep=True))
