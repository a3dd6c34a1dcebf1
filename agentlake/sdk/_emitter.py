"""Non-blocking event emission from agent code to Kafka.

`emit()` only appends to an in-memory deque (a few microseconds). A background
thread owns an asyncio loop and an idempotent aiokafka producer (`acks=all`)
and ships batches. When the broker cannot be reached, or the deque is full,
events go to the durable `SpillBuffer` and are re-sent, oldest first, once the
broker answers again. Nothing is dropped; a re-sent event may reach Kafka twice,
which the projections absorb (keyed by `event_id`) and the stream processor
ignores (keyed by `seq`).

A record the broker will never accept (larger than `max_record_bytes`, or
refused as too large or invalid) is quarantined under the spill dir, counted in
`stats.quarantined` and logged; it is never retried and never holds back the
records behind it. Failed sends back off (0.2 s doubling to 5 s) and repeated
warnings are rate-limited.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentlake._logging import RateLimitFilter
from agentlake.sdk._spill import Record, SegmentClaim, SpillBuffer

log = logging.getLogger("agentlake.sdk")
log.addFilter(RateLimitFilter())

# What the broker answers for a record it will never take: quarantine, do not retry.
_PERMANENT = (
    "MessageSizeTooLargeError",
    "RecordTooLargeError",
    "RecordListTooLargeError",
    "CorruptRecordException",
    "InvalidTopicError",
    "InvalidRecordError",
)


def is_permanent(error: BaseException) -> bool:
    """True for send errors that retrying the same record cannot fix."""
    return type(error).__name__ in _PERMANENT


def record_size(record: Record) -> int:
    """Bytes a record may take in a batch on the broker, an upper bound: topic, key, value,
    batch and record framing, and lz4's worst-case growth of incompressible data."""
    n = len(record[1]) + len(record[2])
    return len(record[0]) + n + n // 255 + 128


class Emitter(Protocol):
    def emit(self, topic: str, key: bytes, value: bytes) -> None: ...
    def flush(self, timeout: float = 30.0) -> bool: ...
    def close(self, timeout: float = 30.0) -> None: ...


@dataclass
class EmitterStats:
    emitted: int = 0
    acked: int = 0
    spilled: int = 0
    resent: int = 0
    send_errors: int = 0
    quarantined: int = 0


