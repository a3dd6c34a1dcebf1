"""The `agentlake` command: one module per command group, registered on one Typer app."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import typer

# typer vendors click: its usage errors are these classes, not the `click` package's
from typer._click import exceptions as click_errors

from agentlake.cli import (  # noqa: F401  (importing a command module registers its commands)
    auth,
    dashboard,
    demo,
    export,
    lake,
    lake_docs,
    mcp,
    ops,
    otel,
    projections,
    query,
    registry,
    replay,
    sim,
    token,
)
from agentlake.cli._app import UserError, app, console, one_line_error, quiet_logs
from agentlake.cli.export import export_rows
from agentlake.cli.query import read_dead_letters
from agentlake.cli.sim import _sim_run

__all__ = ["UserError", "_sim_run", "app", "export_rows", "main", "quiet_logs", "read_dead_letters"]


def main() -> None:
    """The `agentlake` entry point: one line and exit 2 for an error the user can act on,
    one line and exit 70 (EX_SOFTWARE) for anything else; the traceback only with --debug."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("AGENTLAKE_DEBUG", "") in ("1", "true")
    sys.argv = [a for a in sys.argv if a != "--debug"]
    quiet_logs(debug=debug)
    if not debug and "worker" not in sys.argv[1:2]:
        # a command reports a Kafka failure itself, in one line; workers keep (rate-limited) logs
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    _install_schema_lookup()
    try:
        rv = app(standalone_mode=False)  # usage errors come back to us: one line below
        sys.exit(rv if isinstance(rv, int) else 0)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except click_errors.NoArgsIsHelpError as e:
        from typer import rich_utils

        rich_utils.rich_format_error(e)
        sys.exit(e.exit_code)
    except click_errors.ClickException as e:  # bad option, value out of range, missing argument, ...
        from rich.markup import escape

        where = (
            f" (see `{e.ctx.command_path} --help`)"
            if isinstance(e, click_errors.UsageError) and e.ctx
            else ""
        )
        msg = " ".join(e.format_message().split())
        console.print(f"[red]error:[/] {escape(msg)}{escape(where)}", soft_wrap=True, highlight=False)
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:
        if debug:
            raise
        s = None
        with contextlib.suppress(Exception):
            from agentlake.settings import get_settings

            s = get_settings()
        known = one_line_error(e, s)
        if known is None:
            msg = f"unexpected {type(e).__name__}: {_first_line(e)} (rerun with --debug for the traceback)"
            code = 70
        else:
            msg, code = known
        from rich.markup import escape

        console.print(f"[red]error:[/] {escape(msg)}", soft_wrap=True, highlight=False)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # clients collected at exit: noise
        sys.exit(code)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _install_schema_lookup() -> None:
    """Workers and commands decode events from newer SDKs: unknown writer schemas are
    looked up on the schema topic (see `agentlake.schema_registry`)."""
    from agentlake.schema_registry import install

    install()
