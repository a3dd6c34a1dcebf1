"""The `agentlake` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from agentlake.schemas import now_us
from agentlake.settings import Settings, get_settings

app = typer.Typer(
    help="AgentLake: event-sourced infrastructure for reliable AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="Long-running workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
sim_app = typer.Typer(
    help="Simulation as CI: run suites against staging MCP servers, gate on pass^k.", no_args_is_help=True
)
app.add_typer(sim_app, name="sim")
mcp_app = typer.Typer(help="Staging MCP servers generated on the fly.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")
registry_app = typer.Typer(
    help="Agents and MCP servers: declared in YAML, kept on the log.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
console = Console(stderr=True)
out = Console()

JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UserError(f"bad setting AGENTLAKE_{field.upper()}={err.get('input')!r}: {err['msg']}") from e


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


@app.command()
def up(
    workers: bool = typer.Option(True, help="also start the stream worker (rewards)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the local stack: Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS), topics, stream worker."""
    from agentlake import stack

    s = _settings()
    info = stack.up(s, workers=workers, progress=lambda m: console.log(m))
    if as_json:
        _print_json(info)
    else:
        console.print(f"[green]up[/]: kafka {info['bootstrap_servers']}, data in {info['home']}")


@app.command()
def fetch(as_json: bool = JSON_OPT) -> None:
    """Fetch what the local stack needs once (Apache Kafka jars from Maven Central, cached)."""
    from agentlake import stack

    s = _settings()
    libs = stack.kafka_libs(s, progress=lambda m: console.log(m)) if s.embedded_kafka else None
    if as_json:
        _print_json({"kafka_libs": str(libs) if libs else None})
    else:
        console.print(f"kafka jars: {libs}" if libs else "KAFKA_BOOTSTRAP_SERVERS is set: nothing to fetch")


@app.command()
def down(as_json: bool = JSON_OPT) -> None:
    """Stop the workers and the local broker (data is kept)."""
    from agentlake import stack

    res = stack.down(_settings())
    if as_json:
        _print_json(res)
    else:
        console.print("stopped: " + (", ".join(k for k, v in res.items() if v) or "nothing was running"))


@app.command()
def status(as_json: bool = JSON_OPT) -> None:
    """Show what runs where."""
    from agentlake import stack

    info = stack.status(_settings())
    if as_json:
        _print_json(info)
        return
    t = Table(show_header=False)
    for k, v in info.items():
        t.add_row(k, str(v))
    out.print(t)


@app.command()
def demo(
    trajectories: int = typer.Option(24, "--trajectories", "-n", help="production-like tasks per agent"),
    trials: int = typer.Option(3, help="trials per scenario case in the simulation part"),
    simulate: bool = typer.Option(True, help="also run the simulation suite and the CI gate"),
    as_json: bool = JSON_OPT,
) -> None:
    """The whole loop on the embedded stack: traffic through Kafka, live rewards, ClickHouse
    and Milvus read-back; then register the agents, simulate both versions, gate the candidate."""
    from rich.progress import Progress

    from agentlake import stack
    from agentlake.demo import demo as run_demo

    s = _settings()
    stack.up(s, workers=True, progress=lambda m: console.log(m))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("trajectories", total=trajectories * 2)
        result = asyncio.run(run_demo(s, trajectories, progress=lambda n: bar.advance(task, n)))
    if not result["caught_up"]:
        raise UserError(
            "the projections did not catch up in time: is the stream worker running? (agentlake status)"
        )
    sim: dict[str, Any] = {}
    if simulate:
        sim = _demo_simulation(s, trials)
    if as_json:
        _print_json({**result, "simulation": sim})
        return
    out.rule("1. agents in production: events → Kafka → stream rewards → ClickHouse / Milvus")
    render_summary(
        result["agents"],
        f"run {result['run_id']}: {result['trajectories']} trajectories "
        f"({result['events_emitted']} events) in {result['seconds_total']}s",
    )
    t = Table(title=f"nearest past trajectories to: {result['query']!r} (Milvus)")
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
    if sim:
        out.rule("2. simulation as CI: registry → staging MCP → suite × trials → pipeline → gate")
        out.print(f"registered: {', '.join(sim['registered'])}")
        out.print(f"[bold]baseline[/] support-bot@1.0: run {sim['baseline']['run_id']}")
        render_sim_report(sim["baseline"])
        out.print(f"[bold]candidate[/] support-bot@1.1-beta vs baseline: run {sim['candidate']['run_id']}")
        render_sim_report(sim["candidate"])
        verdict = "would merge" if sim["candidate"]["passed"] else "blocked by the gate"
        out.print(f"[bold]CI verdict for support-bot@1.1-beta: {verdict}[/]")


