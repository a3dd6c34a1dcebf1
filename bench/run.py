"""AgentLake backbone benchmark. Not a test: it measures and prints a table.

    .venv/bin/python bench/run.py [--trajectories N] [--rate 3000,10000] [--seconds 20] [--sim-trials N]

Starts its own stack in a temporary data dir (a real broker, the stream worker),
then measures:
1. SDK encode+enqueue rate (what an agent pays per event), one core.
2. SDK produce rate to Kafka: events acknowledged by the broker per second.
3. End to end at a steady load: events/s written to ClickHouse by the sink,
   produced -> row visible latency (p50/p99), reward lag, and the stream
   worker's CPU per 1k events.
4. Simulation: trials/min for a scripted agent making 5 tool calls, with every
   event flowing through Kafka to ClickHouse, and the runner's overhead per tool call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentlake import stack
from agentlake.cli import quiet_logs
from agentlake.consumers import Projector
from agentlake.projections.clickhouse import query
from agentlake.sdk import KafkaEmitter, MemoryEmitter, Tracer
from agentlake.settings import Settings

console = Console()


class NullEmitter(MemoryEmitter):
    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        pass


def one_trajectory(tracer: Tracer, i: int, run_id: str) -> int:
    """A 10-event trajectory: start, plan, 3 tool calls (request+completion), final, end."""
    with tracer.trajectory(f"refund order {i}", run_id=run_id, expected_tool_calls=3) as t:
        t.step("plan", "look the order up, then refund it")
        for j in range(3):
            with t.tool_call("shop", "get_order", {"order_id": i, "j": j}) as c:
                c.result({"order_id": i, "status": "delivered", "total": 12.5})
        t.step("final", "refunded", tokens_in=100, tokens_out=20)
        t.end("success", final_answer="refunded")
    return 10


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().split(")")[-1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def bench_sdk_encode(settings: Settings, n_traj: int) -> float:
    tracer = Tracer("bench", "1", emitter=NullEmitter(), settings=settings)
    t0 = time.perf_counter()
    events = sum(one_trajectory(tracer, i, "enc") for i in range(n_traj))
    return events / (time.perf_counter() - t0)


def bench_sdk_produce(settings: Settings, n_traj: int) -> tuple[float, float]:
    em = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "bench", max_queue=10_000_000)
    tracer = Tracer("bench", "1", emitter=em, settings=settings)
    t0 = time.perf_counter()
    events = sum(one_trajectory(tracer, i, "produce") for i in range(n_traj))
    enqueue = events / (time.perf_counter() - t0)
    assert em.flush(300)
    acked = events / (time.perf_counter() - t0)
    em.close(10)
    return enqueue, acked


async def worker_backlog(settings: Settings) -> int:
    """Events on the trajectory topics the stream worker has not consumed yet (1 while the
    group's coordinator is not there yet, e.g. right after the broker started)."""
    from aiokafka.errors import KafkaError

    from agentlake.kafka_io import group_offsets
    from agentlake.topics import STREAMS_GROUP, TRAJECTORY_TOPICS

    try:
        committed, ends = await group_offsets(
            settings,
            settings.topic(STREAMS_GROUP),
            {settings.topic(t) for t in TRAJECTORY_TOPICS},
            every_partition=True,
        )
    except KafkaError:
        return 1
    return sum(max(0, ends[tp] - committed[tp]) for tp in committed)


async def drain_worker(settings: Settings, timeout: float = 600) -> None:
    """Let the stream worker finish the backlog of earlier stages before measuring."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await worker_backlog(settings) > 0:
        await asyncio.sleep(1)


async def bench_end_to_end(settings: Settings, rate: int, seconds: float) -> dict[str, Any]:
    await drain_worker(settings)
    run_id = f"e2e-{uuid.uuid4().hex[:6]}"
    worker_pid = stack.worker_proc(settings, "streams").pid()
    assert worker_pid is not None
    projector = Projector(settings, milvus=False, group_id=f"bench-{run_id}", track_latency=True)
    await projector.start()
    await projector.catch_up(120)  # start from the end of what earlier stages produced
    projector.stats.latencies_ms.clear()
    em = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "e2e", max_queue=10_000_000)
    tracer = Tracer("bench", "1", emitter=em, settings=settings)
    cpu0 = cpu_seconds(worker_pid)
    insert_s, step_s = [0.0], [0.0]
    writer = projector._writer
    assert writer is not None
    raw_write, raw_step = writer.write, projector.step

    def timed_write(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return raw_write(*a, **kw)
        finally:
            insert_s[0] += time.perf_counter() - t

    async def timed_step(*a: Any, **kw: Any) -> int:
        t = time.perf_counter()
        try:
            return await raw_step(*a, **kw)
        finally:
            step_s[0] += time.perf_counter() - t

    writer.write = timed_write  # type: ignore[method-assign]
    projector.step = timed_step  # type: ignore[method-assign]
    proc0 = time.process_time()
    sent = 0
    stop = asyncio.Event()

    def produce() -> None:
        nonlocal sent
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < seconds:
            target = (time.perf_counter() - t0) * rate
            while sent < target:
                sent += one_trajectory(tracer, i, run_id)
                i += 1
            time.sleep(0.002)
        em.flush(120)
        stop.set()

    t0 = time.perf_counter()
    prod = asyncio.create_task(asyncio.to_thread(produce))
    written_at_stop = None
    while True:
        await projector.step(50)
        if stop.is_set() and written_at_stop is None:
            written_at_stop = len(projector.stats.latencies_ms)
        if stop.is_set() and len(projector.stats.latencies_ms) >= sent:
            break
        if time.perf_counter() - t0 > seconds + 300:
            break
    await prod
    elapsed = time.perf_counter() - t0
    lat = projector.stats.latencies_ms
    # rewards: wait until every trajectory is scored, then read the lag from ClickHouse
    n_traj = sent // 10

    def scored() -> int:
        r = query(
            projector.clickhouse,
            "SELECT count() AS n FROM rewards FINAL WHERE is_final=1 AND run_id={r:String}",
            {"r": run_id},
        )
        return int(r[0]["n"])

    deadline = time.monotonic() + 300
    while await asyncio.to_thread(scored) < n_traj and time.monotonic() < deadline:
        await projector.step(100)
    cpu = cpu_seconds(worker_pid) - cpu0
    processed_all = await worker_backlog(settings) == 0
    await projector.stop()
    em.close(5)
    return {
        "offered_rate": rate,
        "events": sent,
        "trajectories": n_traj,
        "sink_events_per_s": len(lat) / elapsed,
        "lag_p50_ms": percentile(lat, 0.50),
        "lag_p99_ms": percentile(lat, 0.99),
        "worker_cpu_ms_per_1k_events": 1000 * cpu / max(1, sent) * 1000,
        "worker_kept_up": processed_all,
        # where the sink's time goes (what limits it): ClickHouse inserts vs the rest of a batch
        "sink_share_clickhouse_insert": insert_s[0] / max(1e-9, step_s[0]),
        "sink_share_decode_and_rows": 1 - insert_s[0] / max(1e-9, step_s[0]),
        "sink_cpu_ms_per_1k_events": 1e6 * (time.process_time() - proc0) / max(1, len(lat)),
    }


SIM_SUITE = """
id: bench
trials: 1
scenarios:
  - id: five-steps
    variables: {samples: {count: 50, seed: 1, vars: {oid: {min: 1, max: 60}}}}
    task: "Check order {oid} five times and report."
    initial_state: {$generator: "agentlake.sim.reference:shop_state", args: {seed: 1}}
    criteria:
      tool_calls: {mode: superset, calls: [{tool: get_order}]}
      outcome: success
"""


async def five_step_agent(task: str, tools: Any, trajectory: Any) -> str:
    """A scripted agent: plan, five tool calls, final answer (7 steps/calls, 14 events)."""
    oid = int("".join(ch for ch in task if ch.isdigit()) or 1)
    trajectory.step("plan", "five lookups")
    for _ in range(5):
        await tools.call_tool("get_order", {"order_id": oid})
    trajectory.step("final", "done")
    trajectory.end("success", final_answer="done")
    return "done"


async def bench_simulation(settings: Settings, trials: int, concurrency: int) -> dict[str, Any]:
    """Trials/min through the whole pipeline, and the runner's overhead per tool call."""
    from mcp import Client

    from agentlake.sdk import TracedSession
    from agentlake.sim import gate as g
    from agentlake.sim.runner import AgentTarget, StagingFactory, run_suite
    from agentlake.sim.suite import expand, parse_suite

    suite = parse_suite(SIM_SUITE, "bench")
    planned = expand(suite, max(1, -(-trials // 50)))[:trials]
    em = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "sim", max_queue=10_000_000)
    tracer = Tracer("bench-agent", "1", emitter=em, settings=settings)
    target = AgentTarget("bench-agent", "1", fn=five_step_agent)
    projector = Projector(settings, milvus=False, group_id=f"bench-sim-{uuid.uuid4().hex[:6]}")
    await projector.start()
    await projector.catch_up(120)
    run_id = f"bench-sim-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    outcome = await run_suite(planned, target, tracer, run_id=run_id, concurrency=concurrency)
    ran = time.perf_counter() - t0
    em.flush(120)

    async def done() -> bool:
        return await asyncio.to_thread(g.count_scored, projector.clickhouse, run_id) >= len(outcome.results)

    await projector.run_until(done, timeout=600)
    scored = time.perf_counter() - t0
    await projector.stop()

    # overhead per tool call: the same calls bare vs through the runner's recording path
    staging = StagingFactory.default()
    n_calls = 2000
    server = staging.build("shop", {"orders": {"1": {"order_id": 1, "status": "delivered"}}}, seed=0)
    async with Client(server.server) as client:
        t1 = time.perf_counter()
        for _ in range(n_calls):
            await client.call_tool("get_order", {"order_id": 1})
        bare = time.perf_counter() - t1
        with tracer.trajectory("overhead") as t:
            traced = TracedSession(client, t, "shop")
            t1 = time.perf_counter()
            for _ in range(n_calls):
                await traced.call_tool("get_order", {"order_id": 1})
            recorded = time.perf_counter() - t1
    em.close(10)
    return {
        "sim_trials": len(outcome.results),
        "sim_trials_per_min_run": 60 * len(outcome.results) / ran,
        "sim_trials_per_min_scored": 60 * len(outcome.results) / scored,
        "mcp_call_in_memory_us": 1e6 * bare / n_calls,
        "runner_overhead_per_tool_call_us": 1e6 * (recorded - bare) / n_calls,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=20_000, help="for the SDK stages (10 events each)")
    ap.add_argument("--rate", default="3000,10000", help="offered loads, events/s (comma-separated)")
    ap.add_argument("--sim-trials", type=int, default=1000, help="trials for the simulation stage")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--worker-rate", default="1000,3000,6000,10000", help="stream-worker stage loads, events/s"
    )
    ap.add_argument("--markers", type=int, default=180_000, help="done markers for the restart stage")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    quiet_logs()
    home = Path(tempfile.mkdtemp(prefix="agentlake-bench-"))
    os.environ["AGENTLAKE_HOME"] = str(home)
    if "AGENTLAKE_KAFKA_PORT" not in os.environ:
        from tests.conftest import free_port_pair

        os.environ["AGENTLAKE_KAFKA_PORT"] = str(free_port_pair())
    os.environ["AGENTLAKE_LIVE_SCORES"] = "false"
    settings = Settings()
    console.log(f"stack in {home}")
    stack.up(settings, workers=True)
    try:
        results: dict[str, Any] = {
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
        }
        console.log("SDK encode")
        results["sdk_encode_events_per_s"] = bench_sdk_encode(settings, args.trajectories)
        console.log("SDK produce")
        enq, acked = bench_sdk_produce(settings, args.trajectories)
        results["sdk_enqueue_events_per_s"] = enq
        results["sdk_acked_events_per_s"] = acked
        for rate in [int(r) for r in str(args.rate).split(",") if r]:
            console.log(f"end to end at {rate} events/s for {args.seconds}s")
            stage = asyncio.run(bench_end_to_end(settings, rate, args.seconds))
            results.update({f"e2e@{rate}/s {k}": v for k, v in stage.items() if k != "offered_rate"})
        console.log("stream worker: CPU, reward lag per offered rate; restart")
        from bench.worker import run_stages

        worker_rates = [int(r) for r in str(args.worker_rate).split(",") if r]
        results.update(asyncio.run(run_stages(settings, worker_rates, args.seconds, args.markers)))
        console.log(f"simulation: {args.sim_trials} trials of a 5-call scripted agent")
        results.update(asyncio.run(bench_simulation(settings, args.sim_trials, 16)))
    finally:
        stack.down(settings)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    t = Table(title=f"AgentLake backbone ({results['machine']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in results.items():
        t.add_row(k, f"{v:,.1f}" if isinstance(v, float) else str(v))
    console.print(t)


if __name__ == "__main__":
    main()
