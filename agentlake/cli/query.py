"""Read commands over the projections and the log: report, sql, dlq (and dlq redrive)."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from agentlake.cli._app import (
    JSON_OPT,
    UserError,
    _print_json,
    _settings,
    _with_projections,
    app,
    console,
    out,
    user_sql_error,
)
from agentlake.cli._render import DataTable, render_rows
from agentlake.cli.demo import render_summary
from agentlake.kafka_io import make_consumer, make_producer
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
    elif not rows:
        scope = " and".join(
            f" for {k} {v}" for k, v in (("run", run_id), ("tenant", tenant)) if v is not None
        )
        out.print(f"0 rows: no scored trajectories{scope or ' yet'}", markup=False)
    else:
        render_summary(rows, "agents")


DEFAULT_SQL_LIMIT = 10_000
"""Rows `agentlake sql` prints unless --limit says otherwise."""


@app.command()
def sql(
    statement: str = typer.Argument(
        ..., help="a SELECT over events, trajectories, steps, tool_calls, rewards, ..."
    ),
    catch_up: bool = typer.Option(
        True, help="project what the log holds before reading (--no-catch-up: may be stale)"
    ),
    limit: int = typer.Option(
        DEFAULT_SQL_LIMIT, "--limit", min=1, help="print at most this many rows (ClickHouse stops there)"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Run a read-only query against the ClickHouse projections (ClickHouse `readonly=1`:
    CREATE, INSERT, ALTER, DROP and SET are refused; so are file() and table functions
    that read the server's files or other servers)."""
    from agentlake.projections.clickhouse import jsonable

    rows, cut = asyncio.run(_with_projections(lambda ch: read_only_query(ch, statement, limit), catch_up))
    if as_json:
        _print_json(jsonable(rows))
    elif not rows:
        out.print("0 rows")
    else:
        n = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
        render_rows(out, rows, caption=f"{n} (first {limit} rows; --limit to change)" if cut else n)
    if cut and as_json:
        console.print(f"first {limit} rows; --limit to change", highlight=False, markup=False)


