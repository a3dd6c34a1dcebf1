"""The Typer app, its sub-apps, and what every command group shares: consoles, errors, settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import typer
from rich.console import Console

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


async def _with_projections(fn: Any, catch_up: bool) -> Any:
    s = _settings()
    if catch_up:
        from agentlake.consumers import Projector

        async with Projector(s) as p:
            await p.catch_up(timeout=120)
            return await asyncio.to_thread(fn, p.clickhouse)
    from agentlake.projections.clickhouse import connect

    return await asyncio.to_thread(lambda: fn(connect(s)))


# -- registry ------------------------------------------------------------------
def split_ref(ref: str) -> tuple[str, str | None]:
    """`name@version` -> (name, version); `name` -> (name, None)."""
    name, _, version = ref.partition("@")
    if not name:
        raise UserError(f"bad reference {ref!r}: expected NAME or NAME@VERSION")
    return name, version or None


def quiet_logs(level: int = logging.WARNING) -> None:
    """Warnings and up from us; only errors from the chatty libraries underneath."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # milvus-lite's gRPC C core
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("faiss", "faiss.loader", "milvus_lite", "grpc", "grpc._server", "aiokafka", "chdb"):
        logging.getLogger(name).setLevel(logging.CRITICAL if name.startswith("grpc") else logging.ERROR)
