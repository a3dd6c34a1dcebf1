"""`agentlake export`: training data from scored trajectories."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import (
    UserError,
    _with_projections,
    app,
    console,
    split_ref,
)


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
