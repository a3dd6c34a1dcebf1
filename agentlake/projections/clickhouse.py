"""ClickHouse read models: DDL, the idempotent batch writer, and the queries.

One client API for both deployments: clickhouse-connect's chdb interface (the
ClickHouse engine in-process, data under the data dir) by default, an HTTP
server when ``CLICKHOUSE_URL`` is set. Same DDL, same SQL.

Idempotence under replay: every table is keyed so that re-inserting an event
replaces itself — ``ReplacingMergeTree`` keyed by the event's position in its
trajectory and its id (``events``, ``steps``: a second event at a seq is a second
row until the stream worker's verdict retracts the loser), or
``AggregatingMergeTree`` whose columns merge the two halves of a pair
(started/ended, requested/completed) with ``any``/``min``/``max``. Readers
use ``FINAL``. A retried batch is also dropped at insert time by its
``insert_deduplication_token``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from agentlake.schemas import (
    AgentStep,
    Event,
    PolicyViolation,
    RewardScored,
    ToolCallCompleted,
    ToolCallRequested,
    TrajectoryEnded,
    TrajectoryStarted,
)
from agentlake.settings import Settings

log = logging.getLogger("agentlake.clickhouse")

_SETTINGS = "SETTINGS non_replicated_deduplication_window = 1000"
_AGG = "SimpleAggregateFunction"
# Two events with one (trajectory_id, seq) are two rows (event_id is in the sorting key): only
# the stream worker knows which one its reward folded (the smaller event_id, unless the other
# was folded or scored first), and its verdict retracts the loser (`agentlake.projections.retract`).
# With the winner picked by the table instead, a merge could drop the row the worker kept.
_EVENT_KEY = "ORDER BY (trajectory_id, seq, event_id)"
_FINAL_VERSION = 1 << 40

DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS events (
        trajectory_id String, seq Int64, event_id String, record LowCardinality(String),
        tenant LowCardinality(String), agent_id LowCardinality(String), agent_version LowCardinality(String),
        ts DateTime64(6, 'UTC'), trace_id String, span_id String, parent_span_id Nullable(String),
        topic LowCardinality(String), partition Int32, offset Int64, body String
    ) ENGINE = ReplacingMergeTree {_EVENT_KEY} {_SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS trajectories (
        trajectory_id String,
        tenant {_AGG}(any, String), agent_id {_AGG}(any, String), agent_version {_AGG}(any, String),
        task {_AGG}(any, Nullable(String)), user_id {_AGG}(any, Nullable(String)),
        scenario_id {_AGG}(any, Nullable(String)), run_id {_AGG}(any, Nullable(String)),
        trial {_AGG}(any, Nullable(Int32)), seed {_AGG}(any, Nullable(Int64)),
        expected_tool_calls {_AGG}(any, Nullable(Int32)),
        started_at {_AGG}(min, Nullable(DateTime64(6, 'UTC'))),
        ended_at {_AGG}(max, Nullable(DateTime64(6, 'UTC'))),
        outcome {_AGG}(any, Nullable(String)), final_answer {_AGG}(any, Nullable(String)),
        error {_AGG}(any, Nullable(String)), end_seq {_AGG}(max, Nullable(Int64)),
        trace_id {_AGG}(any, String)
    ) ENGINE = AggregatingMergeTree ORDER BY trajectory_id {_SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS steps (
        trajectory_id String, seq Int64, event_id String,
        tenant LowCardinality(String), agent_id LowCardinality(String), agent_version LowCardinality(String),
        ts DateTime64(6, 'UTC'), kind LowCardinality(String), content String, content_truncated UInt8,
        tokens_in Nullable(Int64), tokens_out Nullable(Int64), cost_usd Nullable(Float64), span_id String
    ) ENGINE = ReplacingMergeTree {_EVENT_KEY} {_SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS tool_calls (
        trajectory_id String, call_id String,
        tenant {_AGG}(any, String), agent_id {_AGG}(any, String), agent_version {_AGG}(any, String),
        server_id {_AGG}(any, String), tool {_AGG}(any, String),
        request_seq {_AGG}(any, Nullable(Int64)), requested_at {_AGG}(any, Nullable(DateTime64(6, 'UTC'))),
        arguments {_AGG}(any, Nullable(String)), arguments_truncated {_AGG}(any, Nullable(UInt8)),
        arguments_sha256 {_AGG}(any, Nullable(String)),
        complete_seq {_AGG}(any, Nullable(Int64)), completed_at {_AGG}(any, Nullable(DateTime64(6, 'UTC'))),
        result {_AGG}(any, Nullable(String)), result_truncated {_AGG}(any, Nullable(UInt8)),
        result_size {_AGG}(any, Nullable(Int64)), result_sha256 {_AGG}(any, Nullable(String)),
        is_error {_AGG}(any, Nullable(UInt8)), error {_AGG}(any, Nullable(String)),
        error_kind {_AGG}(any, Nullable(String)), latency_ms {_AGG}(any, Nullable(Float64)),
        cost_usd {_AGG}(any, Nullable(Float64)), span_id {_AGG}(any, String)
    ) ENGINE = AggregatingMergeTree ORDER BY (trajectory_id, call_id) {_SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS rewards (
        trajectory_id String, version UInt64, event_id String, is_final UInt8,
        tenant LowCardinality(String), agent_id LowCardinality(String), agent_version LowCardinality(String),
        reward_spec LowCardinality(String), total Float64, success UInt8,
        components Map(String, Float64), weights Map(String, Float64), metrics Map(String, Float64),
        gates Array(String), failed_gates Array(String), outcome Nullable(String), task String,
        tool_sequence Array(String), scenario_id Nullable(String), run_id Nullable(String),
        trial Nullable(Int32), seed Nullable(Int64), flags Array(String), scored_at DateTime64(6, 'UTC')
    ) ENGINE = ReplacingMergeTree(version) ORDER BY trajectory_id {_SETTINGS}""",
    # added with RewardScored v2 (simulation grading); ALTER keeps older data dirs working
    "ALTER TABLE rewards ADD COLUMN IF NOT EXISTS checks Map(String, UInt8)",
    "ALTER TABLE rewards ADD COLUMN IF NOT EXISTS attribution Nullable(String)",
    f"""CREATE TABLE IF NOT EXISTS reward_components (
        trajectory_id String, component LowCardinality(String), version UInt64, is_final UInt8,
        agent_id LowCardinality(String), agent_version LowCardinality(String),
        run_id Nullable(String), scenario_id Nullable(String), value Float64, weight Float64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (trajectory_id, component) {_SETTINGS}""",
    f"""CREATE TABLE IF NOT EXISTS policy_violations (
        trajectory_id String, seq Int64, event_id String,
        tenant LowCardinality(String), agent_id LowCardinality(String), agent_version LowCardinality(String),
        ts DateTime64(6, 'UTC'), call_id String, server_id String, tool String, rule LowCardinality(String),
        detail String
    ) ENGINE = ReplacingMergeTree ORDER BY (trajectory_id, seq) {_SETTINGS}""",
    # events the stream worker rejected after the sink projected them (agentlake.projections.retract):
    # never projected again, whichever sink replays them
    f"""CREATE TABLE IF NOT EXISTS retracted (
        trajectory_id String, event_id String, reason LowCardinality(String)
    ) ENGINE = ReplacingMergeTree ORDER BY (trajectory_id, event_id) {_SETTINGS}""",
)


