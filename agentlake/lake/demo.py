"""The context lake's part of `agentlake demo`: a hit, a miss on another order id, a fused plan.

Runs after the demo's agents have gone through Kafka and the stream worker has
scored them: the lake service ingests the log (Milvus + hot tier), then asks.
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Any

from agentlake.lake.cache import LookupRequest
from agentlake.lake.entries import ATTR_TOOLSET, toolset_fingerprint
from agentlake.lake.service import LakeService
from agentlake.lake.signature import task_signature
from agentlake.settings import Settings


def toolset_attributes(tools: list[dict[str, Any]]) -> dict[str, str]:
    """TrajectoryStarted attributes that scope a trajectory's lake entry to `tools`' schemas."""
    return {ATTR_TOOLSET: toolset_fingerprint(tools)}


async def wait_for_entries(svc: LakeService, tenant: str, expected: int, timeout: float = 120.0) -> int:
    """Ingest until `tenant` holds `expected` entries (or `timeout`); returns how many it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = svc.lake.hot.tenant(tenant)
        if t is not None and len(t) >= expected:
            return len(t)
        await svc.step(200)
    t = svc.lake.hot.tenant(tenant)
    return len(t) if t is not None else 0


async def lake_demo(settings: Settings, tenant: str, expected: int, toolset: str) -> dict[str, Any]:
    """Ingest the demo's trajectories, then: a lookup that hits (a task a successful agent
    did, asked again), one that misses (the same words, another order id), a fused plan for
    a new order. Returns everything as JSON-able dicts."""
    async with LakeService(settings) as svc:
        held = await wait_for_entries(svc, tenant, expected)
        part = svc.lake.hot.tenant(tenant)
        entries = list(part.entries.values()) if part is not None else []
        demoted = svc.lake.demoted
        done = [
            e
            for e in entries
            if e.success
            and e.signature.action == "refund"
            and e.reward >= 0.7
            and (tenant, e.entry_id) not in demoted
        ]
        out: dict[str, Any] = {"entries": held, "freshness_ms": _pct(svc.stats.freshness_ms)}
        if not done:
            out["error"] = "no successful refund trajectory in the lake"
            return out
        source = max(done, key=lambda e: e.reward)
        oid = dict(source.signature.params).get("num", "1")
        other = str(int(oid) + 1 if int(oid) < 60 else int(oid) - 1)
        scope: dict[str, Any] = {"tenant": tenant, "toolset": toolset, "agent_id": source.agent_id}
        # the same task asked again hits; the same words about another order must miss
        hit = svc.lake.lookup(LookupRequest(task=source.task, **scope))
        other_task = re.sub(rf"\b{oid}\b", other, source.task, count=1)
        miss = svc.lake.lookup(LookupRequest(task=other_task, **scope))
        new_task = f"Refund order {other}, please: it arrived broken."
        plan = svc.lake.suggest_plan(LookupRequest(task=new_task, **scope))
        await svc.flush_events()
        out.update(
            {
                "toolset": toolset,
                "reproduce": reproduce_command(source.task, tenant, toolset, source.agent_id),
                "hit": hit.to_dict(),
                "miss": miss.to_dict(),
                "plan": {
                    "task": new_task,
                    "signature": task_signature(new_task).describe(),
                    **plan.to_dict(),
                },
            }
        )
        return out


def reproduce_command(task: str, tenant: str, toolset: str, agent_id: str) -> str:
    """The `agentlake lake query` line that repeats the demo's hit from a shell."""
    return (
        f"agentlake lake query {shlex.quote(task)} --tenant {tenant} --toolset {toolset} --agent {agent_id}"
    )


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    s = sorted(values)
    return {"p50": round(s[len(s) // 2], 1), "max": round(s[-1], 1)}
