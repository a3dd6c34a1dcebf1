"""`agentlake registry`: agent and MCP server specs on the log."""

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
    console,
    out,
    registry_app,
    split_ref,
)
from agentlake.cli._render import render_rows


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
    try:
        load_registry_file(file)  # everything that can be checked offline, before Kafka
        known = asyncio.run(read_registry(s)).servers()
        specs = load_registry_file(file, known_servers=known)  # grants to registered servers
    except RegistryError as e:
        raise UserError(str(e)) from e
    n = asyncio.run(apply_specs(s, specs, source=str(file)))
    refs = [f"{type(x).__name__.removesuffix('Spec').lower()} {x.id}@{x.version}" for x in specs]
    if as_json:
        _print_json({"applied": n, "specs": refs})
    else:
        console.print(f"applied {n} spec(s): " + ", ".join(refs), markup=False)


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
    if not rows:
        out.print("0 specs: `agentlake registry apply FILE` registers agents and servers")
        return
    render_rows(
        out,
        [
            {
                "kind": r["kind"],
                "id@version": f"{r['id']}@{r['version']}",
                "owner": r["owner"],
                "tools": ", ".join(r["tools"]),
                "objective / description": r["objective"],
            }
            for r in rows
        ],
        title="registry",
        caption=f"{len(rows)} spec{'s' if len(rows) != 1 else ''}",
        wrap=("tools", "objective / description"),
    )


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
