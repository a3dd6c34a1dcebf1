"""k-means per tenant survives degenerate input (faiss / scikit-learn underneath)."""

from __future__ import annotations

import numpy as np

from agentlake.lake.clusters import ZERO_CLUSTER, TenantClusters, target_k
from agentlake.lake.hot import TenantIndex
from tests.unit.lake.conftest import make_entry


def unit(rows: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_target_k() -> None:
    assert target_k(0, 10) == 0
    assert target_k(1, 10) == 1
    assert target_k(100, 10) == 10
    assert target_k(100, 4096) == 10
    assert target_k(10_000, 4096) == 400  # an IVF's lists: 4·sqrt(n)
    assert target_k(1_000_000, 4096) == 4000


def test_duplicates_count_once() -> None:
    c = TenantClusters(16)
    x = np.repeat(unit(3), 50, axis=0)  # the same 3 tasks run 50 times each
    c.fit(x)
    assert c.k == 2  # round(sqrt(3 distinct)), not sqrt(150)
    assert set(c.assign(x)) <= {0, 1}
    assert not np.isnan(c.centroids).any()


def test_fewer_points_than_k() -> None:
    c = TenantClusters(16, max_k=64)
    c.fit(unit(2))
    assert 1 <= c.k <= 2
    c.partial_fit(unit(1, seed=3))  # a mini-batch smaller than k
    assert not np.isnan(c.centroids).any()


def test_all_zero_rows() -> None:
    c = TenantClusters(16)
    zeros = np.zeros((5, 16), dtype=np.float32)
    c.fit(zeros)
    assert c.k == 0
    assert list(c.assign(zeros)) == [ZERO_CLUSTER] * 5
    mixed = np.vstack([zeros, unit(9)])
    c.fit(mixed)
    assert c.k == 3
    labels = c.assign(mixed)
    assert list(labels[:5]) == [ZERO_CLUSTER] * 5 and (labels[5:] >= 0).all()
    c.partial_fit(zeros)  # ignored, no NaN
    assert not np.isnan(c.centroids).any()


def test_one_entry_tenant() -> None:
    c = TenantClusters(16)
    x = unit(1)
    c.fit(x)
    assert c.k == 1
    assert np.allclose(c.centroids[0], x[0], atol=1e-6)
    assert c.nearest(x[0], 5) == [0]
    idx = TenantIndex("solo", 16)
    members = idx.add([make_entry("only", "Refund order 1")], x)
    assert [m.cluster_id for m in members] == [0]
    (hit,) = idx.search(x[0], 5)
    assert hit[0].entry_id == "only" and hit[1] > 0.999


def test_clusters_split_as_the_tenant_grows_and_index_turns_ivf() -> None:
    idx = TenantIndex("big", 16, ivf_min=200)
    x = unit(400, seed=1)
    idx.add([make_entry(f"e{i}", "t") for i in range(10)], x[:10])
    k_small = idx.clusters.k
    idx.add([make_entry(f"e{i}", "t") for i in range(10, 400)], x[10:])
    assert idx.clusters.k > k_small
    assert idx.is_ivf
    ids, vecs = idx.vectors()
    assert len(ids) == 400 and vecs.shape == (400, 16)
    top = idx.search(x[123], 1, nprobe=idx.clusters.k)
    assert top[0][0].entry_id == "e123"
    assert idx.remove(["e123"]) == 1
    assert all(e.entry_id != "e123" for e, _, _ in idx.search(x[123], 5, nprobe=idx.clusters.k))
