"""Nothing an agent under test does may end, stall or fool the runner (issue: false green)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agentlake.schemas import TrajectoryEnded, codec
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings
from agentlake.sim.harness import DEFAULT_TIMEOUT_S, AgentExited, run_in_thread
from agentlake.sim.runner import AgentTarget, StagingFactory, resolve_agent, run_suite, run_trial
from agentlake.sim.suite import expand, parse_suite

SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]

SUITE = """
id: harness
trials: 1
defaults:
  budgets: {timeout_s: 2}
scenarios:
  - id: status
    variables: {grid: {oid: [1, 2, 3, 4, 5, 6, 7, 8]}}
    task: "What is the status of order {oid}?"
    initial_state: {$generator: "agentlake.sim.reference:shop_state", args: {seed: 1}}
    criteria:
      tool_calls: {mode: superset, calls: [{tool: get_order}]}
"""


def tracer(em: MemoryEmitter) -> Tracer:
    return Tracer("agent", "1", tenant="sim", emitter=em, settings=SETTINGS)


def end_event(em: MemoryEmitter) -> TrajectoryEnded:
    ends = [e for e in (codec().decode(v) for _, _, v in em.records) if isinstance(e, TrajectoryEnded)]
    assert len(ends) == 1
    return ends[0]


async def exits(task: str, tools: Any, trajectory: Any) -> str:
    await tools.call_tool("get_order", {"order_id": 1})
    sys.exit(0)


async def raises_system_exit(task: str, tools: Any, trajectory: Any) -> str:
    raise SystemExit(0)


async def blocks(task: str, tools: Any, trajectory: Any) -> str:
    await tools.call_tool("get_order", {"order_id": 1})
    time.sleep(3)  # a synchronous call inside an async agent
    trajectory.step("final", "too late")  # after the timeout: must not be recorded
    trajectory.end("success", final_answer="done")
    return "done"


async def healthy(task: str, tools: Any, trajectory: Any) -> str:
    await tools.call_tool("get_order", {"order_id": 1})
    trajectory.end("success", final_answer="done")
    return "done"


async def mixed(task: str, tools: Any, trajectory: Any) -> str:
    if "order 1?" in task:
        return await blocks(task, tools, trajectory)
    return await healthy(task, tools, trajectory)


@pytest.mark.parametrize("agent", [exits, raises_system_exit])
async def test_an_agent_that_exits_is_a_recorded_failure_and_the_runner_goes_on(agent: Any) -> None:
    trials = expand(parse_suite(SUITE, "s.yaml"), 1)[:2]
    em = MemoryEmitter()
    out = await run_suite(trials, AgentTarget("x", "1", fn=agent), tracer(em), concurrency=2)
    assert len(out.results) == 2
    for r in out.results:
        assert not r.verdict.success and r.verdict.attribution == "agent"
        assert "SystemExit" in next(c.detail for c in r.verdict.checks if c.name == "agent_completed")


async def test_a_blocking_agent_times_out_without_failing_the_healthy_trials_beside_it() -> None:
    trials = expand(parse_suite(SUITE, "s.yaml"), 1)
    em = MemoryEmitter()
    out = await run_suite(trials, AgentTarget("x", "1", fn=mixed), tracer(em), concurrency=8)
    by_oid = {r.trial.binding["oid"]: r for r in out.results}
    assert not by_oid[1].verdict.success
    assert next(c for c in by_oid[1].verdict.checks if c.name == "budget").detail == "timeout_s exceeded"
    assert all(by_oid[oid].verdict.success for oid in range(2, 9)), [
        (oid, r.verdict.reason) for oid, r in by_oid.items()
    ]
    await asyncio.sleep(1.5)  # let the blocked agent wake up and try to record more
    mine = [codec().decode(v) for _, _, v in em.records]
    mine = [e for e in mine if e.trajectory_id == by_oid[1].trajectory_id]
    assert isinstance(mine[-1], TrajectoryEnded) and mine[-1].outcome == "timeout"


async def test_run_in_thread_turns_base_exceptions_into_failures_and_has_a_deadline() -> None:
    def leave() -> None:
        raise KeyboardInterrupt

    with pytest.raises(AgentExited, match="KeyboardInterrupt"):
        await run_in_thread(leave, timeout=5)
    with pytest.raises(TimeoutError):
        await run_in_thread(time.sleep, 2, timeout=0.2)
    assert await run_in_thread(lambda x: x + 1, 1, timeout=5) == 2
    assert DEFAULT_TIMEOUT_S > 0


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ('print(\'{"outcome": "error", "answer": "x"}\')', "error"),
        ('print(\'{"outcome": "weird"}\')', "error"),
        ("print('')", None),
        ("import os; os._exit(0)", None),  # exits 0 without a word: not a success
    ],
)
async def test_a_cmd_agent_reporting_error_or_printing_nothing_fails(
    tmp_path: Path, code: str, outcome: str | None
) -> None:
    script = _script(tmp_path, "agent.py", code + "\n")
    trial = expand(parse_suite(SUITE.replace("superset, calls: [{tool: get_order}]", "strict"), "s"), 1)[0]
    em = MemoryEmitter()
    target = resolve_agent(f"cmd:{sys.executable} {script}")
    res = await run_trial(trial, target, tracer(em), "r", StagingFactory.default())
    assert not res.verdict.success and res.verdict.attribution == "agent"
    end = end_event(em)
    assert end.outcome == (outcome or "error")
    if outcome is None:
        assert "printed nothing" in (end.error or "")


async def test_a_hanging_wrapped_cmd_agent_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    child = _script(
        tmp_path,
        "child.py",
        f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
    )
    trial = expand(parse_suite(SUITE.replace("timeout_s: 2", "timeout_s: 1.5"), "s"), 1)[0]
    target = resolve_agent(f"cmd:sh -c '{sys.executable} {child}; echo done'")
    res = await run_trial(trial, target, tracer(MemoryEmitter()), "r", StagingFactory.default())
    assert not res.verdict.success
    pid = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the wrapped agent survived its timeout as an orphan")


def test_two_cmd_agents_are_told_apart_in_reports() -> None:
    a, b = resolve_agent("cmd:python a.py"), resolve_agent("cmd:python b.py")
    assert a.ref != b.ref and a.agent_id.startswith("cmd-") and a.agent_id != "external"
    assert resolve_agent("cmd:python a.py").ref == a.ref  # stable across runs (baselines)
