"""`agentlake replay`: replay recorded trajectories or whole runs against an agent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import (
    JSON_OPT,
    UserError,
    _print_json,
    _settings,
    app,
    clickhouse_message,
    console,
    out,
    user_sql_error,
)
from agentlake.cli._render import DataTable
from agentlake.cli.sim import _sim_run
from agentlake.schemas import now_us
from agentlake.settings import Settings


@app.command()
def replay(
    trajectory_id: str | None = typer.Argument(None, help="the trajectory to replay"),
    agent: str = typer.Option(
        ..., "--agent", help="candidate: NAME@VERSION, module:callable, openai:MODEL, cmd:COMMAND"
    ),
    fork_at: int | None = typer.Option(
        None, min=0, help="serve recorded results only before this tool call (0-based)"
    ),
    suite_file: Path | None = typer.Option(
        None, "--suite", help="the suite the trajectory came from (its state)"
    ),
    run: str | None = typer.Option(None, help="replay a whole past run as a new run of --suite"),
    staging: list[Path] = typer.Option(
        [], help="staging server spec(s) (YAML) the trajectory ran against, by name"
    ),
    server: str | None = typer.Option(
        None,
        help="without --suite: the staging server to replay on (default: the --staging spec's, else shop)",
    ),
    where: str | None = typer.Option(
        None, help="or: trajectories matching this ClickHouse filter, e.g. \"outcome != 'success'\""
    ),
    timeout: float = typer.Option(
        120.0, min=0.1, help="seconds to wait for the pipeline to score the replay"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Replay a past trajectory against a candidate agent (recorded results until it diverges,
    then live staging), or re-run a whole past run (--run / --where) as a new suite run."""
    from agentlake import stack

    s = _settings()
    suite = None
    if suite_file is not None:
        from agentlake.sim.suite import SuiteError, load_suite

        try:
            suite = load_suite(suite_file)
        except SuiteError as e:
            raise UserError(str(e)) from e
    if trajectory_id is None and run is None and where is None:
        raise UserError("give a TRAJECTORY_ID, or --run RUN_ID / --where FILTER (with --suite)")
    if where is not None:  # spliced into our query: one boolean expression, nothing more
        from agentlake.cli._sql import SqlTextError, check_filter

        try:
            check_filter(where)
        except SqlTextError as e:
            raise UserError(f"bad --where: {e}") from e
    from agentlake.sim.runner import RunnerError, StagingFactory

    names: list[str] = []
    for f in staging:  # fail fast, before the stack starts
        try:
            probe = StagingFactory()
            probe.add_spec_file(str(f))
            names.extend(probe.servers)
        except RunnerError as e:
            raise UserError(str(e)) from e
    if server is None and suite is None and names:
        server = names[-1]
    stack.up(s, workers=True, progress=lambda m: console.log(m, markup=False))
    if trajectory_id is None:
        if suite is None:
            raise UserError("--run/--where re-run the trials of a suite: pass --suite FILE")
        result = asyncio.run(_replay_run(s, suite, agent, run, where, timeout, staging))
    else:
        result = asyncio.run(
            _replay_one(s, trajectory_id, agent, fork_at, suite, timeout, staging=staging, server=server)
        )
    if as_json:
        _print_json(result)
        return
    if "trials" in result:
        console.print(
            f"re-ran {result['trials']} trials of {result['source']} as run {result['run_id']}: "
            f"pass^1 {result['pass_hat_1']:.3f}, mean reward {result['reward']:.3f}",
            markup=False,
        )
        return
    d = result["divergence"]
    t = DataTable(title=f"replay of {result['source']} with {result['agent']}", show_header=False)
    t.add_row("task", result["task"])
    t.add_row("recorded", f"{result['recorded_calls']} calls, outcome {result['recorded_outcome']}")
    t.add_row("replayed", f"{result['replayed_calls']} calls served from the log")
    t.add_row(
        "diverged",
        "never"
        if d is None
        else f"at tool call {d['step']}: {d['reason']} (recorded {d['expected']}, "
        f"candidate {d['actual'] if d['actual'] is not None else 'stopped'})",
    )
    t.add_row("new trajectory", result["trajectory_id"])
    t.add_row("outcome", f"{'success' if result['success'] else 'failure'} ({result['reason']})")
    t.add_row("reward", f"{result['reward']:.3f}" if result["reward"] is not None else "–")
    out.print(t)


