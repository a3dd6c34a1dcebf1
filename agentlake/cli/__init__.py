"""The `agentlake` command: one module per command group, registered on one Typer app."""

from __future__ import annotations

import sys

from agentlake.cli import demo, export, lake, lake_docs, mcp, ops, query, registry, replay, sim  # noqa: F401  (registers)
from agentlake.cli._app import UserError, app, console, quiet_logs
from agentlake.cli.export import export_rows
from agentlake.cli.query import read_dead_letters
from agentlake.cli.sim import _sim_run

__all__ = ["UserError", "_sim_run", "app", "export_rows", "main", "quiet_logs", "read_dead_letters"]


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
