"""A real 3-broker KRaft cluster: replicated topics, and a partition leader killed mid-stream.

The cluster's defaults are `default.replication.factor=3`, `min.insync.replicas=2`;
`agentlake up` must create every topic (faust's own included) with 3 copies and
min ISR 2. An agent emits at a steady rate through the SDK while the stream
worker scores and the sink projects; the leader of `agent.steps` partition 0 is
killed with SIGKILL. Afterwards every event is in the log and projected exactly
once, and every trajectory has exactly one final reward. The SDK's stall (the
longest time without an acknowledgement while events were pending) and the
reward delay are printed: they are measurements, not assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentlake import stack
from agentlake.kafka_io import read_to_end
from agentlake.schemas import RewardScored, TrajectoryEnded, codec
from agentlake.sdk import KafkaEmitter, Tracer
from agentlake.settings import Settings
from agentlake.topic_admin import describe, wanted_topics
from agentlake.topics import REWARDS, STEPS, TRAJECTORY_TOPICS
from tests.conftest import require
from tests.integration.helpers import TeeEmitter
from tests.integration.kraft_cluster import KRaftCluster
from tests.integration.test_pipeline import expected_finals

RATE = 15  # trajectories per second (7 events each)
BEFORE_KILL_S = 6.0
AFTER_KILL_S = 16.0


class AckSampler(threading.Thread):
    """Samples the emitter's acknowledged count; the stall is the longest flat stretch with events pending."""

    def __init__(self, em: KafkaEmitter) -> None:
        super().__init__(daemon=True)
        self.em = em
        self.samples: list[tuple[float, int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), self.em.stats.acked, self.em.pending()))
            time.sleep(0.05)

    def longest_stall(self) -> tuple[float, float]:
        """(seconds, start time) of the longest stretch where acks did not advance while events waited."""
        best, best_start = 0.0, 0.0
        start: float | None = None
        last_acked = -1
        for t, acked, pending in self.samples:
            if acked != last_acked or pending == 0:
                start, last_acked = (t if pending else None), acked
                continue
            if start is not None and t - start > best:
                best, best_start = t - start, start
        return best, best_start


def emit_steadily(tracer: Tracer, stop: threading.Event, emit_times: list[float]) -> list[str]:
    ids = []
    i = 0
    t0 = time.monotonic()
    while not stop.is_set():
        t = time.perf_counter()
        with tracer.trajectory(f"order question {i}", run_id="failover", expected_tool_calls=2) as tr:
            tr.step("plan", "look the order up")
            for j in range(2):
                with tr.tool_call("shop", "get_order", {"order_id": j}) as c:
                    c.result({"order_id": j, "status": "shipped"})
            tr.step("final", "it shipped")
            tr.end("success", final_answer="shipped")
        emit_times.append(time.perf_counter() - t)
        ids.append(tr.trajectory_id)
        i += 1
        time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
    return ids


class _Once(threading.Event):
    """A stop flag that is set after the first trajectory."""

    def is_set(self) -> bool:
        was = super().is_set()
        self.set()
        return was


