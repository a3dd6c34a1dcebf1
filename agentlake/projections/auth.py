"""The delegation graph in ClickHouse: tables for the auth events, and the graph queries.

| table | key | one row per |
|---|---|---|
| `auth_blocks` | `revocation_id` | token block: issued (authority), attenuated (delegation), approval |
| `auth_decisions` | `call_id` | gateway decision for one ``tools/call``: its facts, the check that failed |
| `auth_invocations` | `call_id` | forwarded tool call and its outcome |
| `auth_approvals` | `(request_id, state)` | approval lifecycle step |
| `auth_revocations` | `revocation_id` | revoked revocation id |
| `auth_keys` | `(kind, owner, key_id)` | published public key |

All ``ReplacingMergeTree``: a re-delivered event replaces itself. The sink
calls `write_auth_records` for the auth topics (`TOPIC_WRITERS`). Queries:
`chain` (a tool call back to the human principal), `who_could` (who could call
tool X on server S at time T; the logic is `agentlake.auth.graph`) and `derived` (everything attenuated from a
token, with the calls made with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agentlake.projections.clickhouse import query
from agentlake.schemas import DecodeError, codec
from agentlake.topics import AUTH_DELEGATIONS, AUTH_REVOCATIONS, REGISTRY_KEYS

_S = "SETTINGS non_replicated_deduplication_window = 1000"

DDL: tuple[str, ...] = (
    f"""CREATE TABLE IF NOT EXISTS auth_blocks (
        revocation_id String, parent_revocation_id Nullable(String), token_id String,
        kind LowCardinality(String), user_id Nullable(String), agent_id Nullable(String),
        task_id Nullable(String), depth Int32, servers Array(String), rights_json Nullable(String),
        tools_json Nullable(String), operations Nullable(String), resources Array(String),
        approval_tools Array(String), expires_at Nullable(DateTime64(6, 'UTC')), max_depth Nullable(Int32),
        budget Nullable(Int64), block_source String, ts DateTime64(6, 'UTC'), event_id String
    ) ENGINE = ReplacingMergeTree ORDER BY revocation_id {_S}""",
    f"""CREATE TABLE IF NOT EXISTS auth_decisions (
        call_id String, gateway_id String, trajectory_id Nullable(String), task_id Nullable(String),
        server_id String, tool String, operation LowCardinality(String), resource String,
        arguments_json String,
        allowed UInt8, reason LowCardinality(String), failed_check Nullable(String),
        revocation_ids Array(String), token_id Nullable(String), agent_id Nullable(String),
        user_id Nullable(String), depth Int32, latency_us Int64, ts DateTime64(6, 'UTC'), event_id String
    ) ENGINE = ReplacingMergeTree ORDER BY call_id {_S}""",
    f"""CREATE TABLE IF NOT EXISTS auth_invocations (
        call_id String, gateway_id String, trajectory_id Nullable(String), task_id Nullable(String),
        server_id String, tool String, revocation_ids Array(String), agent_id Nullable(String),
        is_error UInt8, error Nullable(String), result_size Int64, result_sha256 String, latency_ms Float64,
        ts DateTime64(6, 'UTC'), event_id String
    ) ENGINE = ReplacingMergeTree ORDER BY call_id {_S}""",
    f"""CREATE TABLE IF NOT EXISTS auth_approvals (
        request_id String, state LowCardinality(String), token_revocation_id String, token_id String,
        task_id Nullable(String), server_id String, tool String, reason String, decided_by Nullable(String),
        approval_revocation_id Nullable(String), expires_at DateTime64(6, 'UTC'), ts DateTime64(6, 'UTC'),
        event_id String
    ) ENGINE = ReplacingMergeTree ORDER BY (request_id, state) {_S}""",
    f"""CREATE TABLE IF NOT EXISTS auth_revocations (
        revocation_id String, token_id Nullable(String), reason String, revoked_by Nullable(String),
        ts DateTime64(6, 'UTC'), event_id String
    ) ENGINE = ReplacingMergeTree ORDER BY revocation_id {_S}""",
    f"""CREATE TABLE IF NOT EXISTS auth_keys (
        kind LowCardinality(String), owner String, key_id Int64, algorithm String, public_key String,
        created_at DateTime64(6, 'UTC'), retired_at Nullable(DateTime64(6, 'UTC')), ts DateTime64(6, 'UTC'),
        event_id String
    ) ENGINE = ReplacingMergeTree(ts) ORDER BY (kind, owner, key_id) {_S}""",
)

_ready: set[int] = set()


def ensure_tables(client: Any) -> None:
    """Create the auth tables once per client."""
    if id(client) in _ready:
        return
    for stmt in DDL:
        client.command(stmt)
    _ready.add(id(client))


def _ts(us: int | None) -> datetime | None:
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def rows_of(record: str, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(table, row) for one decoded auth record; None for records this projection ignores."""
    base = {"event_id": d["event_id"], "ts": _ts(d["ts_us"])}
    if record == "AuthTokenIssued":
        return "auth_blocks", {
            **base,
            "revocation_id": d["revocation_id"],
            "parent_revocation_id": None,
            "token_id": d["revocation_id"],
            "kind": "issued",
            "user_id": d["user_id"],
            "agent_id": d["agent_id"],
            "task_id": d["task_id"],
            "depth": 0,
            "servers": d["servers"],
            "rights_json": d["rights_json"],
            "tools_json": None,
            "operations": None,
            "resources": d["resources"],
            "approval_tools": d["approval_tools"],
            "expires_at": _ts(d["expires_us"]),
            "max_depth": d["max_depth"],
            "budget": d["budget"],
            "block_source": d["block_source"],
        }
    if record == "AuthTokenAttenuated":
        return "auth_blocks", {
            **base,
            "revocation_id": d["revocation_id"],
            "parent_revocation_id": d["parent_revocation_id"],
            "token_id": d["token_id"],
            "kind": "attenuated",
            "user_id": None,
            "agent_id": d["delegate"],
            "task_id": d["task_id"],
            "depth": d["depth"],
            "servers": [],
            "rights_json": None,
            "tools_json": d["tools_json"],
            "operations": d["operations"],
            "resources": d["resources"],
            "approval_tools": [],
            "expires_at": _ts(d["expires_us"]),
            "max_depth": None,
            "budget": None,
            "block_source": d["block_source"],
        }
    if record == "AuthApproval":
        return "auth_approvals", {
            **base,
            **{k: d[k] for k in ("request_id", "state", "token_revocation_id", "token_id", "task_id")},
            **{k: d[k] for k in ("server_id", "tool", "reason", "decided_by", "approval_revocation_id")},
            "expires_at": _ts(d["expires_us"]),
        }
    if record == "AuthDecision":
        row = {k: v for k, v in d.items() if k not in ("ts_us",)}
        row["allowed"] = int(d["allowed"])
        return "auth_decisions", {**row, **base}
    if record == "AuthToolInvoked":
        row = {k: v for k, v in d.items() if k not in ("ts_us",)}
        row["is_error"] = int(d["is_error"])
        return "auth_invocations", {**row, **base}
    if record == "AuthRevoked":
        return "auth_revocations", {
            **base,
            **{k: d[k] for k in ("revocation_id", "token_id", "reason", "revoked_by")},
        }
    if record == "AuthKeyPublished":
        return "auth_keys", {
            **base,
            **{k: d[k] for k in ("kind", "owner", "key_id", "algorithm", "public_key")},
            "created_at": _ts(d["created_us"]),
            "retired_at": _ts(d["retired_us"]),
        }
    return None


