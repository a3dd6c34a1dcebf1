"""Read commands over the projections and the log: report, sql, dlq."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.table import Table

from agentlake.cli._app import (
    JSON_OPT,
    _print_json,
    _settings,
    _with_projections,
    app,
    out,
)
from agentlake.cli.demo import render_summary
from agentlake.settings import Settings


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
