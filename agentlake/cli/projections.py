"""`agentlake projections`: rebuild a read model from the log on demand."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

import typer
from rich.markup import escape

from agentlake.cli._app import JSON_OPT, UserError, _print_json, _settings, app, console

projections_app = typer.Typer(
    help="Read models derived from the log: rebuild them by replaying it.", no_args_is_help=True
)
app.add_typer(projections_app, name="projections")


class RebuildTarget(enum.StrEnum):
    clickhouse = "clickhouse"
    milvus = "milvus"


@projections_app.command("rebuild")
def rebuild(
    target: RebuildTarget = typer.Option(..., "--target", help="the store to rebuild"),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="replay every record the topics hold (the default)"
    ),
    since: str | None = typer.Option(
        None, "--since", help="replay records from this time on: ISO 8601 (UTC if naive) or 15m, 2h, 7d"
    ),
    recreate: bool = typer.Option(
        False, "--recreate", help="drop the target's tables (collection) and create them empty first"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Replay the topics into ClickHouse or Milvus (idempotent; the live sink's offsets are untouched).

    Points at whatever the settings name: a new Milvus server (MILVUS_URI), a new
    ClickHouse server or cluster (CLICKHOUSE_URL, CLICKHOUSE_CLUSTER), or the embedded
    stores (stop the processes that own them first).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentlake.consumers.rebuild import RebuildError, parse_since
    from agentlake.consumers.rebuild import rebuild as run_rebuild

    if from_beginning and since:
        raise UserError("give --from-beginning or --since, not both")
    try:
        start = parse_since(since) if since else None
    except ValueError as e:
        raise UserError(str(e)) from None
    s = _settings()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a failure is reported in one line below
    with Progress(
        TextColumn(f"rebuilding {target.value}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
    ) as bar:
        task = bar.add_task("replay", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            stats = asyncio.run(
                run_rebuild(s, target.value, since=start, recreate=recreate, progress=progress)  # type: ignore[arg-type]
            )
        except RebuildError as e:
            raise UserError(str(e)) from None
    info: dict[str, Any] = {
        "target": stats.target,
        "topics": stats.topics,
        "since": stats.since,
        "recreated": stats.recreated,
        "records": stats.records,
        "skipped": stats.skipped,
        "rows": stats.rows,
        "vectors": stats.vectors,
        "seconds": stats.seconds,
    }
    if as_json:
        _print_json(info)
        return
    what = (
        ", ".join(f"{n} {t}" for t, n in sorted(stats.rows.items())) or "no rows"
        if stats.target == "clickhouse"
        else f"{stats.vectors} vectors"
    )
    console.print(
        f"[green]rebuilt[/] {stats.target} from {stats.records} records"
        f"{f' ({stats.skipped} malformed, skipped)' if stats.skipped else ''} in {stats.seconds:.1f}s: "
        + escape(what)
    )
