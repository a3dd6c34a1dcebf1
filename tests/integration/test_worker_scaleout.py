"""Two, then three stream workers in one consumer group share the partitions; one of them is
killed with SIGKILL and not restarted: its partitions move to the others, nothing is lost,
nothing is counted twice, and the sink's reconciler finds nothing to repair."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable

from agentlake import stack
from agentlake.consumers import Projector
from agentlake.consumers.sink import reconciled_count
from agentlake.settings import Settings
from tests.integration.helpers import project_until_final
from tests.integration.test_worker_kills import (
    Agents,
    assert_scored_once_as_the_log_says,
    kill_9,
    project_in_background,
)

FAST_FAILOVER = {"AGENTLAKE_WORKER_SESSION_TIMEOUT_S": "6"}  # the broker's minimum session timeout


def log_size(settings: Settings, name: str) -> int:
    return stack.worker_proc(settings, name).log_file.stat().st_size


def assignments(settings: Settings, name: str, since: int = 0) -> list[set[int]]:
    """The partitions a worker was assigned at each rebalance, from its log after byte `since`."""
    with open(stack.worker_proc(settings, name).log_file, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [
        {int(p) for p in re.findall(r"\d+", m)}
        for m in re.findall(r"assigned partitions \[([\d, ]*)\]", text)
    ]


def split(settings: Settings, a: str, b: str) -> bool:
    first, second = assignments(settings, a), assignments(settings, b)
    return bool(first and second and first[-1] and second[-1] and not first[-1] & second[-1])


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.5)
    return condition()


async def test_two_then_three_workers_share_partitions_and_survive_losing_one(
    settings: Settings, projector: Projector
) -> None:
    run_id = f"scale-{uuid.uuid4().hex[:8]}"
    # The reconciler's periodic pass would also score for a worker that is merely down or slow to
    # restart (its "stalled" rule); here it runs once, at the end, when the worker has caught up.
    projector._last_reconcile = float("inf")
    # the session's projector is shared: count only what the reconciler does during this test
    reconciled_before = (projector.stats.reconciled, reconciled_count(settings))
    stop = asyncio.Event()
    background = asyncio.create_task(project_in_background(projector, stop))
    try:
        stack.start_worker(settings, "streams")
        with Agents(settings, run_id, threads=4, pause=0.05, seed=7) as agents:
            stack.start_stream_workers(settings, 2, extra_env=FAST_FAILOVER)
            # two workers split the 4 partitions
            assert await until(lambda: split(settings, "streams", "streams-2"), 120)
            stack.start_stream_workers(settings, 3, extra_env=FAST_FAILOVER)
            # the third joins the group (faust's sticky assignor may leave it idle: 4 partitions, 3 workers)
            assert await until(lambda: bool(assignments(settings, "streams-3")), 120)
            await asyncio.sleep(3)
            two = assignments(settings, "streams-2")[-1]
            assert two, "streams-2 holds partitions when it is killed"
            marks = {n: log_size(settings, n) for n in ("streams", "streams-3")}
            await asyncio.to_thread(kill_9, stack.worker_proc(settings, "streams-2"))

            def moved() -> set[int]:
                got = [assignments(settings, n, since) for n, since in marks.items()]
                return set().union(*(a[-1] for a in got if a))

            # after its session times out, its partitions move to streams and streams-3
            assert await until(lambda: two <= moved(), 120), (two, moved())
            await asyncio.sleep(3)
        health = stack.worker_health(settings)
        assert health["stream_workers_down"] == ["streams-2"]
    finally:
        stop.set()
        await background
    n = len(agents.ids)
    assert await project_until_final(projector, run_id, n, timeout=240) == n
    projector._last_reconcile = 0.0
    await projector.catch_up(60)
    assert_scored_once_as_the_log_says(projector, run_id, agents)
    assert (projector.stats.reconciled, reconciled_count(settings)) == reconciled_before
    stack.stop_stream_workers(settings, ["streams-2", "streams-3"])
    assert "streams-3" not in stack.stream_workers(settings)
