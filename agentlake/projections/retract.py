"""Retractions: events the stream worker rejects by a stateful rule leave the projections.

The sink decides per record which events it projects (`check_record`, the same
rule the worker applies), but two of the worker's rules depend on what came
before, which only the worker knows: ``after_end`` (a seq past the
trajectory's end) and ``duplicate_seq`` (a second event at an existing seq;
the loser); ``seq_gap`` verdicts of earlier workers are honoured too. The
worker dead-letters such an event, possibly after the sink has projected it
(the sink reads the same topics in parallel). The dead letter is the verdict:
the sink follows the trajectory topics' dead-letter topics and, for these
reasons, *retracts* the event:

1. its rows in ``events`` and ``steps`` are deleted (by trajectory and event id;
   a ClickHouse lightweight ``DELETE``). Those tables keep one row per event
   (``event_id`` is in their sorting key), so the event the worker kept at that
   seq keeps its row whatever ClickHouse merged meanwhile — also when the loser
   has the smaller event id and lost only because its seq was folded or scored
   first — and
2. the aggregated tables built from it (``trajectories``, ``tool_calls``) are
   re-derived for its trajectory from the events that remain (their JSON
   ``body``), so no ``any()`` or ``max()`` keeps the rejected event's values.

A verdict is applied only once its source record has been projected (the sink
holds the dead-letter partition until then), and every retracted event is
recorded in the ``retracted`` table, which every sink and rebuild loads and
filters by: neither a late insert nor another sink replaying the topics brings
a retracted row back. Retracting is idempotent, and a rebuild replays the
dead-letter topics after the events, so live and rebuilt stores agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentlake.projections.clickhouse import LOCAL_SUFFIX, ClickHouseWriter, Located, query
from agentlake.schemas import EVENT_TYPES, Codec, DecodeError

RETRACTED_REASONS = frozenset({"after_end", "seq_gap", "duplicate_seq"})
"""Dead-letter reasons that retract an event the sink may already have projected."""

_DELETED_BY_EVENT = ("events", "steps")
_REDERIVED = ("trajectories", "tool_calls")
_BY_EVENT = "trajectory_id IN {t:Array(String)} AND event_id IN {e:Array(String)}"


@dataclass(frozen=True)
class Retraction:
    """One event the stream worker rejected after the fact.

    Attributes:
        trajectory_id: the event's trajectory.
        event_id: the rejected event (32 hex characters).
        reason: one of `RETRACTED_REASONS`.
        source_topic: the physical topic the event was read from ("" when unknown).
        source_partition: its partition (-1 when unknown).
        source_offset: its offset (-1 when unknown).
    """

    trajectory_id: str
    event_id: str
    reason: str
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1


def retraction_of(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]], codec: Codec
) -> Retraction | None:
    """The retraction a dead-letter record stands for, or None when it retracts nothing
    (another reason, or a record that was never an acceptable event).

    The event is identified by the ``event_id`` header when present (a dead letter for an
    event already in the worker's fold carries no value), else by decoding `value`, whose
    trajectory must be the record's key (as on every verdict the worker writes).
    """
    h = {k: v for k, v in headers}
    reason = h.get("reason", b"").decode(errors="replace")
    if reason not in RETRACTED_REASONS:
        return None
    event_id = h.get("event_id", b"").decode(errors="replace")
    trajectory_id = key.decode(errors="replace") if key else ""
    if value:
        try:
            ev = codec.decode(value)
        except DecodeError:
            return None
        if key is None or key.decode(errors="replace") != ev.trajectory_id:
            return None  # the worker's verdicts keep the event's own key (check_record passed)
        event_id, trajectory_id = ev.event_id, ev.trajectory_id
    if not event_id or not trajectory_id:
        return None
    partition, _, offset = h.get("source_position", b"").decode(errors="replace").partition(":")
    try:
        position = (int(partition), int(offset))
    except ValueError:
        position = (-1, -1)
    return Retraction(
        trajectory_id,
        event_id,
        reason,
        h.get("source_topic", b"").decode(errors="replace"),
        *position,
    )


def retract(client: Any, retractions: Sequence[Retraction], cluster: str | None = None) -> dict[str, int]:
    """Take `retractions` out of the ClickHouse projections (see the module docstring).

    Args:
        client: a clickhouse-connect client (chdb or server).
        retractions: events to retract; repeats and events never projected are harmless.
        cluster: the ``CLICKHOUSE_CLUSTER`` name, when the tables are Distributed (the
            deletes then run ``ON CLUSTER`` on the ``_local`` tables).

    Returns:
        Rows per table: for ``events`` the retracted rows found (0 when they were retracted
        before or never projected), for ``trajectories``/``tool_calls`` the rows re-derived
        (always, for every trajectory named).
    """
    if not retractions:
        return {}
    tids = sorted({r.trajectory_id for r in retractions})
    eids = sorted({r.event_id for r in retractions})
    params = {"t": tids, "e": eids}
    # remembered first: a sink that replays the event later leaves it out (`retracted_ids`)
    client.insert(
        "retracted",
        [[r.trajectory_id, r.event_id, r.reason] for r in retractions],
        column_names=["trajectory_id", "event_id", "reason"],
    )
    found = query(
        client,
        "SELECT count() AS n FROM events WHERE trajectory_id IN {t:Array(String)} "
        "AND event_id IN {e:Array(String)}",
        params,
    )[0]["n"]
    counts = {"events": int(found)}
    # no early return when nothing is found: the aggregates are re-derived anyway (cheap, and
    # right even for events tables created before event_id joined their sorting key)
    for table in _DELETED_BY_EVENT:
        _delete(client, table, _BY_EVENT, params, cluster)
    rows = query(
        client,
        "SELECT record, body, topic, partition, offset FROM events FINAL "
        "WHERE trajectory_id IN {t:Array(String)} ORDER BY trajectory_id, seq",
        params,
    )
    if not rows:
        return counts  # nothing of these trajectories is projected: nothing to re-derive
    located: list[Located] = []
    for r in rows:
        cls = EVENT_TYPES.get(r["record"])
        if cls is not None:
            located.append((cls.model_validate_json(r["body"]), r["topic"], r["partition"], r["offset"]))
    for table in _REDERIVED:
        _delete(client, table, "trajectory_id IN {t:Array(String)}", params, cluster)
    writer = ClickHouseWriter(client)
    derived = writer.rows(located)
    for table in _REDERIVED:
        if derived[table]:
            # a fresh token: a re-applied retraction must insert again what it deleted again
            written = writer.write_table(table, derived[table], f"retract-{uuid.uuid4().hex}")
            counts[table] = written
    return counts


def retracted_ids(client: Any) -> set[tuple[str, str]]:
    """Every retracted ``(trajectory_id, event_id)``: what a sink or a rebuild must not project
    again (retractions are rare: the set is small)."""
    rows = query(client, "SELECT DISTINCT trajectory_id, event_id FROM retracted")
    return {(r["trajectory_id"], r["event_id"]) for r in rows}


def _delete(client: Any, table: str, where: str, params: dict[str, Any], cluster: str | None) -> None:
    if cluster is None:
        client.command(f"DELETE FROM {table} WHERE {where}", parameters=params)
    else:
        client.command(
            f"DELETE FROM {table}{LOCAL_SUFFIX} ON CLUSTER {cluster} WHERE {where}",
            parameters=params,
            settings={"mutations_sync": 2},
        )
