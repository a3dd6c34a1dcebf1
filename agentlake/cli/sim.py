"""`agentlake sim`: run suites against staging MCP servers and gate them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.text import Text

from agentlake.cli._app import (
    JSON_OPT,
    UserError,
    _print_json,
    _settings,
    console,
    out,
    sim_app,
)
from agentlake.cli._render import DataTable, render_rows
from agentlake.schemas import now_us
from agentlake.settings import Settings


# -- simulation -------------------------------------------------------------------------
@sim_app.command("run")
def sim_run(
    suite_file: Path = typer.Argument(..., help="suite YAML (see examples/suite.yaml)"),
    agent: str | None = typer.Option(
        None,
        "--agent",
        help="NAME@VERSION, module:callable, openai:MODEL or cmd:COMMAND (default: the suite's)",
    ),
    trials: int | None = typer.Option(
        None, "--trials", "-n", min=1, help="trials per scenario case (default: the suite's)"
    ),
    baseline: str | None = typer.Option(
        None, help="compare with this run id, or the latest run with this tag"
    ),
    tag: str | None = typer.Option(
        None, help="label this run (e.g. 'baseline', 'main') for later comparisons"
    ),
    junit: Path | None = typer.Option(None, help="write a JUnit XML report here"),
    markdown_file: Path | None = typer.Option(None, "--markdown", help="write a Markdown report here"),
    concurrency: int = typer.Option(8, min=1, help="trials run at the same time"),
    early_stop: bool = typer.Option(
        False, help="skip a case's remaining trials once its gate outcome is decided"
    ),
    staging: list[Path] = typer.Option([], help="extra staging server spec(s) (YAML), by name"),
    fault_rate: float = typer.Option(
        0.0, min=0.0, max=1.0, help="inject tool errors at this rate into every staging tool"
    ),
    seed: int = typer.Option(0, min=0, help="base seed: the same seed replays the same trials"),
    timeout: float = typer.Option(
        300.0, min=0.1, help="seconds to wait for the pipeline to score every trial"
    ),
    auth: bool = typer.Option(
        False,
        "--auth",
        help="put the auth gateway in front of the staging servers (tokens from the registry grants)",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Run a suite against an agent, score it through the pipeline, gate it against a baseline."""
    from agentlake import stack
    from agentlake.sim.suite import SuiteError, expand, load_suite

    s = _settings()
    try:
        suite = load_suite(suite_file)
    except SuiteError as e:
        raise UserError(str(e)) from e
    except FileNotFoundError as e:
        raise UserError(f"{suite_file}: no such file") from e
    ref = agent or suite.agent
    if not ref:
        raise UserError(
            f"{suite_file}: no agent given; pass --agent NAME@VERSION or set `agent:` in the suite"
        )
    if trials is not None and trials < 1:
        raise UserError("--trials must be at least 1")
    if not 0.0 <= fault_rate <= 1.0:
        raise UserError("--fault-rate must be between 0 and 1")
    n_trials = trials or suite.trials
    gate_ks = [
        int(name.rsplit("_", 1)[-1])
        for name, _ in (suite.gate.resolved() if suite.gate else [])
        if name.startswith("pass_") and name[-1].isdigit()
    ]
    if gate_ks and n_trials < max(gate_ks):
        raise UserError(
            f"the gate of {suite_file} checks pass^{max(gate_ks)}/pass@{max(gate_ks)}, which needs at least "
            f"{max(gate_ks)} trials per case: use --trials {max(gate_ks)} or more"
        )
    from agentlake._files import UserFileError, check_writable
    from agentlake.sim.runner import RunnerError, StagingFactory

    for option, path in (("--junit", junit), ("--markdown", markdown_file)):
        if path is not None:  # a report path that cannot be written fails now, not after every trial
            try:
                check_writable(path, option)
            except UserFileError as e:
                raise UserError(str(e)) from e
    for f in staging:  # fail fast, before the stack starts
        try:
            StagingFactory().add_spec_file(str(f))
        except RunnerError as e:
            raise UserError(str(e)) from e
    expanded = expand(suite, trials, base_seed=seed)
    down = stack_down(s)
    stack.up(s, workers=True, progress=lambda m: console.log(m, markup=False))
    if down:
        console.print(
            f"started {' and '.join(down)} for this run; they keep running (`agentlake down` stops them)",
            highlight=False,
            soft_wrap=True,
        )
    code, report = asyncio.run(
        _sim_run(
            s,
            suite,
            expanded,
            ref,
            baseline,
            tag,
            concurrency,
            early_stop,
            staging,
            fault_rate,
            timeout,
            auth=auth,
        )
    )
    from agentlake.sim.gate import junit_xml, markdown

    for path, render in ((junit, junit_xml), (markdown_file, markdown)):
        if path is None:
            continue
        try:  # checked before the run; if it fails now anyway, keep the gate's verdict and say so
            path.write_text(render(report), encoding="utf-8")
        except OSError as e:
            msg = escape(f"{path}: cannot write the report: {e.strerror or e}")
            console.print(f"[red]error:[/] {msg}", soft_wrap=True, highlight=False)
            code = code or 2
    if as_json:
        _print_json(report)
    else:
        render_sim_report(report)
        if "auth" in report:  # sim run --auth
            a = report["auth"]
            console.print(f"auth: {a['decisions']} calls through the gateway, {a['denied']} denied")
    raise typer.Exit(code)


