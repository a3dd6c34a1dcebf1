"""Faults: a killed worker, a broker outage, a crashed sink, malformed events."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from aiokafka import AIOKafkaProducer

from agentlake import stack
from agentlake.cli import read_dead_letters
from agentlake.consumers import Projector
from agentlake.sdk import KafkaEmitter, Tracer
from agentlake.settings import Settings
from tests.integration.helpers import count_final, project_until_final, sql


def emit_trajectories(tracer: Tracer, run_id: str, n: int, calls: int = 3, pause: float = 0.0) -> list[str]:
    ids = []
    for i in range(n):
        with tracer.trajectory(f"task {i} of {run_id}", run_id=run_id, expected_tool_calls=calls) as t:
            t.step("plan", "go")
            for j in range(calls):
                with t.tool_call("shop", "get_order", {"order_id": j}) as c:
                    c.result({"order_id": j})
            t.step("final", "done")
            t.end("success")
        ids.append(t.trajectory_id)
        if pause:
            time.sleep(pause)
    return ids


def diagnose(p: Projector, run_id: str, ids: list[str]) -> str:
    """For a failed assertion: what the projections hold for the unscored trajectories."""
    done = {
        r["trajectory_id"]
        for r in sql(
            p, "SELECT trajectory_id FROM rewards FINAL WHERE run_id = {r:String} AND is_final = 1", r=run_id
        )
    }
    missing = [t for t in ids if t not in done][:5]
    rows = sql(
        p,
        "SELECT trajectory_id, count() AS events, groupArray(seq) AS seqs FROM events FINAL "
        "WHERE trajectory_id IN {ids:Array(String)} GROUP BY trajectory_id",
        ids=missing,
    )
    live = sql(
        p,
        "SELECT trajectory_id, max(version) AS v FROM rewards WHERE trajectory_id IN {ids:Array(String)} "
        "GROUP BY trajectory_id",
        ids=missing,
    )
    return f"unscored {len(ids) - len(done)}: events {rows}; live rewards {live}"


def assert_exactly_once(p: Projector, run_id: str, ids: list[str], events_per_trajectory: int) -> None:
    rows = sql(
        p,
        "SELECT e.trajectory_id AS t, count() AS n, uniqExact(e.seq) AS u FROM events AS e FINAL "
        "WHERE e.trajectory_id IN {ids:Array(String)} GROUP BY t",
        ids=ids,
    )
    assert len(rows) == len(ids)
    assert all(r["n"] == events_per_trajectory == r["u"] for r in rows), rows[:3]
    finals = sql(
        p,
        "SELECT trajectory_id, count() AS n FROM rewards FINAL WHERE run_id = {r:String} AND is_final = 1 "
        "GROUP BY trajectory_id",
        r=run_id,
    )
    assert len(finals) == len(ids) and all(f["n"] == 1 for f in finals)
    # re-deliveries after the crash re-sent the *same* reward event, never a second one
    ids_per_traj = sql(
        p,
        "SELECT trajectory_id, uniqExact(event_id) AS u FROM rewards "
        "WHERE run_id = {r:String} AND is_final = 1 "
        "GROUP BY trajectory_id HAVING u > 1",
        r=run_id,
    )
    assert ids_per_traj == []


async def test_kill_9_the_worker_mid_stream_and_restart(settings: Settings, projector: Projector) -> None:
    run_id = f"kill-{uuid.uuid4().hex[:8]}"
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "kill")
    tracer = Tracer("bot", "1.0", emitter=emitter, settings=settings)
    n = 150
    task = asyncio.create_task(asyncio.to_thread(emit_trajectories, tracer, run_id, n, 3, 0.01))
    worker = stack.worker_proc(settings, "streams")
    # let the worker score part of the stream, then kill it without warning
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await projector.step(100)
        if await asyncio.to_thread(count_final, projector, run_id) >= 20:
            break
    pid = worker.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    while worker.pid() is not None:
        await asyncio.sleep(0.1)
    ids = await task
    assert await asyncio.to_thread(emitter.flush, 60)
    emitter.close(5)
    assert stack.process_state(worker) == "crashed"  # its pid file outlived it
    info = await asyncio.to_thread(stack.up, settings)  # `agentlake up` restarts it, and says so
    assert info["streams_crashed_log"] == str(worker.log_file) and info["streams_pid"] == worker.pid()
    scored = await project_until_final(projector, run_id, n, timeout=180)
    assert scored == n, diagnose(projector, run_id, ids)
    await projector.catch_up(30)
    assert_exactly_once(projector, run_id, ids, events_per_trajectory=1 + 1 + 3 * 2 + 1 + 1)


async def test_broker_down_while_the_agent_emits_loses_nothing(
    settings: Settings, projector: Projector
) -> None:
    if not settings.embedded_kafka:
        return  # an external cluster is not ours to stop
    run_id = f"outage-{uuid.uuid4().hex[:8]}"
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "outage", request_timeout_ms=3000)
    tracer = Tracer("bot", "1.0", emitter=emitter, settings=settings)
    ids = emit_trajectories(tracer, run_id, 20)
    assert await asyncio.to_thread(emitter.flush, 30)
    broker = stack.broker_proc(settings)
    assert broker.stop(timeout=60)
    # the agent keeps working while the broker is gone; emit() never blocks
    t0 = time.perf_counter()
    ids += emit_trajectories(tracer, run_id, 30)
    emit_seconds = time.perf_counter() - t0
    assert not await asyncio.to_thread(emitter.flush, 2)
    await asyncio.to_thread(stack.start_broker, settings)
    assert await asyncio.to_thread(emitter.flush, 120), f"pending {emitter.pending()}"
    emitter.close(5)
    # (whether they waited in the producer's retries or in the spill buffer depends on
    # timing; the spill path itself is covered without a broker in tests/unit/test_sdk.py)
    assert emitter.stats.acked + emitter.stats.resent >= emitter.stats.emitted
    assert await project_until_final(projector, run_id, 50, timeout=240) == 50
    await projector.catch_up(30)
    assert_exactly_once(projector, run_id, ids, events_per_trajectory=10)
    assert emit_seconds < 30  # sanity: emitting did not wait for the broker's return


async def test_a_sink_crash_before_commit_writes_no_duplicate(
    settings: Settings, projector: Projector
) -> None:
    run_id = f"sink-{uuid.uuid4().hex[:8]}"
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "sink")
    ids = emit_trajectories(Tracer("bot", "1.0", emitter=emitter, settings=settings), run_id, 10)
    assert await asyncio.to_thread(emitter.flush, 30)
    emitter.close(5)
    await asyncio.sleep(2)
    # a second sink in another consumer group writes, then dies before committing
    crashing = Projector(settings, milvus=False, group_id=f"crash-{run_id}")
    await crashing.start()

    async def die() -> None:
        raise RuntimeError("crash before commit")

    crashing._consumer.commit = die  # type: ignore[union-attr]
    for _ in range(20):
        try:
            await crashing.step(500)
        except RuntimeError:
            break
    await crashing.stop()
    # the regular sink re-delivers and re-writes the same events
    assert await project_until_final(projector, run_id, 10) == 10
    await projector.catch_up(30)
    assert_exactly_once(projector, run_id, ids, events_per_trajectory=10)


async def test_malformed_events_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    settings: Settings, projector: Projector
) -> None:
    run_id = f"dlq-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("agent.steps"), b"not avro " + marker, key=b"traj-x")
        await producer.send_and_wait(
            settings.topic("rewards.scored"), b"\xc3\x01garbage " + marker, key=b"traj-y"
        )
    finally:
        await producer.stop()
    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "dlq")
    ids = emit_trajectories(Tracer("bot", "1.0", emitter=emitter, settings=settings), run_id, 5)
    assert await asyncio.to_thread(emitter.flush, 30)
    emitter.close(5)
    assert await project_until_final(projector, run_id, 5) == 5  # the stream went on

    async def find(topic: str) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for row in await read_dead_letters(settings, topic, 1000, timeout=3):
                if marker.decode() in row["value"]:
                    return row
            await asyncio.sleep(1)
        raise AssertionError(f"no dead letter in {topic}")

    steps_dl = await find("agent.steps.dlq")
    assert steps_dl["reason"] == "bad_magic" and steps_dl["source_topic"] == settings.topic("agent.steps")
    rewards_dl = await find("rewards.scored.dlq")
    assert rewards_dl["reason"] == "unknown_fingerprint"
    assert ids


async def test_the_sink_scores_trajectories_whose_worker_state_was_lost(
    settings: Settings, projector: Projector
) -> None:
    """A trajectory whose events reached ClickHouse but which the worker never scored
    (as if its state were lost) gets its final reward from the sink's reconciler."""
    from agentlake.projections.clickhouse import ClickHouseWriter
    from agentlake.schemas import codec
    from agentlake.sdk import MemoryEmitter
    from agentlake.streams.processor import RewardProcessor

    run_id = f"lost-{uuid.uuid4().hex[:8]}"
    em = MemoryEmitter()
    [tid] = emit_trajectories(Tracer("bot", "1.0", emitter=em, settings=settings), run_id, 1)
    # backdate it past the reconciler's grace period, and write it to ClickHouse only
    c = codec()
    old = [c.decode(v) for _, _, v in em.records]
    old = [e.model_copy(update={"ts_us": e.ts_us - 3_600_000_000}) for e in old]
    ClickHouseWriter(projector.clickhouse).write(
        [(e, settings.topic(e.topic), 0, i) for i, e in enumerate(old)], f"lost-{run_id}"
    )
    assert count_final(projector, run_id) == 0
    projector._last_reconcile = 0.0  # due now
    assert await project_until_final(projector, run_id, 1, timeout=150) == 1
    expected = None
    proc, state = RewardProcessor(live_scores=False), None
    for e in old:
        res = proc.process(state, e.topic, e.trajectory_id.encode(), c.encode(e))
        state = res.state if res.changed else state
        expected = next((o for o in res.outputs if o.topic == "rewards.scored"), expected)
    assert expected is not None
    [row] = sql(projector, "SELECT event_id FROM rewards FINAL WHERE trajectory_id = {t:String}", t=tid)
    assert row["event_id"] == c.decode(expected.value).event_id  # the id the worker would have used
    assert projector.stats.reconciled >= 1