class ClickHouseError(RuntimeError):
    pass


_lock_file: IO[str] | None = None


def _command() -> str:
    """This process as a user would name it, e.g. ``agentlake dashboard``."""
    argv = [a for a in sys.argv[:3] if not a.startswith("-")]
    if not argv:
        return "python"
    name = Path(argv[0]).name
    if name in ("__main__.py", "-m") or name.startswith("python"):
        name = "agentlake"
    words = [name, *(a for a in argv[1:2] if a.isidentifier())]
    return " ".join(words)


def _claim_chdb(path: Path) -> None:
    """chdb allows one process per data dir: say so plainly instead of failing deep inside."""
    global _lock_file
    if _lock_file is not None:
        return
    path.mkdir(parents=True, exist_ok=True)
    f = open(path.parent / "clickhouse.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise ClickHouseError(
            f"the embedded ClickHouse at {path} is in use by {owner} (chdb: one process per data dir); "
            "stop that process (e.g. the dashboard: Ctrl-C), or run a ClickHouse server and set "
            "CLICKHOUSE_URL so the dashboard, sql and report can share it"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} ({_command()})")
    f.flush()
    _lock_file = f


_clients: dict[str, Any] = {}


def connect(settings: Settings, *, create: bool = True) -> Any:
    """A clickhouse-connect client (one per target per process), with the schema created.

    With ``CLICKHOUSE_CLUSTER`` the schema is `cluster_ddl` and every query and insert
    of this client runs with `CLUSTER_CLIENT_SETTINGS`.
    """
    import clickhouse_connect

    target = settings.clickhouse_url or f"chdb:{settings.chdb_path}"
    if target in _clients:
        return _clients[target]
    if settings.clickhouse_url:
        client = clickhouse_connect.get_client(
            dsn=settings.clickhouse_url,
            settings=dict(CLUSTER_CLIENT_SETTINGS) if settings.clickhouse_cluster else None,
        )
    else:
        if settings.clickhouse_cluster:
            raise ClickHouseError("CLICKHOUSE_CLUSTER needs a ClickHouse server: set CLICKHOUSE_URL too")
        _claim_chdb(settings.chdb_path)
        client = clickhouse_connect.get_client(interface="chdb", path=str(settings.chdb_path))
    if create:
        for stmt in schema_ddl(settings.clickhouse_cluster):
            client.command(stmt)
        _warn_old_event_key(client)
    _clients[target] = client
    return client


