"""Fixtures of the lake's unit tests: the real default embedder, entries built in one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentlake.lake.entries import LakeEntry
from agentlake.lake.signature import task_signature
from agentlake.projections.embeddings import Embedder, get_embedder
from agentlake.settings import Settings

T0 = 1_700_000_000_000_000  # a fixed "now" in µs
DAY = 86_400 * 1_000_000


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return get_embedder(Settings())


def make_entry(entry_id: str, task: str, **kw: Any) -> LakeEntry:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "agent_id": "bot",
        "agent_version": "1.0",
        "success": True,
        "reward": 0.9,
        "components": {"task_success": 1.0},
        "tool_sequence": ("get_order", "refund_order"),
        "plan": "look up, then refund",
        "final_answer": "done",
        "outcome": "success",
        "produced_us": T0,
        "expires_us": T0 + 7 * DAY,
    }
    fields.update(kw)
    if "tool_sequence" in kw:
        fields["tool_sequence"] = tuple(kw["tool_sequence"])
    return LakeEntry(entry_id=entry_id, task=task, signature=task_signature(task), **fields)


@pytest.fixture
def entry() -> Callable[..., LakeEntry]:
    return make_entry