async def _replay_one(
    s: Settings,
    trajectory_id: str,
    ref: str,
    fork_at: int | None,
    suite: Any,
    timeout: float,
    *,
    staging: list[Path] | None = None,
    server: str | None = None,
) -> dict[str, Any]:
    from agentlake.consumers import Projector
    from agentlake.registry import read_registry
    from agentlake.sdk import KafkaEmitter, Tracer
    from agentlake.sim import gate as g
    from agentlake.sim.replay import ReplayError, load_recorded
    from agentlake.sim.runner import RunnerError, StagingFactory, replay, resolve_agent

    registry = await read_registry(s)
    try:
        target = resolve_agent(ref, registry)
        factory = StagingFactory.default(registry)
        for f in staging or []:
            factory.add_spec_file(str(f))
        factory.tool_names(server or "shop")
    except RunnerError as e:
        raise UserError(str(e)) from e
    async with Projector(s) as projector:
        await projector.catch_up(60)
        try:
            recorded = await asyncio.to_thread(load_recorded, projector.clickhouse, trajectory_id)
        except ReplayError as e:
            raise UserError(str(e)) from e
        emitter = KafkaEmitter(s.bootstrap_servers, s.spill_dir)
        tracer = Tracer(target.agent_id, target.version, tenant="sim", emitter=emitter, settings=s)
        run_id = f"replay-{trajectory_id[:12]}-{int(now_us() / 1e6)}"
        try:
            rep = await replay(
                recorded,
                target,
                tracer,
                suite=suite,
                fork_at=fork_at,
                staging=factory,
                run_id=run_id,
                server=server,
            )
        except RunnerError as e:
            raise UserError(str(e)) from e
        await asyncio.to_thread(emitter.flush, 60)
        emitter.close(10)

        async def done() -> bool:
            return await asyncio.to_thread(g.count_scored, projector.clickhouse, run_id) >= 1

        await projector.run_until(done, timeout=timeout)
        rows = await asyncio.to_thread(g.read_trials, projector.clickhouse, run_id)
    d = rep.divergence
    return {
        "source": trajectory_id,
        "agent": target.ref,
        "task": recorded.task,
        "recorded_calls": len(recorded.calls),
        "recorded_outcome": recorded.outcome,
        "replayed_calls": rep.replayed,
        "divergence": None
        if d is None
        else {"step": d.step, "reason": d.reason, "expected": d.expected, "actual": d.actual},
        "calls": rep.calls,
        "trajectory_id": rep.result.trajectory_id,
        "run_id": run_id,
        "success": rep.result.verdict.success,
        "reason": rep.result.verdict.reason,
        "reward": rows[0].total if rows else None,
        "components": rows[0].components if rows else None,
    }


async def _replay_run(
    s: Settings,
    suite: Any,
    ref: str,
    run: str | None,
    where: str | None,
    timeout: float,
    staging: list[Path] | None = None,
) -> dict[str, Any]:
    from agentlake.consumers import Projector
    from agentlake.sim.replay import FILTER_OFFSET, trials_of_run
    from agentlake.sim.suite import expand

    async with Projector(s) as projector:
        await projector.catch_up(60)
        try:
            ids = set(await asyncio.to_thread(trials_of_run, projector.clickhouse, run, where))
        except Exception as e:
            why = (
                user_sql_error(str(e), where, FILTER_OFFSET, "filter")
                if where
                else clickhouse_message(str(e))
            )
            raise UserError(f"cannot select the trials to replay: {why}") from e
    if not ids:
        raise UserError(f"no trajectories of suite trials match {run or where!r}")
    index_max = max(int(i.rsplit(":", 1)[-1]) for i in ids if i.rsplit(":", 1)[-1].isdigit())
    trials = [t for t in expand(suite, max(index_max + 1, suite.trials)) if t.trial_id in ids]
    if not trials:
        raise UserError(f"the trials of {run or where!r} are not in suite {suite.id}")
    _code, report = await _sim_run(
        s,
        suite,
        trials,
        ref,
        None,
        f"replay-of-{run or 'query'}",
        8,
        False,
        list(staging or []),
        0.0,
        timeout,
    )
    return {
        "source": run or where,
        "run_id": report["run_id"],
        "trials": len(report["trials"]),
        "pass_hat_1": report["suite_metrics"]["pass_hat"].get(1, 0.0),
        "reward": report["suite_metrics"]["reward"] or 0.0,
        "report": report,
    }