async def _sim_run(
    s: Settings,
    suite: Any,
    trials: list[Any],
    ref: str,
    baseline_ref: str | None,
    tag: str | None,
    concurrency: int,
    early_stop: bool,
    staging_files: list[Path],
    fault_rate: float,
    timeout: float,
    projector: Any = None,
    auth: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Run, score through the pipeline, gate. `projector`: a started sink to reuse (else one is
    started for the call; one process must not run two sinks of the same group)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentlake.consumers import Projector
    from agentlake.registry import read_registry
    from agentlake.sdk import KafkaEmitter, Tracer
    from agentlake.sim import gate as g
    from agentlake.sim.metrics import DEFAULT_GATE, GateSpec
    from agentlake.sim.openapi import OpenAPIError
    from agentlake.sim.runner import (
        RunnerError,
        StagingFactory,
        check_setup,
        resolve_agent,
        run_suite,
        stable_run_id,
    )
    from agentlake.sim.staging import Faults
    from agentlake.sim.suite import SuiteError

    registry = await read_registry(s)
    try:
        target = resolve_agent(ref, registry)
        factory = StagingFactory.default(registry, Faults(error_rate=fault_rate) if fault_rate else None)
        for f in staging_files:
            factory.add_spec_file(str(f))
        check_setup(trials, factory)
    except (RunnerError, SuiteError, OpenAPIError) as e:
        raise UserError(str(e)) from e
    runs = await g.read_runs(s)
    base = g.resolve_baseline(runs, baseline_ref, suite.id) if baseline_ref else None
    if baseline_ref and base is None:
        raise UserError(
            f"baseline {baseline_ref!r} is neither a run id nor a tag of suite {suite.id} "
            "(agentlake sim runs)"
        )
    gate_spec: GateSpec = suite.gate if suite.gate is not None else DEFAULT_GATE
    stop: tuple[int, float] | None = _early_stop_rule(gate_spec) if early_stop else None
    run_id = stable_run_id(suite, target.ref)
    emitter = KafkaEmitter(s.bootstrap_servers, s.spill_dir)
    tracer = Tracer(target.agent_id, target.version, tenant="sim", emitter=emitter, settings=s)
    auth_hook = None
    if auth:  # agent auth: a gateway in front of every trial's staging server
        from agentlake.auth.simhook import SimAuth

        if target.command is not None:
            raise UserError(
                f"--auth needs an in-process agent: {target.ref} runs as a command whose MCP calls "
                "do not pass through the runner's client, so no gateway would see them"
            )

        auth_hook = SimAuth.for_agent(
            registry, target.agent_id, target.version, emitter=emitter, topic=s.topic
        )
    started = now_us()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{suite.id} × {target.ref}", total=len(trials))
        outcome = await run_suite(
            trials,
            target,
            tracer,
            run_id=run_id,
            staging=factory,
            concurrency=concurrency,
            early_stop=stop,
            stop_on_pass=_bounds(gate_spec) == 1,  # the pass^k floor is the gate's only check
            progress=lambda _r: bar.advance(task),
            wrap_client=auth_hook.wrap if auth_hook is not None else None,
            attributes=auth_hook.attributes if auth_hook is not None else None,
        )
        await asyncio.to_thread(emitter.flush, 60)
        emitter.close(10)
        scoring = bar.add_task("scored by the pipeline", total=len(outcome.results))
        owned = projector is None
        p = projector if projector is not None else Projector(s)
        if owned:
            await p.start()
        try:

            async def done() -> bool:
                n = await asyncio.to_thread(g.count_scored, p.clickhouse, run_id)
                bar.update(scoring, completed=n)
                return n >= len(outcome.results)

            if not await p.run_until(done, timeout=timeout):
                raise UserError(
                    f"the pipeline scored only part of run {run_id} within {timeout:.0f}s; "
                    "is the stream worker running? (agentlake status)"
                )
            rows = await asyncio.to_thread(g.read_trials, p.clickhouse, run_id)
            base_rows = await asyncio.to_thread(g.read_trials, p.clickhouse, base.run_id) if base else []
            if base_rows and any(not r.success and r.attribution == "tool" for r in rows):
                ids = [r.trajectory_id for r in rows + base_rows]
                faults = await asyncio.to_thread(g.faults_of, p.clickhouse, ids)
                g.reattribute(rows, base_rows, faults)
        finally:
            if owned:
                await p.stop()
    planned: dict[str, int] = {}
    for t in trials:
        planned[t.case_id] = planned.get(t.case_id, 0) + 1
    metrics = g.metrics_of(rows, planned=planned)
    base_metrics = g.metrics_of(base_rows) if base_rows else None
    result = g.gate_of(gate_spec, metrics, base_metrics)
    skipped = [{"trial_id": t.trial_id, "scenario": t.case_id} for t in outcome.skipped]
    scored = {(r.case_id, r.trial) for r in rows}
    skipped_ids = {t.trial_id for t in outcome.skipped}
    missing = [
        {"trial_id": t.trial_id, "scenario": t.case_id}
        for t in trials
        if (t.case_id, t.index) not in scored and t.trial_id not in skipped_ids
    ]
    warnings = g.reward_warnings(rows)
    if suite.gate is None:
        warnings.append("the suite declares no gate: the default gate requires every trial to pass")
    elif not suite.gate.root:
        warnings.append("the suite's gate is empty (gate: {}): this run reports, it cannot fail")
    report = g.report_json(
        run_id=run_id,
        suite_id=suite.id,
        agent=target.ref,
        rows=rows,
        metrics=metrics,
        gate=result,
        baseline=base,
        baseline_metrics=base_metrics,
        skipped=skipped,
        seconds=outcome.seconds,
        planned=len(trials),
        missing=missing,
        gate_source="suite" if suite.gate is not None else "default",
        warnings=warnings,
    )
    await g.record_run(
        s,
        g.RunRecord(
            run_id=run_id,
            suite_id=suite.id,
            agent_id=target.agent_id,
            agent_version=target.version,
            tag=tag,
            baseline_run_id=base.run_id if base else None,
            started_us=started,
            finished_us=now_us(),
            trials=len(rows),
            skipped=len(skipped),
            passed=result.passed if result else None,
            report={"pass_hat": metrics.pass_hat, "reward": metrics.reward_total},
        ),
    )
    if auth_hook is not None:
        report["auth"] = auth_hook.summary()
    return exit_code(report), report


def exit_code(report: dict[str, Any]) -> int:
    """0: the gate passed. 1: it failed. 3: it failed and some trials failed on infrastructure
    (the model provider), so the run cannot tell a regression from an outage. (2: setup error.)"""
    if report["passed"] is not False:
        return 0
    return 3 if report["failures_by"].get("infrastructure") else 1


def _bounds(gate_spec: Any) -> int:
    """How many checks a gate makes (one per bound of each metric)."""
    kinds = ("min", "max", "max_drop", "max_increase")
    return sum(getattr(t, b) is not None for _, t in gate_spec.resolved() for b in kinds)


def _early_stop_rule(gate_spec: Any) -> tuple[int, float] | None:
    """(k, min pass^k) from the gate's absolute pass^k floor, if it declares one."""
    for name, th in gate_spec.resolved():
        if name.startswith("pass_hat_") and th.min is not None:
            return int(name.removeprefix("pass_hat_")), float(th.min)
    return None


def render_sim_report(report: dict[str, Any]) -> None:
    # whole case ids, folded when the terminal is narrow; lines between rows keep them apart
    t = DataTable(title=f"{report['suite']} × {report['agent']} — run {report['run_id']}", show_lines=True)
    for c in ("scenario", "n", "pass^1", "pass^k", "reward", "calls", "skipped", "failures by"):
        if c == "scenario":
            t.add_column(c, overflow="fold")
        else:
            t.add_column(c, justify="right" if c != "failures by" else "left", overflow="fold")
    for sc in report["scenarios"]:
        t.add_row(
            sc["scenario"],
            str(sc["n"]),
            f"{sc['pass_hat_1']:.2f}",
            f"{sc['pass_hat_k']:.2f} (k={sc['k']})",
            f"{sc['reward']:.3f}" if sc["reward"] is not None else "–",
            f"{sc['tool_calls']:.1f}" if sc["tool_calls"] is not None else "–",
            str(sc["skipped"]),
            ", ".join(f"{k}:{v}" for k, v in sc["failures_by"].items()) or "–",
        )
    out.print(t)
    m = report["suite_metrics"]
    ks = sorted(m["pass_hat"])
    pk = DataTable(title="suite pass^k / pass@k (95% bootstrap CI for pass^k)")
    pk.add_column("k")
    for k in ks:
        pk.add_column(str(k), justify="right")
    pk.add_row("pass^k", *[f"{m['pass_hat'][k]:.3f}" for k in ks])
    pk.add_row(
        "CI",
        *[
            f"{m['pass_hat_ci'][k][0]:.2f}–{m['pass_hat_ci'][k][1]:.2f}" if k in m["pass_hat_ci"] else "–"
            for k in ks
        ],
    )
    pk.add_row("pass@k", *[f"{m['pass_at'][k]:.3f}" for k in ks])
    out.print(pk)
    comps = DataTable(title="mean reward components (scored by the stream processor)")
    comps.add_column("component")
    comps.add_column("this run", justify="right")
    base = report.get("baseline_metrics")
    if base:
        comps.add_column(f"baseline {report['baseline']}", justify="right")
    for name, v in sorted(m["components"].items()):
        row = [name, f"{v:.3f}"]
        if base:
            bv = base["components"].get(name)
            row.append(f"{bv:.3f}" if bv is not None else "–")
        comps.add_row(*row)
    out.print(comps)
    if report["gate"]:
        gt = DataTable(title="gate")
        for c in ("check", "value", "baseline", "threshold", "result"):
            gt.add_column(c)
        for c in report["gate"]:
            gt.add_row(
                f"{c['name']} {c['kind']}",
                "–" if c["value"] is None else f"{c['value']:.3f}",
                "–" if c["baseline"] is None else f"{c['baseline']:.3f}",
                str(c["threshold"]),
                Text("pass", style="green") if c["passed"] else Text("FAIL", style="red"),
            )
        out.print(gt)
    for w in report.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(w)}")
    if report["failures_by"].get("infrastructure"):
        out.print(
            f"[yellow]{int(report['failures_by']['infrastructure'])} trial(s) failed on infrastructure "
            "(model provider); they count as failures, and a failed gate exits 3[/]"
        )
    if report["gate"]:
        verdict = "[green]PASSED[/]" if report["passed"] else "[red]FAILED[/]"
        out.print(
            f"gate {verdict}"
            + (escape(f" against baseline {report['baseline']}") if report["baseline"] else "")
        )