def write_auth_records(client: Any, values: Sequence[bytes | None], token: str) -> dict[str, int]:
    """Decode auth records and insert them, one insert per table.

    Args:
        client: a clickhouse-connect client.
        values: the raw record values of a batch (None and malformed values are skipped).
        token: deduplication token of the batch (a retried insert is dropped).

    Returns:
        rows written per table.
    """
    ensure_tables(client)
    tables: dict[str, list[dict[str, Any]]] = {}
    for value in values:
        if value is None:
            continue
        try:
            record, data = codec().decode_dict(value)
        except DecodeError:
            continue
        out = rows_of(record, data)
        if out is not None:
            tables.setdefault(out[0], []).append(out[1])
    counts: dict[str, int] = {}
    for table, rows in tables.items():
        columns = list(rows[0])
        client.insert(
            table,
            [[r.get(c) for c in columns] for r in rows],
            column_names=columns,
            settings={"insert_deduplication_token": f"{token}:{table}"},
        )
        counts[table] = len(rows)
    return counts


# The sink's hook: logical topic -> writer of that topic's raw records.
TOPIC_WRITERS = {t: write_auth_records for t in (AUTH_DELEGATIONS, AUTH_REVOCATIONS, REGISTRY_KEYS)}


# -- graph queries ---------------------------------------------------------------------


