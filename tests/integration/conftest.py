"""Integration fixtures: settings pointing at the session's stack, and a projector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentlake.consumers import Projector
from agentlake.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture(scope="session")
async def projector(settings: Settings) -> AsyncIterator[Projector]:
    """The sink, in this process (chdb allows one process per data dir)."""
    p = Projector(settings)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
