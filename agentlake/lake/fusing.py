"""Result fusing: a suggested plan from several similar past trajectories (pure).

The consensus tool sequence is a weighted walk of the prefix tree of the
successful neighbours' tool sequences: at each step the next tool (or the end)
is the one with the largest total weight among the neighbours that agree with
the sequence so far, where a neighbour weighs ``reward × similarity``. The
suggested tool set is every tool used by neighbours holding at least
``tool_share`` of the total weight. Lessons come from failed neighbours: what
failed, and which tools only failing trajectories called.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

END = "<end>"


@dataclass(frozen=True)
class Neighbour:
    """A past trajectory as fusing sees it."""

    entry_id: str
    similarity: float
    reward: float
    success: bool
    tool_sequence: tuple[str, ...]
    lessons: tuple[str, ...] = ()
    final_answer: str = ""


@dataclass(frozen=True)
class FusedPlan:
    tool_sequence: list[str]
    support: float  # share of the successful weight that agrees with the whole consensus sequence
    tools: list[str]
    tool_weights: dict[str, float]
    lessons: list[str]
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool_sequence": self.tool_sequence,
            "support": round(self.support, 4),
            "tools": self.tools,
            "tool_weights": {k: round(v, 4) for k, v in self.tool_weights.items()},
            "lessons": self.lessons,
            "sources": self.sources,
        }


def _weight(n: Neighbour) -> float:
    return max(0.0, n.reward) * max(0.0, n.similarity)


def consensus_sequence(neighbours: list[Neighbour], max_len: int = 50) -> tuple[list[str], float]:
    """The weighted-majority tool sequence of successful `neighbours`, and the share of
    their weight that follows it exactly. Empty input gives ([], 0.0)."""
    ok = [n for n in neighbours if n.success and _weight(n) > 0]
    total = sum(_weight(n) for n in ok)
    if not ok or total == 0:
        return [], 0.0
    seq: list[str] = []
    alive = ok
    while len(seq) < max_len:
        votes: dict[str, float] = defaultdict(float)
        for n in alive:
            nxt = n.tool_sequence[len(seq)] if len(n.tool_sequence) > len(seq) else END
            votes[nxt] += _weight(n)
        best = max(sorted(votes), key=lambda t: votes[t])  # ties: alphabetical, deterministic
        if best == END:
            alive = [n for n in alive if len(n.tool_sequence) == len(seq)]
            break
        seq.append(best)
        alive = [
            n for n in alive if len(n.tool_sequence) > len(seq) - 1 and n.tool_sequence[len(seq) - 1] == best
        ]
    else:
        alive = [n for n in alive if tuple(n.tool_sequence) == tuple(seq)]
    support = sum(_weight(n) for n in alive) / total
    return seq, support


def fuse(neighbours: list[Neighbour], tool_share: float = 0.2, max_sources: int = 10) -> FusedPlan:
    """Fuse a suggested plan from `neighbours` (any order; failures feed the lessons)."""
    seq, support = consensus_sequence(neighbours)
    ok = [n for n in neighbours if n.success and _weight(n) > 0]
    total = sum(_weight(n) for n in ok) or 1.0
    weights: dict[str, float] = defaultdict(float)
    for n in ok:
        for tool in set(n.tool_sequence):
            weights[tool] += _weight(n) / total
    tools = sorted((t for t, w in weights.items() if w >= tool_share), key=lambda t: (-weights[t], t))
    lessons = failure_lessons(neighbours, set(weights))
    ranked = sorted(neighbours, key=lambda n: -n.similarity)[:max_sources]
    sources = [
        {
            "entry_id": n.entry_id,
            "similarity": round(n.similarity, 4),
            "reward": round(n.reward, 4),
            "success": n.success,
            "tool_sequence": list(n.tool_sequence),
        }
        for n in ranked
    ]
    return FusedPlan(seq, support, tools, dict(sorted(weights.items())), lessons, sources)


def failure_lessons(neighbours: list[Neighbour], good_tools: set[str], limit: int = 8) -> list[str]:
    """ "What not to do", from failed neighbours: tools only failures called, sequences that
    failed, and the failures' own error lines (most similar first, deduplicated)."""
    failed = sorted((n for n in neighbours if not n.success), key=lambda n: -n.similarity)
    out: list[str] = []
    bad_tools: dict[str, int] = defaultdict(int)
    for n in failed:
        for t in set(n.tool_sequence) - good_tools:
            bad_tools[t] += 1
    for t, c in sorted(bad_tools.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"avoid {t}: only failed trajectories called it ({c}x)")
    seen: set[str] = set()
    for n in failed:
        seq = " → ".join(n.tool_sequence) or "(no tool calls)"
        line = f"failed (reward {n.reward:.2f}): {seq}"
        for extra in (line, *n.lessons):
            if extra not in seen:
                seen.add(extra)
                out.append(extra)
    return out[:limit]
