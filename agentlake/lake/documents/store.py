"""Milvus read model of enterprise documents: chunks with vectors, and the lineage of lake entries.

Two collections next to the trajectories (same Milvus: a milvus-lite file under
the data dir by default, any server with ``MILVUS_URI``):

- ``lake_documents``: one row per chunk: vector, tenant, doc_id, version,
  chunk text, title, source, metadata (JSON), **access rules** (an array the
  search filters on), fingerprint;
- ``lake_document_lineage``: one row per (lake entry, document version) it used,
  recorded when the entry is ingested; a changed or deleted document returns its
  dependents so the lake invalidates them.

Searches are served from a hot tier (`_hot.py`: each tenant's chunk vectors in
memory, exact cosine with numpy), loaded from Milvus on the first search and kept
current by the store's own writes; Milvus is the durable store, not the read
path (`search_milvus` asks it directly, for comparison). Either way a tenant is a
partition or a filter evaluated before ranking, never a distance, and access
rules are a mask (hot tier) or a filter expression (Milvus); hits are checked
again in Python (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agentlake.lake.documents._domain import (
    Action,
    PrincipalLike,
    StoredVersion,
    can_read,
    chunk_text,
    decide_delete,
    decide_upsert,
    principal_tokens,
)
from agentlake.lake.documents._events import DocumentEvent, DocumentUpserted
from agentlake.lake.documents._hot import DocumentHotTier, HotChunk
from agentlake.projections.embeddings import Embedder, get_embedder
from agentlake.projections.milvus import milvus_client, vector_index_params
from agentlake.schemas._bounds import cap_text
from agentlake.settings import Settings

log = logging.getLogger("agentlake.lake.documents")

CHUNKS = "lake_documents"
LINEAGE = "lake_document_lineage"
_MAX_TEXT = 8000  # characters kept per chunk row (chunks are ~1,000)
_MAX_ACCESS = 64  # access rules per document (Milvus array capacity)
_PAGE = 16384  # Milvus's cap on offset + limit of one query
_HIT_FIELDS = [
    "tenant",
    "doc_id",
    "version",
    "chunk_index",
    "text",
    "title",
    "source",
    "content_type",
    "metadata",
    "access",
]


@dataclass(frozen=True)
class DocumentHit:
    """One chunk found by `search_documents`, with the rules that govern its use.

    Attributes:
        doc_id, tenant, version: the document version the chunk belongs to (what
            lineage records when a lake entry uses it).
        chunk_index: position of the chunk in the document (0-based).
        text: the chunk's text.
        score: cosine similarity to the query, in [-1, 1].
        access: the document's access rules; anything derived from this chunk
            (a cached plan, a summary) must carry them.
    """

    doc_id: str
    tenant: str
    version: int
    chunk_index: int
    text: str
    score: float
    title: str | None
    source: str
    content_type: str
    metadata: dict[str, str]
    access: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "tenant": self.tenant,
            "version": self.version,
            "chunk_index": self.chunk_index,
            "text": self.text,
            "score": round(self.score, 6),
            "title": self.title,
            "source": self.source,
            "content_type": self.content_type,
            "metadata": self.metadata,
            "access": list(self.access),
        }


@dataclass(frozen=True)
class ApplyResult:
    """What applying one event did.

    Attributes:
        action: insert | replace | unchanged | stale | delete | absent.
        chunks: chunk rows written.
        invalidated: ids of lake entries that used a version of the document now
            replaced or deleted (from lineage); the lake must drop or re-check them.
    """

    action: Action
    tenant: str
    doc_id: str
    version: int | None
    chunks: int = 0
    invalidated: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DocumentUse:
    """A lake entry used this version of this document (one lineage row)."""

    entry_id: str
    tenant: str
    doc_id: str
    version: int


def _lit(value: str) -> str:
    """A Milvus string literal (JSON escaping is what its expression parser accepts)."""
    return json.dumps(value, ensure_ascii=False)


def _name(settings: Settings, base: str) -> str:
    return settings.topic(base).replace(".", "_").replace("-", "_")


def _lake_target(settings: Settings) -> Settings:
    """Settings whose Milvus target is the context lake's store (``lake_milvus_target`` when the
    lake defines one: its serving process reads documents too), else the product's Milvus."""
    target = getattr(settings, "lake_milvus_target", None)
    if not isinstance(target, str) or target == settings.milvus_target:
        return settings
    return settings.model_copy(update={"milvus_uri": target})