def _warn_old_event_key(client: Any) -> None:
    """Tables created before event_id joined their sorting key keep one row per seq (a merge may
    drop the event the worker kept for a late duplicate's retracted one): say how to fix it."""
    old = query(
        client,
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('events', 'steps', 'events_local', 'steps_local') "
        "AND sorting_key = 'trajectory_id, seq'",
    )
    if old:
        log.warning(
            "tables %s predate event_id in their sorting key (a seq whose late duplicate is "
            "retracted can lose its row): `agentlake projections rebuild --target clickhouse "
            "--recreate` re-creates them",
            ", ".join(sorted(r["name"] for r in old)),
        )


# -- cluster mode ----------------------------------------------------------------
# On a cluster each table above becomes `<name>_local` (Replicated* engine, one copy per
# replica of a shard, created ON CLUSTER) plus a Distributed table `<name>` over it,
# sharded by cityHash64(trajectory_id): a trajectory's rows, and so its FINAL merges,
# stay on one shard. Readers and the sink keep using `<name>`, the same SQL as on one server.

# Every query and insert of a cluster client: inserts return once the shards hold the
# rows (the sink commits offsets after that), and an IN/JOIN over a Distributed table
# that a query forgot to mark GLOBAL is made GLOBAL instead of rejected.
CLUSTER_CLIENT_SETTINGS: dict[str, Any] = {
    "insert_distributed_sync": 1,
    "distributed_product_mode": "global",
}
LOCAL_SUFFIX = "_local"
ZK_PATH = "/clickhouse/tables/{shard}/{database}/"

_CREATE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<name>\w+) \((?P<columns>.*)\)\s*ENGINE = (?P<engine>\w*MergeTree)"
    r"(?:\((?P<args>[^)]*)\))?\s+(?P<order>ORDER BY .*?)\s*(?:SETTINGS (?P<settings>.*))?$",
    re.S,
)
_ALTER = re.compile(r"^ALTER TABLE (?P<name>\w+) (?P<rest>.*)$", re.S)


def table_names(ddl: Sequence[str] = DDL) -> list[str]:
    """The tables `ddl` creates, in order."""
    return [m["name"] for stmt in ddl if (m := _CREATE.match(stmt.strip()))]


def schema_ddl(cluster: str | None) -> list[str]:
    """The statements that create the schema: `DDL` on one server, `cluster_ddl` on a cluster."""
    return list(DDL) if cluster is None else cluster_ddl(cluster)