def _blocks(client: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    rows = query(
        client, "SELECT * FROM auth_blocks FINAL WHERE revocation_id IN {ids:Array(String)}", {"ids": ids}
    )
    return {r["revocation_id"]: r for r in rows}


def chain(client: Any, call_id: str) -> dict[str, Any] | None:
    """The delegation chain behind one tool call, from the human principal down to the caller.

    Returns ``{"call": decision row, "hops": [{revocation_id, kind, principal, task_id, ts}, ...]}``
    (root first; the first hop's principal is the human user), or None for an unknown call.
    """
    ensure_tables(client)
    calls = query(client, "SELECT * FROM auth_decisions FINAL WHERE call_id = {c:String}", {"c": call_id})
    if not calls:
        return None
    call = calls[0]
    blocks = _blocks(client, call["revocation_ids"])
    approvals = {
        r["approval_revocation_id"]: r
        for r in query(
            client,
            "SELECT * FROM auth_approvals FINAL WHERE state = 'granted' "
            "AND approval_revocation_id IN {ids:Array(String)}",
            {"ids": call["revocation_ids"]},
        )
    }
    hops: list[dict[str, Any]] = []
    for i, rid in enumerate(call["revocation_ids"]):
        b = blocks.get(rid)
        if i == 0 and b is not None:
            hops.append({"revocation_id": rid, "kind": "user", "principal": b["user_id"], "ts": b["ts"]})
            hops.append({"revocation_id": rid, "kind": "issued", "principal": b["agent_id"], "ts": b["ts"]})
        elif b is not None:
            hops.append(
                {"revocation_id": rid, "kind": "delegated", "principal": b["agent_id"], "ts": b["ts"]}
            )
        elif rid in approvals:
            a = approvals[rid]
            hops.append(
                {"revocation_id": rid, "kind": "approved", "principal": a["decided_by"], "ts": a["ts"]}
            )
        else:
            hops.append({"revocation_id": rid, "kind": "unknown", "principal": None, "ts": None})
    return {"call": call, "hops": hops}


def who_could(
    client: Any, server: str, tool: str, at: datetime, resource: str | None = None
) -> list[dict[str, Any]]:
    """Tokens whose holder could call `tool` on `server` at time `at` (UTC); `resource`: of the call.

    Reads the blocks, granted approvals and revocations recorded by `at`, and the allowed
    calls per task before it (budgets), and answers with `agentlake.auth.graph.who_could`:
    rights narrowed along each chain, expiry, revocation, task binding, depth, resource
    patterns, approvals and budgets.
    """
    from agentlake.auth import graph  # the pure graph logic; the sink never needs it (nor biscuit, mcp)

    ensure_tables(client)
    at = graph.utc(at) or at
    p = {"at": at}
    blocks = query(client, "SELECT * FROM auth_blocks FINAL WHERE ts <= {at:DateTime64(6)}", p)
    approvals = query(
        client,
        "SELECT * FROM auth_approvals FINAL WHERE state = 'granted' AND ts <= {at:DateTime64(6)}",
        p,
    )
    revocations = query(
        client, "SELECT revocation_id, ts FROM auth_revocations FINAL WHERE ts <= {at:DateTime64(6)}", p
    )
    calls = {
        r["task_id"]: int(r["n"])
        for r in query(
            client,
            "SELECT task_id, uniqExact(call_id) AS n FROM auth_decisions FINAL "
            "WHERE allowed = 1 AND ts < {at:DateTime64(6)} AND task_id IS NOT NULL GROUP BY task_id",
            p,
        )
    }
    return graph.who_could(blocks, approvals, revocations, calls, server, tool, at, resource)


def derived(client: Any, revocation_id: str) -> list[dict[str, Any]]:
    """Every token derived from `revocation_id` (itself included: attenuated blocks and granted
    approvals), with the calls made with each (`agentlake.auth.graph.derived`)."""
    from agentlake.auth import graph

    ensure_tables(client)
    blocks = query(
        client, "SELECT revocation_id, parent_revocation_id, agent_id, depth, kind, ts FROM auth_blocks FINAL"
    )
    approvals = query(
        client,
        "SELECT approval_revocation_id, token_revocation_id, decided_by, state, ts FROM auth_approvals FINAL "
        "WHERE state = 'granted'",
    )
    tree = graph.derived(blocks, approvals, [], revocation_id)
    if not tree:
        return []
    calls = query(
        client,
        "SELECT revocation_ids, allowed FROM auth_decisions FINAL "
        "WHERE hasAny(revocation_ids, {ids:Array(String)})",
        {"ids": [r["revocation_id"] for r in tree]},
    )
    return graph.derived(blocks, approvals, calls, revocation_id)


def recorded_decisions(client: Any, since: datetime) -> list[dict[str, Any]]:
    """Every recorded decision since `since`, oldest first (the input of `auth replay`)."""
    ensure_tables(client)
    rows = query(
        client,
        "SELECT * FROM auth_decisions FINAL WHERE ts >= {since:DateTime64(6)} ORDER BY ts",
        {"since": since},
    )
    for r in rows:
        r["ts_us"] = int(r["ts"].timestamp() * 1e6)
        r["allowed"] = bool(r["allowed"])
    return rows
