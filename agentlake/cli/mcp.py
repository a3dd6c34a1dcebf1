"""`agentlake mcp`: staging MCP servers generated from OpenAPI documents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import (
    JSON_OPT,
    UserError,
    _print_json,
    console,
    mcp_app,
    out,
)
from agentlake.cli._render import DataTable


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
    port: int = typer.Option(0, min=0, max=65535, help="port for --serve (0 = any free port)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Generate an MCP server from an internal app's OpenAPI document: one tool per operation."""
    import yaml

    from agentlake.sim.openapi import OpenAPIError, openapi_to_server_spec, tools_from_openapi

    try:
        spec = openapi_to_server_spec(str(openapi))
        tools = tools_from_openapi(str(openapi), base_url=base_url)
    except OpenAPIError as e:  # most messages name the file already
        raise UserError(str(e) if str(openapi) in str(e) else f"{openapi}: {e}") from e
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
        t = DataTable(title=f"MCP server {spec['id']!r} from {openapi}")
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
    console.print(f"serving MCP server {name!r} at {handle.url} (Ctrl-C to stop)", markup=False)
    try:
        await asyncio.Event().wait()
    finally:
        await handle.close()