def cluster_ddl(cluster: str, ddl: Sequence[str] = DDL) -> list[str]:
    """`ddl` rewritten for a ClickHouse cluster named `cluster` (a ``remote_servers`` entry).

    ``CREATE TABLE t (…) ENGINE = XMergeTree(args) ORDER BY …`` becomes
    ``t_local ON CLUSTER`` with ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/t_local',
    '{replica}', args)`` (the ``{shard}`` and ``{replica}`` macros come from each server's
    config) and ``t ON CLUSTER AS t_local ENGINE = Distributed(cluster, currentDatabase(),
    t_local, cityHash64(trajectory_id))``; an ``ALTER TABLE t`` is applied to both.

    Raises:
        ValueError: a statement is neither a MergeTree-family CREATE nor an ALTER, or a
            table has no ``trajectory_id`` column to shard by.
    """
    on = f"ON CLUSTER {cluster}"
    out: list[str] = []
    for stmt in ddl:
        text = stmt.strip()
        if m := _CREATE.match(text):
            name, local = m["name"], m["name"] + LOCAL_SUFFIX
            if not re.search(r"(^|[(,\s])trajectory_id\s+String", m["columns"]):
                raise ValueError(f"table {name} has no trajectory_id column to shard by")
            args = ", ".join([f"'{ZK_PATH}{local}'", "'{replica}'", *([m["args"]] if m["args"] else [])])
            settings = [
                s.strip()
                for s in (m["settings"] or "").split(",")
                if s.strip() and not s.strip().startswith("non_replicated_")
            ]
            tail = f" SETTINGS {', '.join(settings)}" if settings else ""
            out.append(
                f"CREATE TABLE IF NOT EXISTS {local} {on} ({m['columns']}) "
                f"ENGINE = Replicated{m['engine']}({args}) {m['order']}{tail}"
            )
            out.append(
                f"CREATE TABLE IF NOT EXISTS {name} {on} AS {local} "
                f"ENGINE = Distributed({cluster}, currentDatabase(), {local}, cityHash64(trajectory_id))"
            )
        elif m := _ALTER.match(text):
            out.append(f"ALTER TABLE {m['name']}{LOCAL_SUFFIX} {on} {m['rest']}")
            out.append(f"ALTER TABLE {m['name']} {on} {m['rest']}")
        else:
            raise ValueError(f"cannot rewrite for a cluster: {text[:60]}")
    return out


def drop_ddl(cluster: str | None, ddl: Sequence[str] = DDL) -> list[str]:
    """Statements that drop every table `ddl` creates (Distributed tables first on a cluster)."""
    names = table_names(ddl)
    if cluster is None:
        return [f"DROP TABLE IF EXISTS {n}" for n in names]
    on = f"ON CLUSTER {cluster}"
    return [f"DROP TABLE IF EXISTS {n} {on} SYNC" for n in names] + [
        f"DROP TABLE IF EXISTS {n}{LOCAL_SUFFIX} {on} SYNC" for n in names
    ]


def recreate_tables(settings: Settings) -> list[str]:
    """Drop every AgentLake table and create the schema again, empty; returns the tables."""
    client = connect(settings, create=False)
    for stmt in [*drop_ddl(settings.clickhouse_cluster), *schema_ddl(settings.clickhouse_cluster)]:
        client.command(stmt)
    return table_names()


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


Located = tuple[Event, str, int, int]  # event, topic, partition, offset


Row = dict[str, Any]


