"""The lake service: the core (:class:`Lake`) wired to Kafka and Milvus.

- **Ingest**: a consumer (group ``agentlake-lake``) reads the trajectory topics and
  ``rewards.scored``, folds each finished trajectory into a :class:`LakeEntry`,
  writes it to Milvus (the durable store) and to the hot tier, publishes it on
  the compacted ``lake.entries`` topic, and only then commits its offsets.
  ``lake.documents`` events invalidate the entries that used the document.
- **Start**: the hot tier is rebuilt from Milvus before the first lookup.
- **Events**: centroids and memberships go to ``lake.clusters`` (compacted),
  lookups, reuse outcomes and freshness to ``lake.cache``.

One service owns one Milvus store (milvus-lite: one process per file).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentlake.kafka_io import catch_up as kafka_catch_up
from agentlake.kafka_io import make_consumer
from agentlake.lake.cache import Lake, LakePolicy
from agentlake.lake.entries import EntryBuilder, LakeEntry
from agentlake.projections.embeddings import Embedder, get_embedder
from agentlake.schemas import DecodeError, codec
from agentlake.settings import Settings
from agentlake.topics import (
    LAKE_CACHE,
    LAKE_CLUSTERS,
    LAKE_ENTRIES,
    LAKE_GROUP,
    REWARDS,
    TOPICS,
    TRAJECTORY_TOPICS,
)

log = logging.getLogger("agentlake.lake")

LAKE_DOCUMENTS = "lake.documents"  # owned by agentlake.lake.documents
_TOPIC_OF = {
    "ClusterCentroid": LAKE_CLUSTERS,
    "ClusterMembership": LAKE_CLUSTERS,
    "LakeLookup": LAKE_CACHE,
    "LakeOutcome": LAKE_CACHE,
    "LakeFreshness": LAKE_CACHE,
    "LakeEntry": LAKE_ENTRIES,
}


def policy_from(settings: Settings) -> LakePolicy:
    """The cache policy the settings declare. Raises ValueError on an unknown cross-version policy."""
    if settings.lake_cross_version not in ("any", "same-agent", "same-version"):
        raise ValueError(
            f"AGENTLAKE_LAKE_CROSS_VERSION={settings.lake_cross_version!r}: "
            "use any, same-agent or same-version"
        )
    return LakePolicy(
        base_threshold=settings.lake_threshold,
        min_reward=settings.lake_min_reward,
        cross_version=settings.lake_cross_version,  # type: ignore[arg-type]
        ttl_s=settings.lake_ttl_s,
        nprobe=settings.lake_nprobe,
    )


def open_store(settings: Settings, dim: int) -> Any:
    from agentlake.projections.milvus import LakeStore, open_client

    if not (settings.lake_milvus_uri or settings.milvus_uri):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = open_client(settings.lake_milvus_target, settings.milvus_token)
    return LakeStore(client, dim, prefix=settings.topic_prefix)


@dataclass
class ServiceStats:
    ingested: int = 0
    rebuilt: int = 0
    invalidated: int = 0
    events_sent: int = 0
    skipped: int = 0
    replayed: int = 0  # lake.cache records (hits, outcomes) re-applied on start
    freshness_ms: list[float] = field(default_factory=list)


class LakeService:
    """Lake + Milvus + Kafka. Use as ``async with LakeService(settings) as svc``.

    Args:
        settings: where Kafka and Milvus are; the lake policy.
        embedder: defaults to the configured one.
        kafka: follow the log and publish events (False: an in-memory lake over Milvus only).
        milvus: keep entries in Milvus and rebuild from it on start.
    """

    def __init__(
        self, settings: Settings, *, embedder: Embedder | None = None, kafka: bool = True, milvus: bool = True
    ) -> None:
        self.settings = settings
        self.embedder = embedder or get_embedder(settings)
        self.lake = Lake(self.embedder, policy_from(settings), ivf_min=settings.lake_ivf_min)
        self.builder = EntryBuilder(settings.lake_ttl_s)
        self.with_kafka = kafka
        self.with_milvus = milvus
        self.store: Any = None
        self.stats = ServiceStats()
        self.codec = codec()
        self._consumer: Any = None
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._stored_version: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if self.with_milvus:
            self.store = await asyncio.to_thread(open_store, self.settings, self.embedder.dim)
            self.stats.rebuilt = await asyncio.to_thread(self.rebuild)
        if self.with_kafka:
            from aiokafka import AIOKafkaProducer

            names = [*TRAJECTORY_TOPICS, REWARDS]
            if any(t.name == LAKE_DOCUMENTS for t in TOPICS):  # the documents part declares its topic
                names.append(LAKE_DOCUMENTS)
            topics = [self.settings.topic(t) for t in names]
            self._consumer = make_consumer(
                self.settings,
                *topics,
                group_id=self.settings.topic(LAKE_GROUP),
                session_timeout_ms=10000,
                heartbeat_interval_ms=2000,
            )
            self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, linger_ms=5)
            await self._consumer.start()
            await self._producer.start()
            if self.with_milvus:
                self.stats.replayed = await self.replay_cache_log()

    async def replay_cache_log(self, timeout: float = 120.0) -> int:
        """Re-apply ``lake.cache`` from its start up to its end offsets now (`Lake.replay`): the
        demotions, the per-cluster thresholds and the reportable lookup ids survive a restart.
        Reads without a consumer group; returns the records that changed something.

        Raises:
            RuntimeError: the topic was not read to its end within `timeout` seconds.
        """
        from agentlake.kafka_io import partitions

        consumer = make_consumer(self.settings)  # no group: nothing committed
        await consumer.start()
        changed = 0
        try:
            parts = await partitions(consumer, [self.settings.topic(LAKE_CACHE)])
            if not parts:
                return 0
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            todo = {tp for tp in parts if ends[tp] > 0}
            deadline = time.monotonic() + timeout
            while todo:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lake.cache not replayed within {timeout:.0f}s")
                for tp, msgs in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                    for m in msgs:
                        if m.offset >= ends[tp] or m.value is None:
                            continue
                        try:
                            record, d = self.codec.decode_dict(m.value)
                        except DecodeError:
                            continue
                        changed += self.lake.replay(record, d)
                for tp in list(todo):
                    if await consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
        finally:
            await consumer.stop()
        if changed:
            log.info("lake: re-applied %d recorded hits and outcomes from lake.cache", changed)
        return changed

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._producer is not None:
            await self.flush_events()
        for c in (self._consumer, self._producer):
            if c is not None:
                await c.stop()
        self._consumer = self._producer = None
        if self.store is not None:
            self.store.client.close()
            self.store = None

    async def __aenter__(self) -> LakeService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def run_in_background(self) -> None:
        """Follow the log until :meth:`stop` (an asyncio task on the current loop)."""
        if self._consumer is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                await self.step(200)
            except Exception:  # keep serving; the batch is re-delivered (offsets not committed)
                log.exception("lake ingest step failed")
                await asyncio.sleep(1.0)

    async def catch_up(self, timeout: float = 60.0) -> bool:
        """Ingest until every partition reaches the end offset seen once assigned."""
        assert self._consumer is not None
        return await kafka_catch_up(self._consumer, self.step, timeout)

    # -- rebuild ---------------------------------------------------------------------
    def rebuild(self) -> int:
        """Load every entry from Milvus into the hot tier; returns how many.

        The entries are added in one call, so each tenant is clustered and indexed once over
        all its entries (added in Milvus's batches of 2,000, a 1M-entry tenant would be
        refitted at every doubling and updated online 500 times)."""
        entries: list[LakeEntry] = []
        vectors: list[np.ndarray] = []
        for batch in self.store.scan_entries():
            good = []
            for v, j in batch:
                try:
                    good.append((v, LakeEntry.from_record(json.loads(j))))
                except (ValueError, KeyError, TypeError) as e:  # e.g. written by an older version
                    log.error("lake: skipped an unreadable stored entry (%s); lake.entries still has it", e)
            if good:
                entries += [e for _, e in good]
                vectors.append(np.asarray([v for v, _ in good], dtype=np.float32))
        if entries:
            self.lake.add(entries, np.concatenate(vectors))
        self.lake.drain_events()  # memberships of a rebuild are already on lake.clusters
        return len(entries)

    # -- ingest ----------------------------------------------------------------------
    async def step(self, timeout_ms: int = 200) -> int:
        """One batch of the log: fold, store, index, publish, commit. Returns records read."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=2000)
        now = time.monotonic()
        n = 0
        entries: list[LakeEntry] = []
        for tp, msgs in batches.items():
            for m in msgs:
                n += 1
                if m.value is None:
                    continue
                if tp.topic == self.settings.topic(LAKE_DOCUMENTS):
                    self._document_changed(m.value)
                    continue
                try:
                    ev = self.codec.decode(m.value)
                except DecodeError:
                    self.stats.skipped += 1  # the stream worker dead-letters these
                    continue
                e = self.builder.add(ev, now)
                if e is not None:
                    entries.append(e)
        entries += self.builder.flush_parked(time.monotonic())
        if entries:
            await self.ingest(entries)
        if n and not self.builder.parked:
            # a parked reward's offset must not be committed before its entry is stored
            await self._consumer.commit()
        await self.flush_events()
        return n

    async def ingest(self, entries: list[LakeEntry]) -> None:
        """Make `entries` answerable, store them durably, publish them and their freshness."""
        vecs = self.embedder.embed([e.task for e in entries])
        # answerable first, durable next; the offsets are committed after both (at-least-once)
        self.lake.add(entries, vecs)
        answerable = time.time_ns() // 1000
        if self.store is not None:
            rows = [
                (e.tenant, e.entry_id, v.tolist(), json.dumps(e.to_record(), separators=(",", ":")))
                for e, v in zip(entries, vecs, strict=True)
            ]
            await asyncio.to_thread(self.store.upsert_entries, rows)
        for e in entries:
            lag = max(0.0, (answerable - e.produced_us) / 1000) if e.produced_us else 0.0
            self.stats.freshness_ms.append(lag)
            self.lake.events.append(("LakeEntry", f"{e.tenant}/{e.entry_id}", e.to_record()))
            self.lake.events.append(
                (
                    "LakeFreshness",
                    e.entry_id,
                    {
                        "tenant": e.tenant,
                        "entry_id": e.entry_id,
                        "produced_us": e.produced_us,
                        "answerable_us": answerable,
                        "lag_ms": lag,
                    },
                )
            )
        self.stats.ingested += len(entries)
        if self.store is not None:
            await asyncio.to_thread(self._store_centroids, {e.tenant for e in entries})

    def _store_centroids(self, tenants: set[str]) -> None:
        """Write a tenant's centroids to Milvus when its clustering was refitted (the online
        updates in between travel as ClusterCentroid events only)."""
        for tenant in tenants:
            t = self.lake.hot.tenant(tenant)
            if t is None or self._stored_version.get(tenant) == t.clusters.version:
                continue
            self._stored_version[tenant] = t.clusters.version
            c = t.clusters
            meta = [
                json.dumps(
                    {
                        "cluster_id": i,
                        "version": c.version,
                        "size": int(c.sizes[i]) if i < len(c.sizes) else 0,
                    }
                )
                for i in range(c.k)
            ]
            self.store.upsert_centroids(tenant, c.centroids.tolist(), meta)

    def _document_changed(self, value: bytes) -> None:
        try:
            documents: Any = importlib.import_module("agentlake.lake.documents")
        except ImportError:  # the documents part is not in this build
            return
        try:
            ev: Any = documents.decode_document_event(value)
        except Exception:
            self.stats.skipped += 1
            return
        doc_id, tenant = str(ev.doc_id), str(ev.tenant)
        dropped = self.lake.invalidate(tenant=tenant, document=doc_id).get(tenant, [])
        try:
            dependents = documents.dependents
            version = getattr(ev, "version", None)  # an upsert: entries that used this version stay
            users = list(dependents(self.settings, tenant, doc_id, except_version=version))
        except Exception:
            users = []
        t = self.lake.hot.tenant(tenant)
        if users and t is not None:
            t.remove(users)
            dropped += users
        if dropped and self.store is not None:
            self.store.delete_entries(tenant, dropped)
        self.stats.invalidated += len(dropped)

    def invalidate(self, **kwargs: Any) -> dict[str, list[str]]:
        """:meth:`Lake.invalidate`, also removing the entries from Milvus."""
        dropped = self.lake.invalidate(**kwargs)
        for tenant, ids in dropped.items():
            if self.store is not None:
                self.store.delete_entries(tenant, ids)
            self.stats.invalidated += len(ids)
        return dropped

    # -- events --------------------------------------------------------------------------
    async def flush_events(self) -> int:
        """Send the lake's pending events to Kafka (dropped when Kafka is off)."""
        events = self.lake.drain_events()
        if not events or self._producer is None:
            return 0
        futures = []
        for record, key, value in events:
            topic = self.settings.topic(_TOPIC_OF[record])
            data = self.codec.encode_record(record, value)
            futures.append(await self._producer.send(topic, data, key=key.encode()))
        await asyncio.gather(*futures)
        self.stats.events_sent += len(events)
        return len(events)
