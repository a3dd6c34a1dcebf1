"""Documents through the log: publish connector output as events, project ``lake.documents`` into Milvus.

Ingest is event-sourced like everything else: a connector's documents become
`DocumentUpserted` / `DocumentDeleted` records on ``lake.documents`` (acks=all),
and `DocumentProjector` applies them to the `DocumentStore`, committing offsets
after the write (at-least-once; applying an event twice is a no-op). Malformed
records go to ``lake.documents.dlq`` with the reason in headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlake.kafka_io import catch_up as kafka_catch_up
from agentlake.kafka_io import make_consumer, make_producer, partitions, send_dead_letter
from agentlake.lake.documents._domain import Document, StoredVersion, decide_delete, decide_upsert
from agentlake.lake.documents._events import (
    DocumentDeleted,
    DocumentEvent,
    decode_document_event,
    encode_document_event,
    event_of,
)
from agentlake.lake.documents.store import ApplyResult, DocumentStore
from agentlake.schemas import DecodeError
from agentlake.settings import Settings
from agentlake.topics import DOCUMENTS_GROUP, LAKE_DOCUMENTS

log = logging.getLogger("agentlake.lake.documents")


def plan_events(
    docs: Sequence[Document],
    stored: Mapping[str, StoredVersion] | Iterable[str] = (),
    *,
    tenant: str | None = None,
    source: str | None = None,
    prune: bool = True,
) -> list[DocumentEvent]:
    """The events that make the lake match a source snapshot.

    Args:
        docs: every document the source holds now (tombstones included).
        stored: what the lake holds for `tenant` from `source`: ids, or ids with
            their stored version and fingerprint (then documents the lake already
            holds unchanged, and tombstones of documents it does not hold, need no event).
        tenant, source: the scope of pruning (default: those of the first document).
        prune: also delete stored documents of that scope the snapshot no longer has.

    Returns:
        One event per document that changes something, then one `DocumentDeleted`
        (reason ``gone from source``) per pruned id, sorted by id. An empty snapshot
        prunes nothing unless `tenant` and `source` are given.
    """
    known: Mapping[str, StoredVersion] | None = stored if isinstance(stored, Mapping) else None
    stored_ids = set(stored)
    tenant = tenant if tenant is not None else (docs[0].tenant if docs else None)
    source = source if source is not None else (docs[0].source if docs else None)
    events: list[DocumentEvent] = []
    for d in docs:
        if known is not None and d.tenant == tenant:
            current = known.get(d.doc_id)
            action = (
                decide_delete(current, d.version)
                if d.deleted
                else decide_upsert(current, d.version, d.fingerprint())
            )
            if action in ("unchanged", "absent", "stale"):
                continue
        events.append(event_of(d))
    if prune and tenant is not None and source is not None:
        present = {d.doc_id for d in docs if d.tenant == tenant}
        for gone in sorted(stored_ids - present):
            events.append(DocumentDeleted(tenant, gone, source, version=None, reason="gone from source"))
    return events


async def publish_events(
    settings: Settings, events: Sequence[DocumentEvent], progress: Callable[[int], None] | None = None
) -> int:
    """Produce `events` to ``lake.documents`` (acks=all, idempotent producer). Returns the count.

    Everything is encoded first, so an event that does not fit the schema raises
    ValueError before anything is sent.
    """

    encoded = [encode_document_event(e) for e in events]
    producer = make_producer(settings, enable_idempotence=True, compression_type="lz4")
    await producer.start()
    try:
        futures = []
        for i, (topic, key, value) in enumerate(encoded):
            futures.append(await producer.send(settings.topic(topic), value, key=key))
            if progress is not None and (i + 1) % 50 == 0:
                progress(50)
        await asyncio.gather(*futures)
        if progress is not None:
            progress(len(encoded) % 50)
    finally:
        await producer.stop()
    return len(encoded)


@dataclass
class ProjectionStats:
    events: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    invalidated: list[str] = field(default_factory=list)
    dead_letters: int = 0

    def add(self, r: ApplyResult) -> None:
        self.events += 1
        self.actions[r.action] = self.actions.get(r.action, 0) + 1
        self.chunks += r.chunks
        self.invalidated.extend(r.invalidated)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "actions": dict(sorted(self.actions.items())),
            "chunks": self.chunks,
            "invalidated": sorted(set(self.invalidated)),
            "dead_letters": self.dead_letters,
        }


class DocumentProjector:
    """Consumes ``lake.documents`` (consumer group ``agentlake-documents``) into a `DocumentStore`.

    Args:
        settings: Kafka and Milvus.
        store: where to apply events (default: built from settings).
        on_result: called with every `ApplyResult` after it is written and before
            the offset is committed; the lake invalidates ``result.invalidated`` there.
    """

    def __init__(
        self,
        settings: Settings,
        store: DocumentStore | None = None,
        on_result: Callable[[ApplyResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_result = on_result
        self.topic = settings.topic(LAKE_DOCUMENTS)
        self.stats = ProjectionStats()
        self._consumer: Any = None
        self._producer: Any = None

    async def start(self) -> DocumentProjector:
        if self.store is None:
            from agentlake.lake.documents.store import document_store

            self.store = await asyncio.to_thread(document_store, self.settings)
        # Every partition is assigned, not subscribed: the group only stores offsets, so a
        # short-lived projector (one `lake ingest`) skips the join and its rebalance delay.
        # Two projectors at once both apply the same events, which is idempotent.
        self._consumer = make_consumer(
            self.settings,
            group_id=self.settings.topic(DOCUMENTS_GROUP),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._producer = make_producer(self.settings)
        try:
            await self._consumer.start()
            await self._producer.start()
            parts = await partitions(self._consumer, [self.topic])
            if not parts:
                raise RuntimeError(
                    f"topic {self.topic} does not exist: run `agentlake up` (it creates the topics)"
                )
            self._consumer.assign(parts)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def __aenter__(self) -> DocumentProjector:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def step(self, timeout_ms: int = 500) -> int:
        """Apply one batch and commit it. Returns the records consumed."""
        assert self._consumer is not None and self.store is not None
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=500)
        n = 0
        located: list[tuple[Any, DocumentEvent]] = []
        for msgs in batch.values():
            for m in msgs:
                n += 1
                try:
                    if m.value is None:
                        raise DecodeError("empty", "record has no value")
                    located.append((m, decode_document_event(m.value)))
                except DecodeError as e:
                    await self._reject(m, e.reason, e.detail)
        if located:
            store = self.store
            try:
                results = await asyncio.to_thread(store.apply_many, [ev for _, ev in located])
            except ValueError:  # a decodable event the store cannot take: find it, one at a time
                results = []
                for m, ev in located:
                    try:
                        results.append(await asyncio.to_thread(store.apply, ev))
                    except ValueError as err:
                        await self._reject(m, "invalid_document", str(err))
            for result in results:
                self.stats.add(result)
                if self.on_result is not None:
                    self.on_result(result)
        if n:
            await self._consumer.commit()
        return n

    async def _reject(self, msg: Any, reason: str, detail: str) -> None:
        await send_dead_letter(self._producer, msg, reason, detail)
        self.stats.dead_letters += 1
        log.warning("dead letter %s@%s:%s (%s: %s)", msg.topic, msg.partition, msg.offset, reason, detail)

    async def catch_up(self, timeout: float = 60.0) -> bool:
        """Consume until every partition reaches the end offset seen once assigned."""
        assert self._consumer is not None
        return await kafka_catch_up(self._consumer, self.step, timeout)


async def project_documents(
    settings: Settings, timeout: float = 60.0, store: DocumentStore | None = None
) -> ProjectionStats:
    """Apply what ``lake.documents`` holds and this group has not applied yet; returns what it did.

    Raises:
        TimeoutError: not caught up within `timeout` seconds.
    """
    async with DocumentProjector(settings, store) as p:
        if not await p.catch_up(timeout):
            raise TimeoutError(f"lake.documents not projected within {timeout:.0f}s")
        return p.stats
