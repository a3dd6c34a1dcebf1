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
# emoji=False: ":x:" in data stays ":x:" (data is printed as text: see `agentlake.cli._render`)
console = Console(stderr=True, emoji=False)
out = Console(emoji=False)

JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="on an error, print the full traceback instead of one line"
    ),
) -> None:
    """AgentLake: event-sourced infrastructure for reliable AI agents."""
    # `main()` reads --debug before Typer runs (it may appear anywhere); declared here for --help.


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as e:
        raise UserError(settings_error(e)) from e


def settings_error(e: Any) -> str:
    """The one line for a `Settings` validation error (a pydantic ValidationError)."""
    err = e.errors()[0]
    if not err["loc"]:  # a check across settings (e.g. the size limits): its message names them
        return f"bad settings: {str(err['msg']).removeprefix('Value error, ')}"
    field = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"bad setting AGENTLAKE_{field.upper()}={err.get('input')!r}: {msg}"


def _print_json(data: Any) -> None:
    """Strict JSON on stdout (NaN and infinities become null)."""
    from agentlake.schemas._bounds import _clean

    out.print_json(json.dumps(_clean(json.loads(json.dumps(data, default=str))), allow_nan=False))


def require_store(s: Settings) -> None:
    """Read commands never create a projection store: an embedded one must exist already."""
    if s.clickhouse_url is None and not s.data_dir.is_dir():
        raise UserError(
            f"no AgentLake data dir at {s.data_dir}: run `agentlake up` first, run this from the "
            "project folder, or set AGENTLAKE_HOME"
        )


async def _with_projections(fn: Any, catch_up: bool, milvus: bool = False) -> Any:
    """Run `fn(clickhouse_client)` on this store, after projecting what the log holds when
    `catch_up`.

    The consumer group is bound to this store (`Settings.sink_group`). A catch-up that
    writes ClickHouse only (`milvus=False`: the read commands) uses its own group,
    ``<sink group>-clickhouse``, so that it never moves the offsets of the sink that
    also maintains the vector index; ClickHouse absorbs the second copy (idempotent).
    """
    s = _settings()
    require_store(s)
    if catch_up:
        from agentlake.consumers import Projector

        group = s.sink_group if milvus else f"{s.sink_group}-clickhouse"
        async with Projector(s, group_id=group, milvus=milvus) as p:
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


QUIET_LIBRARIES = (
    "faiss",
    "faiss.loader",
    "milvus_lite",
    "pymilvus",
    "grpc",
    "grpc._server",
    "aiokafka",
    "chdb",
)
"""Libraries whose warnings a user cannot act on (e.g. pymilvus' "failed to get mvccTs"
on milvus-lite): errors only, unless --debug."""


def quiet_logs(level: int = logging.WARNING, debug: bool = False) -> None:
    """Warnings and up from us; only errors from the chatty libraries underneath (all of
    their records with `debug`), and repeated messages (e.g. connection errors while the
    broker is down) rate-limited."""
    from agentlake._logging import pin_level, rate_limit_chatty_loggers

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # milvus-lite's gRPC C core
    for name in QUIET_LIBRARIES:
        quiet = logging.CRITICAL if name.startswith("grpc") else logging.ERROR
        pin_level(name, logging.NOTSET if debug else quiet)
    rate_limit_chatty_loggers()


def one_line_error(e: BaseException, s: Settings | None = None) -> tuple[str, int] | None:
    """(message, exit code) for errors a user can act on; None for anything else (a bug).

    Kafka that does not answer, SQL that ClickHouse rejects, bad settings and files
    that cannot be read all become one line that says what to do, exit code 2.
    """
    from agentlake.projections.clickhouse import ClickHouseError
    from agentlake.stack import StackError

    if isinstance(e, UserError | StackError | ClickHouseError):
        return str(e), 2
    from pydantic import ValidationError

    if isinstance(e, ValidationError) and e.title == "Settings":  # read outside `_settings()`
        return settings_error(e), 2
    name = type(e).__name__
    module = type(e).__module__
    if module.startswith("aiokafka") or name in ("KafkaConnectionError", "NoBrokersAvailable"):
        where = s.bootstrap_servers if s is not None else "KAFKA_BOOTSTRAP_SERVERS"
        return (
            f"Kafka at {where} did not answer ({name}): start it with `agentlake up`, "
            "or check KAFKA_BOOTSTRAP_SERVERS / AGENTLAKE_KAFKA_PORT",
            2,
        )
    if module.startswith("clickhouse_connect"):
        return f"ClickHouse: {clickhouse_message(str(e))}", 2
    if isinstance(e, ConnectionError | TimeoutError):
        return f"{name}: {e}: is the stack up? (agentlake status)", 2
    if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"{e.strerror or name}: {e.filename}", 2
    return None


def clickhouse_message(text: str) -> str:
    """The one useful line of a ClickHouse exception: what failed and its error code."""
    import re

    code_m = re.search(r"\(([A-Z][A-Z_]+)\)\s*$", text.strip())
    code = code_m.group(1) if code_m else ""
    msg = " ".join(text.split())
    msg = re.sub(r"^.*?DB::Exception: (?:[\w-]+: )?", "", msg)
    msg = msg.split(" Expected one of")[0]
    msg = re.sub(r"(: \d+)? SETTINGS readonly = '1'.*$", "", msg)  # our setting echoed back
    msg = re.sub(r" In scope .*$| \(version [^)]*\)|\. \([A-Z_]+\)$", "", msg).rstrip(". ")
    # ClickHouse's rewrite of the query (e.g. "FUNCTION and(notEquals(__table1.outcome, ...")
    # quotes our wrapper, not what the user wrote
    msg = re.sub(r":? while executing '.*$", "", msg).rstrip(".: ")
    if code == "READONLY":
        msg = "this command only reads: write statements (CREATE, INSERT, ALTER, ...) are refused"
    return msg[:300] + (f" ({code})" if code else "")


def user_sql_error(text: str, user_sql: str, offset: int = 0, what: str = "query") -> str:
    """What is wrong with the user's SQL, from a ClickHouse error about the query we sent.

    Args:
        text: the ClickHouse exception text (about the whole query sent).
        user_sql: the user's part (a statement, or a filter we wrap).
        offset: where `user_sql` starts in the query sent (0-based characters).
        what: how the message names `user_sql` (query, filter).

    Returns:
        One line that quotes only the user's text: a syntax error as its position in
        `user_sql` and the text there, or "ends too early" when ClickHouse stumbled on
        what we append (SETTINGS, FORMAT, a closing parenthesis); other errors as
        `clickhouse_message` gives them (our wrapper stripped).
    """
    import re

    m = re.search(r"Syntax error[^:]*: failed at position (\d+)", text)
    if m is None:
        return clickhouse_message(text)
    rel = int(m.group(1)) - offset  # 1-based in the user's text
    mine = user_sql.rstrip()
    if rel > len(mine):
        return f"syntax error: the {what} ends too early (an incomplete expression or clause)"
    if rel < 1:
        return f"syntax error: the {what} does not stand on its own (unbalanced parentheses?)"
    near = " ".join(mine[rel - 1 :].split())
    near = near if len(near) <= 40 else near[:40] + "…"
    return f"syntax error in the {what} at position {rel}, near {near!r}"