def stack_down(s: Settings) -> list[str]:
    """What of the local stack `stack.up` would start: the broker (embedded Kafka only) and
    the stream worker, when they are not running."""
    from agentlake import stack

    down = []
    if s.embedded_kafka and stack.broker_proc(s).pid() is None:
        down.append(f"the local Kafka broker (127.0.0.1:{s.kafka_port})")
    if stack.worker_proc(s, "streams").pid() is None:
        down.append("the stream worker")
    return down


@sim_app.command("runs")
def sim_runs(
    suite: str | None = typer.Option(None, help="only runs of this suite id"),
    as_json: bool = JSON_OPT,
) -> None:
    """List recorded simulation runs (run ids and tags usable as --baseline)."""
    from agentlake.sim.gate import read_runs

    runs = [r for r in asyncio.run(read_runs(_settings())) if suite is None or r.suite_id == suite]
    rows: list[dict[str, Any]] = [
        {
            "run_id": r.run_id,
            "suite": r.suite_id,
            "agent": f"{r.agent_id}@{r.agent_version}",
            "tag": r.tag,
            "baseline": r.baseline_run_id,
            "trials": r.trials,
            "skipped": r.skipped,
            "passed": r.passed,
            "pass_hat": r.report.get("pass_hat"),
            "reward": r.report.get("reward"),
        }
        for r in runs
    ]
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print(
            "0 runs" + (f" of suite {suite}" if suite else ": `agentlake sim run SUITE` records one"),
            markup=False,
        )
        return
    render_rows(
        out,
        [
            {
                "run_id": r["run_id"],
                "agent": r["agent"],
                "tag": r["tag"] or "",
                "trials": r["trials"],
                "pass^1": f"{ph:.2f}" if (ph := (r["pass_hat"] or {}).get("1")) is not None else "–",
                "reward": f"{r['reward']:.3f}" if r["reward"] is not None else "–",
                "gate": {True: "passed", False: "failed", None: "–"}[r["passed"]],
            }
            for r in rows
        ],
        title="simulation runs",
        caption=f"{len(rows)} run{'s' if len(rows) != 1 else ''}",
    )
