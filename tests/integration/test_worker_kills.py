"""The stream worker killed with SIGKILL at random points, again and again: nothing lost, nothing
double-counted, every final reward byte-identical to a fold of the log, and the sink's reconciler
(an alarm) finds nothing to repair."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import uuid
from typing import Any

from agentlake import stack
from agentlake.consumers import Projector
from agentlake.consumers.sink import reconciled_count
from agentlake.schemas import RewardScored, codec
from agentlake.sdk import KafkaEmitter, Tracer
from agentlake.settings import Settings
from agentlake.streams.processor import RewardProcessor
from tests.integration.helpers import TeeEmitter, project_until_final, sql

EVENTS_PER_TRAJECTORY = 10  # start, plan, 3 x (request, completion), final, end


class Agents:
    """Agent threads emitting trajectories whose steps are spread over time, so that many
    trajectories are open (and partly checkpointed) whenever the worker dies."""

    def __init__(self, settings: Settings, run_id: str, threads: int, pause: float, seed: int) -> None:
        self.tee = TeeEmitter(KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / run_id))
        self.tracer = Tracer("bot", "1.0", emitter=self.tee, settings=settings)
        self.run_id, self.pause = run_id, pause
        self.ids: list[str] = []
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._agent, args=(seed + i,)) for i in range(threads)]
        self._lock = threading.Lock()

    def _agent(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            with self.tracer.trajectory(
                f"task of {self.run_id}", run_id=self.run_id, expected_tool_calls=3
            ) as t:
                t.step("plan", "go")
                for j in range(3):
                    time.sleep(rng.uniform(0, self.pause))
                    with t.tool_call("shop", "get_order", {"order_id": j}) as c:
                        c.result({"order_id": j})
                t.step("final", "done", tokens_in=10, tokens_out=3)
                t.end("success", final_answer="done")
            with self._lock:
                self.ids.append(t.trajectory_id)

    def __enter__(self) -> Agents:
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for th in self._threads:
            th.join()
        assert self.tee.flush(60)
        self.tee.close(5)


def expected_finals(records: list[tuple[str, bytes, bytes]]) -> dict[str, bytes]:
    """The final reward bytes a fold of the log gives, computed here with the worker's processor."""
    proc = RewardProcessor(live_scores=False)
    states: dict[bytes, Any] = {}
    out: dict[str, bytes] = {}
    for topic, key, value in records:
        res = proc.process(states.get(key), topic, key, value)
        if res.changed:
            states[key] = res.state
        for o in res.outputs:
            if o.topic == "rewards.scored" and o.value:
                out[key.decode()] = o.value
    return out


async def project_in_background(p: Projector, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await p.step(100)


def kill_9(proc: stack.Proc) -> None:
    pid = proc.pid()
    if pid is not None:
        os.killpg(pid, signal.SIGKILL)
    while proc.pid() is not None:
        time.sleep(0.05)


def assert_scored_once_as_the_log_says(p: Projector, run_id: str, agents: Agents) -> None:
    ids = agents.ids
    rows = sql(
        p,
        "SELECT trajectory_id AS t, count() AS n FROM events FINAL "
        "WHERE trajectory_id IN {ids:Array(String)} GROUP BY t",
        ids=ids,
    )
    assert len(rows) == len(ids) and all(r["n"] == EVENTS_PER_TRAJECTORY for r in rows), rows[:3]
    finals = sql(
        p,
        "SELECT trajectory_id, event_id, total, version, scored_at FROM rewards FINAL "
        "WHERE run_id = {r:String} AND is_final = 1",
        r=run_id,
    )
    assert sorted(f["trajectory_id"] for f in finals) == sorted(ids)
    # a re-emitted final reward is the same event, never a second one
    dup = sql(
        p,
        "SELECT trajectory_id, uniqExact(event_id) AS u, uniqExact(total) AS v FROM rewards "
        "WHERE run_id = {r:String} AND is_final = 1 GROUP BY trajectory_id HAVING u > 1 OR v > 1",
        r=run_id,
    )
    assert dup == []
    expected = {k: codec().decode(v) for k, v in expected_finals(agents.tee.records).items()}
    for f in finals:
        e = expected[f["trajectory_id"]]
        assert isinstance(e, RewardScored)
        assert (f["event_id"], f["total"], f["version"]) == (e.event_id, e.total, (1 << 40) + e.seq)
        assert round(f["scored_at"].timestamp() * 1_000_000) == e.ts_us  # the end event's time


async def test_twenty_random_kill_9s_lose_nothing_and_leave_nothing_to_reconcile(
    settings: Settings, projector: Projector
) -> None:
    seed = int(os.environ.get("AGENTLAKE_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    run_id = f"kills-{uuid.uuid4().hex[:8]}"
    worker = stack.worker_proc(settings, "streams")
    stack.start_worker(settings, "streams")
    # The reconciler's periodic pass would also score for a worker that is merely down or slow to
    # restart (its "stalled" rule); here it runs once, at the end, when the worker has caught up.
    projector._last_reconcile = float("inf")
    # the session's projector is shared: count only what the reconciler does during this test
    reconciled_before = (projector.stats.reconciled, reconciled_count(settings))
    stop = asyncio.Event()
    background = asyncio.create_task(project_in_background(projector, stop))
    kills = 0
    try:
        with Agents(settings, run_id, threads=6, pause=0.05, seed=seed) as agents:
            for _ in range(20):
                # from right after start (while it restores) to well into processing
                await asyncio.sleep(rng.choice([rng.uniform(0.1, 1.5), rng.uniform(1.5, 5.0)]))
                await asyncio.to_thread(kill_9, worker)
                kills += 1
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.uniform(0.5, 2.0))  # agents keep emitting while it is down
                stack.start_worker(settings, "streams")
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        await background
    assert kills == 20
    n = len(agents.ids)
    assert n > 50, f"seed {seed}"
    assert await project_until_final(projector, run_id, n, timeout=240) == n, f"seed {seed}"
    projector._last_reconcile = 0.0
    await projector.catch_up(60)  # also runs the reconciler, which must find nothing
    assert_scored_once_as_the_log_says(projector, run_id, agents)
    assert (projector.stats.reconciled, reconciled_count(settings)) == reconciled_before, f"seed {seed}"
