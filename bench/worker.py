"""Stream-worker stages of the benchmark (imported by bench/run.py, or run alone).

    .venv/bin/python bench/worker.py [--rate 1000,3000,6000,10000] [--seconds 15] [--markers 180000]
    .venv/bin/python bench/worker.py --in-process   # CPU-only stages, no broker

- In-process (no broker, no faust): `Engine.process` + `tick` CPU per 1k events
  over interleaved 10-event trajectories, and the checkpoint size of one open
  trajectory after 100, 10k and 100k events.

- At each offered rate: the worker's CPU per 1k events (from /proc), and the
  reward lag, p50/p99: the broker timestamp of each final reward minus its
  trajectory's ``TrajectoryEnded`` time (the reward's own ``ts_us`` *is* that
  time now, so the lag is read off the rewards topic, not ClickHouse).
- Restart: the checkpoint topic is filled with what an hour of history at
  3,000 events/s leaves in it (done markers of the last `done_retention_s`,
  i.e. 10 minutes x 300 trajectories/s = 180k, plus the open trajectories),
  the worker is killed with SIGKILL, a probe trajectory is emitted, and the
  time from the restart to the probe's final reward is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentlake import stack
from agentlake.sdk import KafkaEmitter, Tracer
from agentlake.settings import Settings
from agentlake.topics import REWARDS, STREAM_CHECKPOINTS


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().split(")")[-1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))] if ys else float("nan")


def one_trajectory(tracer: Tracer, i: int, run_id: str) -> int:
    """10 events: start, plan, 3 tool calls (request + completion), final, end."""
    with tracer.trajectory(f"refund order {i}", run_id=run_id, expected_tool_calls=3) as t:
        t.step("plan", "look the order up, then refund it")
        for j in range(3):
            with t.tool_call("shop", "get_order", {"order_id": i, "j": j}) as c:
                c.result({"order_id": i, "status": "delivered", "total": 12.5})
        t.step("final", "refunded", tokens_in=100, tokens_out=20)
        t.end("success", final_answer="refunded")
    return 10


class RewardWatch:
    """Consumes the rewards topic from its end; per run id, the lag of each final reward."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lags_ms: dict[str, list[float]] = {}
        self.firsts: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._task: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from agentlake.kafka_io import partitions

        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers, group_id=None)
        await self.consumer.start()
        parts = await partitions(self.consumer, [self.settings.topic(REWARDS)])
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        for tp in parts:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from agentlake.schemas import codec

        c = codec()
        while not self._stop.is_set():
            for msgs in (await self.consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    _, r = c.decode_dict(m.value)
                    if r["is_final"] and r.get("run_id"):
                        self.lags_ms.setdefault(r["run_id"], []).append(m.timestamp - r["ts_us"] / 1000)
                        self.firsts.setdefault(r["run_id"], time.monotonic())

    async def wait(self, run_id: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.lags_ms.get(run_id, [])) >= n:
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        await self.consumer.stop()


async def backlog(settings: Settings) -> int:
    from agentlake.kafka_io import group_offsets
    from agentlake.topics import STREAMS_GROUP, TRAJECTORY_TOPICS

    committed, ends = await group_offsets(
        settings, settings.topic(STREAMS_GROUP), {settings.topic(t) for t in TRAJECTORY_TOPICS}
    )
    return sum(max(0, ends[tp] - committed[tp]) for tp in committed)


async def drain(settings: Settings, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await backlog(settings) == 0:
                return
        except Exception:  # e.g. the group's coordinator is not elected yet on a fresh broker
            pass
        await asyncio.sleep(1)


async def bench_rate(settings: Settings, rate: int, seconds: float) -> dict[str, Any]:
    """Offer `rate` events/s for `seconds`; worker CPU per 1k events and reward lag."""
    await drain(settings)
    pid = stack.worker_proc(settings, "streams").pid()
    assert pid is not None
    watch = RewardWatch(settings)
    await watch.start()
    run_id = f"w{rate}-{uuid.uuid4().hex[:6]}"
    em = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / run_id, max_queue=10_000_000)
    tracer = Tracer("bench", "1", emitter=em, settings=settings)
    sent = 0
    done = threading.Event()

    def produce() -> None:
        nonlocal sent
        t0, i = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            while sent < (time.perf_counter() - t0) * rate:
                sent += one_trajectory(tracer, i, run_id)
                i += 1
            time.sleep(0.002)
        em.flush(120)
        done.set()

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    await asyncio.to_thread(done.wait)
    offered = sent / (time.perf_counter() - t0)
    ok = await watch.wait(run_id, sent // 10, timeout=600)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    lags = watch.lags_ms.get(run_id, [])
    await watch.stop()
    producer.join()
    em.close(5)
    return {
        "offered_events_per_s": offered,
        "events": sent,
        "all_scored": ok,
        "worker_cpu_ms_per_1k_events": 1e6 * cpu / max(1, sent),
        "reward_lag_p50_ms": percentile(lags, 0.5),
        "reward_lag_p99_ms": percentile(lags, 0.99),
        "scored_events_per_s": sent / elapsed,
    }


async def fill_checkpoints(settings: Settings, markers: int, open_trajectories: int) -> float:
    """Write what an hour of history leaves in the checkpoint topic; returns seconds taken."""
    from aiokafka import AIOKafkaProducer

    from agentlake.streams import state
    from agentlake.streams.fold import digest
    from agentlake.streams.processor import RewardProcessor, TrajState
    from tests.unit.test_processor import record_trajectory

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=20)
    await producer.start()
    topic, parts = settings.topic(STREAM_CHECKPOINTS), settings.topic_partitions
    now_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    proc = RewardProcessor(live_scores=False)
    recs = record_trajectory()[:5]
    digests = b"".join(digest(f"{q:032x}") for q in range(10))
    try:
        futs = []
        for i in range(markers):
            tid = f"hist-{i:08d}"
            futs.append(
                await producer.send(
                    topic,
                    state.encode_done(tid, 9, now_ms, digests),  # 10 scored seqs
                    key=tid.encode(),
                    partition=i % parts,
                )
            )
        for i in range(open_trajectories):
            st: TrajState | None = None
            for t, k, v in recs:
                st = proc.process(st, t, k, v).state
            assert st is not None
            st.tid = f"open-{i:06d}"
            futs.append(
                await producer.send(
                    topic, state.encode_open(st, now_ms), key=st.tid.encode(), partition=i % parts
                )
            )
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def bench_restart(settings: Settings, markers: int, open_trajectories: int) -> dict[str, Any]:
    """kill -9 the worker, emit a probe, restart: time until the probe's final reward."""
    await drain(settings)
    fill_s = await fill_checkpoints(settings, markers, open_trajectories)
    worker = stack.worker_proc(settings, "streams")
    pid = worker.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    while worker.pid() is not None:
        await asyncio.sleep(0.05)
    watch = RewardWatch(settings)
    await watch.start()
    run_id = f"restart-{uuid.uuid4().hex[:6]}"
    em = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / run_id)
    tracer = Tracer("bench", "1", emitter=em, settings=settings)
    probes = 40  # on every partition
    for i in range(probes):
        one_trajectory(tracer, i, run_id)
    em.flush(60)
    em.close(5)
    t0 = time.monotonic()
    stack.start_worker(settings, "streams")
    ok = await watch.wait(run_id, probes, timeout=300)
    caught_up = time.monotonic() - t0
    await watch.stop()
    return {
        "checkpoint_records": markers + open_trajectories,
        "checkpoint_fill_s": fill_s,
        "restart_to_caught_up_s": caught_up if ok else float("nan"),
    }


