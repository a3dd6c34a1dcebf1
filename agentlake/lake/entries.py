"""Lake entries: one finished trajectory as the cache remembers it, built from the log.

An entry is keyed by its trajectory id and carries what a lookup filters on
(tenant, tool-set fingerprint, user for user-scoped entries, agent and version,
expiry) and what a hit returns (reward vector, tool sequence, plan summary,
final answer, the documents it used). :class:`EntryBuilder` folds the events of
a trajectory (from ``agent.trajectories``, ``agent.steps``, ``agent.tool_calls``
and ``rewards.scored``) into an entry when its final reward arrives.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from agentlake.lake.signature import TaskSignature, task_signature
from agentlake.schemas import (
    AgentStep,
    Event,
    RewardScored,
    ToolCallCompleted,
    ToolCallRequested,
    TrajectoryEnded,
    TrajectoryStarted,
)

# TrajectoryStarted.attributes keys the lake reads (set by the SDK caller)
ATTR_TOOLSET = "lake.toolset"  # fingerprint of the tool schemas the agent had (toolset_fingerprint)
ATTR_SCOPE = "lake.scope"  # "user": only the same user may hit this entry
ATTR_DOCUMENTS = "lake.documents"  # comma-separated document ids the trajectory used
ATTR_NO_CACHE = "lake.no_cache"  # "1": never serve this trajectory as a cached result
# JSON list, one list of access rules per document used (as search_documents returned them):
# the entry is served only to principals who may read every one of those documents
ATTR_ACCESS = "lake.access"


def principal_tokens(principal: str | list[str] | None) -> frozenset[str]:
    """Tokens of a principal: ``"user:alice,group:finance"`` or a list of such tokens; a bare
    name is a user. None is anonymous (it matches only the public rule ``*``)."""
    if principal is None:
        return frozenset()
    items = principal.split(",") if isinstance(principal, str) else list(principal)
    out = set()
    for item in (i.strip() for i in items):
        if item:
            out.add(item if ":" in item or item == "*" else f"user:{item}")
    return frozenset(out)


def may_read(access: tuple[tuple[str, ...], ...], tokens: frozenset[str]) -> bool:
    """Whether `tokens` satisfy every document's rules (any rule of a document; ``*`` is public)."""
    return all("*" in rules or not tokens.isdisjoint(rules) for rules in access)


def _access(raw: str) -> tuple[tuple[str, ...], ...]:
    try:
        value = json.loads(raw)
        return tuple(tuple(str(r) for r in rules) for rules in value)
    except (ValueError, TypeError):
        return (("__invalid__",),)  # unreadable rules: nobody may read (fail closed)


def toolset_fingerprint(tools: list[dict[str, Any]]) -> str:
    """A stable fingerprint of a tool set: sha256 over the canonical JSON of each tool's name,
    description and input schema, sorted by name (16 hex chars). A changed schema changes it.

    Args:
        tools: MCP tool descriptions (``name``, ``description``, ``input_schema`` or ``inputSchema``).
    """
    canon = sorted(
        (
            str(t.get("name", "")),
            str(t.get("description", "")),
            json.dumps(
                t.get("input_schema", t.get("inputSchema", {})), sort_keys=True, separators=(",", ":")
            ),
        )
        for t in tools
    )
    return hashlib.sha256(json.dumps(canon).encode()).hexdigest()[:16]


MAX_TEXT_CHARS = 4096  # task and final answer kept per entry
MAX_TOOL_CALLS = 256  # tool sequence kept per entry


