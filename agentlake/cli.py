"""The `agentlake` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from agentlake.settings import Settings, get_settings

app = typer.Typer(
    help="AgentLake: event-sourced infrastructure for reliable AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(help="Long-running workers.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
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
    trajectories: int = typer.Option(24, "--trajectories", "-n", help="tasks per agent"),
    as_json: bool = JSON_OPT,
) -> None:
    """Bring the stack up, run two reference agents, and read the results back."""
    from rich.progress import Progress

    from agentlake import stack
    from agentlake.demo import demo as run_demo

    s = _settings()
    stack.up(s, workers=True, progress=lambda m: console.log(m))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("trajectories", total=trajectories * 2)
        result = asyncio.run(run_demo(s, trajectories, progress=lambda n: bar.advance(task, n)))
    if as_json:
        _print_json(result)
        return
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
    if not result["caught_up"]:
        raise UserError(
            "the projections did not catch up in time: is the stream worker running? (agentlake status)"
        )


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
    from agentlake.registry import dump_spec, read_registry

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
    del dump_spec
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
