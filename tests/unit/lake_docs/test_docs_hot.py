"""The documents' hot tier: per-tenant exact search with an access mask."""

from __future__ import annotations

import numpy as np

from agentlake.lake.documents._domain import principal_tokens
from agentlake.lake.documents._hot import DocumentHotTier, HotChunk


def _chunk(cid: str, doc: str, access: tuple[str, ...] = ("*",)) -> HotChunk:
    return HotChunk(cid, doc, 1, 0, f"text {cid}", None, "s", "text/plain", {}, access)


def _unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_search_ranks_filters_and_replaces() -> None:
    hot = DocumentHotTier(3)
    hot.put(
        "a", [_chunk("1", "d1"), _chunk("2", "d2", ("group:hr",))], np.stack([_unit(1, 0, 0), _unit(1, 1, 0)])
    )
    hot.put("b", [_chunk("3", "d3")], np.stack([_unit(1, 0, 0)]))
    q = _unit(1, 1, 0)
    assert [c.chunk_id for c, _ in hot.search("a", q, 5, principal_tokens(None))] == ["1"]
    got = hot.search("a", q, 5, principal_tokens("group:hr"))
    assert [c.chunk_id for c, _ in got] == ["2", "1"]
    assert got[0][1] > got[1][1]
    assert hot.search("c", q, 5, principal_tokens(None)) == []
    assert hot.search("a", q, 5, frozenset({"user:nobody"})) == []
    hot.replace_document("a", "d2", [_chunk("4", "d2")], np.stack([_unit(0, 0, 1)]))
    assert [c.chunk_id for c, _ in hot.search("a", q, 5, principal_tokens(None))] == ["1", "4"]
    assert hot.remove_document("a", "d1") == 1
    assert [c.chunk_id for c, _ in hot.search("a", q, 1, principal_tokens(None))] == ["4"]
    assert len(hot) == 2 and hot.stats()["tenants"] == 2


def test_top_k_matches_exact_order_on_random_data() -> None:
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(500, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rules = [("*",), ("group:x",)]
    chunks = [_chunk(str(i), f"d{i}", rules[i % 2]) for i in range(500)]
    hot = DocumentHotTier(16)
    hot.put("t", chunks, vecs)
    q = vecs[7]
    got = [int(c.chunk_id) for c, _ in hot.search("t", q, 10, principal_tokens(None))]
    allowed = np.arange(500) % 2 == 0
    expected = [int(i) for i in np.argsort(-((vecs @ q) - (~allowed) * 10.0))[:10]]
    assert got == expected
