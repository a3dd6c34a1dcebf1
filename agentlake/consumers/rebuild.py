"""Rebuild a projection from the log: replay the topics into a fresh or existing store.

`rebuild()` reads the topics a projection is made of, from the beginning (or
from the first record at or after a time), up to their end offsets when it
starts, with manual partition assignment and no consumer group: the live
sink's committed offsets are neither read nor moved. Rows are built and written
by the sink's own code (`ClickHouseWriter`, `TrajectoryIndex.upsert`), and
every table is keyed by event, so a replay over rows that already exist
replaces them with themselves: running it twice changes nothing.

Malformed records, and those the stream worker's per-record rules reject, are
skipped and counted, as the live sink skips them (the worker dead-letters them).
The worker's dead letters for its stateful rules are replayed too, and their
events retracted once everything is written (`agentlake.projections.retract`),
as the live sink retracts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agentlake.consumers.sink import SINK_TOPICS, TOPIC_WRITERS, VERDICT_TOPICS, ensure_raw_tables
from agentlake.kafka_io import make_consumer
from agentlake.projections.clickhouse import ClickHouseWriter, Located, connect, recreate_tables
from agentlake.projections.retract import Retraction, retract, retracted_ids, retraction_of
from agentlake.schemas import DecodeError, RewardScored, codec
from agentlake.settings import Settings
from agentlake.topics import REWARDS, TRAJECTORY_TOPICS

Target = Literal["clickhouse", "milvus"]
TARGETS: dict[str, tuple[str, ...]] = {
    "clickhouse": (*SINK_TOPICS, *VERDICT_TOPICS),  # every table the sink writes
    "milvus": (REWARDS,),  # one vector per final reward
}

Progress = Callable[[int, int], None]  # (records read so far, records to read)


class RebuildError(RuntimeError):
    """A rebuild could not finish; the message says why and what to do."""


@dataclass
class RebuildStats:
    """What a rebuild did.

    Attributes:
        target: the store rebuilt.
        topics: topics replayed (prefixed).
        records: records read; `skipped` of them were malformed.
        rows: rows written per ClickHouse table.
        vectors: Milvus rows upserted.
        retracted: projected events taken out again because the worker's dead letters
            reject them by a stateful rule (``after_end``, ``duplicate_seq``).
        recreated: the store was emptied (tables or collection dropped and created) first.
        seconds: wall-clock duration.
    """

    target: str
    topics: list[str]
    records: int = 0
    skipped: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    vectors: int = 0
    retracted: int = 0
    recreated: bool = False
    since: str | None = None
    seconds: float = 0.0


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """A `--since` value as an aware datetime: ISO 8601 (naive means UTC) or a duration
    back from now (``90s``, ``15m``, ``2h``, ``7d``).

    Raises:
        ValueError: neither form.
    """
    text = value.strip()
    if m := _DURATION.match(text):
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m[2]]: float(m[1])})
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {value!r} is neither an ISO time (2026-11-30T15:00:00Z) nor a duration (15m, 2h, 7d)"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def _start_offsets(consumer: Any, parts: list[Any], since: datetime | None) -> dict[Any, int]:
    if since is None:
        return dict(await consumer.beginning_offsets(parts))
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in parts})
    ends = await consumer.end_offsets(parts)
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in parts}


async def rebuild(
    settings: Settings,
    target: Target,
    *,
    since: datetime | None = None,
    recreate: bool = False,
    progress: Progress | None = None,
    batch_size: int | None = None,
    stall_timeout: float = 120.0,
) -> RebuildStats:
    """Replay the log into `target`.

    Args:
        settings: where Kafka and the store are (`CLICKHOUSE_URL` / `MILVUS_URI` pick a server).
        target: ``clickhouse`` (every table) or ``milvus`` (the trajectory vectors).
        since: replay only records whose Kafka timestamp is at or after this time;
            None replays from the beginning.
        recreate: drop the target's tables (collection) and create them empty first.
        progress: called with (records read, records to read) after each batch.
        batch_size: records per write (default: the sink's batch size).
        stall_timeout: give up when no record arrives for this many seconds.

    Raises:
        ValueError: unknown target.
        RebuildError: the log stopped answering before its end offsets were reached
            (what was written stays: run it again).
        ClickHouseError: the embedded ClickHouse is owned by another process.
    """

    from agentlake.kafka_io import partitions

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    started = time.monotonic()
    topics = [settings.topic(t) for t in TARGETS[target]]
    stats = RebuildStats(
        target=target, topics=topics, recreated=recreate, since=since.isoformat() if since else None
    )
    writer, index = await asyncio.to_thread(_open_store, settings, target, recreate)
    consumer = make_consumer(  # no group: the live sink's offsets are neither read nor moved
        settings, max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024
    )
    try:
        await consumer.start()
    except Exception as e:
        await consumer.stop()
        raise RebuildError(f"Kafka at {settings.bootstrap_servers} does not answer ({e})") from None
    try:
        parts = await partitions(consumer, topics)
        if not parts:
            return stats
        consumer.assign(parts)
        start = await _start_offsets(consumer, parts, since)
        ends = dict(await consumer.end_offsets(parts))
        for tp in parts:
            consumer.seek(tp, start[tp])
        todo = {tp for tp in parts if start[tp] < ends[tp]}
        total = sum(max(0, ends[tp] - start[tp]) for tp in parts)
        if progress:
            progress(0, total)
        c = codec()
        trajectory_topics = {settings.topic(t): t for t in TRAJECTORY_TOPICS}
        # agent auth and context lake topics: projected by their own writers from raw records
        raw_writers = {settings.topic(t): w for t, w in TOPIC_WRITERS.items()} if writer is not None else {}
        if writer is not None:
            await asyncio.to_thread(ensure_raw_tables, writer.client)
        nonce = uuid.uuid4().hex  # this run's inserts are never mistaken for an earlier run's
        limit = batch_size or settings.sink_batch_size
        consumer.pause(*(set(parts) - todo))
        verdict_topics = {settings.topic(t) for t in VERDICT_TOPICS}
        retractions: list[Retraction] = []
        gone = await asyncio.to_thread(retracted_ids, writer.client) if writer is not None else set()
        last_record = time.monotonic()
        while todo:
            batches = await consumer.getmany(timeout_ms=1000, max_records=limit)
            if batches:
                last_record = time.monotonic()
            elif time.monotonic() - last_record > stall_timeout:
                raise RebuildError(
                    f"no record for {stall_timeout:.0f}s with {len(todo)} partitions short of their end "
                    f"({stats.records} records replayed): is Kafka up? Run the rebuild again"
                )
            located: list[Located] = []
            rewards: list[RewardScored] = []
            raw: dict[str, list[bytes | None]] = {}
            spans = []
            for tp, msgs in batches.items():
                msgs = [m for m in msgs if m.offset < ends[tp]]
                if not msgs:
                    continue
                spans.append(f"{tp.topic}/{tp.partition}/{msgs[0].offset}-{msgs[-1].offset}")
                for m in msgs:
                    stats.records += 1
                    if m.topic in verdict_topics:
                        r = retraction_of(m.key, m.value, m.headers or (), c)
                        if r is not None:
                            retractions.append(r)
                        continue
                    if m.topic in raw_writers:
                        raw.setdefault(m.topic, []).append(m.value)
                        continue
                    try:
                        if m.value is None:
                            raise DecodeError("empty", "record has no value")
                        ev = c.decode(m.value)
                    except DecodeError:
                        stats.skipped += 1
                        continue
                    logical = trajectory_topics.get(m.topic)
                    if logical is not None and (
                        rejects(logical, m.key, ev) or (ev.trajectory_id, ev.event_id) in gone
                    ):
                        stats.skipped += 1
                        continue
                    located.append((ev, m.topic, m.partition, m.offset))
                    if isinstance(ev, RewardScored):
                        rewards.append(ev)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
            if writer is not None and located:
                token = hashlib.sha1(f"rebuild|{nonce}|{'|'.join(sorted(spans))}".encode()).hexdigest()
                counts = await asyncio.to_thread(writer.write, located, token)
                for k, v in counts.items():
                    stats.rows[k] = stats.rows.get(k, 0) + v
            if writer is not None and raw:
                token = hashlib.sha1(f"rebuild-raw|{nonce}|{'|'.join(sorted(spans))}".encode()).hexdigest()
                for topic, values in raw.items():
                    counts = await asyncio.to_thread(raw_writers[topic], writer.client, values, token)
                    for k, v in counts.items():
                        stats.rows[k] = stats.rows.get(k, 0) + v
            if index is not None and rewards:
                stats.vectors += await asyncio.to_thread(index.upsert, rewards)
            if progress:
                progress(stats.records, total)
        if writer is not None and retractions:
            counts = await asyncio.to_thread(retract, writer.client, retractions, settings.clickhouse_cluster)
            stats.retracted = counts.get("events", 0)
    finally:
        await consumer.stop()
        stats.seconds = round(time.monotonic() - started, 3)
    return stats


def rejects(logical_topic: str, key: bytes | None, ev: Any) -> bool:
    """Whether the live sink leaves this decoded trajectory event out of the projections:
    the stream worker's per-record rules (`agentlake.streams.processor.check_record`,
    where the worker defines them) dead-letter it, so a rebuild must skip it too."""
    from agentlake.streams import processor

    check = getattr(processor, "check_record", None)
    return check is not None and check(logical_topic, key, ev.record, ev.trajectory_id, ev.seq) is not None


def _open_store(settings: Settings, target: str, recreate: bool) -> tuple[ClickHouseWriter | None, Any]:
    if target == "clickhouse":
        if recreate:
            recreate_tables(settings)
        return ClickHouseWriter(connect(settings)), None
    from agentlake.projections.embeddings import get_embedder
    from agentlake.projections.milvus import TrajectoryIndex, collection_name, milvus_client

    if recreate:
        client = milvus_client(settings)
        name = collection_name(settings)
        if client.has_collection(name):
            client.drop_collection(name)
    return None, TrajectoryIndex(settings, get_embedder(settings))
