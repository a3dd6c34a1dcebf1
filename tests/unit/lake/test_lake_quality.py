"""The labelled set and the hit rule's precision on it (the CI floor: no wrong hit)."""

from __future__ import annotations

from collections import Counter

from agentlake.lake.quality import evaluate, labelled_pairs, pair_similarities
from agentlake.projections.embeddings import Embedder


def test_labelled_set_shape() -> None:
    pairs = labelled_pairs()
    assert len(pairs) >= 200
    kinds = Counter(p.kind for p in pairs if not p.should_hit)
    misses = sum(kinds.values())
    hard = kinds["param"] + kinds["intent"] + kinds["direction"]
    assert hard * 2 >= misses
    assert kinds["direction"] > 0 and kinds["intent"] > 0


def test_default_rule_has_no_wrong_hit_and_beats_cosine(embedder: Embedder) -> None:
    pairs = labelled_pairs()
    sims = pair_similarities(embedder, pairs)
    q = evaluate(pairs, sims, 0.45)
    assert q.precision >= 0.99
    assert q.recall >= 0.5
    cosine = evaluate(pairs, sims, 0.45, use_signature=False)
    assert cosine.precision < 0.5  # why the signature exists
