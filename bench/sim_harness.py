"""What running each agent in its own thread costs (agentlake.sim.harness). Not a test.

    .venv/bin/python bench/sim_harness.py [--trials 200] [--concurrency 8]

Runs the same trials of a 5-tool-call scripted agent against the in-memory staging
shop (no broker: events go to a MemoryEmitter) two ways, in the same process:

* ``harness``: the runner as shipped (`run_suite`): the agent in a worker thread with
  its own loop, tool calls bridged to the runner's loop, a deadline per trial.
* ``in-loop``: the agent awaited directly on the runner's loop (what the runner did
  before, and what a hand-written asyncio loop does): cheaper, but a blocking call
  stalls every trial and ``sys.exit()`` ends the process.

Prints trials/s and the extra milliseconds per trial and per tool call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp import Client
from rich.console import Console
from rich.table import Table

from agentlake.sdk import MemoryEmitter, TracedSession, Tracer
from agentlake.settings import Settings
from agentlake.sim.runner import AgentTarget, StagingFactory, run_suite
from agentlake.sim.suite import expand, parse_suite

SUITE = """
id: bench-harness
scenarios:
  - id: lookups
    variables: {grid: {oid: [1, 2, 3, 4]}}
    task: "Look order {oid} up five times"
    initial_state: {$generator: "agentlake.sim.reference:shop_state", args: {seed: 1}}
    criteria: {tool_calls: {mode: superset, calls: [{tool: get_order}]}}
"""
CALLS = 5


async def five_calls(task: str, tools: Any, trajectory: Any) -> str:
    oid = int(task.split()[2])
    for _ in range(CALLS):
        await tools.call_tool("get_order", {"order_id": oid})
    trajectory.end("success", final_answer="done")
    return "done"


async def in_loop(trials: list[Any], tracer: Tracer, concurrency: int) -> None:
    staging = StagingFactory.default()
    sem = asyncio.Semaphore(concurrency)

    async def one(tr: Any) -> None:
        async with sem:
            server = staging.build("shop", tr.state(), tr.seed)
            t = tracer.trajectory(tr.task)
            async with Client(server.server) as client:
                await five_calls(tr.task, TracedSession(client, t, "shop"), t)

    await asyncio.gather(*(one(tr) for tr in trials))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    settings = Settings(home=Path("/tmp/agentlake-bench"))  # type: ignore[call-arg]
    trials = expand(parse_suite(SUITE, "bench.yaml"), max(1, args.trials // 4))
    rows = []
    for name in ("harness", "in-loop"):
        tracer = Tracer("bench", "1", tenant="sim", emitter=MemoryEmitter(), settings=settings)
        t0 = time.perf_counter()
        if name == "harness":
            out = await run_suite(
                trials, AgentTarget("bench", "1", fn=five_calls), tracer, concurrency=args.concurrency
            )
            assert all(r.verdict.success for r in out.results)
        else:
            await in_loop(trials, tracer, args.concurrency)
        rows.append((name, time.perf_counter() - t0))
    table = Table(title=f"{len(trials)} trials x {CALLS} tool calls, concurrency {args.concurrency}")
    for col in ("runner", "seconds", "trials/s", "ms/trial", "extra ms/trial"):
        table.add_column(col, justify="right")
    base = rows[1][1] / len(trials) * 1000
    for name, secs in rows:
        per = secs / len(trials) * 1000
        table.add_row(name, f"{secs:.2f}", f"{len(trials) / secs:.0f}", f"{per:.1f}", f"{per - base:+.1f}")
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
