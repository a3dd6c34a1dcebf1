"""ClickHouse read models: DDL, the idempotent batch writer, and the queries.

One client API for both deployments: clickhouse-connect's chdb interface (the
ClickHouse engine in-process, data under the data dir) by default, an HTTP
server when ``CLICKHOUSE_URL`` is set. Same DDL, same SQL.

Idempotence under replay: every table is keyed so that re-inserting an event
replaces itself — ``ReplacingMergeTree`` keyed by the event's position in its
trajectory, or ``AggregatingMergeTree`` whose columns merge the two halves of a
pair (started/ended, requested/completed) with ``any``/``min``/``max``. Readers
use ``FINAL``. A retried batch is also dropped at insert time by its
``insert_deduplication_token``.
"""

from __future__ import annotations

import fcntl
import json
import os
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

_SETTINGS = "SETTINGS non_replicated_deduplication_window = 1000"
_AGG = "SimpleAggregateFunction"

DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS events (
        trajectory_id String, seq Int64, event_id String, record LowCardinality(String),
        tenant LowCardinality(String), agent_id LowCardinality(String), agent_version LowCardinality(String),
        ts DateTime64(6, 'UTC'), trace_id String, span_id String, parent_span_id Nullable(String),
        topic LowCardinality(String), partition Int32, offset Int64, body String
    ) ENGINE = ReplacingMergeTree ORDER BY (trajectory_id, seq) {_SETTINGS}""",
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
    ) ENGINE = ReplacingMergeTree ORDER BY (trajectory_id, seq) {_SETTINGS}""",
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
)


class ClickHouseError(RuntimeError):
    pass


_lock_file: IO[str] | None = None


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
            f"the embedded ClickHouse at {path} is in use by {owner}; stop it, "
            "or run a ClickHouse server and set CLICKHOUSE_URL"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    _lock_file = f


_clients: dict[str, Any] = {}


def connect(settings: Settings) -> Any:
    """A clickhouse-connect client (one per target per process), with the schema created."""
    import clickhouse_connect

    target = settings.clickhouse_url or f"chdb:{settings.chdb_path}"
    if target in _clients:
        return _clients[target]
    if settings.clickhouse_url:
        client = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
    else:
        _claim_chdb(settings.chdb_path)
        client = clickhouse_connect.get_client(interface="chdb", path=str(settings.chdb_path))
    for stmt in DDL:
        client.command(stmt)
    _clients[target] = client
    return client


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


Located = tuple[Event, str, int, int]  # event, topic, partition, offset


