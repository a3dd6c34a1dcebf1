"""Cache quality as a query: ``lake.cache`` events projected into ClickHouse.

One table per record (``lake_lookups``, ``lake_outcomes``, ``lake_freshness``),
``ReplacingMergeTree`` keyed by the event's natural id, so re-projecting the
topic from the start replaces rows instead of duplicating them. The sink (and
the dashboard's follow-projection) projects the topic as it goes
(`TOPIC_WRITERS`); :func:`project_topic` reads the topic to its end and inserts;
:func:`cache_quality` is the query ``agentlake lake stats`` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agentlake.schemas import DecodeError, codec
from agentlake.settings import Settings
from agentlake.topics import LAKE_CACHE

DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS lake_lookups (
        lookup_id String, tenant LowCardinality(String), task String, hit UInt8,
        reason LowCardinality(String), entry_id Nullable(String), similarity Float64,
        cluster_id Nullable(Int32), latency_us Float64, ts DateTime64(6, 'UTC')
    ) ENGINE = ReplacingMergeTree ORDER BY lookup_id""",
    """CREATE TABLE IF NOT EXISTS lake_outcomes (
        lookup_id String, tenant LowCardinality(String), entry_id String, cluster_id Int32,
        success UInt8, wrong_hit UInt8, threshold Float64, ts DateTime64(6, 'UTC')
    ) ENGINE = ReplacingMergeTree ORDER BY lookup_id""",
    """CREATE TABLE IF NOT EXISTS lake_freshness (
        entry_id String, tenant LowCardinality(String), produced DateTime64(6, 'UTC'),
        answerable DateTime64(6, 'UTC'), lag_ms Float64
    ) ENGINE = ReplacingMergeTree ORDER BY (tenant, entry_id)""",
)

_COLUMNS = {
    "LakeLookup": (
        "lake_lookups",
        [
            "lookup_id",
            "tenant",
            "task",
            "hit",
            "reason",
            "entry_id",
            "similarity",
            "cluster_id",
            "latency_us",
            "ts",
        ],
    ),
    "LakeOutcome": (
        "lake_outcomes",
        ["lookup_id", "tenant", "entry_id", "cluster_id", "success", "wrong_hit", "threshold", "ts"],
    ),
    "LakeFreshness": ("lake_freshness", ["entry_id", "tenant", "produced", "answerable", "lag_ms"]),
}


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def rows_of(record: str, d: dict[str, Any]) -> list[Any] | None:
    """The table row of one decoded lake.cache record (None for other records)."""
    if record == "LakeLookup":
        return [
            d["lookup_id"],
            d["tenant"],
            d["task"],
            int(d["hit"]),
            d["reason"],
            d["entry_id"],
            d["similarity"],
            d["cluster_id"],
            d["latency_us"],
            _ts(d["ts_us"]),
        ]
    if record == "LakeOutcome":
        return [
            d["lookup_id"],
            d["tenant"],
            d["entry_id"],
            d["cluster_id"],
            int(d["success"]),
            int(d["wrong_hit"]),
            d["threshold"],
            _ts(d["ts_us"]),
        ]
    if record == "LakeFreshness":
        return [d["entry_id"], d["tenant"], _ts(d["produced_us"]), _ts(d["answerable_us"]), d["lag_ms"]]
    return None


_ready: set[int] = set()


def ensure_tables(client: Any) -> None:
    """Create the lake tables once per client (an empty store then shows empty pages)."""
    if id(client) in _ready:
        return
    for stmt in DDL:
        client.command(stmt)
    _ready.add(id(client))


def project(client: Any, values: Sequence[bytes | None]) -> dict[str, int]:
    """Insert the lake.cache records `values` (single-object encoded); malformed ones are
    counted under ``"malformed"``. Returns rows per table."""
    ensure_tables(client)
    c = codec()
    rows: dict[str, list[list[Any]]] = {}
    malformed = 0
    for v in values:
        if v is None:
            continue
        try:
            record, d = c.decode_dict(v)
        except DecodeError:
            malformed += 1
            continue
        row = rows_of(record, d)
        if row is not None:
            rows.setdefault(record, []).append(row)
    out = {"malformed": malformed}
    for record, rs in rows.items():
        table, cols = _COLUMNS[record]
        client.insert(table, rs, column_names=cols)
        out[table] = len(rs)
    return out


def write_lake_records(client: Any, values: Sequence[bytes | None], token: str) -> dict[str, int]:
    """The sink's writer for ``lake.cache`` (`TOPIC_WRITERS`); tables are ReplacingMergeTree,
    so a re-delivered batch replaces itself (`token` is unused)."""
    out = project(client, values)
    return {f"lake.{k}": v for k, v in out.items() if v}


TOPIC_WRITERS = {LAKE_CACHE: write_lake_records}


async def project_topic(settings: Settings, client: Any) -> dict[str, int]:
    """Read ``lake.cache`` to its end and project it."""
    from agentlake.kafka_io import read_to_end

    records = await read_to_end(settings, [settings.topic(LAKE_CACHE)])
    return project(client, [r.value for r in records if r.value is not None])


def cache_quality(client: Any) -> list[dict[str, Any]]:
    """Per tenant: lookups, hits, hit rate, wrong hits, wrong-hit rate among reported reuses,
    lookup latency p50/p99 (µs) and freshness p50/max (ms)."""
    from agentlake.projections.clickhouse import query

    return query(
        client,
        """
        SELECT l.tenant AS tenant, l.lookups AS lookups, l.hits AS hits,
               round(l.hits / l.lookups, 4) AS hit_rate,
               o.reported AS reused_reported, o.wrong AS wrong_hits,
               if(o.reported > 0, round(o.wrong / o.reported, 4), NULL) AS wrong_hit_rate,
               l.p50_us AS lookup_p50_us, l.p99_us AS lookup_p99_us,
               f.p50 AS freshness_p50_ms, f.mx AS freshness_max_ms
        FROM (
            SELECT tenant, count() AS lookups, sum(hit) AS hits,
                   quantile(0.5)(latency_us) AS p50_us, quantile(0.99)(latency_us) AS p99_us
            FROM lake_lookups FINAL GROUP BY tenant
        ) AS l
        GLOBAL LEFT JOIN (
            SELECT tenant, count() AS reported, sum(wrong_hit) AS wrong
            FROM lake_outcomes FINAL GROUP BY tenant
        ) AS o ON o.tenant = l.tenant
        GLOBAL LEFT JOIN (
            SELECT tenant, quantile(0.5)(lag_ms) AS p50, max(lag_ms) AS mx
            FROM lake_freshness FINAL GROUP BY tenant
        ) AS f ON f.tenant = l.tenant
        ORDER BY tenant
        """,
    )
