"""The hot tier: each tenant's vectors in a faiss index inside the serving process.

Isolation is a partition: every tenant has its own index, its own clusters and
its own entry table, so a lookup can only ever reach entries of the tenant it
names (no embedding distance is involved in deciding whose entry it is).

A tenant's index is exact (``IndexFlatIP`` behind an id map) while it is small
and becomes an ``IndexIVFFlat`` once it holds ``ivf_min`` vectors; the IVF's
coarse quantizer holds the tenant's k-means centroids (:mod:`clusters`), so a
lookup is routed to the ``nprobe`` nearest clusters and searched within them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from agentlake.lake.clusters import TenantClusters
from agentlake.lake.entries import LakeEntry

# queries per faiss call: below faiss's BLAS threshold (distance_compute_blas_threshold, 20)
SEARCH_BATCH = 16


@dataclass(frozen=True)
class Membership:
    """Entry `entry_id` of `tenant` belongs to cluster `cluster_id` of clustering `version`."""

    tenant: str
    entry_id: str
    cluster_id: int
    version: int


class TenantIndex:
    """One tenant's partition: vectors, entries and clusters."""

    def __init__(self, tenant: str, dim: int, *, ivf_min: int = 4096, max_k: int = 4096) -> None:
        import faiss

        self.tenant = tenant
        self.dim = dim
        self.ivf_min = ivf_min
        self.clusters = TenantClusters(dim, max_k=max_k)
        self.ids: dict[str, int] = {}
        self.entries: dict[int, LakeEntry] = {}
        self.cluster_of: dict[int, int] = {}
        self._next = 0
        self._faiss = faiss
        self.index: object = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.is_ivf = False
        self._nprobe = 0

    def __len__(self) -> int:
        return len(self.entries)

    # -- writes ----------------------------------------------------------------
    def add(self, entries: list[LakeEntry], vectors: np.ndarray) -> list[Membership]:
        """Insert or replace `entries` (rows of `vectors`, L2-normalized float32); returns
        the memberships that changed (all of them after a refit)."""
        if not entries:
            return []
        replaced = [e.entry_id for e in entries if e.entry_id in self.ids]
        if replaced:
            self.remove(replaced)
        ids = np.arange(self._next, self._next + len(entries), dtype=np.int64)
        self._next += len(entries)
        for i, e in zip(ids, entries, strict=True):
            self.ids[e.entry_id] = int(i)
            self.entries[int(i)] = e
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add_with_ids(x, ids)  # type: ignore[attr-defined]
        n = len(self.entries)
        if self.clusters.needs_refit(n):
            return self._refit()
        self.clusters.partial_fit(x)
        assigned = self.clusters.assign(x)
        for i, c in zip(ids, assigned, strict=True):
            self.cluster_of[int(i)] = int(c)
        v = self.clusters.version
        return [
            Membership(self.tenant, e.entry_id, int(c), v) for e, c in zip(entries, assigned, strict=True)
        ]

    def remove(self, entry_ids: Iterable[str]) -> int:
        internal = [self.ids.pop(eid) for eid in entry_ids if eid in self.ids]
        if not internal:
            return 0
        for i in internal:
            self.entries.pop(i, None)
            self.cluster_of.pop(i, None)
        sel = self._faiss.IDSelectorBatch(np.asarray(internal, dtype=np.int64))
        self.index.remove_ids(sel)  # type: ignore[attr-defined]
        return len(internal)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(internal ids, vectors) of everything in the index."""
        faiss = self._faiss
        if not self.is_ivf:
            idmap = self.index
            n = idmap.ntotal  # type: ignore[attr-defined]
            if n == 0:
                return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
            ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)  # type: ignore[attr-defined]
            flat = faiss.downcast_index(idmap.index)  # type: ignore[attr-defined]
            return ids, flat.reconstruct_n(0, n)
        ivf = self.index
        inv = ivf.invlists  # type: ignore[attr-defined]
        all_ids, all_vecs = [], []
        for lst in range(ivf.nlist):  # type: ignore[attr-defined]
            size = inv.list_size(lst)
            if size == 0:
                continue
            ids = faiss.rev_swig_ptr(inv.get_ids(lst), size).copy()
            codes = faiss.rev_swig_ptr(inv.get_codes(lst), size * self.dim * 4)
            all_ids.append(ids.astype(np.int64))
            all_vecs.append(np.frombuffer(bytes(codes), dtype=np.float32).reshape(size, self.dim))
        if not all_ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(all_ids), np.vstack(all_vecs)

    def _refit(self) -> list[Membership]:
        ids, x = self.vectors()
        # one assignment of every vector serves the clusters' sizes, the memberships and the
        # IVF's lists (faiss would otherwise assign all of them again to add them)
        assigned = self.clusters.fit(x)
        if len(ids) >= self.ivf_min and self.clusters.k >= 2:
            faiss = self._faiss
            quantizer = faiss.IndexFlatIP(self.dim)
            quantizer.add(self.clusters.centroids)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.clusters.k, faiss.METRIC_INNER_PRODUCT)
            ivf.is_trained = True
            lists = np.ascontiguousarray(np.maximum(assigned, 0), dtype=np.int64)  # zero rows: any list
            xs, xids = np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
            ivf.add_core(len(xs), faiss.swig_ptr(xs), faiss.swig_ptr(xids), faiss.swig_ptr(lists))
            ivf.own_fields = True
            quantizer.this.disown()
            self.index, self.is_ivf, self._nprobe = ivf, True, 1
        v = self.clusters.version
        out = []
        for i, c in zip(ids, assigned, strict=True):
            self.cluster_of[int(i)] = int(c)
            e = self.entries.get(int(i))
            if e is not None:
                out.append(Membership(self.tenant, e.entry_id, int(c), v))
        return out

    # -- reads -----------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, nprobe: int = 16) -> list[tuple[LakeEntry, float, int]]:
        """The `k` nearest entries: (entry, cosine, cluster id), best first."""
        return list(self.candidates(vector, k, nprobe))

    def candidates(
        self, vector: np.ndarray, k: int, nprobe: int = 16
    ) -> Iterator[tuple[LakeEntry, float, int]]:
        """:meth:`search`'s answer one at a time: the index is searched at once, and an entry
        is fetched only when the caller asks for it (a lookup usually stops at the first one;
        with 100k entries, each fetch from the entry table is a cache miss)."""
        sims, ids = self.search_batch(vector.reshape(1, -1), k, nprobe)
        return self.hits(sims[0], ids[0])

    def search_batch(self, vectors: np.ndarray, k: int, nprobe: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest internal ids of each row of `vectors` (shape ``(m, dim)``) and their
        cosines: two ``(m, min(k, len(self)))`` arrays, best first; a short row is padded with
        id -1.

        Queries go to faiss at most :data:`SEARCH_BATCH` at a time: below faiss's BLAS threshold
        (20 queries) each query's distances are computed by the same kernel as a lone query's,
        so a query's answer does not depend on the batch it came in."""
        m, n = len(vectors), len(self.entries)
        if n == 0 or m == 0:
            return np.zeros((m, 0), dtype=np.float32), np.zeros((m, 0), dtype=np.int64)
        if self.is_ivf and self._nprobe != nprobe:
            self.index.nprobe = self._nprobe = nprobe  # type: ignore[attr-defined]
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if m <= SEARCH_BATCH:
            sims, ids = self.index.search(q, min(k, n))  # type: ignore[attr-defined]
            return sims, ids
        parts = [
            self.index.search(q[i : i + SEARCH_BATCH], min(k, n))  # type: ignore[attr-defined]
            for i in range(0, m, SEARCH_BATCH)
        ]
        return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])

    def hits(self, sims: np.ndarray, ids: np.ndarray) -> Iterator[tuple[LakeEntry, float, int]]:
        """One row of :meth:`search_batch` as (entry, cosine, cluster id), best first; entries
        removed since the search are skipped."""
        entries, cluster_of = self.entries, self.cluster_of
        # tolist(): one conversion to Python floats and ints instead of one per element;
        # faiss pads a short result with id -1, which no entry has
        for s, i in zip(sims.tolist(), ids.tolist(), strict=True):
            e = entries.get(i)
            if e is not None:
                yield e, s, cluster_of.get(i, -1)

    def vector_of(self, entry_id: str) -> np.ndarray | None:
        i = self.ids.get(entry_id)
        if i is None:
            return None
        try:
            return np.asarray(self.index.reconstruct(i), dtype=np.float32)  # type: ignore[attr-defined]
        except RuntimeError:
            return None


