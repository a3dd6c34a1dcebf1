"""SDK -> Kafka -> stream worker -> ClickHouse and Milvus, asserting the exact rows."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

from agentlake.consumers import Projector
from agentlake.demo import run_agents
from agentlake.schemas import RewardScored, ToolCallCompleted, TrajectoryStarted, codec
from agentlake.sdk import KafkaEmitter
from agentlake.settings import Settings
from agentlake.streams.processor import RewardProcessor
from tests.integration.helpers import TeeEmitter, project_until_final, sql


def expected_finals(records: list[tuple[str, bytes, bytes]], rules: Any = None) -> dict[str, RewardScored]:
    """What the worker must have computed: the same processor, in this process, with the
    registry's rules the worker follows (other tests of the session may have applied specs
    for the same agents)."""
    proc = (
        RewardProcessor(rules, live_scores=False) if rules is not None else RewardProcessor(live_scores=False)
    )
    states: dict[bytes, Any] = {}
    out: dict[str, RewardScored] = {}
    for topic, key, value in records:
        res = proc.process(states.get(key), topic, key, value)
        if res.changed:
            states[key] = res.state
        for o in res.outputs:
            ev = codec().decode(o.value)
            if isinstance(ev, RewardScored) and ev.is_final:
                out[ev.trajectory_id] = ev
    return out


async def test_demo_agents_land_exactly_in_clickhouse_and_milvus(
    settings: Settings, projector: Projector
) -> None:
    run_id = f"it-{uuid.uuid4().hex[:8]}"
    tee = TeeEmitter(KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "pipeline"))
    ids = await run_agents(settings, tee, run_id, n_per_agent=8)
    assert await asyncio.to_thread(tee.flush, 60)
    tee.close(5)
    assert len(ids) == 16
    assert await project_until_final(projector, run_id, 16) == 16

    records = tee.records
    per_traj = Counter(k.decode() for _, k, _ in records)
    rows = sql(
        projector,
        "SELECT trajectory_id, count() AS n, max(seq) AS last FROM events FINAL "
        "WHERE trajectory_id IN {ids:Array(String)} "
        "GROUP BY trajectory_id",
        ids=ids,
    )
    assert {r["trajectory_id"]: r["n"] for r in rows} == dict(per_traj)
    assert all(r["last"] == per_traj[r["trajectory_id"]] - 1 for r in rows)

    # trajectories: one row each, started and ended halves merged
    traj = sql(
        projector,
        "SELECT trajectory_id, agent_id, agent_version, task, outcome, run_id, end_seq "
        "FROM trajectories FINAL "
        "WHERE run_id = {r:String}",
        r=run_id,
    )
    started = {
        e.trajectory_id: e
        for e in map(codec().decode, (v for _, _, v in records))
        if isinstance(e, TrajectoryStarted)
    }
    assert {t["trajectory_id"] for t in traj} == set(ids)
    for t in traj:
        assert t["task"] == started[t["trajectory_id"]].task
        assert t["outcome"] in ("success", "failure")
        assert t["end_seq"] == per_traj[t["trajectory_id"]] - 1

    # tool calls: one row per call with request and completion merged
    completions = [
        e for e in map(codec().decode, (v for _, _, v in records)) if isinstance(e, ToolCallCompleted)
    ]
    calls = sql(
        projector,
        "SELECT call_id, tool, is_error, error_kind, arguments, request_seq, complete_seq "
        "FROM tool_calls FINAL "
        "WHERE trajectory_id IN {ids:Array(String)}",
        ids=ids,
    )
    assert len(calls) == len(completions)
    by_id = {c["call_id"]: c for c in calls}
    for e in completions:
        row = by_id[e.call_id]
        assert (
            row["tool"] == e.tool
            and bool(row["is_error"]) == e.is_error
            and row["error_kind"] == e.error_kind
        )
        assert row["request_seq"] is not None and row["complete_seq"] == e.seq
        assert isinstance(json.loads(row["arguments"]), dict)

    # rewards: exactly one final row per trajectory, equal to what the processor computes
    from agentlake.registry import read_registry

    expected = expected_finals(records, (await read_registry(settings)).rules)
    got = sql(
        projector,
        "SELECT trajectory_id, event_id, total, components, success, tool_sequence FROM rewards FINAL "
        "WHERE run_id = {r:String} AND is_final = 1",
        r=run_id,
    )
    assert len(got) == 16
    for g in got:
        e = expected[g["trajectory_id"]]
        assert g["event_id"] == e.event_id
        assert abs(g["total"] - e.total) < 1e-9
        assert dict(g["components"]) == e.components
        assert list(g["tool_sequence"]) == e.tool_sequence
    comps = sql(
        projector,
        "SELECT count() AS n FROM reward_components FINAL WHERE run_id = {r:String} AND is_final = 1",
        r=run_id,
    )
    assert comps[0]["n"] == sum(len(e.components) for e in expected.values())

    # the worse agent is visibly worse
    summary = sql(
        projector,
        "SELECT agent_version, avg(total) AS reward, avg(metrics['tool_calls']) AS calls FROM rewards FINAL "
        "WHERE run_id = {r:String} AND is_final = 1 GROUP BY agent_version ORDER BY agent_version",
        r=run_id,
    )
    assert [s["agent_version"] for s in summary] == ["1.0", "1.1-beta"]
    assert summary[0]["reward"] > summary[1]["reward"] and summary[0]["calls"] < summary[1]["calls"]

    # Milvus: one entry per finished trajectory, upserted by id
    index = projector.index
    assert await asyncio.to_thread(index.count, f'run_id == "{run_id}"') == 16
    some = started[ids[0]]
    hits = await asyncio.to_thread(index.nearest, some.task, 16, f'run_id == "{run_id}"')
    assert hits[0].task == some.task and hits[0].score > 0.99
    assert {h.trajectory_id for h in hits if h.task == some.task} >= {ids[0]}
    assert all(h.run_id == run_id for h in hits)
    # upsert: re-projecting the same rewards does not add entries
    await asyncio.to_thread(index.upsert, list(expected.values()))
    assert await asyncio.to_thread(index.count, f'run_id == "{run_id}"') == 16
