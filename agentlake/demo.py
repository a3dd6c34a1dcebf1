"""`agentlake demo`: the whole backbone on the embedded defaults, end to end.

Two reference agents answer a few dozen shop tasks through a real MCP server
(in memory); every step and tool call goes through Kafka; the stream worker
scores each trajectory; the sink projects into ClickHouse and Milvus; the demo
then reads the results back from both.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from mcp import Client

from agentlake.consumers import Projector
from agentlake.lake.demo import lake_demo, toolset_attributes
from agentlake.lake.entries import toolset_fingerprint
from agentlake.projections.clickhouse import agent_summary, query
from agentlake.sdk import KafkaEmitter, TracedSession, Tracer
from agentlake.settings import Settings
from agentlake.sim.reference import REFERENCE_AGENTS, SHOP_TOOLS, demo_cases, shop_server


async def run_agents(
    settings: Settings, emitter: Any, run_id: str, n_per_agent: int, progress: Any = None
) -> list[str]:
    """Run every reference agent over the same tasks; returns the trajectory ids."""
    ids: list[str] = []
    cases = demo_cases(n_per_agent)
    for (agent_id, version), agent in REFERENCE_AGENTS.items():
        tracer = Tracer(agent_id, version, tenant="demo", emitter=emitter, settings=settings)
        state: dict[str, Any] = {}
        async with Client(shop_server(state)) as client:
            for i, (task, initial) in enumerate(cases):
                state.clear()
                state.update(copy.deepcopy(initial))
                async with tracer.trajectory(
                    task,
                    run_id=run_id,
                    trial=0,
                    seed=i,
                    scenario_id=f"task-{i}",
                    attributes=toolset_attributes(SHOP_TOOLS),
                ) as t:
                    await agent(task, TracedSession(client, t, "shop"), t)
                ids.append(t.trajectory_id)
                if progress:
                    progress(1)
    return ids


async def wait_for_rewards(projector: Projector, run_id: str, expected: int, timeout: float = 180.0) -> bool:
    async def done() -> bool:
        rows = await asyncio.to_thread(
            query,
            projector.clickhouse,
            "SELECT count() AS n FROM rewards FINAL WHERE is_final = 1 AND run_id = {r:String}",
            {"r": run_id},
        )
        return int(rows[0]["n"]) >= expected

    return await projector.run_until(done, timeout=timeout)


async def project_log(settings: Settings, timeout: float = 120.0) -> bool:
    """Project what the demo's later parts logged (the lake's ``lake.cache`` events, the auth
    topics) into ClickHouse, so the dashboard and `agentlake sql` see them; True when caught up."""
    async with Projector(settings) as projector:
        return await projector.catch_up(timeout)


async def demo(settings: Settings, n_per_agent: int = 24, progress: Any = None) -> dict[str, Any]:
    run_id = f"demo-{int(time.time())}"
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir)
    t0 = time.perf_counter()
    try:
        ids = await run_agents(settings, emitter, run_id, n_per_agent, progress)
        await asyncio.to_thread(emitter.flush, 60)
    finally:
        await asyncio.to_thread(emitter.close, 10)
    produced = time.perf_counter() - t0
    async with Projector(settings) as projector:
        caught_up = await wait_for_rewards(projector, run_id, len(ids))
        summary = await asyncio.to_thread(agent_summary, projector.clickhouse, run_id=run_id)
        probe = "Refund my broken order 12 please"
        neighbors = await asyncio.to_thread(projector.index.nearest, probe, 5)
    lake = await lake_demo(settings, "demo", len(ids), toolset_fingerprint(SHOP_TOOLS))
    return {
        "run_id": run_id,
        "trajectories": len(ids),
        "events_emitted": emitter.stats.emitted,
        "seconds_agents": round(produced, 2),
        "seconds_total": round(time.perf_counter() - t0, 2),
        "caught_up": caught_up,
        "agents": summary,
        "query": probe,
        "nearest": [n.__dict__ for n in neighbors],
        "lake": lake,
    }