class ClickHouseWriter:
    """Turns decoded events into rows and inserts them one table at a time.

    A row is a mapping column -> value; `COLUMNS` fixes the order at insert time and a
    column a row does not set is NULL (the other half of an aggregated pair fills it).
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def rows(self, batch: Iterable[Located]) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {t: [] for t in COLUMNS}
        for ev, topic, partition, offset in batch:
            ident = {
                "trajectory_id": ev.trajectory_id,
                "tenant": ev.tenant,
                "agent_id": ev.agent_id,
                "agent_version": ev.agent_version,
            }
            if isinstance(ev, RewardScored):
                self._reward(out, ev)
                continue
            if isinstance(ev, PolicyViolation):
                out["policy_violations"].append(
                    {
                        **ident,
                        "seq": ev.seq,
                        "event_id": ev.event_id,
                        "ts": _ts(ev.ts_us),
                        "call_id": ev.call_id,
                        "server_id": ev.server_id,
                        "tool": ev.tool,
                        "rule": ev.rule,
                        "detail": ev.detail,
                    }
                )
                continue
            out["events"].append(
                {
                    **ident,
                    "seq": ev.seq,
                    "event_id": ev.event_id,
                    "record": ev.record,
                    "ts": _ts(ev.ts_us),
                    "trace_id": ev.trace_id,
                    "span_id": ev.span_id,
                    "parent_span_id": ev.parent_span_id,
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "body": ev.model_dump_json(by_alias=True),
                }
            )
            if isinstance(ev, TrajectoryStarted):
                out["trajectories"].append(
                    {
                        **ident,
                        "task": ev.task,
                        "user_id": ev.user_id,
                        "scenario_id": ev.scenario_id,
                        "run_id": ev.run_id,
                        "trial": ev.trial,
                        "seed": ev.seed,
                        "expected_tool_calls": ev.expected_tool_calls,
                        "started_at": _ts(ev.ts_us),
                        "trace_id": ev.trace_id,
                    }
                )
            elif isinstance(ev, TrajectoryEnded):
                out["trajectories"].append(
                    {
                        **ident,
                        "ended_at": _ts(ev.ts_us),
                        "outcome": ev.outcome,
                        "final_answer": ev.final_answer,
                        "error": ev.error,
                        "end_seq": ev.seq,
                        "trace_id": ev.trace_id,
                    }
                )
            elif isinstance(ev, AgentStep):
                out["steps"].append(
                    {
                        **ident,
                        "seq": ev.seq,
                        "event_id": ev.event_id,
                        "ts": _ts(ev.ts_us),
                        "kind": ev.kind,
                        "content": ev.content,
                        "content_truncated": int(ev.content_truncated),
                        "tokens_in": ev.tokens_in,
                        "tokens_out": ev.tokens_out,
                        "cost_usd": ev.cost_usd,
                        "span_id": ev.span_id,
                    }
                )
            elif isinstance(ev, ToolCallRequested):
                a = ev.arguments
                out["tool_calls"].append(
                    {
                        **ident,
                        "call_id": ev.call_id,
                        "server_id": ev.server_id,
                        "tool": ev.tool,
                        "request_seq": ev.seq,
                        "requested_at": _ts(ev.ts_us),
                        "arguments": a.json_,
                        "arguments_truncated": int(a.truncated),
                        "arguments_sha256": a.sha256,
                        "span_id": ev.span_id,
                    }
                )
            elif isinstance(ev, ToolCallCompleted):
                r = ev.result
                out["tool_calls"].append(
                    {
                        **ident,
                        "call_id": ev.call_id,
                        "server_id": ev.server_id,
                        "tool": ev.tool,
                        "complete_seq": ev.seq,
                        "completed_at": _ts(ev.ts_us),
                        "result": r.json_,
                        "result_truncated": int(r.truncated),
                        "result_size": r.size,
                        "result_sha256": r.sha256,
                        "is_error": int(ev.is_error),
                        "error": ev.error,
                        "error_kind": ev.error_kind,
                        "latency_ms": ev.latency_ms,
                        "cost_usd": ev.cost_usd,
                        "span_id": ev.span_id,
                    }
                )
        return out

    def _reward(self, out: dict[str, list[Row]], ev: RewardScored) -> None:
        # a final reward replaces every live one of its trajectory, whatever their seq
        version = ev.seq + (_FINAL_VERSION if ev.is_final else 0)
        common = {
            "trajectory_id": ev.trajectory_id,
            "version": version,
            "is_final": int(ev.is_final),
            "agent_id": ev.agent_id,
            "agent_version": ev.agent_version,
            "run_id": ev.run_id,
            "scenario_id": ev.scenario_id,
        }
        out["rewards"].append(
            {
                **common,
                "event_id": ev.event_id,
                "tenant": ev.tenant,
                "reward_spec": ev.reward_spec,
                "total": ev.total,
                "success": int(ev.success),
                "components": ev.components,
                "weights": ev.weights,
                "metrics": ev.metrics,
                "gates": ev.gates,
                "failed_gates": ev.failed_gates,
                "outcome": ev.outcome,
                "task": ev.task,
                "tool_sequence": ev.tool_sequence,
                "trial": ev.trial,
                "seed": ev.seed,
                "flags": ev.flags,
                "scored_at": _ts(ev.ts_us),
                "checks": {k: int(v) for k, v in ev.checks.items()},
                "attribution": ev.attribution,
            }
        )
        for name, value in ev.components.items():
            out["reward_components"].append(
                {**common, "component": name, "value": value, "weight": ev.weights.get(name, 0.0)}
            )

    def write(self, batch: Sequence[Located], token: str) -> dict[str, int]:
        """Insert a batch; `token` makes a retried insert of the same batch a no-op."""
        counts = {}
        for table, rows in self.rows(batch).items():
            if rows:
                counts[table] = self.write_table(table, rows, token)
        return counts

    def write_table(self, table: str, rows: Sequence[Row], token: str) -> int:
        """Insert `rows` (as built by `rows`) into `table`; returns how many.
        `token` makes a retried insert of the same rows a no-op."""
        columns = COLUMNS[table]
        self.client.insert(
            table,
            [[row.get(c) for c in columns] for row in rows],
            column_names=columns,
            settings={"insert_deduplication_token": f"{token}:{table}"},
        )
        return len(rows)


COLUMNS: dict[str, list[str]] = {
    "events": [
        "trajectory_id",
        "seq",
        "event_id",
        "record",
        "tenant",
        "agent_id",
        "agent_version",
        "ts",
        "trace_id",
        "span_id",
        "parent_span_id",
        "topic",
        "partition",
        "offset",
        "body",
    ],
    "trajectories": [
        "trajectory_id",
        "tenant",
        "agent_id",
        "agent_version",
        "task",
        "user_id",
        "scenario_id",
        "run_id",
        "trial",
        "seed",
        "expected_tool_calls",
        "started_at",
        "ended_at",
        "outcome",
        "final_answer",
        "error",
        "end_seq",
        "trace_id",
    ],
    "steps": [
        "trajectory_id",
        "seq",
        "event_id",
        "tenant",
        "agent_id",
        "agent_version",
        "ts",
        "kind",
        "content",
        "content_truncated",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "span_id",
    ],
    "tool_calls": [
        "trajectory_id",
        "call_id",
        "tenant",
        "agent_id",
        "agent_version",
        "server_id",
        "tool",
        "request_seq",
        "requested_at",
        "arguments",
        "arguments_truncated",
        "arguments_sha256",
        "complete_seq",
        "completed_at",
        "result",
        "result_truncated",
        "result_size",
        "result_sha256",
        "is_error",
        "error",
        "error_kind",
        "latency_ms",
        "cost_usd",
        "span_id",
    ],
    "rewards": [
        "trajectory_id",
        "version",
        "event_id",
        "is_final",
        "tenant",
        "agent_id",
        "agent_version",
        "reward_spec",
        "total",
        "success",
        "components",
        "weights",
        "metrics",
        "gates",
        "failed_gates",
        "outcome",
        "task",
        "tool_sequence",
        "scenario_id",
        "run_id",
        "trial",
        "seed",
        "flags",
        "scored_at",
        "checks",
        "attribution",
    ],
    "reward_components": [
        "trajectory_id",
        "component",
        "version",
        "is_final",
        "agent_id",
        "agent_version",
        "run_id",
        "scenario_id",
        "value",
        "weight",
    ],
    "policy_violations": [
        "trajectory_id",
        "seq",
        "event_id",
        "tenant",
        "agent_id",
        "agent_version",
        "ts",
        "call_id",
        "server_id",
        "tool",
        "rule",
        "detail",
    ],
}


USER_QUERY_TIMEOUT_S = 60
"""Seconds a query carrying a user's SQL text may run (`agentlake sql`, `replay --where`)."""