def synthetic_stream(trajectories: int, interleave: int = 50) -> list[tuple[str, bytes, bytes]]:
    """`trajectories` 10-event trajectories, `interleave` of them open at a time (round-robin)."""
    from agentlake.sdk import MemoryEmitter

    settings = Settings()
    out: list[tuple[str, bytes, bytes]] = []
    for base in range(0, trajectories, interleave):
        per: list[list[tuple[str, bytes, bytes]]] = []
        for i in range(base, min(trajectories, base + interleave)):
            em = MemoryEmitter()
            one_trajectory(Tracer("bench", "1", emitter=em, settings=settings), i, "in-process")
            per.append(em.records)
        for j in range(max(len(r) for r in per)):
            out.extend(r[j] for r in per if j < len(r))
    return out


def long_trajectory(events: int) -> list[tuple[str, bytes, bytes]]:
    """One open trajectory of about `events` events: a start, then (step, tool call) rounds; no end."""
    from agentlake.sdk import MemoryEmitter

    em = MemoryEmitter()
    tracer = Tracer("bench", "1", emitter=em, settings=Settings())
    t = tracer.trajectory("a very long task", run_id="long").__enter__()
    i = 0
    while len(em.records) < events:
        t.step("thought", f"step {i}", tokens_in=10, tokens_out=2)
        with t.tool_call("shop", "get_order", {"order_id": i % 50}) as c:
            c.result({"order_id": i % 50})
        i += 1
    return em.records[:events]


