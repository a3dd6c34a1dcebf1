"""`agentlake demo`: the whole loop on the embedded stack."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from agentlake.cli._app import (
    JSON_OPT,
    UserError,
    _print_json,
    _settings,
    app,
    console,
    out,
)
from agentlake.cli._render import DataTable
from agentlake.cli.sim import _sim_run, render_sim_report
from agentlake.settings import Settings


@app.command()
def demo(
    trajectories: int = typer.Option(
        24, "--trajectories", "-n", min=1, help="production-like tasks per agent"
    ),
    trials: int = typer.Option(3, min=1, help="trials per scenario case in the simulation part"),
    simulate: bool = typer.Option(True, help="also run the simulation suite and the CI gate"),
    as_json: bool = JSON_OPT,
) -> None:
    """The whole loop on the embedded stack: traffic through Kafka, live rewards, ClickHouse
    and Milvus read-back; then register the agents, simulate both versions, gate the candidate."""
    from rich.progress import Progress

    from agentlake import stack
    from agentlake.demo import demo as run_demo

    s = _settings()
    stack.up(s, workers=True, progress=lambda m: console.log(m, markup=False))
    # the registry first: part 1 is scored with the declared tools and reward specs too
    registered = _apply_demo_registry(s)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("trajectories", total=trajectories * 2)
        result = asyncio.run(run_demo(s, trajectories, progress=lambda n: bar.advance(task, n)))
    if not result["caught_up"]:
        raise UserError(
            "the projections did not catch up in time: is the stream worker running? (agentlake status)"
        )
    if not as_json:  # each part is printed as soon as it is done
        _render_production(result)
    sim: dict[str, Any] = {}
    if simulate:
        sim = {"registered": registered, **_demo_simulation(s, trials)}
        if not as_json:
            _render_simulation(sim)
    auth = _demo_auth(s)
    from agentlake.demo import project_log

    # the lake's cache events and the auth story reach ClickHouse too (the dashboard's pages)
    auth["projected"] = asyncio.run(project_log(s))
    if as_json:
        _print_json({**result, "simulation": sim, "auth": auth})
        return
    from agentlake.auth.demo import render_lines

    out.rule("3. agent auth: delegation → gateway → denied tool → live revocation")
    for line in render_lines(auth):
        out.print(line, highlight=False, markup=False)


def _render_production(result: dict[str, Any]) -> None:
    out.rule("1. agents in production: events → Kafka → stream rewards → ClickHouse / Milvus")
    render_summary(
        result["agents"],
        f"run {result['run_id']}: {result['trajectories']} trajectories "
        f"({result['events_emitted']} events) in {result['seconds_total']}s",
    )
    t = DataTable(title=f"nearest past trajectories to: {result['query']!r} (Milvus)")
    for col in ("score", "agent", "outcome", "reward", "task", "tools"):
        t.add_column(col)
    for n in result["nearest"]:
        t.add_row(
            f"{n['score']:.3f}",
            f"{n['agent_id']}@{n['agent_version']}",
            n["outcome"],
            f"{n['reward']:.2f}",
            n["task"],
            " → ".join(n["tool_sequence"]),
        )
    out.print(t)
    if result.get("lake"):
        from agentlake.cli.lake import render_lake_demo

        render_lake_demo(result["lake"])


def _render_simulation(sim: dict[str, Any]) -> None:
    out.rule("2. simulation as CI: registry → staging MCP → suite × trials → pipeline → gate")
    out.print(f"registered: {', '.join(sim['registered'])}", markup=False)
    out.print(f"[bold]baseline[/] support-bot@1.0: run {escape(sim['baseline']['run_id'])}")
    render_sim_report(sim["baseline"])
    cand = escape(sim["candidate"]["run_id"])
    out.print(f"[bold]candidate[/] support-bot@1.1-beta vs baseline: run {cand}")
    render_sim_report(sim["candidate"])
    verdict = "would merge" if sim["candidate"]["passed"] else "blocked by the gate"
    out.print(f"[bold]CI verdict for support-bot@1.1-beta: {verdict}[/]")


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # agentlake/examples, shipped in the wheel


def _apply_demo_registry(s: Settings) -> list[str]:
    from agentlake.registry import apply_specs, load_registry_file

    specs = load_registry_file(EXAMPLES / "registry.yaml")
    asyncio.run(apply_specs(s, specs, source="agentlake/examples/registry.yaml"))
    time.sleep(0.5)  # the stream worker follows the registry topic (polls every 100 ms)
    return [f"{x.id}@{x.version}" for x in specs]


def _demo_auth(s: Settings) -> dict[str, Any]:
    from agentlake.auth.demo import auth_demo
    from agentlake.sdk import KafkaEmitter

    emitter = KafkaEmitter(s.bootstrap_servers, s.spill_dir, client_id="agentlake-auth-demo")
    try:
        return asyncio.run(auth_demo(s, emitter))
    finally:
        emitter.close(10)


def _demo_simulation(s: Settings, trials: int) -> dict[str, Any]:
    from agentlake.sim.suite import expand, load_suite

    suite = load_suite(EXAMPLES / "suite.yaml")
    planned = expand(suite, trials)
    tag = f"demo-baseline-{int(time.time())}"
    _, base = asyncio.run(_sim_run(s, suite, planned, "support-bot@1.0", None, tag, 8, False, [], 0.0, 300.0))
    _, cand = asyncio.run(
        _sim_run(s, suite, planned, "support-bot@1.1-beta", tag, None, 8, False, [], 0.0, 300.0)
    )
    return {"baseline": base, "candidate": cand}


def render_summary(rows: list[dict[str, Any]], title: str) -> None:
    """Two tables: the headline per agent version, then the mean of each reward component."""
    t = DataTable(title=title)
    for col in ("agent@version", "trajectories", "success", "reward", "tool calls/task"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{r['agent_id']}@{r['agent_version']}",
            str(r["trajectories"]),
            f"{r['success_rate']:.0%}",
            f"{r['mean_total']:.3f}",
            f"{r['tool_calls_per_task']:.2f}",
        )
    out.print(t)
    comps = sorted({c for r in rows for c in r["components"]})
    if not comps:
        return
    c = DataTable(title="mean reward components (1 = best)")
    c.add_column("component")
    for r in rows:
        c.add_column(f"{r['agent_id']}@{r['agent_version']}", justify="right")
    for name in comps:
        c.add_row(name, *[f"{r['components'].get(name, float('nan')):.3f}" for r in rows])
    out.print(c)
