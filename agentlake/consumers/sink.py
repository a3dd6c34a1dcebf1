"""The projection sink: Kafka -> ClickHouse (+ Milvus), batched and idempotent.

Loop: fetch a batch, decode it, insert it (one insert per table, with a
deduplication token), upsert final rewards into Milvus, and only then commit
the Kafka offsets. A crash anywhere before the commit re-delivers the batch;
the tables are keyed by event so the re-insert replaces itself.

Malformed records on the trajectory topics are dead-lettered by the stream
processor (which reads the same topics); here they are counted and skipped,
and so is every record the worker's per-record rules reject
(`agentlake.streams.processor.check_record`: wrong topic, null or mismatched
key, seq out of range), so what the worker dead-letters is never projected. On
the topics only this sink reads (rewards, policy findings), it dead-letters them.

The worker's stateful rules (``after_end``, ``duplicate_seq``) can only
be decided by the worker, possibly after this sink projected the event: the sink
also reads the trajectory topics' dead-letter topics and retracts those events
(`agentlake.projections.retract`), each once its source record is projected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentlake.kafka_io import catch_up as kafka_catch_up
from agentlake.kafka_io import make_consumer, make_producer, send_dead_letter
from agentlake.lake.analytics import TOPIC_WRITERS as LAKE_WRITERS
from agentlake.lake.analytics import ensure_tables as ensure_lake_tables
from agentlake.projections.auth import TOPIC_WRITERS as AUTH_WRITERS
from agentlake.projections.auth import ensure_tables as ensure_auth_tables
from agentlake.projections.clickhouse import ClickHouseWriter, Located, connect
from agentlake.projections.retract import Retraction, retract, retracted_ids, retraction_of
from agentlake.schemas import DecodeError, RewardScored, codec
from agentlake.settings import Settings
from agentlake.streams.processor import check_record
from agentlake.topics import POLICY, REWARDS, STREAMS_GROUP, TRAJECTORY_TOPICS, dlq

log = logging.getLogger("agentlake.sink")

# topics projected by their own writer from raw records (agent auth, the lake's cache events)
TOPIC_WRITERS = {**AUTH_WRITERS, **LAKE_WRITERS}
SINK_TOPICS = (*TRAJECTORY_TOPICS, REWARDS, POLICY, *TOPIC_WRITERS)
# the stream worker's dead letters of the trajectory topics: its verdicts, followed to retract
VERDICT_TOPICS = tuple(dlq(t) for t in TRAJECTORY_TOPICS)
HOLD_S = 0.2  # a verdict whose source is not projected yet is retried after this long


def ensure_raw_tables(client: Any) -> None:
    """Create the tables of `TOPIC_WRITERS` (auth, lake) so that an empty store reads as empty."""
    ensure_auth_tables(client)
    ensure_lake_tables(client)


@dataclass
class SinkStats:
    batches: int = 0
    records: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    dead_letters: int = 0
    vectors: int = 0
    vectors_refused: int = 0  # rows Milvus refused: logged with their trajectory id and skipped
    retracted: int = 0
    last_lag: int = 0
    reconciled: int = 0
    # produced -> row written, in ms, per trajectory event (only with track_latency=True)
    latencies_ms: list[float] = field(default_factory=list)


class Projector:
    """Projects the log into ClickHouse and Milvus.

    Args:
        settings: where Kafka, ClickHouse and Milvus are.
        milvus: also maintain the vector index of finished trajectories.
        group_id: Kafka consumer group (offsets are this group's); default: the one bound
            to this projection store (`Settings.sink_group`).
        track_latency: record, per event, the time from production to its row being written.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        milvus: bool = True,
        group_id: str | None = None,
        track_latency: bool = False,
    ) -> None:
        self.settings = settings
        self.track_latency = track_latency
        self.group_id = settings.topic(group_id or settings.sink_group)
        self.with_milvus = milvus
        self.stats = SinkStats()
        self.codec = codec()
        self._consumer: Any = None
        self._producer: Any = None
        self._writer: ClickHouseWriter | None = None
        self._index: Any = None
        self._owned = {settings.topic(t) for t in (REWARDS, POLICY)}
        self._logical = {settings.topic(t): t for t in TRAJECTORY_TOPICS}
        # topics projected by their own writer from raw records (agent auth)
        self._raw_writers = {settings.topic(t): w for t, w in TOPIC_WRITERS.items()}
        self._verdict_topics = {settings.topic(t) for t in VERDICT_TOPICS}
        self._held: dict[Any, float] = {}  # verdict partition -> when it was paused
        self._retracted: set[tuple[str, str]] = set()  # (trajectory_id, event_id) never projected again
        self._last_reconcile = time.monotonic()
        self._worker_position: tuple[int, float] = (-1, time.monotonic())

    @property
    def clickhouse(self) -> Any:
        assert self._writer is not None
        return self._writer.client

    @property
    def index(self) -> Any:
        return self._index

    async def start(self) -> None:
        self._writer = ClickHouseWriter(await asyncio.to_thread(connect, self.settings))
        await asyncio.to_thread(ensure_raw_tables, self._writer.client)
        self._retracted = await asyncio.to_thread(retracted_ids, self._writer.client)
        if self.with_milvus:
            from agentlake.projections.embeddings import get_embedder
            from agentlake.projections.milvus import TrajectoryIndex

            self._index = await asyncio.to_thread(
                lambda: TrajectoryIndex(self.settings, get_embedder(self.settings))
            )
        self._consumer = make_consumer(
            self.settings,
            *[self.settings.topic(t) for t in (*SINK_TOPICS, *VERDICT_TOPICS)],
            group_id=self.group_id,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            session_timeout_ms=10000,
            heartbeat_interval_ms=2000,
            max_poll_interval_ms=300000,
        )
        self._producer = make_producer(self.settings)
        await self._consumer.start()
        await self._producer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._consumer = self._producer = None

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def step(self, timeout_ms: int | None = None) -> int:
        """Process one batch (possibly empty); returns the number of records consumed."""
        assert self._consumer is not None and self._writer is not None
        self._release_held()
        batches = await self._consumer.getmany(
            timeout_ms=self.settings.sink_batch_ms if timeout_ms is None else timeout_ms,
            max_records=self.settings.sink_batch_size,
        )
        if not batches:
            await self._maybe_reconcile()
            return 0
        located: list[Located] = []
        rewards: list[RewardScored] = []
        spans = []
        raw: dict[str, list[bytes | None]] = {}
        verdicts: dict[Any, list[Any]] = {}
        n = 0
        for tp, msgs in batches.items():
            if tp.topic in self._verdict_topics:
                verdicts[tp] = msgs
                continue
            spans.append(f"{tp.topic}/{tp.partition}/{msgs[0].offset}-{msgs[-1].offset}")
            for m in msgs:
                n += 1
                if m.topic in self._raw_writers:
                    raw.setdefault(m.topic, []).append(m.value)
                    continue
                try:
                    ev = self.codec.decode(m.value) if m.value is not None else None
                    if ev is None:
                        raise DecodeError("empty", "record has no value")
                except DecodeError as e:
                    await self._reject(m, e.reason, e.detail)
                    continue
                logical = self._logical.get(m.topic)
                if logical is not None:
                    bad = check_record(logical, m.key, ev.record, ev.trajectory_id, ev.seq)
                    if bad is not None:  # dead-lettered by the stream worker: not projected
                        await self._reject(m, *bad)
                        continue
                if logical is not None and (ev.trajectory_id, ev.event_id) in self._retracted:
                    self.stats.skipped += 1  # retracted once already: never projected again
                    continue
                located.append((ev, m.topic, m.partition, m.offset))
                if isinstance(ev, RewardScored):
                    rewards.append(ev)
        token = hashlib.sha1(f"{self.group_id}|{'|'.join(sorted(spans))}".encode()).hexdigest()
        if located:
            counts = await asyncio.to_thread(self._writer.write, located, token)
            for k, v in counts.items():
                self.stats.rows[k] = self.stats.rows.get(k, 0) + v
        for topic, values in raw.items():
            counts = await asyncio.to_thread(self._raw_writers[topic], self._writer.client, values, token)
            for k, v in counts.items():
                self.stats.rows[k] = self.stats.rows.get(k, 0) + v
        if self.track_latency and located:
            now = time.time() * 1e6
            self.stats.latencies_ms.extend(
                (now - ev.ts_us) / 1000 for ev, topic, _, _ in located if not isinstance(ev, RewardScored)
            )
        if self._index is not None and rewards:
            self.stats.vectors += await asyncio.to_thread(self._index.upsert, rewards)
            self.stats.vectors_refused = self._index.refused
        if verdicts:
            n += await self._apply_verdicts(verdicts)
        await self._consumer.commit()
        self.stats.batches += 1
        self.stats.records += n
        await self._maybe_reconcile()
        return n

    async def _apply_verdicts(self, verdicts: dict[Any, list[Any]]) -> int:
        """Retract the events the worker's dead letters reject by a stateful rule. A verdict
        whose source record this sink has not projected yet is held: its partition is sought
        back to it (so the commit does not pass it) and paused for `HOLD_S`. Returns the
        dead letters consumed."""
        assert self._consumer is not None and self._writer is not None
        todo: list[Retraction] = []
        consumed = 0
        for tp, msgs in verdicts.items():
            for m in msgs:
                r = retraction_of(m.key, m.value, m.headers or (), self.codec)
                log.debug("verdict %s@%s:%s: %s", tp.topic, tp.partition, m.offset, r)
                if r is not None and not await self._projected(r):
                    log.debug("verdict held: its source is not projected yet")
                    self._consumer.seek(tp, m.offset)
                    self._consumer.pause(tp)
                    self._held[tp] = time.monotonic()
                    break
                consumed += 1
                if r is not None:
                    todo.append(r)
        if todo:
            counts = await asyncio.to_thread(
                retract, self._writer.client, todo, self.settings.clickhouse_cluster
            )
            self._retracted.update((r.trajectory_id, r.event_id) for r in todo)
            self.stats.retracted += counts.get("events", 0)
            log.info("retracted %d events the stream worker rejected (%s)", len(todo), counts)
        return consumed

    async def _projected(self, r: Retraction) -> bool:
        """Whether the retracted event's source record is behind this sink's position (or,
        for a partition another sink member holds, behind the group's committed offset)."""
        from aiokafka import TopicPartition

        assert self._consumer is not None
        if r.source_offset < 0 or r.source_topic not in self._logical:
            return True  # position unknown: nothing to wait for
        known = self._consumer.partitions_for_topic(r.source_topic)  # None: metadata not at hand
        if known is not None and r.source_partition not in known:
            return True  # no such partition: a verdict that can never come due must not block
        tp = TopicPartition(r.source_topic, r.source_partition)
        if tp in self._consumer.assignment():
            position: int | None = await self._consumer.position(tp)
        else:
            position = await self._consumer.committed(tp)
        return position is not None and position > r.source_offset

    def _release_held(self) -> None:
        if not self._held:
            return
        now = time.monotonic()
        due = [tp for tp, since in self._held.items() if now - since >= HOLD_S]
        assigned = self._consumer.assignment()
        for tp in due:
            del self._held[tp]
            if tp in assigned:
                self._consumer.resume(tp)

    async def _maybe_reconcile(self, force: bool = False) -> None:
        """Every `reconcile_every_s` (or now, with `force`), score ended trajectories the stream
        worker missed. It is an alarm: with a correct worker it finds nothing."""
        every = self.settings.reconcile_every_s
        if every <= 0 or (not force and time.monotonic() - self._last_reconcile < every):
            return
        self._last_reconcile = time.monotonic()
        from agentlake.consumers.reconcile import rescore, unscored
        from agentlake.registry import read_registry

        assert self._writer is not None
        client = self._writer.client
        ids = await asyncio.to_thread(unscored, client, self.settings.reconcile_after_s)
        if not ids or not await self._worker_caught_up():
            return  # nothing missing, or a busy worker that will score its backlog itself
        registry = await read_registry(self.settings, timeout=5)
        outputs = await asyncio.to_thread(rescore, client, ids, registry.rules_lookup, self.settings.topic)
        for out in outputs:
            await self._producer.send_and_wait(out.topic, out.value, key=out.key, headers=out.headers or None)
        self.stats.reconciled += len(ids)
        await asyncio.to_thread(record_reconciled, self.settings, ids)

    async def _worker_caught_up(self) -> bool:
        """Whether the stream worker has scored what the trajectory topics hold, or is stalled."""
        from agentlake.kafka_io import group_offsets

        try:
            committed, ends = await group_offsets(
                self.settings,
                self.settings.topic(STREAMS_GROUP),
                {self.settings.topic(t) for t in TRAJECTORY_TOPICS},
            )
        except Exception:
            return False
        if not committed:
            return False
        if all(committed[tp] >= ends[tp] for tp in committed):
            return True
        # Behind. Progressing means busy: leave it its backlog. Not moving for
        # `reconcile_after_s` means stalled: score for it (and say so).
        position = sum(committed.values())
        now = time.monotonic()
        if position != self._worker_position[0]:
            self._worker_position = (position, now)
            return False
        stalled = now - self._worker_position[1] >= self.settings.reconcile_after_s
        if stalled:
            log.warning(
                "the stream worker has not advanced for %.0fs; the sink scores for it",
                now - self._worker_position[1],
            )
        return stalled

    async def _reject(self, msg: Any, reason: str, detail: str) -> None:
        if msg.topic in self._owned:
            await send_dead_letter(self._producer, msg, reason, detail)
            self.stats.dead_letters += 1
            log.warning(
                "malformed record %s@%s:%s dead-lettered (%s: %s)",
                msg.topic,
                msg.partition,
                msg.offset,
                reason,
                detail,
            )
        else:
            # the stream worker dead-letters what it owns: nothing for an operator to do here
            self.stats.skipped += 1
            log.debug(
                "skipped malformed record %s@%s:%s (%s: %s)",
                msg.topic,
                msg.partition,
                msg.offset,
                reason,
                detail,
            )

    async def lag(self) -> int:
        """Records in the sink's topics not yet consumed by this projector."""
        assert self._consumer is not None
        parts = self._consumer.assignment()
        if not parts:
            return -1
        ends = await self._consumer.end_offsets(list(parts))
        total = 0
        for tp in parts:
            total += max(0, ends[tp] - await self._consumer.position(tp))
        self.stats.last_lag = total
        return total

    async def catch_up(self, timeout: float = 60.0) -> bool:
        """Consume until every assigned partition reaches the end offset seen at the start."""
        assert self._consumer is not None
        try:
            return await kafka_catch_up(
                self._consumer, self.step, timeout, poll_ms=self.settings.sink_batch_ms
            )
        finally:
            await self._maybe_reconcile(force=True)

    async def run_until(
        self, done: Callable[[], Awaitable[bool]], timeout: float = 120.0, check_every: float = 0.5
    ) -> bool:
        """Keep projecting until `done()` says so (checked between batches) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        last_check = 0.0
        while time.monotonic() < deadline:
            n = await self.step()
            now = time.monotonic()
            if n == 0 or now - last_check >= check_every:
                last_check = now
                if await done():
                    return True
        return False

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            await self.step()


def reconciled_file(settings: Settings) -> Any:
    return settings.data_dir / "reconciler.json"


def record_reconciled(settings: Settings, ids: list[str]) -> None:
    """Add to the count `agentlake status` shows (the reconciler's alarm), under the data dir."""
    from agentlake._alarms import add_to_count

    add_to_count(reconciled_file(settings), "reconciled", ids)


def reconciled_count(settings: Settings) -> int:
    """How many trajectories the reconciler had to score (0 when the stream worker lost nothing)."""
    from agentlake._alarms import read_count

    return read_count(reconciled_file(settings), "reconciled")


async def run_sink(settings: Settings, *, milvus: bool = True) -> None:
    """`agentlake worker sink`: project until interrupted."""
    async with Projector(settings, milvus=milvus) as p:
        log.info(
            "sink consuming %s into ClickHouse%s", ", ".join(SINK_TOPICS), " and Milvus" if milvus else ""
        )
        await p.run_forever()