class ClickHouseWriter:
    """Turns decoded events into rows and inserts them one table at a time."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def rows(self, batch: Iterable[Located]) -> dict[str, list[list[Any]]]:
        out: dict[str, list[list[Any]]] = {t: [] for t in COLUMNS}
        for ev, topic, partition, offset in batch:
            if isinstance(ev, RewardScored):
                self._reward(out, ev)
                continue
            if isinstance(ev, PolicyViolation):
                out["policy_violations"].append(
                    [
                        ev.trajectory_id,
                        ev.seq,
                        ev.event_id,
                        ev.tenant,
                        ev.agent_id,
                        ev.agent_version,
                        _ts(ev.ts_us),
                        ev.call_id,
                        ev.server_id,
                        ev.tool,
                        ev.rule,
                        ev.detail,
                    ]
                )
                continue
            body = ev.model_dump_json(by_alias=True)
            out["events"].append(
                [
                    ev.trajectory_id,
                    ev.seq,
                    ev.event_id,
                    ev.record,
                    ev.tenant,
                    ev.agent_id,
                    ev.agent_version,
                    _ts(ev.ts_us),
                    ev.trace_id,
                    ev.span_id,
                    ev.parent_span_id,
                    topic,
                    partition,
                    offset,
                    body,
                ]
            )
            base = [ev.trajectory_id]
            ident = [ev.tenant, ev.agent_id, ev.agent_version]
            if isinstance(ev, TrajectoryStarted):
                out["trajectories"].append(
                    [
                        *base,
                        *ident,
                        ev.task,
                        ev.user_id,
                        ev.scenario_id,
                        ev.run_id,
                        ev.trial,
                        ev.seed,
                        ev.expected_tool_calls,
                        _ts(ev.ts_us),
                        None,
                        None,
                        None,
                        None,
                        None,
                        ev.trace_id,
                    ]
                )
            elif isinstance(ev, TrajectoryEnded):
                out["trajectories"].append(
                    [
                        *base,
                        *ident,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        _ts(ev.ts_us),
                        ev.outcome,
                        ev.final_answer,
                        ev.error,
                        ev.seq,
                        ev.trace_id,
                    ]
                )
            elif isinstance(ev, AgentStep):
                out["steps"].append(
                    [
                        *base,
                        ev.seq,
                        ev.event_id,
                        *ident,
                        _ts(ev.ts_us),
                        ev.kind,
                        ev.content,
                        int(ev.content_truncated),
                        ev.tokens_in,
                        ev.tokens_out,
                        ev.cost_usd,
                        ev.span_id,
                    ]
                )
            elif isinstance(ev, ToolCallRequested):
                a = ev.arguments
                out["tool_calls"].append(
                    [
                        *base,
                        ev.call_id,
                        *ident,
                        ev.server_id,
                        ev.tool,
                        ev.seq,
                        _ts(ev.ts_us),
                        a.json_,
                        int(a.truncated),
                        a.sha256,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        ev.span_id,
                    ]
                )
            elif isinstance(ev, ToolCallCompleted):
                r = ev.result
                out["tool_calls"].append(
                    [
                        *base,
                        ev.call_id,
                        *ident,
                        ev.server_id,
                        ev.tool,
                        None,
                        None,
                        None,
                        None,
                        None,
                        ev.seq,
                        _ts(ev.ts_us),
                        r.json_,
                        int(r.truncated),
                        r.size,
                        r.sha256,
                        int(ev.is_error),
                        ev.error,
                        ev.error_kind,
                        ev.latency_ms,
                        ev.cost_usd,
                        ev.span_id,
                    ]
                )
        return out

    def _reward(self, out: dict[str, list[list[Any]]], ev: RewardScored) -> None:
        version = ev.seq * 2 + (1 if ev.is_final else 0)
        out["rewards"].append(
            [
                ev.trajectory_id,
                version,
                ev.event_id,
                int(ev.is_final),
                ev.tenant,
                ev.agent_id,
                ev.agent_version,
                ev.reward_spec,
                ev.total,
                int(ev.success),
                ev.components,
                ev.weights,
                ev.metrics,
                ev.gates,
                ev.failed_gates,
                ev.outcome,
                ev.task,
                ev.tool_sequence,
                ev.scenario_id,
                ev.run_id,
                ev.trial,
                ev.seed,
                ev.flags,
                _ts(ev.ts_us),
                {k: int(v) for k, v in ev.checks.items()},
                ev.attribution,
            ]
        )
        for name, value in ev.components.items():
            out["reward_components"].append(
                [
                    ev.trajectory_id,
                    name,
                    version,
                    int(ev.is_final),
                    ev.agent_id,
                    ev.agent_version,
                    ev.run_id,
                    ev.scenario_id,
                    value,
                    ev.weights.get(name, 0.0),
                ]
            )

    def write(self, batch: Sequence[Located], token: str) -> dict[str, int]:
        """Insert a batch; `token` makes a retried insert of the same batch a no-op."""
        counts = {}
        for table, rows in self.rows(batch).items():
            if not rows:
                continue
            self.client.insert(
                table,
                rows,
                column_names=COLUMNS[table],
                settings={"insert_deduplication_token": f"{token}:{table}"},
            )
            counts[table] = len(rows)
        return counts


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


def query(client: Any, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts (the shape `--json` prints)."""
    res = client.query(sql, parameters=params or {})
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