def _hot_chunk(r: dict[str, Any]) -> HotChunk:
    """A chunk row (as written, or as read from Milvus) in the hot tier's form."""
    meta = r["metadata"]
    return HotChunk(
        chunk_id=str(r["chunk_id"]),
        doc_id=str(r["doc_id"]),
        version=int(r["version"]),
        chunk_index=int(r["chunk_index"]),
        text=str(r["text"]),
        title=str(r["title"]) or None,
        source=str(r["source"]),
        content_type=str(r["content_type"]),
        metadata=json.loads(meta or "{}") if isinstance(meta, str) else dict(meta),
        access=tuple(r["access"] or ()),
    )


def _chunk_id(tenant: str, doc_id: str, version: int, index: int) -> str:
    return hashlib.sha1(f"{tenant}\x1f{doc_id}\x1f{version}\x1f{index}".encode()).hexdigest()


class DocumentStore:
    """The document chunks and their lineage in Milvus.

    Args:
        settings: where Milvus is, chunk sizes, the embedder.
        embedder: overrides the configured embedder (tests).
        client: a pymilvus `MilvusClient` (default: the process-wide one for `settings`).

        hot: search an in-memory copy of the chunks (loaded from Milvus on the first
            search, kept current by this store's writes) instead of Milvus itself.

    A hot tier sees the writes of its own process only: a long-running reader
    (the lake service) applies ``lake.documents`` itself (`DocumentProjector`), or
    calls `reload()`.

    Raises:
        RuntimeError: the collection holds vectors of another dimension than the embedder's.
    """

    def __init__(
        self, settings: Settings, embedder: Embedder | None = None, client: Any = None, *, hot: bool = True
    ) -> None:
        self.settings = settings
        self.embedder = embedder or get_embedder(settings)
        if client is None:
            target = _lake_target(settings)
            if "://" not in target.milvus_target:  # a milvus-lite file: its folder must exist
                Path(target.milvus_target).parent.mkdir(parents=True, exist_ok=True)
            client = milvus_client(target)
        self.client = client
        self.chunks = _name(settings, CHUNKS)
        self.lineage = _name(settings, LINEAGE)
        self._lock = threading.Lock()  # one writer per collection (milvus-lite)
        self.hot = DocumentHotTier(self.embedder.dim) if hot else None
        self._hot_loaded = False
        self._ensure()

    # -- schema ---------------------------------------------------------------------
    def _ensure(self) -> None:
        from pymilvus import DataType

        c = self.client
        if c.has_collection(self.chunks):
            self._check_dim()
        else:
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.embedder.dim)
            schema.add_field("tenant", DataType.VARCHAR, max_length=256)
            schema.add_field("doc_id", DataType.VARCHAR, max_length=1024)
            schema.add_field("version", DataType.INT64)
            schema.add_field("chunk_index", DataType.INT64)
            schema.add_field("text", DataType.VARCHAR, max_length=4 * _MAX_TEXT)
            schema.add_field("title", DataType.VARCHAR, max_length=1024)
            schema.add_field("source", DataType.VARCHAR, max_length=2048)
            schema.add_field("content_type", DataType.VARCHAR, max_length=128)
            schema.add_field("metadata", DataType.VARCHAR, max_length=16384)
            schema.add_field(
                "access",
                DataType.ARRAY,
                element_type=DataType.VARCHAR,
                max_capacity=_MAX_ACCESS,
                max_length=256,
            )
            schema.add_field("fingerprint", DataType.VARCHAR, max_length=64)
            schema.add_field("ts_us", DataType.INT64)
            c.create_collection(self.chunks, schema=schema, index_params=vector_index_params(c))
        c.load_collection(self.chunks)
        if not c.has_collection(self.lineage):
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("use_id", DataType.VARCHAR, is_primary=True, max_length=64)
            # Milvus requires a vector field; lineage is looked up by scalar filter only
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
            schema.add_field("entry_id", DataType.VARCHAR, max_length=256)
            schema.add_field("tenant", DataType.VARCHAR, max_length=256)
            schema.add_field("doc_id", DataType.VARCHAR, max_length=1024)
            schema.add_field("version", DataType.INT64)
            schema.add_field("ts_us", DataType.INT64)
            index = c.prepare_index_params()
            index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
            c.create_collection(self.lineage, schema=schema, index_params=index)
        c.load_collection(self.lineage)

    def _check_dim(self) -> None:
        desc = self.client.describe_collection(self.chunks)
        for f in desc.get("fields", []):
            if f.get("name") == "vector":
                dim = int(f.get("params", {}).get("dim", self.embedder.dim))
                if dim != self.embedder.dim:
                    raise RuntimeError(
                        f"Milvus collection {self.chunks!r} holds {dim}-d vectors but the embedder "
                        f"{self.embedder.name} gives {self.embedder.dim}-d: "
                        "drop it and re-project lake.documents"
                    )

    def _query_all(self, collection: str, filter: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row matching `filter` (Milvus caps one query at 16,384 rows: page beyond that)."""
        first = self.client.query(collection, filter=filter, output_fields=fields, limit=_PAGE)
        if len(first) < _PAGE:
            yield from first
            return
        pm_log = logging.getLogger("pymilvus")
        level = pm_log.level
        pm_log.setLevel(logging.ERROR)  # the iterator warns about client-side timestamps on milvus-lite
        try:
            it = self.client.query_iterator(collection, batch_size=1000, filter=filter, output_fields=fields)
            try:
                while batch := it.next():
                    yield from batch
            finally:
                it.close()
        finally:
            pm_log.setLevel(level)

    # -- reads ----------------------------------------------------------------------
    def stored(self, tenant: str, doc_id: str) -> StoredVersion | None:
        """The newest stored version of a document and its fingerprint, or None."""
        rows = self.client.query(
            self.chunks,
            filter=f"tenant == {_lit(tenant)} and doc_id == {_lit(doc_id)}",
            output_fields=["version", "fingerprint"],
            limit=_PAGE,
        )
        if not rows:
            return None
        top = max(rows, key=lambda r: int(r["version"]))
        return StoredVersion(int(top["version"]), str(top["fingerprint"]))

    def doc_ids(self, tenant: str, source: str | None = None) -> set[str]:
        """Ids of the documents stored for `tenant` (from `source` only, when given)."""
        flt = f"tenant == {_lit(tenant)} and chunk_index == 0"
        flt += f" and source == {_lit(source)}" if source is not None else ""
        return {str(r["doc_id"]) for r in self._query_all(self.chunks, flt, ["doc_id"])}

    def stored_versions(self, tenant: str, source: str | None = None) -> dict[str, StoredVersion]:
        """doc_id -> newest stored version and fingerprint, for `tenant` (from `source` only, when given)."""
        flt = f"tenant == {_lit(tenant)} and chunk_index == 0"
        flt += f" and source == {_lit(source)}" if source is not None else ""
        out: dict[str, StoredVersion] = {}
        for r in self._query_all(self.chunks, flt, ["doc_id", "version", "fingerprint"]):
            v = StoredVersion(int(r["version"]), str(r["fingerprint"]))
            prev = out.get(str(r["doc_id"]))
            if prev is None or v.version > prev.version:
                out[str(r["doc_id"])] = v
        return out

    def count(self, tenant: str | None = None) -> int:
        """Chunk rows stored (for `tenant`, when given)."""
        flt = f"tenant == {_lit(tenant)}" if tenant is not None else 'chunk_id != ""'
        res = self.client.query(self.chunks, filter=flt, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search(
        self, tenant: str, query: str, k: int = 5, principal: PrincipalLike = None
    ) -> list[DocumentHit]:
        """The `k` chunks of `tenant` closest to `query` (cosine) that `principal` may read.

        Served from the hot tier (exact search in memory) unless the store was built
        with ``hot=False``; then from Milvus (`search_milvus`).

        Args:
            tenant: only this tenant's chunks are candidates (a partition, not a distance).
            query: free text, embedded with the store's embedder.
            k: at most this many hits, best first.
            principal: who reads (see `principal_tokens`); None reads only ``*`` documents.

        Raises:
            ValueError: k < 1.
        """
        if self.hot is None:
            return self.search_milvus(tenant, query, k, principal)
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one hit")
        self._load_hot()
        tokens = principal_tokens(principal)
        vec = self.embedder.embed([query])[0]
        return [
            DocumentHit(
                doc_id=c.doc_id,
                tenant=tenant,
                version=c.version,
                chunk_index=c.chunk_index,
                text=c.text,
                score=score,
                title=c.title,
                source=c.source,
                content_type=c.content_type,
                metadata=dict(c.metadata),
                access=c.access,
            )
            for c, score in self.hot.search(tenant, vec, k, tokens)
        ]

    def _load_hot(self) -> None:
        if self.hot is None or self._hot_loaded:
            return
        with self._lock:
            if self._hot_loaded:
                return
            by_tenant: dict[str, tuple[list[HotChunk], list[list[float]]]] = {}
            for r in self._query_all(self.chunks, 'chunk_id != ""', ["chunk_id", "vector", *_HIT_FIELDS]):
                chunks, vectors = by_tenant.setdefault(str(r["tenant"]), ([], []))
                chunks.append(_hot_chunk(r))
                vectors.append(r["vector"])
            for tenant, (chunks, vectors) in by_tenant.items():
                self.hot.put(tenant, chunks, np.asarray(vectors, dtype=np.float32))
            self._hot_loaded = True

    def reload(self) -> int:
        """Rebuild the hot tier from Milvus (after other processes wrote); returns chunks loaded."""
        if self.hot is None:
            return 0
        self.hot = DocumentHotTier(self.embedder.dim)
        self._hot_loaded = False
        self._load_hot()
        return len(self.hot)

    def search_milvus(
        self, tenant: str, query: str, k: int = 5, principal: PrincipalLike = None
    ) -> list[DocumentHit]:
        """`search` answered by Milvus: tenant and access rules as a filter expression.

        Args:
            tenant: only this tenant's chunks are candidates (a filter, not a distance).
            query: free text, embedded with the store's embedder.
            k: at most this many hits, best first.
            principal: who reads (see `principal_tokens`); None reads only ``*`` documents.

        Raises:
            ValueError: k < 1.
        """
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one hit")
        tokens = principal_tokens(principal)
        vec = self.embedder.embed([query])[0].tolist()
        flt = f"tenant == {_lit(tenant)} and array_contains_any(access, {json.dumps(sorted(tokens))})"
        res = self.client.search(
            self.chunks,
            [vec],
            limit=k,
            filter=flt,
            output_fields=_HIT_FIELDS,
            search_params={"metric_type": "COSINE", "params": {"ef": max(64, k)}},
        )
        hits = []
        for hit in res[0]:
            e = hit["entity"]
            access = tuple(e.get("access") or ())
            if e["tenant"] != tenant or not can_read(access, tokens):
                log.error(
                    "Milvus returned a chunk outside the filter (%s/%s): dropped", e["tenant"], e["doc_id"]
                )
                continue
            hits.append(
                DocumentHit(
                    doc_id=e["doc_id"],
                    tenant=e["tenant"],
                    version=int(e["version"]),
                    chunk_index=int(e["chunk_index"]),
                    text=e["text"],
                    score=float(hit["distance"]),
                    title=e["title"] or None,
                    source=e["source"],
                    content_type=e["content_type"],
                    metadata=json.loads(e["metadata"] or "{}"),
                    access=access,
                )
            )
        return hits

    # -- writes ---------------------------------------------------------------------
    def apply(self, event: DocumentEvent) -> ApplyResult:
        """Apply one `DocumentUpserted` / `DocumentDeleted` (idempotent under re-delivery).

        A new version is written before the old one is removed, so a reader never
        sees the document vanish; the result names the lake entries to invalidate.
        """
        return self.apply_many([event])[0]

    def apply_many(self, events: Iterable[DocumentEvent]) -> list[ApplyResult]:
        """Apply events in order, one result each.

        Consecutive events on distinct documents are applied together: one query of
        what is stored, one embedding call, one upsert, one delete and one lineage
        query per tenant, instead of each per document.
        """
        out: list[ApplyResult] = []
        batch: list[DocumentEvent] = []
        seen: set[tuple[str, str]] = set()
        for e in events:
            key = (e.tenant, e.doc_id)
            if key in seen:  # the same document twice: the first must land before the second is decided
                out += self._apply_batch(batch)
                batch, seen = [], set()
            batch.append(e)
            seen.add(key)
        if batch:
            out += self._apply_batch(batch)
        return out

    def _existing(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        by_tenant: dict[str, list[str]] = {}
        for tenant, doc_id in keys:
            by_tenant.setdefault(tenant, []).append(doc_id)
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for tenant, ids in by_tenant.items():
            flt = f"tenant == {_lit(tenant)} and doc_id in {json.dumps(ids, ensure_ascii=False)}"
            fields = ["chunk_id", "doc_id", "version", "fingerprint"]
            for r in self._query_all(self.chunks, flt, fields):
                out.setdefault((tenant, str(r["doc_id"])), []).append(r)
        return out

    def _rows(self, ev: DocumentUpserted) -> tuple[list[dict[str, Any]], list[str]]:
        """The chunk rows of a document (vectors still to fill in) and the texts to embed."""
        s = self.settings
        chunks = chunk_text(ev.text, s.lake_chunk_chars, min(s.lake_chunk_overlap, s.lake_chunk_chars // 2))
        heading = f"{ev.title}\n" if ev.title else ""
        meta = json.dumps(ev.metadata, ensure_ascii=False, sort_keys=True)
        rows = [
            {
                "chunk_id": _chunk_id(ev.tenant, ev.doc_id, ev.version, c.index),
                "vector": None,
                "tenant": ev.tenant,
                "doc_id": ev.doc_id,
                "version": ev.version,
                "chunk_index": c.index,
                "text": c.text[:_MAX_TEXT],  # at most 4 bytes a character: fits 4 * _MAX_TEXT
                "title": cap_text(ev.title or "", 1024)[0],
                "source": cap_text(ev.source, 2048)[0],
                "content_type": cap_text(ev.content_type, 128)[0],
                # whole or nothing: cut JSON would not parse (Milvus counts UTF-8 bytes)
                "metadata": meta if len(meta.encode("utf-8", "surrogatepass")) <= 16384 else "{}",
                "access": list(ev.access),
                "fingerprint": ev.fingerprint,
                "ts_us": ev.ts_us,
            }
            for c in chunks
        ]
        return rows, [heading + c.text for c in chunks]

    def _apply_batch(self, events: list[DocumentEvent]) -> list[ApplyResult]:
        """Events on distinct documents."""
        with self._lock:
            existing = self._existing([(e.tenant, e.doc_id) for e in events])
            results: list[ApplyResult] = []
            new_rows: list[dict[str, Any]] = []
            texts: list[str] = []
            gone: list[str] = []  # chunk ids to delete once the new rows are in
            hot: list[tuple[str, str, list[dict[str, Any]]]] = []
            lineage: dict[int, tuple[str, str, int | None]] = {}  # result index -> (tenant, doc, keep)
            for ev in events:
                old = existing.get((ev.tenant, ev.doc_id), [])
                top = max(old, key=lambda r: int(r["version"]), default=None)
                stored = StoredVersion(int(top["version"]), str(top["fingerprint"])) if top else None
                if isinstance(ev, DocumentUpserted):
                    action = decide_upsert(stored, ev.version, ev.fingerprint)
                    if action in ("stale", "unchanged"):
                        results.append(ApplyResult(action, ev.tenant, ev.doc_id, ev.version))
                        continue
                    if len(ev.access) > _MAX_ACCESS:
                        raise ValueError(
                            f"document {ev.doc_id!r}: {len(ev.access)} access rules, at most {_MAX_ACCESS}"
                        )
                    rows, doc_texts = self._rows(ev)
                    new_rows += rows
                    texts += doc_texts
                    keep = {r["chunk_id"] for r in rows}
                    gone += [str(r["chunk_id"]) for r in old if r["chunk_id"] not in keep]
                    hot.append((ev.tenant, ev.doc_id, rows))
                    if stored is not None:  # same version, other content: every user of it is stale too
                        lineage[len(results)] = (
                            ev.tenant,
                            ev.doc_id,
                            ev.version if stored.version != ev.version else None,
                        )
                    results.append(ApplyResult(action, ev.tenant, ev.doc_id, ev.version, len(rows)))
                else:
                    action = decide_delete(stored, ev.version)
                    if action != "delete":
                        results.append(ApplyResult(action, ev.tenant, ev.doc_id, ev.version))
                        continue
                    gone += [str(r["chunk_id"]) for r in old]
                    hot.append((ev.tenant, ev.doc_id, []))
                    lineage[len(results)] = (ev.tenant, ev.doc_id, None)
                    results.append(ApplyResult(action, ev.tenant, ev.doc_id, ev.version))
            if new_rows:
                for row, v in zip(new_rows, self.embedder.embed(texts), strict=True):
                    row["vector"] = v.tolist()
                self.client.upsert(self.chunks, new_rows)
            if gone:
                self.client.delete(self.chunks, ids=gone)
            if self.hot is not None:
                for tenant, doc_id, rows in hot:
                    if not rows:
                        self.hot.remove_document(tenant, doc_id)
                    elif self._hot_loaded:
                        vecs = np.asarray([r["vector"] for r in rows], dtype=np.float32)
                        self.hot.replace_document(tenant, doc_id, [_hot_chunk(r) for r in rows], vecs)
            users = self._dependents_many(list(lineage.values()))
            final: list[ApplyResult] = []
            for i, r in enumerate(results):
                if i in lineage:
                    r = replace(r, invalidated=users[lineage[i][:2]])
                final.append(r)
            return final

    def _dependents_many(self, wanted: list[tuple[str, str, int | None]]) -> dict[tuple[str, str], list[str]]:
        """Entries that used each (tenant, doc_id) in any version but its `keep` version."""
        out: dict[tuple[str, str], list[str]] = {(t, d): [] for t, d, _ in wanted}
        keep = {(t, d): k for t, d, k in wanted}
        by_tenant: dict[str, list[str]] = {}
        for t, d, _ in wanted:
            by_tenant.setdefault(t, []).append(d)
        for tenant, ids in by_tenant.items():
            flt = f"tenant == {_lit(tenant)} and doc_id in {json.dumps(ids, ensure_ascii=False)}"
            found: dict[str, set[str]] = {}
            for r in self._query_all(self.lineage, flt, ["entry_id", "doc_id", "version"]):
                k = keep[(tenant, str(r["doc_id"]))]
                if k is None or int(r["version"]) != k:
                    found.setdefault(str(r["doc_id"]), set()).add(str(r["entry_id"]))
            for d, entries in found.items():
                out[(tenant, d)] = sorted(entries)
        return out

    # -- lineage --------------------------------------------------------------------
    def record_usage(self, uses: Iterable[DocumentUse]) -> int:
        """Record that lake entries used these document versions (idempotent). Returns rows written."""
        rows = [
            {
                "use_id": hashlib.sha1(
                    f"{u.entry_id}\x1f{u.tenant}\x1f{u.doc_id}\x1f{u.version}".encode()
                ).hexdigest(),
                "vector": [1.0, 0.0],
                "entry_id": u.entry_id,
                "tenant": u.tenant,
                "doc_id": u.doc_id,
                "version": int(u.version),
                "ts_us": 0,
            }
            for u in uses
        ]
        if rows:
            with self._lock:
                self.client.upsert(self.lineage, rows)
        return len(rows)

    def dependents(self, tenant: str, doc_id: str, except_version: int | None = None) -> list[str]:
        """Ids of lake entries that used `doc_id` of `tenant` (any version but `except_version`), sorted."""
        flt = f"tenant == {_lit(tenant)} and doc_id == {_lit(doc_id)}"
        if except_version is not None:
            flt += f" and version != {int(except_version)}"
        return sorted({str(r["entry_id"]) for r in self._query_all(self.lineage, flt, ["entry_id"])})

    def uses_of(self, entry_id: str) -> list[DocumentUse]:
        """The document versions a lake entry used."""
        rows = self._query_all(self.lineage, f"entry_id == {_lit(entry_id)}", ["tenant", "doc_id", "version"])
        return sorted(
            (DocumentUse(entry_id, r["tenant"], r["doc_id"], int(r["version"])) for r in rows),
            key=lambda u: (u.tenant, u.doc_id, u.version),
        )


_stores: dict[tuple[str, str, str], DocumentStore] = {}
_stores_lock = threading.Lock()


def document_store(settings: Settings) -> DocumentStore:
    """The process-wide store for `settings` (one per Milvus target, topic prefix and embedder)."""
    key = (_lake_target(settings).milvus_target, settings.topic_prefix, settings.embedder)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = DocumentStore(settings)
        return _stores[key]