def user_query_settings(**extra: Any) -> dict[str, Any]:
    """ClickHouse settings for a query that carries a user's SQL text: reads only (``readonly=1``
    also refuses table functions such as ``file()`` and ``url()``), at most
    `USER_QUERY_TIMEOUT_S` seconds; `extra` settings go first (a server applies them in order
    and refuses changes after ``readonly``)."""
    return {**extra, "max_execution_time": USER_QUERY_TIMEOUT_S, "readonly": 1}


def query(
    client: Any, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows as dicts (the shape `--json` prints); `settings` are ClickHouse settings for this query."""
    res = client.query(sql, parameters=params or {}, settings=settings or None)
    names = res.column_names
    return [dict(zip(names, row, strict=True)) for row in res.result_rows]


def jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(json.dumps(rows, default=str))
    return out


def agent_summary(
    client: Any, *, run_id: str | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Per agent and version: trajectories, success rate, mean of each component, tool calls per task."""
    where = ["is_final = 1"]
    params: dict[str, Any] = {}
    if run_id:
        where.append("run_id = {run_id:String}")
        params["run_id"] = run_id
    if tenant:
        where.append("tenant = {tenant:String}")
        params["tenant"] = tenant
    sql = f"""
        SELECT agent_id, agent_version, count() AS trajectories, avg(success) AS success_rate,
               avg(total) AS mean_total, avg(metrics['tool_calls']) AS tool_calls_per_task,
               sumMap(components) AS comp_sum, sumMap(ones) AS comp_n
        FROM (SELECT agent_id, agent_version, success, total, metrics, components,
                     mapApply((k, v) -> (k, toUInt64(1)), components) AS ones
              FROM rewards FINAL WHERE {" AND ".join(where)})
        GROUP BY agent_id, agent_version ORDER BY agent_id, agent_version
    """
    rows = query(client, sql, params)
    for r in rows:
        sums, ns = r.pop("comp_sum"), r.pop("comp_n")
        r["components"] = {k: sums[k] / ns[k] for k in sorted(sums) if ns.get(k)}
    return rows