def stage_in_process(
    trajectories: int = 3000, sizes: tuple[int, ...] = (100, 10_000, 100_000)
) -> dict[str, Any]:
    """CPU of the fold, rewards and checkpoints without Kafka or faust; checkpoint bytes vs length."""
    from agentlake.streams import state
    from agentlake.streams.engine import Engine
    from agentlake.streams.processor import RewardProcessor

    out: dict[str, Any] = {}
    recs = synthetic_stream(trajectories)
    clock = [0.0]
    eng = Engine(RewardProcessor(live_scores=True), "ckpt", clock=lambda: clock[0])
    offsets: dict[str, int] = {}
    numbered = []
    for t, k, v in recs:
        offsets[t] = offsets.get(t, -1) + 1
        numbered.append(((t, 0), offsets[t], k, v))
    batch = 500
    c0 = time.process_time()
    for b in range(0, len(numbered), batch):
        eng.process(numbered[b : b + batch])
        clock[0] += 0.1
        eng.tick()
    cpu = time.process_time() - c0
    out["in-process cpu_ms_per_1k_events"] = 1e6 * cpu / len(recs)
    out["in-process finals"] = eng.stats.finals
    out["in-process dead letters"] = eng.stats.dead_letters
    for n in sizes:
        long = long_trajectory(n)
        proc = RewardProcessor(live_scores=False)
        st = None
        c0 = time.process_time()
        for i, (t, k, v) in enumerate(long):
            st = proc.process(st, t, k, v, f"0:{i}").state
        cpu = time.process_time() - c0
        assert st is not None
        c0 = time.process_time()
        value = state.encode_open(st, 0)
        encode_ms = 1000 * (time.process_time() - c0)
        c0 = time.process_time()
        proc.live(st)
        live_ms = 1000 * (time.process_time() - c0)
        out[f"checkpoint_bytes@{n}_events"] = len(value)
        out[f"checkpoint encode ms@{n}_events"] = encode_ms
        out[f"live score ms@{n}_events"] = live_ms
        out[f"long trajectory cpu_ms_per_1k_events@{n}"] = 1e6 * cpu / n
    return out


async def run_stages(settings: Settings, rates: list[int], seconds: float, markers: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in rates:
        for k, v in (await bench_rate(settings, rate, seconds)).items():
            out[f"worker@{rate}/s {k}"] = v
            print(f"worker@{rate}/s {k}: {v}", flush=True)
    for k, v in (await bench_restart(settings, markers, 2000)).items():
        out[f"restart {k}"] = v
        print(f"restart {k}: {v}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", default="1000,3000,6000,10000")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--markers", type=int, default=180_000, help="done markers in the checkpoint topic")
    ap.add_argument("--in-process", action="store_true", help="only the CPU-only stages (no broker)")
    args = ap.parse_args()
    if args.in_process:
        for k, v in stage_in_process().items():
            print(f"{k:60s} {v:,.1f}" if isinstance(v, float) else f"{k:60s} {v}", flush=True)
        return
    from agentlake.cli import quiet_logs

    quiet_logs()
    home = Path(tempfile.mkdtemp(prefix="agentlake-bench-worker-"))
    os.environ["AGENTLAKE_HOME"] = str(home)
    if "AGENTLAKE_KAFKA_PORT" not in os.environ:
        from tests.conftest import free_port_pair

        os.environ["AGENTLAKE_KAFKA_PORT"] = str(free_port_pair())
    os.environ["AGENTLAKE_LIVE_SCORES"] = "false"
    settings = Settings()
    stack.up(settings, workers=True)
    try:
        results = asyncio.run(
            run_stages(settings, [int(r) for r in args.rate.split(",") if r], args.seconds, args.markers)
        )
    finally:
        stack.down(settings)
    for k, v in results.items():
        print(f"{k:60s} {v:,.1f}" if isinstance(v, float) else f"{k:60s} {v}")


if __name__ == "__main__":
    main()
