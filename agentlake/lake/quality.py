"""Hit quality on the labelled task pairs: precision and recall of the hit rule.

The labelled set (``data/task_pairs.jsonl``, written for this project) holds
pairs of tasks marked ``hit`` (paraphrases: same intent, same parameters) or
``miss``; each miss has a kind: ``param`` (same task, another id/amount/date/
e-mail/environment), ``intent`` (opposite action), ``direction`` (from/to
swapped), ``related`` or ``unrelated``. A pair is *predicted* a hit when the
cosine similarity of the two task embeddings clears the threshold and, under
the signature rule, the two task signatures agree.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from agentlake.lake.signature import signatures_agree, task_signature
from agentlake.projections.embeddings import Embedder


@dataclass(frozen=True)
class LabelledPair:
    a: str
    b: str
    should_hit: bool
    kind: str


def labelled_pairs() -> list[LabelledPair]:
    """The shipped labelled set (>= 200 pairs)."""
    text = (resources.files("agentlake.lake") / "data" / "task_pairs.jsonl").read_text("utf-8")
    out = []
    for line in text.splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(LabelledPair(d["a"], d["b"], d["label"] == "hit", d["kind"]))
    return out


@dataclass(frozen=True)
class Quality:
    rule: str
    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int
    wrong_hits_by_kind: dict[str, int]

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "wrong_hits_by_kind": self.wrong_hits_by_kind,
        }


def pair_similarities(embedder: Embedder, pairs: list[LabelledPair]) -> np.ndarray:
    """Cosine similarity of each pair, shape (len(pairs),)."""
    va = embedder.embed([p.a for p in pairs])
    vb = embedder.embed([p.b for p in pairs])
    return np.asarray((va * vb).sum(axis=1), dtype=np.float64)


def evaluate(
    pairs: list[LabelledPair], sims: np.ndarray, threshold: float, *, use_signature: bool = True
) -> Quality:
    """Confusion counts of the hit rule at `threshold` (cosine in [-1, 1])."""
    tp = fp = fn = tn = 0
    wrong: Counter[str] = Counter()
    for p, s in zip(pairs, sims, strict=True):
        hit = bool(s >= threshold)
        if hit and use_signature:
            hit = signatures_agree(task_signature(p.a), task_signature(p.b))
        if hit and p.should_hit:
            tp += 1
        elif hit:
            fp += 1
            wrong[p.kind] += 1
        elif p.should_hit:
            fn += 1
        else:
            tn += 1
    rule = "cosine+signature" if use_signature else "cosine only"
    return Quality(rule, threshold, tp, fp, fn, tn, dict(wrong))


def best_threshold(
    pairs: list[LabelledPair], sims: np.ndarray, *, use_signature: bool = True, min_precision: float = 0.99
) -> Quality:
    """The lowest threshold (most recall) whose precision is >= `min_precision`."""
    best: Quality | None = None
    for t in np.round(np.arange(0.30, 1.0001, 0.01), 2):
        q = evaluate(pairs, sims, float(t), use_signature=use_signature)
        if q.precision >= min_precision and q.tp > 0 and (best is None or q.recall > best.recall):
            best = q
    return best or evaluate(pairs, sims, 1.0, use_signature=use_signature)


def report(embedder: Embedder, threshold: float) -> dict[str, Any]:
    """Precision/recall on the labelled set at `threshold` and at the best threshold, with and
    without the signature rule."""
    pairs = labelled_pairs()
    sims = pair_similarities(embedder, pairs)
    kinds = Counter(("hit" if p.should_hit else "miss") + ":" + p.kind for p in pairs)
    hits = [float(s) for p, s in zip(pairs, sims, strict=True) if p.should_hit]
    hard = [float(s) for p, s in zip(pairs, sims, strict=True) if p.kind in ("param", "intent", "direction")]
    return {
        "embedder": embedder.name,
        "pairs": len(pairs),
        "kinds": dict(sorted(kinds.items())),
        "mean_cosine_paraphrase": round(float(np.mean(hits)), 3),
        "mean_cosine_hard_negative": round(float(np.mean(hard)), 3),
        "at_default": evaluate(pairs, sims, threshold).to_dict(),
        "cosine_only_at_default": evaluate(pairs, sims, threshold, use_signature=False).to_dict(),
        "best_with_signature": best_threshold(pairs, sims).to_dict(),
        "best_cosine_only": best_threshold(pairs, sims, use_signature=False).to_dict(),
    }