class MemoryEmitter:
    """Keeps events in a list. For unit tests and for dry runs with no broker."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))

    def flush(self, timeout: float = 30.0) -> bool:
        return True

    def close(self, timeout: float = 30.0) -> None:
        return None


class KafkaEmitter:
    """Ships events to Kafka from a background thread; spills to disk when it cannot.

    Args:
        bootstrap_servers: Kafka bootstrap list.
        spill_dir: folder of the durable buffer (shared safely between processes).
        max_queue: events held in memory before new ones go straight to disk.
        linger_ms: how long the sender waits to fill a batch.
        request_timeout_ms: how long a send may take before its events are spilled.
        max_record_bytes: larger records are quarantined at `emit()`, never sent.
        max_request_size: the producer's request limit (the broker's `message.max.bytes`).
        announce: records sent once, best effort, right after the first connection: the
            writer schemas on the schema topic (see `agentlake.schema_registry`).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        spill_dir: Path,
        *,
        max_queue: int = 100_000,
        linger_ms: int = 5,
        request_timeout_ms: int = 8000,
        max_batch: int = 8192,
        client_id: str = "agentlake-sdk",
        compression: str | None = "lz4",
        max_record_bytes: int = 1024 * 1024 - 64 * 1024,
        max_request_size: int = 1024 * 1024,
        announce: list[Record] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.spill = SpillBuffer(spill_dir)
        self.max_queue = max_queue
        self.linger = linger_ms / 1000
        self.request_timeout_ms = request_timeout_ms
        self.max_batch = max_batch
        self.client_id = client_id
        self.compression = compression
        self.max_record_bytes = max_record_bytes
        self.max_request_size = max(max_request_size, max_record_bytes)
        self._announce = list(announce or [])
        self.stats = EmitterStats()
        self._q: collections.deque[Record] = collections.deque()
        self._inflight = 0
        self._closing = False
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._connected = False
        self._down_since: float | None = None  # monotonic time of the first failure since the last success
        self._thread = threading.Thread(target=self._thread_main, name="agentlake-emitter", daemon=True)
        self._thread.start()

    # -- caller side (any thread) --------------------------------------------
    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        """Hand one encoded event over. Never blocks on the network."""
        self.stats.emitted += 1
        if record_size((topic, key, value)) > self.max_record_bytes:
            self._quarantine([(topic, key, value)], "too_large")
            return
        if len(self._q) >= self.max_queue or self._closing:
            self.stats.spilled += self.spill.append([(topic, key, value)])
            return
        self._q.append((topic, key, value))
        if self._idle.is_set():
            self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected

    def pending(self) -> int:
        """Events not yet acknowledged by Kafka (in memory, in flight, or on disk)."""
        return len(self._q) + self._inflight + self.spill.count()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event so far is acknowledged by Kafka (spill included).

        Returns False when `timeout` passed first (e.g. the broker is down); the
        events are then still held, on disk at the latest, and will be sent later.
        """
        return self._wait_sent(timeout, None)

    def _wait_sent(self, timeout: float, unreachable_grace: float | None) -> bool:
        """True once every event is acknowledged; False after `timeout`, or (with
        `unreachable_grace`) once every event is on disk and the broker has been unreachable
        that many seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._q and self._inflight == 0:
                if not self.spill.has_pending():
                    return True
                down, grace = self._down_since, unreachable_grace
                if grace is not None and down is not None and time.monotonic() - down >= grace:
                    return False
            self._wake.set()
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 30.0, unreachable_grace: float = 2.0) -> None:
        """Flush for up to `timeout`, then spill whatever is left and stop.

        The flush ends early once every event is durable on disk and the broker has been
        unreachable for `unreachable_grace` seconds (a failed connection or send, no success
        since): waiting longer would only delay the agent's exit. Spilled events are sent by
        the next emitter on the same spill folder (any process).
        """
        self._wait_sent(timeout, unreachable_grace)
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=self.request_timeout_ms / 1000 + 5)
        leftover = []
        while self._q:
            leftover.append(self._q.popleft())
        self.stats.spilled += self.spill.append(leftover)
        self.spill.seal()

    # -- sender thread ---------------------------------------------------------
    def _thread_main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer: AIOKafkaProducer | None = None
        backoff = 0.2
        while True:
            if self._closing and (not self._q or producer is None):
                break
            if producer is None:
                try:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap_servers,
                        client_id=self.client_id,
                        acks="all",
                        enable_idempotence=True,
                        linger_ms=max(1, int(self.linger * 1000)),
                        max_batch_size=256 * 1024,
                        max_request_size=self.max_request_size,
                        request_timeout_ms=self.request_timeout_ms,
                        compression_type=self.compression,
                    )
                    await asyncio.wait_for(producer.start(), self.request_timeout_ms / 1000)
                    self._connected = True
                    self._down_since = None
                    backoff = 0.2
                    await self._send_announcements(producer)
                except Exception as e:  # unreachable broker, bad config: never lose the events
                    log.warning("kafka unreachable (%s); spilling to %s", e, self.spill.folder)
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                    producer = None
                    self._connected = False
                    self._spill_queue()
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            try:
                await self._drain_spill(producer)
                batch = self._take_batch()
                if not batch:
                    await self._wait_for_work()
                    continue
                await self._send(producer, batch)
                backoff = 0.2
            except Exception as e:
                log.warning("kafka send failed (%s); spilling and reconnecting", e)
                self.stats.send_errors += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 2)
                producer = None
                self._connected = False
                if self._down_since is None:
                    self._down_since = time.monotonic()
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def _send_announcements(self, producer: Any) -> None:
        """Best effort, once: a stack without the schema topic only loses forward compatibility."""
        if not self._announce:
            return
        try:
            futs = [await producer.send(t, v, key=k) for t, k, v in self._announce]
            await asyncio.wait_for(asyncio.gather(*futs), 3)
        except Exception as e:
            log.warning("could not announce writer schemas (%s); newer events may need a redrive", e)
        self._announce = []

    def _take_batch(self) -> list[Record]:
        # counted as in flight before they leave the queue, so that `flush()` never sees them
        # nowhere (only this thread pops: the queue holds at least `n`)
        n = min(len(self._q), self.max_batch)
        self._inflight = n
        return [self._q.popleft() for _ in range(n)]

    async def _submit(
        self, producer: Any, records: list[Record]
    ) -> tuple[list[tuple[Any, list[Record]]], list[Record]]:
        """Queue records as whole record batches, one per (topic, partition) run.

        Building batches directly skips aiokafka's per-message future and
        bookkeeping, which is most of the SDK's cost per event. Partitions come
        from the producer's own partitioner (murmur2 of the key, like `send`),
        so a trajectory's events land on the same partition of every topic.
        Returns (delivery future, records it carries) pairs, and the records not
        submitted because their topic's metadata is unavailable (to retry).
        """
        groups: dict[tuple[str, int], list[Record]] = {}
        parts_cache: dict[str, tuple[list[int], list[int]] | None] = {}
        unavailable: list[Record] = []
        for rec in records:
            topic, key, _ = rec
            if topic not in parts_cache:
                try:
                    await producer.client._wait_on_metadata(topic)
                except Exception as e:  # e.g. an unknown topic: keep its records, send the others
                    log.warning("no metadata for topic %s (%s); its events wait", topic, e)
                    parts_cache[topic] = None
                else:
                    meta = producer._metadata  # aiokafka has no public partition lookup
                    parts_cache[topic] = (
                        sorted(meta.partitions_for_topic(topic)),
                        sorted(meta.available_partitions_for_topic(topic)),
                    )
            parts = parts_cache[topic]
            if parts is None:
                unavailable.append(rec)
                continue
            all_parts, available = parts
            partition = producer._partitioner(key, all_parts, available)
            groups.setdefault((topic, partition), []).append(rec)
        out: list[tuple[Any, list[Record]]] = []
        for (topic, partition), recs in groups.items():
            builder = producer.create_batch()
            carried: list[Record] = []
            for rec in recs:
                if builder.append(key=rec[1], value=rec[2], timestamp=None) is None:
                    if carried:
                        out.append((await producer.send_batch(builder, topic, partition=partition), carried))
                        builder, carried = producer.create_batch(), []
                    if builder.append(key=rec[1], value=rec[2], timestamp=None) is None:
                        # larger than a whole batch: let `send` handle (or reject) it alone
                        out.append((await self._send_one(producer, rec, partition), [rec]))
                        continue
                carried.append(rec)
            if carried:
                out.append((await producer.send_batch(builder, topic, partition=partition), carried))
        return out, unavailable

    @staticmethod
    async def _send_one(producer: Any, rec: Record, partition: int) -> Any:
        """`producer.send`, with a client-side rejection turned into a failed future."""
        try:
            return await producer.send(rec[0], rec[2], key=rec[1], partition=partition)
        except Exception as e:
            if not is_permanent(e):
                raise
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(e)
            return fut

    async def _deliver(self, producer: Any, records: list[Record]) -> list[Record]:
        """Send `records` and wait for the broker.

        Returns the records that failed for a reason that may pass (to keep and
        retry). A batch refused for good is re-sent record by record, and a record
        refused for good is quarantined. Raises when nothing could be submitted
        (the caller keeps every record).
        """
        pending, retry = await self._submit(producer, records)
        results = await asyncio.wait_for(
            asyncio.gather(*(f for f, _ in pending), return_exceptions=True),
            self.request_timeout_ms / 1000 + 2,
        )
        for (_, recs), r in zip(pending, results, strict=True):
            if not isinstance(r, BaseException):
                self.stats.acked += len(recs)
            elif not is_permanent(r):
                retry.extend(recs)
            elif len(recs) == 1:
                self._quarantine(recs, type(r).__name__)
            else:
                for rec in recs:  # find the record(s) the broker refuses
                    retry.extend(await self._deliver(producer, [rec]))
        return retry

    def _quarantine(self, records: list[Record], reason: str) -> None:
        n = self.spill.quarantine(records, reason)
        self.stats.quarantined += n
        log.error(
            "agentlake: %d event(s) the broker will never accept (%s, largest %d bytes) set aside in %s",
            n,
            reason,
            max(record_size(r) for r in records),
            self.spill.quarantine_dir,
        )

    async def _send(self, producer: Any, batch: list[Record]) -> None:
        try:
            retry = await self._deliver(producer, batch)
        except BaseException:
            # Whatever was not acknowledged goes to disk; duplicates are absorbed downstream.
            self.stats.spilled += self.spill.append(batch)
            self._inflight = 0
            raise
        self._inflight = 0
        if retry:
            self.stats.spilled += self.spill.append(retry)
            raise RuntimeError(f"{len(retry)} event(s) not acknowledged; spilled")

    async def _drain_spill(self, producer: object) -> None:
        self.spill.seal()
        for path in self.spill.pending():
            with SegmentClaim(path) as claim:
                if claim is None:
                    continue
                records = claim.records()
                for i in range(0, len(records), self.max_batch):
                    chunk = records[i : i + self.max_batch]
                    self._inflight = len(chunk)
                    try:
                        retry = await self._deliver(producer, chunk)
                    finally:
                        self._inflight = 0
                    if retry:
                        # keep what is left (quarantined and sent records are not re-sent)
                        claim.keep_only(retry + records[i + self.max_batch :])
                        raise RuntimeError(f"{len(retry)} spilled event(s) not acknowledged")
                    self.stats.resent += len(chunk)
                claim.done()

    def _spill_queue(self) -> None:
        # counted as in flight while moved, so that `flush()` never sees them nowhere
        n = len(self._q)
        self._inflight += n
        try:
            batch = [self._q.popleft() for _ in range(n)]
            self.stats.spilled += self.spill.append(batch)
        finally:
            self._inflight -= n

    async def _wait_for_work(self) -> None:
        self._idle.set()
        try:
            if not self._q:
                await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, 0.05)
            self._wake.clear()
        finally:
            self._idle.clear()
        if self.linger:
            await asyncio.sleep(self.linger)

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._closing:
            await asyncio.sleep(0.05)


def failed_error(results: list[object]) -> Exception:
    for r in results:
        if isinstance(r, Exception):
            return r
    return RuntimeError("send failed")