def read_only_query(
    client: Any, statement: str, limit: int = DEFAULT_SQL_LIMIT
) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` rows of `statement`, run with ClickHouse's ``readonly=1`` (reads
    only, settings fixed), and whether there were more.

    ClickHouse stops reading past `limit` result rows (``max_result_rows`` with
    ``result_overflow_mode='break'``: it may hand over up to one block more, which is
    dropped here), so a huge result never reaches memory.

    Raises:
        UserError: the statement is refused (empty, FORMAT, file(), a table function that
            reads the server's files) or ClickHouse refused it (syntax, unknown table, a write).
    """
    import re

    from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

    from agentlake.cli._sql import SqlTextError, mask_literals, reads_server_files
    from agentlake.projections.clickhouse import user_query_settings

    if not statement.strip().rstrip(";").strip():
        raise UserError('empty query: give a SELECT, e.g. agentlake sql "SELECT count() FROM trajectories"')
    try:
        one = ";" not in mask_literals(statement).strip().rstrip(";")
    except SqlTextError:
        one = True  # ClickHouse reports the unterminated literal
    if not one:
        raise UserError("one statement at a time: leave out ';' between statements")
    if re.search(r"\bFORMAT\s+\w+\s*;?\s*$", statement, re.IGNORECASE):
        raise UserError("leave out FORMAT: the command sets it (a table, or JSON with --json)")
    reader = reads_server_files(statement)
    if reader == "file()":
        raise UserError(
            "file() reads the server's files: refused; query AgentLake's tables (events, trajectories, ...)"
        )
    try:
        # readonly last: a server applies the settings in order, and refuses changes after it
        res = client.query(
            statement,
            settings=user_query_settings(max_result_rows=limit, result_overflow_mode="break"),
        )
    except ClickHouseClientError as e:
        if reader and "(READONLY)" in str(e):
            raise UserError(
                f"{reader}: table functions that read the server's files or other servers are refused "
                "(this is not about writing); query AgentLake's tables (events, trajectories, ...)"
            ) from e
        raise UserError(f"ClickHouse: {user_sql_error(str(e), statement)}") from e
    names = res.column_names
    got = res.result_rows
    return [dict(zip(names, row, strict=True)) for row in got[:limit]], len(got) > limit


def source_topic(name: str) -> str:
    """A topic that has dead letters (``agent.steps``; ``agent.steps.dlq`` also accepted).

    Raises:
        UserError: not one of the project's topics with a dead-letter topic.
    """
    from agentlake.topics import all_topics

    name = name.removesuffix(".dlq")
    known = [t.name for t in all_topics() if not t.compacted and not t.name.endswith(".dlq")]
    if name not in known:
        raise UserError(f"unknown topic {name!r}: the topics with a dead-letter topic are {', '.join(known)}")
    return name


dlq_app = typer.Typer(
    help="Dead letters: show them (`agentlake dlq --topic T`) or re-drive them (`agentlake dlq redrive`).",
    invoke_without_command=True,
)
app.add_typer(dlq_app, name="dlq")
TOPIC_OPT = typer.Option("agent.trajectories", "--topic", help="source topic whose dead letters to read")


@dlq_app.callback()
def dlq(
    ctx: typer.Context,
    topic: str = TOPIC_OPT,
    limit: int = typer.Option(20, min=1, help="at most this many"),
    as_json: bool = JSON_OPT,
) -> None:
    """Show dead letters (malformed records) with their reasons."""
    if ctx.invoked_subcommand is not None:
        return
    from agentlake.topics import dlq as dlq_name

    name = dlq_name(source_topic(topic))
    rows = asyncio.run(read_dead_letters(_settings(), name, limit))
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print(f"0 rows: no dead letters on {name}", markup=False)
        return
    t = DataTable(title=name)
    for c in ("position", "reason", "detail", "bytes"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(r["source_position"], r["reason"], r["detail"], str(r["bytes"]))
    out.print(t)


@dlq_app.command("redrive")
def dlq_redrive(
    topic: str = TOPIC_OPT,
    reason: list[str] = typer.Option(
        ["unknown_fingerprint"], "--reason", help="re-drive dead letters with this reason (repeatable)"
    ),
    all_reasons: bool = typer.Option(
        False,
        "--all",
        help="re-drive every dead letter but those the worker's state decided (after_end, ...)",
    ),
    from_beginning: bool = typer.Option(
        False, help="start from the first dead letter, not after the last re-drive"
    ),
    dry_run: bool = typer.Option(False, help="count what would be re-driven, send nothing"),
    as_json: bool = JSON_OPT,
) -> None:
    """Send dead letters back to their source topic, with their original key.

    Use after the cause is fixed: e.g. events of a newer SDK dead-lettered as
    `unknown_fingerprint` before the worker learned their schema. Progress is kept
    per dead-letter topic (consumer group `agentlake-redrive`), so a dead letter is
    re-driven once; one that fails again is dead-lettered again, with its reason.
    Reasons decided by the worker's state (after_end, duplicate_seq, seq_gap) or a size
    limit (too_large) are never re-driven: the record would be dead-lettered again.
    """
    from agentlake.kafka_io import DEAD_LETTER_REASONS, NOT_REDRIVABLE

    unknown = sorted(set(reason) - DEAD_LETTER_REASONS.keys())
    if unknown:
        raise UserError(
            f"unknown reason {', '.join(map(repr, unknown))}: dead letters carry one of "
            f"{', '.join(DEAD_LETTER_REASONS)} (or give --all)"
        )
    stateful = [r for r in reason if r in NOT_REDRIVABLE]
    if stateful:  # with --all too: naming one is asking for it
        raise UserError(
            f"dead letters with reason {stateful[0]} are not re-driven: "
            f"{DEAD_LETTER_REASONS[stateful[0]]}, so sent again they would be dead-lettered again"
        )
    name = source_topic(topic)
    res = asyncio.run(
        redrive(_settings(), name, None if all_reasons else set(reason), from_beginning, dry_run)
    )
    if as_json:
        _print_json(res)
    else:
        verb = "would re-drive" if dry_run else "re-drove"
        kept = ", ".join(f"{n} {r}" for r, n in sorted(res["skipped_by_reason"].items()))
        out.print(
            f"{verb} {res['redriven']} of {res['read']} dead letters from {res['dlq']} to {name}"
            + (
                f"; skipped {res['skipped']} decided by the worker's state ({kept}): "
                "sent again, they would be dead-lettered again"
                if res["skipped"]
                else ""
            ),
            markup=False,
        )


def redrive_choice(reason: str, reasons: set[str] | None) -> str:
    """What `dlq redrive` does with a dead letter of `reason`: ``"send"`` it back,
    ``"skip"`` it (`reasons` is None, i.e. --all, and the worker's state decided it:
    :data:`~agentlake.kafka_io.NOT_REDRIVABLE`), or ``"ignore"`` it (not asked for)."""
    from agentlake.kafka_io import NOT_REDRIVABLE

    if reasons is None:
        return "skip" if reason in NOT_REDRIVABLE else "send"
    return "send" if reason in reasons and reason not in NOT_REDRIVABLE else "ignore"


async def redrive(
    s: Settings, topic: str, reasons: set[str] | None, from_beginning: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Re-produce the dead letters of `topic` (logical name) whose reason is in `reasons`
    (all but :data:`~agentlake.kafka_io.NOT_REDRIVABLE` when None) to their source topic;
    commit the position unless `dry_run`.

    Returns ``{"dlq", "read", "redriven", "by_reason", "skipped", "skipped_by_reason"}``:
    `skipped` counts the dead letters `reasons=None` left because their reason is not
    re-drivable.
    """
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from agentlake.kafka_io import partitions
    from agentlake.topics import dlq as dlq_name

    name = s.topic(dlq_name(topic))
    consumer = make_consumer(s, group_id=s.topic("agentlake-redrive"))
    producer = make_producer(s, enable_idempotence=True)
    await started(consumer)
    try:
        await started(producer)
    except BaseException:
        await consumer.stop()
        raise
    read = 0
    by_reason: dict[str, int] = {}
    skipped: dict[str, int] = {}
    futs = []
    try:
        parts: list[TopicPartition] = await partitions(consumer, [name])
        if not parts:
            raise UserError(f"topic {name} does not exist: run `agentlake up` to create the topics")
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            committed = None if from_beginning else await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    if m.offset >= ends[TopicPartition(m.topic, m.partition)]:
                        continue
                    read += 1
                    h = {k: v.decode(errors="replace") for k, v in (m.headers or [])}
                    why = h.get("reason", "")
                    choice = redrive_choice(why, reasons)
                    if choice == "skip":
                        skipped[why] = skipped.get(why, 0) + 1
                    if choice != "send":
                        continue
                    by_reason[why] = by_reason.get(why, 0) + 1
                    if not dry_run:
                        target = h.get("source_topic") or s.topic(topic)
                        futs.append(await producer.send(target, m.value, key=m.key))
        if not dry_run:
            await asyncio.gather(*futs)
            await consumer.commit({tp: OffsetAndMetadata(ends[tp], "") for tp in parts})
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "dlq": name,
        "read": read,
        "redriven": sum(by_reason.values()),
        "by_reason": by_reason,
        "skipped": sum(skipped.values()),
        "skipped_by_reason": skipped,
    }


async def started(client: Any) -> Any:
    """`await client.start()`, stopping it again when that fails (no unclosed-client noise)."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


async def read_dead_letters(
    s: Settings, topic: str, limit: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The first `limit` dead letters of the dead-letter topic `topic` (logical name), read
    up to its end offsets at call time (or for at most `timeout` seconds)."""

    from agentlake.kafka_io import partitions

    c = make_consumer(s)
    await started(c)
    rows: list[dict[str, Any]] = []
    try:
        parts = await partitions(c, [s.topic(topic)])
        if not parts:
            return rows
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        ends = await c.end_offsets(parts)
        end = asyncio.get_running_loop().time() + timeout
        while len(rows) < limit and asyncio.get_running_loop().time() < end:
            if all([await c.position(tp) >= ends[tp] for tp in parts]):
                break
            batch = await c.getmany(timeout_ms=300, max_records=limit)
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