def _demo_simulation(s: Settings, trials: int) -> dict[str, Any]:
    from agentlake.registry import apply_specs, load_registry_file
    from agentlake.sim.suite import expand, load_suite

    examples = Path(__file__).resolve().parent / "examples"
    specs = load_registry_file(examples / "registry.yaml")
    asyncio.run(apply_specs(s, specs, source="agentlake/examples/registry.yaml"))
    time.sleep(0.5)  # the stream worker follows the registry topic (polls every 100 ms)
    suite = load_suite(examples / "suite.yaml")
    planned = expand(suite, trials)
    tag = f"demo-baseline-{int(time.time())}"
    _, base = asyncio.run(_sim_run(s, suite, planned, "support-bot@1.0", None, tag, 8, False, [], 0.0, 300.0))
    _, cand = asyncio.run(
        _sim_run(s, suite, planned, "support-bot@1.1-beta", tag, None, 8, False, [], 0.0, 300.0)
    )
    return {"registered": [f"{x.id}@{x.version}" for x in specs], "baseline": base, "candidate": cand}


def render_summary(rows: list[dict[str, Any]], title: str) -> None:
    """Two tables: the headline per agent version, then the mean of each reward component."""
    t = Table(title=title)
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
    c = Table(title="mean reward components (1 = best)")
    c.add_column("component")
    for r in rows:
        c.add_column(f"{r['agent_id']}@{r['agent_version']}", justify="right")
    for name in comps:
        c.add_row(name, *[f"{r['components'].get(name, float('nan')):.3f}" for r in rows])
    out.print(c)


@app.command()
def report(
    run_id: str | None = typer.Option(None, help="only this run"),
    tenant: str | None = typer.Option(None, help="only this tenant"),
    catch_up: bool = typer.Option(True, help="project what the log holds before reading"),
    as_json: bool = JSON_OPT,
) -> None:
    """Per agent and version: trajectories, success rate, reward components (from ClickHouse)."""
    from agentlake.projections.clickhouse import agent_summary

    rows = asyncio.run(
        _with_projections(lambda ch: agent_summary(ch, run_id=run_id, tenant=tenant), catch_up)
    )
    if as_json:
        _print_json(rows)
    else:
        render_summary(rows, "agents")


@app.command()
def sql(
    statement: str = typer.Argument(
        ..., help="a SELECT over events, trajectories, steps, tool_calls, rewards, ..."
    ),
    catch_up: bool = typer.Option(False, help="project what the log holds before reading"),
    as_json: bool = JSON_OPT,
) -> None:
    """Run a read query against the ClickHouse projections."""
    from agentlake.projections.clickhouse import jsonable, query

    rows = asyncio.run(_with_projections(lambda ch: query(ch, statement), catch_up))
    if as_json:
        _print_json(jsonable(rows))
        return
    t = Table()
    for c in rows[0].keys() if rows else []:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    out.print(t)


async def _with_projections(fn: Any, catch_up: bool) -> Any:
    s = _settings()
    if catch_up:
        from agentlake.consumers import Projector

        async with Projector(s) as p:
            await p.catch_up(timeout=120)
            return await asyncio.to_thread(fn, p.clickhouse)
    from agentlake.projections.clickhouse import connect

    return await asyncio.to_thread(lambda: fn(connect(s)))


@app.command()
def dlq(
    topic: str = typer.Option("agent.trajectories", help="source topic whose dead letters to read"),
    limit: int = typer.Option(20, help="at most this many"),
    as_json: bool = JSON_OPT,
) -> None:
    """Show dead letters (malformed records) with their reasons."""
    from agentlake.topics import dlq as dlq_name

    rows = asyncio.run(read_dead_letters(_settings(), dlq_name(topic), limit))
    if as_json:
        _print_json(rows)
        return
    t = Table(title=dlq_name(topic))
    for c in ("position", "reason", "detail", "bytes"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["source_position"], r["reason"], r["detail"], str(r["bytes"]))
    out.print(t)


