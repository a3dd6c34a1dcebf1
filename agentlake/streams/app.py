"""The faust application: trajectory events -> `Engine` -> rewards, findings, dead letters, checkpoints.

faust does what it is sound at: consumer-group membership, partition
assignment (the three trajectory topics are co-partitioned by
``trajectory_id``), rebalance callbacks, flow control and the agent. Records
reach the agent a fetch round at a time (`agentlake.streams.transport`: one
list of messages per round, through an in-memory channel), not one event at a
time through faust's stream path. Correctness is kept here, not in faust's
tables or its commit path:

- the source topics are declared with ``acks=False``, so faust never commits
  them (its flush before a commit is not a barrier, and it commits past a
  single un-acked offset at a partition's head);
- each batch's outputs and checkpoints are sent with our own producer
  (``acks=all``, idempotent) and *awaited*; only then are the engine's low
  watermarks committed;
- state lives in the compacted checkpoint topic, read back per partition
  when the partition is (re)assigned, before any of its events is folded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import faust

from agentlake.kafka_io import make_producer
from agentlake.settings import Settings
from agentlake.streams.engine import Engine, Record
from agentlake.streams.processor import Output, RewardProcessor, RulesLookup, default_rules
from agentlake.streams.transport import BatchApp
from agentlake.topics import STREAM_CHECKPOINTS, STREAMS_GROUP, TOPICS, TRAJECTORY_TOPICS, dlq

log = logging.getLogger("agentlake.streams")
T = TypeVar("T")


def create_engine(settings: Settings, rules: RulesLookup | None = None) -> Engine:
    processor = RewardProcessor(
        rules or default_rules, live_scores=settings.live_scores, topic=settings.topic
    )
    return Engine(
        processor,
        settings.topic(STREAM_CHECKPOINTS),
        checkpoint_every_s=settings.stream_checkpoint_every_s,
        idle_timeout_s=settings.stream_idle_timeout_s,
        live_every_s=settings.live_score_every_s,
        done_retention_s=settings.stream_done_retention_s,
        # what the worker's producer can send (its limit is AGENTLAKE_MAX_MESSAGE_BYTES)
        max_checkpoint_bytes=settings.max_event_bytes,
    )


class KafkaIO:
    """The worker's own Kafka client side: an ``acks=all`` producer and the checkpoint reader."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._admin: Any = None

    async def producer(self) -> Any:
        if self._producer is None:
            self._producer = make_producer(
                self.settings, enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024
            )
            await self._producer.start()
        return self._producer

    async def send_all(self, outputs: list[Output]) -> None:
        """Send every output and wait until the broker acknowledged all of them."""
        await (await self.send(outputs))

    async def send(self, outputs: list[Output]) -> asyncio.Future[Any]:
        """Hand every output to the producer; the returned future is done when the broker has
        acknowledged all of them (or failed with the first error)."""
        from aiokafka.errors import MessageSizeTooLargeError

        if not outputs:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        producer = await self.producer()
        too_large: list[Output] = []
        futures = []
        for o in outputs:
            try:
                futures.append(
                    await producer.send(
                        o.topic, o.value, key=o.key, partition=o.partition, headers=o.headers or None
                    )
                )
            except MessageSizeTooLargeError:
                too_large.append(o)
        for o in too_large:  # never retried forever: a small dead letter says what was dropped
            log.error(
                "output of %d bytes for %s is over the producer's limit: dead-lettered",
                len(o.value or b""),
                o.topic,
            )
            if self._logical(o.topic) not in {t.name for t in TOPICS if not t.compacted}:
                continue  # a compacted topic (or a dead-letter topic) has no dead-letter topic of its own
            dl = [("reason", b"too_large"), ("detail", f"{len(o.value or b'')} bytes".encode())]
            futures.append(await producer.send(dlq(o.topic), b"", key=o.key, headers=dl))
        return asyncio.gather(*futures)

    def _logical(self, topic: str) -> str:
        prefix = self.settings.topic_prefix
        return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic

    async def read_checkpoints(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """The checkpoint topic's `partition`, from its start to its end at call time."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.settings.topic(STREAM_CHECKPOINTS), partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        out: list[tuple[bytes, bytes | None]] = []
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for msgs in (await consumer.getmany(tp, timeout_ms=500, max_records=50_000)).values():
                    out.extend((m.key, m.value) for m in msgs if m.offset < end and m.key is not None)
        finally:
            await consumer.stop()
        return out

    async def committed(self, group: str, tps: list[Any]) -> dict[Any, int]:
        """The group's committed offsets of `tps` (missing: none committed). Asked with an admin
        client of our own: faust's consumer thread may be inside a rebalance callback."""
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_servers)
            await self._admin.start()
        asked = {TopicPartition(tp[0], tp[1]): tp for tp in tps}
        got = await self._admin.list_consumer_group_offsets(group, partitions=list(asked))
        return {asked[k]: v.offset for k, v in got.items() if k in asked and v.offset >= 0}

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def create_app(
    settings: Settings,
    rules: RulesLookup | None = None,
    *,
    app_id: str = STREAMS_GROUP,
    broker: str | None = None,
    datadir: Path | None = None,
    name: str = "streams",
) -> faust.App:
    """Build the faust app. Tests replace ``app.io`` (send/read) and ``app.commit_offsets``
    and drive the agent with `test_context()` (each value a list of faust `Message`s, as one
    fetch round delivers them), which never connects to `broker`."""
    app = BatchApp(
        settings.topic(app_id),
        broker=broker or f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        datadir=str(datadir or settings.data_dir / "streams" / "streams"),
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        # faust's own topics get the copies `agentlake up` chose (AGENTLAKE_TOPIC_REPLICATION_FACTOR)
        topic_replication_factor=settings.topic_replication_factor or 1,
        producer_max_request_size=settings.max_message_bytes,
        topic_allow_declare=True,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.worker_session_timeout_s,
        # static membership: a worker restarted under its name takes its partitions back at once,
        # without waiting for the killed process's session to time out
        consumer_group_instance_id=settings.topic(f"{app_id}-{name}"),
        broker_heartbeat_interval=2.0,
        broker_commit_every=10_000_000,
        broker_commit_interval=3600.0,
        stream_wait_empty=False,
        # a batch is one fetch round: at most this many records, or what the broker has after
        # `fetch_max_wait_ms` (below)
        broker_max_poll_records=settings.stream_batch_size,
        key_serializer="raw",
        value_serializer="raw",
    )
    engine = create_engine(settings, rules)
    io = KafkaIO(settings)
    lock = asyncio.Lock()
    generation: dict[str, Any] = {"id": -1, "seen": set()}
    source = app.topic(
        *[settings.topic(t) for t in TRAJECTORY_TOPICS],
        key_serializer="raw",
        value_serializer="raw",
        acks=False,
    )
    # fetch rounds waiting for the agent (back-pressure: the fetch loop waits when it is full)
    batches = app.channel(maxsize=4)
    app.topics.add(source)  # subscribed by faust's consumer, drained in batches by ours
    app.batch_topics = frozenset(source.topics)
    app.fetch_max_wait_ms = settings.stream_batch_ms

    async def to_agent(messages: list[Any]) -> None:
        await batches.send(value=messages)

    app.batch_sink = to_agent

    async def commit_offsets(offsets: dict[Any, int]) -> bool:
        # faust's commit() only commits what its own acks allow (none here), and its driver crashes
        # the app on any commit error: commit through the aiokafka consumer in faust's consumer thread.
        from aiokafka.structs import OffsetAndMetadata
        from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

        thread = app.consumer._thread  # type: ignore[attr-defined]

        async def commit_in_thread() -> bool:
            consumer = thread._ensure_consumer()
            assigned = consumer.assignment()
            mine = {ensure_aiokafka_TP(tp): OffsetAndMetadata(off, "") for tp, off in offsets.items()}
            mine = {tp: om for tp, om in mine.items() if tp in assigned}
            if mine:
                await consumer.commit(mine)
            return True

        try:
            return bool(await asyncio.wait_for(thread.call_thread(commit_in_thread), 10))
        except Exception as e:  # e.g. a rebalance or the broker away: the next flush commits again
            log.warning("commit of %d offsets failed (%r); retried after the next batch", len(offsets), e)
            return False

    owned: set[int] = set()  # source partitions of the current assignment (from faust's signals)

    def assigned(tp: Any) -> bool:
        return tp.partition in owned

    app.io = io  # type: ignore[attr-defined]
    app.commit_offsets = commit_offsets  # type: ignore[attr-defined]
    app.is_assigned = assigned  # type: ignore[attr-defined]
    app.engine = engine  # type: ignore[attr-defined]

    # Batches in flight: (acknowledgement, outputs, offsets safe to commit once it and every
    # earlier one are acknowledged). Sends are pipelined; commits follow acknowledgements in order.
    pending: deque[tuple[asyncio.Future[Any], list[Output], dict[Any, int]]] = deque()

    async def resend(outputs: list[Output]) -> None:
        # The engine's state already includes these outputs: re-send until acknowledged, never skip.
        backoff = 0.2
        while True:
            try:
                await app.io.send_all(outputs)  # type: ignore[attr-defined]
                return
            except Exception as e:
                log.warning("sending %d outputs failed (%r); retrying in %.1fs", len(outputs), e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def flush(outputs: list[Output]) -> dict[Any, int]:
        """Send `outputs` (pipelined); returns the offsets whose effects are all acknowledged."""
        try:
            ack = await app.io.send(outputs)  # type: ignore[attr-defined]
        except Exception as e:
            log.warning("handing %d outputs to the producer failed (%r)", len(outputs), e)
            await resend(outputs)
            ack = asyncio.get_running_loop().create_future()
            ack.set_result(None)
        pending.append((ack, outputs, engine.committable()))
        while len(pending) > 32:  # back-pressure: wait for the oldest batch
            await asyncio.wait([pending[0][0]])
            await settle()
        return await settle()

    async def settle() -> dict[Any, int]:
        latest: dict[Any, int] = {}
        while pending and pending[0][0].done():
            ack, outputs, offsets = pending.popleft()
            if ack.exception() is not None:
                await resend(outputs)
            latest = offsets
        return latest

    async def commit(offsets: dict[Any, int]) -> None:
        # Outside the lock: the commit runs in faust's consumer thread, which may be inside a
        # rebalance callback waiting for `on_revoked`, which waits for the lock.
        if offsets and await app.commit_offsets(offsets):  # type: ignore[attr-defined]
            engine.committed_to(offsets)

    async def asking(what: str, ask: Callable[[], Awaitable[T]]) -> T:
        # A batch is never dropped for a broker that is briefly away (e.g. just restarted): its
        # records would leave a gap that no commit passes until the next rebalance.
        backoff = 0.2
        while True:
            try:
                return await ask()
            except Exception as e:
                log.warning("%s failed (%r); retrying in %.1fs", what, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def handle(batch: list[Any]) -> dict[Any, int]:
        gen = getattr(app, "consumer_generation_id", 0)
        if gen != generation["id"]:
            generation["id"], generation["seen"] = gen, set()
        records: list[Record] = []
        for m in batch:
            if m.generation_id != gen or not app.is_assigned(m.tp):  # type: ignore[attr-defined]
                continue  # fetched before a rebalance: re-delivered to whoever owns it now
            records.append((m.tp, m.offset, m.key, m.value))
        for partition in sorted({r[0][1] for r in records} - engine.restored):
            read = await asking(
                f"reading the checkpoints of partition {partition}",
                lambda p=partition: app.io.read_checkpoints(p),  # type: ignore[attr-defined,misc]
            )
            loaded = engine.load(partition, read)
            log.info("partition %d restored: %d open trajectories", partition, loaded)
        new = sorted({r[0] for r in records} - generation["seen"])
        if new:
            committed = await asking(
                "asking for the committed offsets",
                lambda: app.io.committed(app.conf.id, new),  # type: ignore[attr-defined]
            )
            for tp in new:
                generation["seen"].add(tp)
                engine.expect(tp, committed.get(tp))
        outputs = engine.process(records)
        outputs += engine.tick()
        return await flush(outputs)

    @app.agent(batches, name="score")
    async def score(stream: Any) -> Any:
        async for batch in stream:
            async with lock:
                offsets = await handle(batch)
            await commit(offsets)
            yield len(batch)

    every = max(0.05, min(1.0, settings.live_score_every_s, settings.stream_checkpoint_every_s))

    @app.timer(interval=every)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        async with lock:
            offsets = await flush(engine.tick())
        await commit(offsets)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: Any, revoked: set[Any], **kwargs: Any) -> None:
        async with lock:
            # Outputs of processed records are acknowledged already; checkpoint what is open so the
            # next owner re-reads little, then forget those partitions.
            try:
                await app.io.send_all(engine.tick(force_checkpoint=True))  # type: ignore[attr-defined]
            except Exception as e:  # the next owner re-reads from the committed offsets: still correct
                log.warning("checkpoint at revocation failed: %r", e)
            gone = {tp.partition for tp in revoked}
            engine.drop(gone)
            owned.difference_update(gone)
            generation["seen"] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app_: Any, assigned: set[Any], **kwargs: Any) -> None:
        mine = sorted({tp.partition for tp in assigned if tp.topic in source.topics})
        owned.clear()  # (eager rebalance: everything was revoked and dropped just before)
        owned.update(mine)
        log.info("assigned partitions %s (generation %s)", mine, getattr(app, "consumer_generation_id", "?"))

    app.score_agent = score  # type: ignore[attr-defined]
    return app


def run_worker(
    settings: Settings, rules: RulesLookup | None = None, loglevel: str = "info", name: str = "streams"
) -> None:
    """Run the stream worker `name` in this process until it is stopped (its faust data dir is
    ``AGENTLAKE_HOME/streams/<name>``)."""
    from faust.worker import Worker

    datadir = settings.data_dir / "streams" / name
    datadir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, rules, datadir=datadir, name=name)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