async def final_rewards(s: Settings, expected: int, timeout: float) -> dict[str, set[str]]:
    """Final reward event ids per trajectory, polled until `expected` trajectories have one."""
    finals: dict[str, set[str]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finals = {}
        for m in await read_to_end(s, [s.topic(REWARDS)], timeout=30):
            ev = codec().decode(m.value)
            if isinstance(ev, RewardScored) and ev.is_final:
                finals.setdefault(ev.trajectory_id, set()).add(ev.event_id)
        if len(finals) >= expected:
            break
        await asyncio.sleep(1)
    return finals


def cli(*args: str, timeout: float = 180) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "agentlake", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    return json.loads(r.stdout)


@pytest.fixture
def kraft(tmp_path: Path) -> Any:
    require(shutil.which("java") is not None, "java is not installed: no Kafka cluster")
    libs = Settings().cache_dir / "kafka" / Settings().kafka_version / "libs"
    require(libs.exists() or shutil.which("mvn") is not None, "no Kafka jars and no mvn to fetch them")
    cluster = KRaftCluster(tmp_path / "kraft")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_partition_leader_killed_mid_stream_loses_and_duplicates_nothing(
    kraft: KRaftCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the workers are subprocesses: they read the same environment
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kraft.bootstrap)
    monkeypatch.setenv("AGENTLAKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENTLAKE_TOPIC_MIN_INSYNC_REPLICAS", "2")
    monkeypatch.setenv("AGENTLAKE_TOPIC_PARTITIONS", "4")
    monkeypatch.setenv("AGENTLAKE_SINK_BATCH_MS", "100")
    for var in ("AGENTLAKE_TOPIC_PREFIX", "AGENTLAKE_TOPIC_REPLICATION_FACTOR"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    sink: subprocess.Popen[bytes] | None = None
    try:
        info = await asyncio.to_thread(stack.up, s, workers=True)
        assert info["replication_factor"] == 3  # the cluster's default, not 1
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
        await admin.start()
        try:
            topics = await describe(admin, [w.name for w in wanted_topics(s)])
        finally:
            await admin.close()
        assert len(topics) == len(wanted_topics(s))
        assert {(t.replication, t.min_insync_replicas) for t in topics.values()} == {(3, 2)}
        for w in wanted_topics(s):
            assert (topics[w.name].cleanup_policy == "compact") == w.compacted, w.name

        log = open(tmp_path / "sink.log", "ab")  # noqa: SIM115
        sink = subprocess.Popen(
            [sys.executable, "-m", "agentlake", "worker", "sink", "--no-milvus"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ,
            start_new_session=True,
        )

        em = KafkaEmitter(s.bootstrap_servers, s.spill_dir / "failover")
        tee = TeeEmitter(em)
        tracer = Tracer("bot", "1.0", emitter=tee, settings=s)
        # warm up: measure from a worker that scores, not from one still joining its group
        warm = emit_steadily(tracer, _Once(), [])
        assert await asyncio.to_thread(em.flush, 60)
        assert set(await final_rewards(s, len(warm), timeout=90)) == set(warm)
        sampler = AckSampler(em)
        sampler.start()
        stop, emit_times = threading.Event(), []
        emitting = asyncio.create_task(asyncio.to_thread(emit_steadily, tracer, stop, emit_times))
        await asyncio.sleep(BEFORE_KILL_S)
        victim = await kraft.leader(s.topic(STEPS), 0)
        killed_at, killed_wall = time.monotonic(), time.time()
        kraft.kill(victim)
        await asyncio.sleep(AFTER_KILL_S)
        stop.set()
        ids = await emitting
        assert await asyncio.to_thread(em.flush, 120), f"{em.pending()} events still pending"
        sampler.done.set()
        em.close(5)
        stall, stall_start = sampler.longest_stall()

        # every trajectory gets its final reward on the surviving brokers
        ids = warm + ids
        finals = await final_rewards(s, len(ids), timeout=150)
        assert set(finals) == set(ids), f"{len(set(ids) - set(finals))} trajectories without a final reward"
        assert all(len(e) == 1 for e in finals.values())  # re-emits carry the same id

        # nothing lost: every emitted event is in the log; duplicates only from a re-send
        emitted = Counter(codec().decode(v).event_id for _, _, v in tee.records)
        logged = Counter(
            codec().decode(m.value).event_id
            for m in await read_to_end(s, [s.topic(t) for t in TRAJECTORY_TOPICS], timeout=60)
        )
        assert set(logged) == set(emitted)
        log_duplicates = sum(n - 1 for n in logged.values())
        if em.stats.resent == 0 and em.stats.send_errors == 0:
            assert log_duplicates == 0

        # the rewards are the ones a single in-process fold computes from the same events
        want = expected_finals(tee.records)
        got = {}
        delays: dict[bool, list[float]] = {False: [], True: []}  # by: ended after the kill?
        ended = {
            e.trajectory_id: e.ts_us
            for e in (codec().decode(v) for _, _, v in tee.records)
            if isinstance(e, TrajectoryEnded)
        }
        for m in await read_to_end(s, [s.topic(REWARDS)], timeout=30):
            ev = codec().decode(m.value)
            if isinstance(ev, RewardScored) and ev.is_final and ev.trajectory_id not in got:
                got[ev.trajectory_id] = ev
                end_us = ended[ev.trajectory_id]
                delays[end_us / 1e6 >= killed_wall].append((m.timestamp * 1000 - end_us) / 1e6)
        assert {t: (r.total, r.components) for t, r in got.items()} == {
            t: (r.total, r.components) for t, r in want.items()
        }

        # nothing duplicated in the projections: one row per event, one final reward per trajectory
        sink.send_signal(signal.SIGTERM)
        sink.wait(30)
        sink = None
        rows = cli(
            "sql",
            "--catch-up",
            "--json",
            "SELECT (SELECT count() FROM events FINAL WHERE trajectory_id IN "
            f"({','.join(repr(i) for i in ids)})) AS events, "
            "(SELECT count() FROM rewards FINAL WHERE is_final = 1) AS finals",
        )
        assert rows == [{"events": sum(emitted.values()), "finals": len(ids)}]

        before, after = (statistics.quantiles(delays[k], n=100) for k in (False, True))
        report = {
            "trajectories": len(ids),
            "events": sum(emitted.values()),
            "killed_node": victim,
            "sdk_longest_stall_s": round(stall, 2),
            "stall_began_after_kill_s": round(stall_start - killed_at, 2),
            "emit_max_ms_per_trajectory": round(max(emit_times) * 1000, 2),
            "sdk_spilled": em.stats.spilled,
            "sdk_resent": em.stats.resent,
            "sdk_send_errors": em.stats.send_errors,
            "log_duplicates": log_duplicates,
            "reward_delay_before_kill_p50_p99_s": [round(before[49], 2), round(before[98], 2)],
            "reward_delay_after_kill_p50_p99_max_s": [
                round(after[49], 2),
                round(after[98], 2),
                round(max(delays[True]), 2),
            ],
        }
        print("\nfailover:", json.dumps(report))
        (tmp_path.parent / "failover-report.json").write_text(json.dumps(report))
    finally:
        if sink is not None:
            sink.kill()
            sink.wait(10)
        await asyncio.to_thread(stack.down, s)