@dataclass(frozen=True, slots=True)
class LakeEntry:
    """A finished trajectory in the lake (times in microseconds since the epoch, UTC)."""

    entry_id: str
    tenant: str
    agent_id: str
    agent_version: str
    task: str
    signature: TaskSignature
    success: bool
    reward: float
    components: dict[str, float]
    tool_sequence: tuple[str, ...]
    plan: str
    final_answer: str
    outcome: str
    toolset: str = ""
    user_id: str | None = None
    user_scoped: bool = False
    documents: tuple[str, ...] = ()
    lessons: tuple[str, ...] = ()
    produced_us: int = 0
    expires_us: int = 0
    cacheable: bool = True
    access: tuple[tuple[str, ...], ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The Avro form (``LakeEntry`` record)."""
        return {
            "entry_id": self.entry_id,
            "tenant": self.tenant,
            "agent_id": self.agent_id,
            "agent_version": self.agent_version,
            "task": self.task,
            "signature_json": json.dumps(self.signature.to_dict(), separators=(",", ":")),
            "success": self.success,
            "reward": self.reward,
            "components": dict(self.components),
            "tool_sequence": list(self.tool_sequence),
            "plan": self.plan,
            "final_answer": self.final_answer,
            "outcome": self.outcome,
            "toolset": self.toolset,
            "user_id": self.user_id,
            "user_scoped": self.user_scoped,
            "documents": list(self.documents),
            "lessons": list(self.lessons),
            "produced_us": self.produced_us,
            "expires_us": self.expires_us,
            "cacheable": self.cacheable,
            "access_json": json.dumps([list(r) for r in self.access]),
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> LakeEntry:
        sig = json.loads(d["signature_json"])
        return cls(
            entry_id=d["entry_id"],
            tenant=d["tenant"],
            agent_id=d["agent_id"],
            agent_version=d["agent_version"],
            task=d["task"],
            signature=TaskSignature(
                sig["action"], int(sig["polarity"]), tuple((str(k), str(v)) for k, v in sig["params"])
            ),
            success=bool(d["success"]),
            reward=float(d["reward"]),
            components=dict(d.get("components") or {}),
            tool_sequence=tuple(d.get("tool_sequence") or ()),
            plan=d.get("plan") or "",
            final_answer=d.get("final_answer") or "",
            outcome=d.get("outcome") or "",
            toolset=d.get("toolset") or "",
            user_id=d.get("user_id"),
            user_scoped=bool(d.get("user_scoped")),
            documents=tuple(d.get("documents") or ()),
            lessons=tuple(d.get("lessons") or ()),
            produced_us=int(d.get("produced_us") or 0),
            expires_us=int(d.get("expires_us") or 0),
            cacheable=bool(d.get("cacheable", True)),
            access=_access(d.get("access_json") or "[]"),
        )

    def with_expiry(self, ttl_us: int) -> LakeEntry:
        return replace(self, expires_us=self.produced_us + ttl_us)


@dataclass
class _Partial:
    started: TrajectoryStarted | None = None
    plans: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    final_answer: str = ""


class EntryBuilder:
    """Folds trajectory events into lake entries; bounded memory (oldest partials dropped).

    Feed every decoded event with :meth:`add`; it returns the finished entry when the
    trajectory's final ``RewardScored`` and its ``TrajectoryStarted`` (which carries the
    scope: user, tool set) have both arrived, else None. They come from two topics, so a
    reward read first is parked; :meth:`flush_parked` builds parked entries without the
    start's scope once `wait_for_start_s` has passed.
    """

    def __init__(self, ttl_s: float, max_pending: int = 100_000, wait_for_start_s: float = 5.0) -> None:
        self.ttl_us = int(ttl_s * 1_000_000)
        self.max_pending = max_pending
        self.wait_for_start_s = wait_for_start_s
        self._pending: OrderedDict[str, _Partial] = OrderedDict()
        # final rewards whose TrajectoryStarted has not been read yet (another topic): (reward, since)
        self._parked: OrderedDict[str, tuple[RewardScored, float]] = OrderedDict()

    @property
    def parked(self) -> int:
        """Final rewards waiting for their TrajectoryStarted (commit offsets only when 0)."""
        return len(self._parked)

    def flush_parked(self, now: float, force: bool = False) -> list[LakeEntry]:
        """Entries for rewards parked longer than `wait_for_start_s` (monotonic seconds `now`),
        or all of them with `force`: built without the start's scope (user, tool set)."""
        out = []
        while self._parked:
            tid, (r, since) = next(iter(self._parked.items()))
            if not force and now - since < self.wait_for_start_s:
                break
            del self._parked[tid]
            out.append(self._entry(r, self._pending.pop(tid, _Partial())))
        return out

    def _partial(self, tid: str) -> _Partial:
        p = self._pending.get(tid)
        if p is None:
            p = self._pending[tid] = _Partial()
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
        return p

    def add(self, ev: Event, now: float = 0.0) -> LakeEntry | None:
        if isinstance(ev, TrajectoryStarted):
            self._partial(ev.trajectory_id).started = ev
            parked = self._parked.pop(ev.trajectory_id, None)
            if parked is not None:
                return self._entry(parked[0], self._pending.pop(ev.trajectory_id))
        elif isinstance(ev, AgentStep) and ev.kind == "plan":
            self._partial(ev.trajectory_id).plans.append(ev.content[:500])
        elif isinstance(ev, ToolCallCompleted) and ev.is_error:
            self._partial(ev.trajectory_id).errors.append(f"{ev.tool}: {(ev.error or ev.result.json_)[:200]}")
        elif isinstance(ev, TrajectoryEnded):
            p = self._partial(ev.trajectory_id)
            p.final_answer = (ev.final_answer or ev.error or "")[:1000]
        elif isinstance(ev, RewardScored) and ev.is_final:
            waiting = self._pending.get(ev.trajectory_id)
            if waiting is None or waiting.started is None:
                self._parked[ev.trajectory_id] = (ev, now)
                return None
            del self._pending[ev.trajectory_id]
            return self._entry(ev, waiting)
        elif isinstance(ev, ToolCallRequested):
            pass  # the tool sequence comes with the reward
        return None

    def _entry(self, r: RewardScored, p: _Partial) -> LakeEntry:
        # An entry is a cache key and a plan, not an archive: long texts are cut so that the
        # entry (as JSON in Milvus, as an event on lake.entries) stays well under every limit.
        attrs = p.started.attributes if p.started else {}
        docs = tuple(d.strip() for d in attrs.get(ATTR_DOCUMENTS, "").split(",") if d.strip())
        lessons = tuple(e[:500] for e in p.errors[:5])
        if not r.success and r.failed_gates:
            lessons += tuple(f"failed gate {g}" for g in r.failed_gates)
        plan = "; ".join(p.plans) or " → ".join(r.tool_sequence)
        return LakeEntry(
            entry_id=r.trajectory_id,
            tenant=r.tenant,
            agent_id=r.agent_id,
            agent_version=r.agent_version,
            task=r.task[:MAX_TEXT_CHARS],
            signature=task_signature(r.task[:MAX_TEXT_CHARS]),
            success=r.success,
            reward=float(r.total),
            components=dict(r.components),
            tool_sequence=tuple(r.tool_sequence[:MAX_TOOL_CALLS]),
            plan=plan[:2000],
            final_answer=p.final_answer[:MAX_TEXT_CHARS] if p.final_answer else p.final_answer,
            outcome=r.outcome or "",
            toolset=attrs.get(ATTR_TOOLSET, ""),
            user_id=p.started.user_id if p.started else None,
            user_scoped=attrs.get(ATTR_SCOPE, "") == "user",
            documents=docs,
            lessons=lessons,
            produced_us=r.ts_us,
            expires_us=r.ts_us + self.ttl_us,
            cacheable=attrs.get(ATTR_NO_CACHE, "") != "1",
            access=_access(attrs[ATTR_ACCESS]) if ATTR_ACCESS in attrs else (),
        )
