"""Online k-means per tenant: the lake's clusters of task embeddings.

A tenant's clustering is refitted with ``faiss.Kmeans`` (spherical) whenever
the tenant has grown past twice its size at the last fit — that is when
clusters split (k grows as sqrt(n)) — and updated online in between with
scikit-learn's ``MiniBatchKMeans.partial_fit`` seeded with those centroids.
Clusters merge when entries are removed and a refit asks for a smaller k.

Degenerate input is part of the contract: duplicate vectors (the same task run
many times) count once when choosing k; fewer distinct points than k lowers k;
all-zero rows are never fed to k-means and get cluster ``-1``; a tenant with a
single entry has one cluster whose centroid is that entry.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np

ZERO_CLUSTER = -1


TRAIN_POINTS_PER_CENTROID = 32  # k-means sample per centroid (faiss's max_points_per_centroid)
ASSIGN_CELLS = 1 << 25  # rows × centroids per slice of an assignment (128 MB of float32)
IVF_SPLIT = 4096  # from this many distinct points on, 4·sqrt(n) clusters (they route IVF searches)


def target_k(n_distinct: int, max_k: int) -> int:
    """Clusters for `n_distinct` distinct points: round(sqrt(n)) while small (clusters only group
    outcomes for calibration), round(4·sqrt(n)) from 4,096 on (faiss's guideline for an IVF's
    lists: each probe then scans about sqrt(n)/4 vectors instead of sqrt(n)); at least 1, at
    most `max_k`."""
    if n_distinct <= 0:
        return 0
    factor = 4 if n_distinct >= IVF_SPLIT else 1
    return max(1, min(max_k, n_distinct, round(factor * math.sqrt(n_distinct))))


def nonzero_rows(vectors: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """Boolean mask of the rows whose L2 norm exceeds `eps`."""
    return np.asarray(np.linalg.norm(vectors, axis=1) > eps)


class TenantClusters:
    """The clustering of one tenant's entries.

    Args:
        dim: vector dimension.
        max_k: upper bound on clusters.
        seed: for reproducible fits.
    """

    def __init__(self, dim: int, max_k: int = 4096, seed: int = 0) -> None:
        self.dim = dim
        self.max_k = max_k
        self.seed = seed
        self.version = 0
        self.centroids = np.zeros((0, dim), dtype=np.float32)
        self.sizes = np.zeros(0, dtype=np.int64)
        self.fitted_on = 0
        self._online: Any = None  # sklearn MiniBatchKMeans seeded from the last fit

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def needs_refit(self, n_total: int) -> bool:
        return self.k == 0 or n_total >= 2 * max(1, self.fitted_on) or n_total < self.fitted_on // 2

    def fit(self, vectors: np.ndarray) -> np.ndarray:
        """(Re)fit on all of a tenant's vectors (zero rows ignored) and return each row's
        cluster (:meth:`assign` after the fit, shape ``(n,)``). Raises nothing on degenerate
        input: empty input leaves no clusters.

        faiss's k-means trains on a random sample of at most ``TRAIN_POINTS_PER_CENTROID``
        points per centroid: at 1M entries and 4,000 clusters, 128k points instead of 1M
        (the centroids route IVF searches; recall is measured by ``bench/lake.py``)."""
        x = (
            np.ascontiguousarray(vectors[nonzero_rows(vectors)], dtype=np.float32)
            if len(vectors)
            else vectors
        )
        self.version += 1
        self.fitted_on = len(vectors)
        self._online = None
        if len(x) == 0:
            self.centroids = np.zeros((0, self.dim), dtype=np.float32)
            self.sizes = np.zeros(0, dtype=np.int64)
            return np.full(len(vectors), ZERO_CLUSTER, dtype=np.int64)
        distinct = np.unique(x, axis=0) if len(x) <= 200_000 else x
        k = target_k(len(distinct), self.max_k)
        if k == 1:
            c = x.mean(axis=0, keepdims=True)
            self.centroids = _normalize(c)
        elif len(distinct) < 39 * k:
            # few points per cluster (faiss wants >= 39): scikit-learn's k-means on the distinct rows
            from sklearn.cluster import KMeans  # type: ignore[import-untyped]

            km_small = KMeans(n_clusters=k, n_init=1, random_state=self.seed).fit(distinct)
            self.centroids = _normalize(np.asarray(km_small.cluster_centers_, dtype=np.float32))
        else:
            import faiss

            km = faiss.Kmeans(
                self.dim,
                k,
                niter=12,
                spherical=True,
                seed=self.seed,
                max_points_per_centroid=TRAIN_POINTS_PER_CENTROID,
                min_points_per_centroid=1,  # the branch above keeps >= 39 distinct points per cluster
                verbose=False,
            )
            # duplicates would let faiss seed two centroids on one point: train on distinct rows
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(os.cpu_count() or 1)  # training is batch work: every core
            try:
                km.train(np.ascontiguousarray(distinct, dtype=np.float32))
            finally:
                faiss.omp_set_num_threads(threads)
            self.centroids = np.asarray(km.centroids, dtype=np.float32).copy()
        assigned = self.assign(vectors)
        self.sizes = np.bincount(assigned[assigned >= 0], minlength=self.k).astype(np.int64)
        return assigned

    def partial_fit(self, vectors: np.ndarray) -> None:
        """Move the centroids toward a new mini-batch (scikit-learn ``MiniBatchKMeans``)."""
        x = np.ascontiguousarray(vectors[nonzero_rows(vectors)], dtype=np.float32)
        if len(x) == 0 or self.k < 2:
            if len(x) and self.k == 1:
                n = int(self.sizes[0])
                self.centroids = _normalize((self.centroids * n + x.sum(axis=0)) / (n + len(x)))
                self.sizes[0] += len(x)
            return
        from sklearn.cluster import MiniBatchKMeans  # type: ignore[import-untyped]

        if self._online is None:
            self._online = MiniBatchKMeans(
                n_clusters=self.k, init=self.centroids, n_init=1, batch_size=1024, random_state=self.seed
            )
            # seed the model's state: its first partial_fit must see >= k rows
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._online.partial_fit(np.vstack([self.centroids, x]))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._online.partial_fit(x)
        self.centroids = _normalize(np.asarray(self._online.cluster_centers_, dtype=np.float32))
        self.sizes = self.sizes + np.bincount(self.assign(x), minlength=self.k)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """The cluster of each row (nearest centroid by cosine); ``-1`` for zero rows or no clusters."""
        out = np.full(len(vectors), ZERO_CLUSTER, dtype=np.int64)
        if self.k == 0 or len(vectors) == 0:
            return out
        # in slices: 1M rows × 4,000 centroids at once would be a 16 GB matrix
        step = max(1, ASSIGN_CELLS // self.k)
        for i in range(0, len(vectors), step):
            rows = np.asarray(vectors[i : i + step], dtype=np.float32)
            mask = nonzero_rows(rows)
            if mask.any():
                part = out[i : i + step]
                part[mask] = np.argmax(rows[mask] @ self.centroids.T, axis=1)
        return out

    def nearest(self, vector: np.ndarray, n: int) -> list[int]:
        """The `n` clusters whose centroids are closest to `vector` (best first)."""
        if self.k == 0 or not nonzero_rows(vector[None, :])[0]:
            return []
        sims = self.centroids @ vector
        n = min(n, self.k)
        top = np.argpartition(-sims, n - 1)[:n] if n < self.k else np.arange(self.k)
        return [int(i) for i in top[np.argsort(-sims[top])]]


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return np.asarray(v / n, dtype=np.float32)
