"""Milvus read model of enterprise documents: chunks with vectors, and the lineage of lake entries.

Two collections next to the trajectories (same Milvus: a milvus-lite file under
the data dir by default, any server with ``MILVUS_URI``):

- ``lake_documents``: one row per chunk: vector, tenant, doc_id, version,
  chunk text, title, source, metadata (JSON), **access rules** (an array the
  search filters on), fingerprint;
- ``lake_document_lineage``: one row per (lake entry, document version) it used,
  recorded when the entry is ingested; a changed or deleted document returns its
  dependents so the lake invalidates them.

Tenants and access are Milvus filter expressions evaluated before ranking,
never a distance; hits are checked again in Python (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
from agentlake.lake.documents._events import DocumentDeleted, DocumentEvent, DocumentUpserted
from agentlake.projections.embeddings import Embedder, get_embedder
from agentlake.projections.milvus import milvus_client
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


def _chunk_id(tenant: str, doc_id: str, version: int, index: int) -> str:
    return hashlib.sha1(f"{tenant}\x1f{doc_id}\x1f{version}\x1f{index}".encode()).hexdigest()


class DocumentStore:
    """The document chunks and their lineage in Milvus.

    Args:
        settings: where Milvus is, chunk sizes, the embedder.
        embedder: overrides the configured embedder (tests).
        client: a pymilvus `MilvusClient` (default: the process-wide one for `settings`).

    Raises:
        RuntimeError: the collection holds vectors of another dimension than the embedder's.
    """

    def __init__(self, settings: Settings, embedder: Embedder | None = None, client: Any = None) -> None:
        self.settings = settings
        self.embedder = embedder or get_embedder(settings)
        self.client = client or milvus_client(_lake_target(settings))
        self.chunks = _name(settings, CHUNKS)
        self.lineage = _name(settings, LINEAGE)
        self._lock = threading.Lock()  # one writer per collection (milvus-lite)
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
            index = c.prepare_index_params()
            index.add_index(
                field_name="vector",
                index_type="HNSW",
                metric_type="COSINE",
                params={"M": 16, "efConstruction": 200},
            )
            c.create_collection(self.chunks, schema=schema, index_params=index)
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
        with self._lock:
            if isinstance(event, DocumentUpserted):
                return self._upsert(event)
            return self._delete(event)

    def apply_many(self, events: Iterable[DocumentEvent]) -> list[ApplyResult]:
        return [self.apply(e) for e in events]

    def _upsert(self, ev: DocumentUpserted) -> ApplyResult:
        stored = self.stored(ev.tenant, ev.doc_id)
        action = decide_upsert(stored, ev.version, ev.fingerprint)
        if action in ("stale", "unchanged"):
            return ApplyResult(action, ev.tenant, ev.doc_id, ev.version)
        s = self.settings
        chunks = chunk_text(ev.text, s.lake_chunk_chars, min(s.lake_chunk_overlap, s.lake_chunk_chars // 2))
        if len(ev.access) > _MAX_ACCESS:
            raise ValueError(f"document {ev.doc_id!r}: {len(ev.access)} access rules, at most {_MAX_ACCESS}")
        if chunks:
            heading = f"{ev.title}\n" if ev.title else ""
            vectors = self.embedder.embed([heading + c.text for c in chunks])
            meta = json.dumps(ev.metadata, ensure_ascii=False, sort_keys=True)
            rows = [
                {
                    "chunk_id": _chunk_id(ev.tenant, ev.doc_id, ev.version, c.index),
                    "vector": v.tolist(),
                    "tenant": ev.tenant,
                    "doc_id": ev.doc_id,
                    "version": ev.version,
                    "chunk_index": c.index,
                    "text": c.text[:_MAX_TEXT],
                    "title": (ev.title or "")[:1000],
                    "source": ev.source[:2000],
                    "content_type": ev.content_type[:120],
                    "metadata": meta if len(meta) <= 16000 else "{}",
                    "access": list(ev.access),
                    "fingerprint": ev.fingerprint,
                    "ts_us": ev.ts_us,
                }
                for c, v in zip(chunks, vectors, strict=True)
            ]
            self.client.upsert(self.chunks, rows)
        # the old version goes after the new one is in; so do chunks past the new count when
        # the content changed without a version bump (same chunk ids)
        self.client.delete(
            self.chunks,
            filter=f"tenant == {_lit(ev.tenant)} and doc_id == {_lit(ev.doc_id)} "
            f"and (version != {ev.version} or chunk_index >= {len(chunks)})",
        )
        invalidated = []
        if stored is not None:  # same version, other content: every user of it is stale too
            keep = ev.version if stored.version != ev.version else None
            invalidated = self.dependents(ev.tenant, ev.doc_id, except_version=keep)
        return ApplyResult(action, ev.tenant, ev.doc_id, ev.version, len(chunks), invalidated)

    def _delete(self, ev: DocumentDeleted) -> ApplyResult:
        stored = self.stored(ev.tenant, ev.doc_id)
        action = decide_delete(stored, ev.version)
        if action != "delete":
            return ApplyResult(action, ev.tenant, ev.doc_id, ev.version)
        self.client.delete(self.chunks, filter=f"tenant == {_lit(ev.tenant)} and doc_id == {_lit(ev.doc_id)}")
        return ApplyResult(action, ev.tenant, ev.doc_id, ev.version, 0, self.dependents(ev.tenant, ev.doc_id))

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