class HotTier:
    """Every tenant's partition, created on first write.

    Searches run one query at a time, so faiss's OpenMP threads are set to `threads`
    (default 1): on a small machine extra threads only contend with the server.
    """

    def __init__(self, dim: int, *, ivf_min: int = 4096, max_k: int = 4096, threads: int | None = 1) -> None:
        if threads is not None:
            import faiss

            faiss.omp_set_num_threads(threads)
        self.dim = dim
        self.ivf_min = ivf_min
        self.max_k = max_k
        self.tenants: dict[str, TenantIndex] = {}

    def tenant(self, tenant: str) -> TenantIndex | None:
        return self.tenants.get(tenant)

    def partition(self, tenant: str) -> TenantIndex:
        t = self.tenants.get(tenant)
        if t is None:
            t = self.tenants[tenant] = TenantIndex(tenant, self.dim, ivf_min=self.ivf_min, max_k=self.max_k)
        return t

    def add(self, entries: list[LakeEntry], vectors: np.ndarray) -> list[Membership]:
        out: list[Membership] = []
        by_tenant: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            by_tenant.setdefault(e.tenant, []).append(i)
        for tenant, rows in by_tenant.items():
            out += self.partition(tenant).add([entries[i] for i in rows], vectors[rows])
        return out

    def __len__(self) -> int:
        return sum(len(t) for t in self.tenants.values())
