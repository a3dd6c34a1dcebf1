"""`projections rebuild --since`: the accepted forms of a start time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentlake.consumers.rebuild import TARGETS, parse_since

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", datetime(2026, 11, 30, 14, 58, 30, tzinfo=UTC)),
        ("15m", datetime(2026, 11, 30, 14, 45, tzinfo=UTC)),
        ("2h", datetime(2026, 11, 30, 13, 0, tzinfo=UTC)),
        ("1.5d", datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),
        ("2026-11-30T10:00:00", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),
        ("2026-11-30T11:00:00+01:00", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),
    ],
)
def test_since_accepts_iso_times_and_durations(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15", "-2h", "2w", ""])
def test_anything_else_is_one_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="neither an ISO time"):
        parse_since(text, now=NOW)


def test_each_target_replays_the_topics_its_store_is_made_of() -> None:
    assert TARGETS["milvus"] == ("rewards.scored",)
    assert set(TARGETS["clickhouse"]) >= {
        "agent.trajectories",
        "agent.steps",
        "agent.tool_calls",
        "rewards.scored",
    }


def test_a_rebuild_skips_what_the_workers_per_record_rules_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from agentlake.consumers.rebuild import rejects
    from agentlake.streams import processor

    ev = SimpleNamespace(record="AgentStep", trajectory_id="t1", seq=3)
    seen = []

    def check_record(topic: str, key: bytes | None, record: str, trajectory_id: str, seq: int) -> object:
        seen.append((topic, key, record, trajectory_id, seq))
        return ("key_mismatch", "key is not the trajectory id") if key != trajectory_id.encode() else None

    monkeypatch.setattr(processor, "check_record", check_record, raising=False)
    assert rejects("agent.steps", b"other", ev)
    assert not rejects("agent.steps", b"t1", ev)
    assert seen[0] == ("agent.steps", b"other", "AgentStep", "t1", 3)
    monkeypatch.delattr(processor, "check_record")
    assert not rejects("agent.steps", b"other", ev)  # no rules: nothing rejected