async def read_dead_letters(
    s: Settings, topic: str, limit: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        s.topic(topic),
        bootstrap_servers=s.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await c.start()
    rows: list[dict[str, Any]] = []
    try:
        end = asyncio.get_running_loop().time() + timeout
        while len(rows) < limit and asyncio.get_running_loop().time() < end:
            batch = await c.getmany(timeout_ms=300, max_records=limit)
            if not batch and rows:
                break
            for msgs in batch.values():
                for m in msgs:
                    h = {k: v.decode(errors="replace") for k, v in (m.headers or [])}
                    rows.append(
                        {
                            "offset": m.offset,
                            "partition": m.partition,
                            "reason": h.get("reason", ""),
                            "detail": h.get("detail", ""),
                            "source_topic": h.get("source_topic", ""),
                            "source_position": h.get("source_position", ""),
                            "bytes": len(m.value or b""),
                            "key": (m.key or b"").decode(errors="replace"),
                            "value": (m.value or b"")[:200].decode(errors="replace"),
                        }
                    )
    finally:
        await c.stop()
    return rows[:limit]


@worker_app.command("streams")
def worker_streams(loglevel: str = typer.Option("info")) -> None:
    """Run the faust stream processor (rewards, policy findings, dead letters)."""
    from agentlake.streams.app import run_worker

    sys.argv = [sys.argv[0]]  # faust's Worker parses argv; ours are consumed already
    run_worker(_settings(), _rules(), loglevel=loglevel)


def _rules() -> Any:
    from agentlake.registry import rules_lookup

    return rules_lookup(_settings())


# -- registry ------------------------------------------------------------------
def split_ref(ref: str) -> tuple[str, str | None]:
    """`name@version` -> (name, version); `name` -> (name, None)."""
    name, _, version = ref.partition("@")
    if not name:
        raise UserError(f"bad reference {ref!r}: expected NAME or NAME@VERSION")
    return name, version or None


@registry_app.command("apply")
def registry_apply(
    file: Path = typer.Argument(
        ..., help="YAML with `agents:` and/or `servers:` (see examples/registry.yaml)"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Validate a registry file and publish its specs to the registry topics."""
    from agentlake.registry import RegistryError, apply_specs, load_registry_file, read_registry

    s = _settings()
    if not file.exists():
        raise UserError(f"{file}: no such file")
    known = asyncio.run(read_registry(s)).servers()
    try:
        specs = load_registry_file(file, known_servers=known)
    except RegistryError as e:
        raise UserError(str(e)) from e
    n = asyncio.run(apply_specs(s, specs, source=str(file)))
    refs = [f"{type(x).__name__.removesuffix('Spec').lower()} {x.id}@{x.version}" for x in specs]
    if as_json:
        _print_json({"applied": n, "specs": refs})
    else:
        console.print(f"applied {n} spec(s): " + ", ".join(refs))


@registry_app.command("list")
def registry_list(
    kind: str = typer.Option("all", help="agent | server | all"),
    as_json: bool = JSON_OPT,
) -> None:
    """List registered agents and MCP servers (every version)."""
    from agentlake.registry import read_registry

    if kind not in ("agent", "server", "all"):
        raise UserError(f"--kind must be agent, server or all, not {kind!r}")
    reg = asyncio.run(read_registry(_settings()))
    rows: list[dict[str, Any]] = []
    if kind in ("agent", "all"):
        for a in reg.agents():
            rows.append(
                {
                    "kind": "agent",
                    "id": a.id,
                    "version": a.version,
                    "owner": a.owner,
                    "tools": [f"{g.server}.{g.tool}" for g in a.tools],
                    "objective": a.objective,
                }
            )
    if kind in ("server", "all"):
        for sv in reg.servers():
            rows.append(
                {
                    "kind": "server",
                    "id": sv.id,
                    "version": sv.version,
                    "owner": "",
                    "tools": [t.name for t in sv.tools],
                    "objective": sv.description,
                }
            )
    if as_json:
        _print_json(rows)
        return
    t = Table(title="registry")
    for c in ("kind", "id@version", "owner", "tools", "objective / description"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["kind"], f"{r['id']}@{r['version']}", r["owner"], ", ".join(r["tools"]), r["objective"])
    out.print(t)


@registry_app.command("show")
def registry_show(
    ref: str = typer.Argument(..., help="NAME or NAME@VERSION (latest version when omitted)"),
    kind: str = typer.Option("agent", help="agent | server"),
    as_json: bool = JSON_OPT,
) -> None:
    """Show one spec as registered."""
    from agentlake.registry import dump_spec, read_registry

    name, version = split_ref(ref)
    reg = asyncio.run(read_registry(_settings()))
    spec = reg.agent(name, version) if kind == "agent" else reg.server(name, version)
    if spec is None:
        raise UserError(f"no {kind} {ref} in the registry (agentlake registry list)")
    data = dump_spec(spec)
    if as_json:
        _print_json(data)
    else:
        import yaml

        out.print(yaml.safe_dump(data, sort_keys=False), highlight=False)


@worker_app.command("sink")
def worker_sink(milvus: bool = typer.Option(True, help="also maintain the Milvus vector index")) -> None:
    """Project the log into ClickHouse (and Milvus) until interrupted."""
    from agentlake.consumers import run_sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_sink(_settings(), milvus=milvus))


def quiet_logs(level: int = logging.WARNING) -> None:
    """Warnings and up from us; only errors from the chatty libraries underneath."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # milvus-lite's gRPC C core
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("faiss", "faiss.loader", "milvus_lite", "grpc", "grpc._server", "aiokafka", "chdb"):
        logging.getLogger(name).setLevel(logging.CRITICAL if name.startswith("grpc") else logging.ERROR)


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
        None, "--trials", "-n", help="trials per scenario case (default: the suite's)"
    ),
    baseline: str | None = typer.Option(
        None, help="compare with this run id, or the latest run with this tag"
    ),
    tag: str | None = typer.Option(
        None, help="label this run (e.g. 'baseline', 'main') for later comparisons"
    ),
    junit: Path | None = typer.Option(None, help="write a JUnit XML report here"),
    markdown_file: Path | None = typer.Option(None, "--markdown", help="write a Markdown report here"),
    concurrency: int = typer.Option(8, help="trials run at the same time"),
    early_stop: bool = typer.Option(
        False, help="skip a case's remaining trials once its gate outcome is decided"
    ),
    staging: list[Path] = typer.Option([], help="extra staging server spec(s) (YAML), by name"),
    fault_rate: float = typer.Option(0.0, help="inject tool errors at this rate into every staging tool"),
    seed: int = typer.Option(0, help="base seed: the same seed replays the same trials"),
    timeout: float = typer.Option(300.0, help="seconds to wait for the pipeline to score every trial"),
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
    stack.up(s, workers=True, progress=lambda m: console.log(m))
    expanded = expand(suite, trials, base_seed=seed)
    code, report = asyncio.run(
        _sim_run(
            s, suite, expanded, ref, baseline, tag, concurrency, early_stop, staging, fault_rate, timeout
        )
    )
    if junit:
        from agentlake.sim.gate import junit_xml

        junit.write_text(junit_xml(report))
    if markdown_file:
        from agentlake.sim.gate import markdown

        markdown_file.write_text(markdown(report))
    if as_json:
        _print_json(report)
    else:
        render_sim_report(report)
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
) -> tuple[int, dict[str, Any]]:
    """Run, score through the pipeline, gate. `projector`: a started sink to reuse (else one is
    started for the call; one process must not run two sinks of the same group)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentlake.consumers import Projector
    from agentlake.registry import read_registry
    from agentlake.sdk import KafkaEmitter, Tracer
    from agentlake.sim import gate as g
    from agentlake.sim.metrics import GateSpec
    from agentlake.sim.runner import RunnerError, StagingFactory, resolve_agent, run_suite, stable_run_id
    from agentlake.sim.staging import Faults

    registry = await read_registry(s)
    try:
        target = resolve_agent(ref, registry)
        factory = StagingFactory.default(registry, Faults(error_rate=fault_rate) if fault_rate else None)
        for f in staging_files:
            factory.add_spec_file(str(f))
    except RunnerError as e:
        raise UserError(str(e)) from e
    runs = await g.read_runs(s)
    base = g.resolve_baseline(runs, baseline_ref, suite.id) if baseline_ref else None
    if baseline_ref and base is None:
        raise UserError(
            f"baseline {baseline_ref!r} is neither a run id nor a tag of suite {suite.id} "
            "(agentlake sim runs)"
        )
    gate_spec: GateSpec | None = suite.gate
    stop: tuple[int, float] | None = None
    if early_stop and gate_spec is not None:
        stop = _early_stop_rule(gate_spec)
    run_id = stable_run_id(suite, target.ref)
    emitter = KafkaEmitter(s.bootstrap_servers, s.spill_dir)
    tracer = Tracer(target.agent_id, target.version, tenant="sim", emitter=emitter, settings=s)
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
            progress=lambda _r: bar.advance(task),
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
        finally:
            if owned:
                await p.stop()
    metrics = g.metrics_of(rows)
    base_metrics = g.metrics_of(base_rows) if base_rows else None
    result = g.gate_of(gate_spec, metrics, base_metrics)
    skipped = [{"trial_id": t.trial_id, "scenario": t.case_id} for t in outcome.skipped]
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
    return (1 if result is not None and not result.passed else 0), report


def _early_stop_rule(gate_spec: Any) -> tuple[int, float] | None:
    """(k, min pass^k) from the gate's absolute pass^k floor, if it declares one."""
    for name, th in gate_spec.resolved():
        if name.startswith("pass_hat_") and th.min is not None:
            return int(name.removeprefix("pass_hat_")), float(th.min)
    return None


def render_sim_report(report: dict[str, Any]) -> None:
    t = Table(title=f"{report['suite']} × {report['agent']} — run {report['run_id']}")
    for c in ("scenario", "n", "pass^1", "pass^k", "reward", "calls", "skipped", "failures by"):
        t.add_column(c, justify="right" if c not in ("scenario", "failures by") else "left")
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
    pk = Table(title="suite pass^k / pass@k (95% bootstrap CI for pass^k)")
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
    comps = Table(title="mean reward components (scored by the stream processor)")
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
        gt = Table(title="gate")
        for c in ("check", "value", "baseline", "threshold", "result"):
            gt.add_column(c)
        for c in report["gate"]:
            gt.add_row(
                f"{c['name']} {c['kind']}",
                "–" if c["value"] is None else f"{c['value']:.3f}",
                "–" if c["baseline"] is None else f"{c['baseline']:.3f}",
                str(c["threshold"]),
                "[green]pass[/]" if c["passed"] else "[red]FAIL[/]",
            )
        out.print(gt)
        verdict = "[green]PASSED[/]" if report["passed"] else "[red]FAILED[/]"
        out.print(
            f"gate {verdict}" + (f" against baseline {report['baseline']}" if report["baseline"] else "")
        )


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
    t = Table(title="simulation runs")
    for c in ("run_id", "agent", "tag", "trials", "pass^1", "reward", "gate"):
        t.add_column(c)
    for r in rows:
        ph = (r["pass_hat"] or {}).get("1")
        t.add_row(
            r["run_id"],
            r["agent"],
            r["tag"] or "",
            str(r["trials"]),
            f"{ph:.2f}" if ph is not None else "–",
            f"{r['reward']:.3f}" if r["reward"] is not None else "–",
            {True: "passed", False: "failed", None: "–"}[r["passed"]],
        )
    out.print(t)


@mcp_app.command("generate")
def mcp_generate(
    openapi: Path = typer.Option(..., "--openapi", help="OpenAPI 3 document (JSON or YAML)"),
    base_url: str | None = typer.Option(
        None, help="where the tools forward to (default: the doc's servers[0])"
    ),
    out_file: Path | None = typer.Option(None, "--out", help="write a registry file (servers: [...]) here"),
    serve: bool = typer.Option(
        False, help="serve the generated tools over streamable HTTP until interrupted"
    ),
    port: int = typer.Option(0, help="port for --serve (0 = any free port)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Generate an MCP server from an internal app's OpenAPI document: one tool per operation."""
    import yaml

    from agentlake.sim.openapi import OpenAPIError, openapi_to_server_spec, tools_from_openapi

    try:
        spec = openapi_to_server_spec(str(openapi))
        tools = tools_from_openapi(str(openapi), base_url=base_url)
    except OpenAPIError as e:
        raise UserError(f"{openapi}: {e}") from e
    except FileNotFoundError as e:
        raise UserError(f"{openapi}: no such file") from e
    spec.setdefault("openapi", str(openapi))
    if base_url:
        spec.setdefault("url", base_url)
    if out_file:
        out_file.write_text(yaml.safe_dump({"servers": [spec]}, sort_keys=False))
    if as_json:
        _print_json(spec)
    elif not serve:
        t = Table(title=f"MCP server {spec['id']!r} from {openapi}")
        t.add_column("tool")
        t.add_column("description")
        t.add_column("arguments")
        for tool in spec["tools"]:
            props = tool["input_schema"].get("properties", {})
            req = set(tool["input_schema"].get("required", []))
            t.add_row(
                tool["name"],
                tool.get("description", ""),
                ", ".join(f"{k}{'*' if k in req else ''}" for k in props),
            )
        out.print(t)
    if serve:
        asyncio.run(_serve_forever(tools, spec["id"], port))


async def _serve_forever(tools: list[Any], name: str, port: int) -> None:
    from agentlake.sim.staging import StagingServer, serve_http

    handle = await serve_http(StagingServer(tools, name=name), port=port)
    console.print(f"serving MCP server {name!r} at {handle.url} (Ctrl-C to stop)")
    try:
        await asyncio.Event().wait()
    finally:
        await handle.close()


# -- replay and export --------------------------------------------------------------------
@app.command()
def replay(
    trajectory_id: str | None = typer.Argument(None, help="the trajectory to replay"),
    agent: str = typer.Option(
        ..., "--agent", help="candidate: NAME@VERSION, module:callable, openai:MODEL, cmd:COMMAND"
    ),
    fork_at: int | None = typer.Option(
        None, help="serve recorded results only before this tool call (0-based)"
    ),
    suite_file: Path | None = typer.Option(
        None, "--suite", help="the suite the trajectory came from (its state)"
    ),
    run: str | None = typer.Option(None, help="replay a whole past run as a new run of --suite"),
    where: str | None = typer.Option(
        None, help="or: trajectories matching this ClickHouse filter, e.g. \"outcome != 'success'\""
    ),
    timeout: float = typer.Option(120.0, help="seconds to wait for the pipeline to score the replay"),
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
    stack.up(s, workers=True, progress=lambda m: console.log(m))
    if trajectory_id is None:
        if suite is None:
            raise UserError("--run/--where re-run the trials of a suite: pass --suite FILE")
        result = asyncio.run(_replay_run(s, suite, agent, run, where, timeout))
    else:
        result = asyncio.run(_replay_one(s, trajectory_id, agent, fork_at, suite, timeout))
    if as_json:
        _print_json(result)
        return
    if "trials" in result:
        console.print(
            f"re-ran {result['trials']} trials of {result['source']} as run {result['run_id']}: "
            f"pass^1 {result['pass_hat_1']:.3f}, mean reward {result['reward']:.3f}"
        )
        return
    d = result["divergence"]
    t = Table(title=f"replay of {result['source']} with {result['agent']}", show_header=False)
    t.add_row("task", result["task"])
    t.add_row("recorded", f"{result['recorded_calls']} calls, outcome {result['recorded_outcome']}")
    t.add_row("replayed", f"{result['replayed_calls']} calls served from the log")
    t.add_row(
        "diverged",
        "never"
        if d is None
        else f"at tool call {d['step']}: {d['reason']} (recorded {d['expected']}, candidate {d['actual']})",
    )
    t.add_row("new trajectory", result["trajectory_id"])
    t.add_row("outcome", f"{'success' if result['success'] else 'failure'} ({result['reason']})")
    t.add_row("reward", f"{result['reward']:.3f}" if result["reward"] is not None else "–")
    out.print(t)


async def _replay_one(
    s: Settings, trajectory_id: str, ref: str, fork_at: int | None, suite: Any, timeout: float
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
                staging=StagingFactory.default(registry),
                run_id=run_id,
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
    s: Settings, suite: Any, ref: str, run: str | None, where: str | None, timeout: float
) -> dict[str, Any]:
    from agentlake.consumers import Projector
    from agentlake.sim.replay import trials_of_run
    from agentlake.sim.suite import expand

    async with Projector(s) as projector:
        await projector.catch_up(60)
        try:
            ids = set(await asyncio.to_thread(trials_of_run, projector.clickhouse, run, where))
        except Exception as e:
            raise UserError(f"cannot select the trials to replay: {str(e).splitlines()[0]}") from e
    if not ids:
        raise UserError(f"no trajectories of suite trials match {run or where!r}")
    index_max = max(int(i.rsplit(":", 1)[-1]) for i in ids if i.rsplit(":", 1)[-1].isdigit())
    trials = [t for t in expand(suite, max(index_max + 1, suite.trials)) if t.trial_id in ids]
    if not trials:
        raise UserError(f"the trials of {run or where!r} are not in suite {suite.id}")
    _code, report = await _sim_run(
        s, suite, trials, ref, None, f"replay-of-{run or 'query'}", 8, False, [], 0.0, timeout
    )
    return {
        "source": run or where,
        "run_id": report["run_id"],
        "trials": len(report["trials"]),
        "pass_hat_1": report["suite_metrics"]["pass_hat"].get(1, 0.0),
        "reward": report["suite_metrics"]["reward"] or 0.0,
        "report": report,
    }


@app.command()
def export(
    fmt: str = typer.Option("openai-chat-jsonl", "--format", help="openai-chat-jsonl"),
    min_reward: float | None = typer.Option(
        None, help="only trajectories whose final reward is at least this"
    ),
    agent: str | None = typer.Option(None, "--agent", help="only this agent (NAME or NAME@VERSION)"),
    run: str | None = typer.Option(None, help="only this run"),
    successful: bool = typer.Option(False, help="only successful trajectories"),
    limit: int = typer.Option(100_000, help="at most this many trajectories"),
    out_file: Path | None = typer.Option(None, "--out", help="write here instead of stdout"),
) -> None:
    """Export trajectories with their tool calls as chat fine-tuning data (rewards attached)."""
    if fmt != "openai-chat-jsonl":
        raise UserError(f"unknown --format {fmt!r}: supported: openai-chat-jsonl")
    rows = asyncio.run(
        _with_projections(
            lambda ch: export_rows(ch, min_reward, agent, run, successful, limit), catch_up=True
        )
    )
    from agentlake.sim.export import write_jsonl

    n = write_jsonl(rows, sys.stdout if out_file is None else out_file)
    console.print(f"exported {n} trajectories" + (f" to {out_file}" if out_file else ""))


def export_rows(
    client: Any,
    min_reward: float | None,
    agent: str | None,
    run: str | None,
    successful: bool,
    limit: int,
    tools_by_server: dict[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Chat fine-tuning rows for the trajectories whose final reward matches the filters."""
    import json as _json

    from agentlake.projections.clickhouse import query
    from agentlake.sim.export import tools_to_openai, trajectory_to_chat

    where = ["is_final = 1"]
    params: dict[str, Any] = {"limit": limit}
    if min_reward is not None:
        where.append("total >= {min_reward:Float64}")
        params["min_reward"] = min_reward
    if agent:
        name, version = split_ref(agent)
        where.append("agent_id = {agent_id:String}")
        params["agent_id"] = name
        if version:
            where.append("agent_version = {agent_version:String}")
            params["agent_version"] = version
    if run:
        where.append("run_id = {run:String}")
        params["run"] = run
    if successful:
        where.append("success = 1")
    rewards = query(
        client,
        "SELECT trajectory_id, total, components, success, agent_id, agent_version, run_id, scenario_id "
        f"FROM rewards FINAL WHERE {' AND '.join(where)} ORDER BY trajectory_id LIMIT {{limit:UInt64}}",
        params,
    )
    if not rewards:
        return []
    ids = [r["trajectory_id"] for r in rewards]
    events = query(
        client,
        "SELECT trajectory_id, record, body FROM events FINAL WHERE trajectory_id IN {ids:Array(String)} "
        "ORDER BY trajectory_id, seq",
        {"ids": ids},
    )
    by_traj: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_traj.setdefault(e["trajectory_id"], []).append({**_json.loads(e["body"]), "record": e["record"]})
    out = []
    for r in rewards:
        evs = by_traj.get(r["trajectory_id"])
        if not evs:
            continue
        reward = {
            "total": r["total"],
            "components": dict(r["components"]),
            "success": bool(r["success"]),
            "run_id": r["run_id"],
            "scenario": r["scenario_id"],
        }
        try:
            used = sorted({str(e["server_id"]) for e in evs if e.get("server_id")})
            tools = [t for sv in used for t in (tools_by_server or {}).get(sv, [])]
            out.append(
                trajectory_to_chat(evs, tools=tools_to_openai(tools) if tools else None, reward=reward)
            )
        except ValueError:
            continue  # incomplete trajectory (e.g. its start event was never projected)
    return out


def main() -> None:
    from agentlake.projections.clickhouse import ClickHouseError
    from agentlake.stack import StackError

    quiet_logs()
    try:
        app()
    except (UserError, StackError, ClickHouseError) as e:
        console.print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
