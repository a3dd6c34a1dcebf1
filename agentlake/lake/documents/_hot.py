"""The documents' hot tier: chunk vectors in memory, per tenant, searched exactly with numpy.

Milvus stays the durable store; a search never goes to it. Each tenant is its
own matrix (isolation is a partition, never a distance). Access rules are
interned: every distinct rule tuple gets a code, and a reader's mask is
``np.isin(codes, readable codes)``, so the per-query cost is one matrix-vector
product and one mask over the tenant's rows, not a Python loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentlake.lake.documents._domain import can_read


@dataclass(frozen=True)
class HotChunk:
    """What a hit needs, kept next to the vector."""

    chunk_id: str
    doc_id: str
    version: int
    chunk_index: int
    text: str
    title: str | None
    source: str
    content_type: str
    metadata: dict[str, str]
    access: tuple[str, ...]


class _Tenant:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.chunks: dict[str, tuple[HotChunk, np.ndarray]] = {}
        self.by_doc: dict[str, set[str]] = {}
        self.dirty = True
        self.rows: list[HotChunk] = []
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self.codes = np.zeros(0, dtype=np.int32)

    def rebuild(self, code_of: dict[tuple[str, ...], int]) -> None:
        items = list(self.chunks.values())
        self.rows = [c for c, _ in items]
        self.matrix = (
            np.vstack([v for _, v in items]).astype(np.float32, copy=False)
            if items
            else np.zeros((0, self.dim), dtype=np.float32)
        )
        self.codes = np.fromiter((code_of[c.access] for c in self.rows), dtype=np.int32, count=len(self.rows))
        self.dirty = False


class DocumentHotTier:
    """Chunk vectors of every tenant, in memory. Thread-safe; writes mark a tenant for a rebuild.

    Args:
        dim: vector dimension (the embedder's).
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._tenants: dict[str, _Tenant] = {}
        self._code_of: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(t.chunks) for t in self._tenants.values())

    def _code(self, access: tuple[str, ...]) -> int:
        code = self._code_of.get(access)
        if code is None:
            code = self._code_of[access] = len(self._code_of)
        return code

    def put(self, tenant: str, chunks: list[HotChunk], vectors: np.ndarray) -> None:
        """Add or replace chunks (by chunk id)."""
        with self._lock:
            t = self._tenants.setdefault(tenant, _Tenant(self.dim))
            for c, v in zip(chunks, vectors, strict=True):
                self._code(c.access)
                t.chunks[c.chunk_id] = (c, np.asarray(v, dtype=np.float32))
                t.by_doc.setdefault(c.doc_id, set()).add(c.chunk_id)
            t.dirty = True

    def replace_document(self, tenant: str, doc_id: str, chunks: list[HotChunk], vectors: np.ndarray) -> None:
        """The document's chunks become exactly `chunks`."""
        with self._lock:
            self._drop(tenant, doc_id)
        self.put(tenant, chunks, vectors)

    def remove_document(self, tenant: str, doc_id: str) -> int:
        """Drop every chunk of a document; returns how many."""
        with self._lock:
            return self._drop(tenant, doc_id)

    def _drop(self, tenant: str, doc_id: str) -> int:
        t = self._tenants.get(tenant)
        if t is None:
            return 0
        ids = t.by_doc.pop(doc_id, set())
        for cid in ids:
            t.chunks.pop(cid, None)
        if ids:
            t.dirty = True
        return len(ids)

    def search(
        self, tenant: str, query: np.ndarray, k: int, tokens: frozenset[str]
    ) -> list[tuple[HotChunk, float]]:
        """The `k` chunks of `tenant` nearest to `query` (cosine: vectors are L2-normalized)
        that a reader presenting `tokens` may read, best first."""
        with self._lock:
            t = self._tenants.get(tenant)
            if t is None or not t.chunks:
                return []
            if t.dirty:
                t.rebuild(self._code_of)
            rows, matrix, codes = t.rows, t.matrix, t.codes
            readable = np.fromiter(
                (code for access, code in self._code_of.items() if can_read(access, tokens)), dtype=np.int32
            )
        allowed = np.isin(codes, readable)
        if not allowed.any():
            return []
        scores = np.where(allowed, matrix @ np.asarray(query, dtype=np.float32), -np.inf)
        n = int(allowed.sum())
        kk = min(k, n)
        top = np.argpartition(-scores, kk - 1)[:kk] if kk < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(rows[i], float(scores[i])) for i in top if np.isfinite(scores[i])][:k]

    def stats(self) -> dict[str, Any]:
        return {"tenants": len(self._tenants), "chunks": len(self), "access_tuples": len(self._code_of)}
