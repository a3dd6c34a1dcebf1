"""`agentlake export`: training data from scored trajectories."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import (
    UserError,
    _settings,
    _with_projections,
    app,
    console,
    split_ref,
)


@app.command()
def export(
    fmt: str = typer.Option("openai-chat-jsonl", "--format", help="openai-chat-jsonl"),
    min_reward: float | None = typer.Option(
        None, min=0.0, max=1.0, help="only trajectories whose final reward is at least this"
    ),
    agent: str | None = typer.Option(None, "--agent", help="only this agent (NAME or NAME@VERSION)"),
    run: str | None = typer.Option(None, help="only this run"),
    successful: bool = typer.Option(False, help="only successful trajectories"),
    limit: int = typer.Option(100_000, min=1, help="at most this many trajectories"),
    out_file: Path | None = typer.Option(None, "--out", help="write here instead of stdout"),
    metadata_file: Path | None = typer.Option(
        None,
        "--metadata-out",
        help="sidecar JSONL: each row's trajectory id, reward, outcome (default with --out: OUT.meta.jsonl)",
    ),
    inline_metadata: bool = typer.Option(
        False, help="keep a 'metadata' key in every row (not accepted by OpenAI fine-tuning)"
    ),
) -> None:
    """Export trajectories with their tool calls as OpenAI chat fine-tuning data.

    Every row passes the format's rules (`agentlake.sim.export.validate_chat_row`); a
    trajectory that cannot (truncated arguments, crashed after a tool call) is left
    out and counted. Rewards and ids go to the metadata sidecar."""
    if fmt != "openai-chat-jsonl":
        raise UserError(f"unknown --format {fmt!r}: supported: openai-chat-jsonl")
    skipped: dict[str, int] = {}
    tools = asyncio.run(_known_tools())
    rows = asyncio.run(
        _with_projections(
            lambda ch: export_rows(ch, min_reward, agent, run, successful, limit, tools, skipped=skipped),
            catch_up=True,
        )
    )
    from agentlake.sim.export import write_jsonl

    if metadata_file is None and out_file is not None and not inline_metadata:
        metadata_file = out_file.with_name(out_file.name.removesuffix(".jsonl") + ".meta.jsonl")
    n = write_jsonl(
        rows,
        sys.stdout if out_file is None else out_file,
        metadata=metadata_file,
        inline_metadata=inline_metadata,
    )
    console.print(
        f"exported {n} trajectories"
        + (f" to {out_file}" if out_file else "")
        + (f" (metadata in {metadata_file})" if metadata_file else ""),
        markup=False,
    )
    for reason, count in sorted(skipped.items()):
        console.print(f"left out {count}: {reason}", markup=False)


async def _known_tools() -> dict[str, list[dict[str, Any]]]:
    """Tool specs by server id: the reference shop and every registered server's tools."""
    from agentlake.sim.reference import SHOP_TOOLS

    out: dict[str, list[dict[str, Any]]] = {"shop": [dict(t) for t in SHOP_TOOLS]}
    try:
        from agentlake.registry import read_registry

        registry = await read_registry(_settings())
    except Exception:  # no broker: export what ClickHouse holds, with tools inferred from calls
        return out
    for spec in registry.servers():
        if spec.tools:
            out.setdefault(
                spec.id,
                [
                    {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                    for t in spec.tools
                ],
            )
    return out


def export_rows(
    client: Any,
    min_reward: float | None,
    agent: str | None,
    run: str | None,
    successful: bool,
    limit: int,
    tools_by_server: dict[str, list[dict[str, Any]]] | None = None,
    *,
    skipped: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Chat fine-tuning rows for the trajectories whose final reward matches the filters.

    Rows that cannot be exported validly are left out; `skipped` (when given)
    counts them by reason."""
    import json as _json

    from agentlake.projections.clickhouse import query
    from agentlake.sim.export import NotExportable, tools_to_openai, trajectory_to_chat, validate_chat_row

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
        used = sorted({str(e["server_id"]) for e in evs if e.get("server_id")})
        tools = [t for sv in used for t in (tools_by_server or {}).get(sv, [])]
        called = {str(e.get("tool")) for e in evs if e["record"] == "ToolCallRequested"}
        tools = [t for t in tools if t["name"] in called]  # what the trajectory could call and did
        try:
            row = trajectory_to_chat(evs, tools=tools_to_openai(tools) if tools else None, reward=reward)
        except NotExportable as e:
            reason = (
                str(e).split(" (")[0] if "ends on" not in str(e) else "crashed: no final assistant answer"
            )
            if skipped is not None:
                key = "truncated or invalid tool arguments" if "arguments" in reason else reason
                skipped[key] = skipped.get(key, 0) + 1
            continue
        except ValueError:
            if skipped is not None:  # incomplete trajectory (e.g. its start event was never projected)
                skipped["incomplete trajectory"] = skipped.get("incomplete trajectory", 0) + 1
            continue
        problems = validate_chat_row({k: v for k, v in row.items() if k != "metadata"})
        if problems:
            if skipped is not None:
                skipped[f"invalid row: {problems[0]}"] = skipped.get(f"invalid row: {problems[0]}", 0) + 1
            continue
        out.append(row)
    return out
