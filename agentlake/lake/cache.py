"""The semantic cache: lookup with scoped keys and the hit rule, calibration, fusing, next step.

A **hit** is the most similar entry that passes every rule, in this order:

1. scope — same tenant (a partition: :mod:`hot`), same tool-set fingerprint,
   same user when the entry is user-scoped, and an agent/version allowed by
   the declared :attr:`LakePolicy.cross_version` policy;
2. life — not expired (TTLs count from production; a hit never extends
   them), not demoted (a reuse that failed), still cacheable;
3. quality — a successful trajectory with reward >= ``min_reward``;
4. similarity — cosine >= the threshold of the entry's cluster (starts at
   ``base_threshold``; every wrong hit in the cluster raises it by
   ``tighten_step``, confirmed hits lower it by ``relax_step`` back toward base);
5. meaning — the task signatures agree (same action and polarity, same
   parameters: :mod:`signature`).

Among the entries that pass every rule, those within `TIE_EPSILON` cosine of the
most similar one are ties: the hit is the one with the higher reward, then fewer
tool calls, then the smaller entry id (so equal lakes answer alike).

Every lookup returns its provenance (which entries were considered, how
similar, how they scored, and why each was refused).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from agentlake.lake.entries import LakeEntry, may_read
from agentlake.lake.fusing import FusedPlan, Neighbour, fuse
from agentlake.lake.hot import HotTier, Membership, TenantIndex
from agentlake.lake.signature import (
    QUERY_CACHE_MAX_CHARS,
    QUERY_CACHE_SIZE,
    TaskSignature,
    query_signature,
    signature_difference,
    signatures_agree,
)
from agentlake.projections.embeddings import Embedder

CrossVersion = Literal["any", "same-agent", "same-version"]
PROVENANCE = 10  # candidates a lookup reports (the first ones the index returned, best first)
# passing entries this close in cosine to the most similar passing one are ties, broken by
# reward, then fewer tool calls, then entry id: wide enough for float noise and entries of
# one task text, narrow enough that a clearly closer match still wins
TIE_EPSILON = 0.005


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class LakePolicy:
    """The cache's declared policy (every field has an ``AGENTLAKE_LAKE_*`` setting)."""

    base_threshold: float = 0.45
    min_reward: float = 0.7
    cross_version: CrossVersion = "same-agent"
    ttl_s: float = 7 * 24 * 3600.0
    tighten_step: float = 0.1
    relax_step: float = 0.01
    max_threshold: float = 0.99
    candidates: int = 32
    nprobe: int = 16


@dataclass(frozen=True)
class LookupRequest:
    tenant: str
    task: str
    toolset: str = ""
    user_id: str | None = None
    agent_id: str | None = None
    agent_version: str | None = None
    principal: frozenset[str] = frozenset()  # tokens (entries.principal_tokens); empty = anonymous


@dataclass(frozen=True)
class Candidate:
    entry_id: str
    similarity: float
    reward: float
    success: bool
    agent: str
    cluster_id: int
    threshold: float
    signature: str
    verdict: str  # "hit" or the first rule that refused it
    detail: str = ""  # for signature_mismatch: the differing part, e.g. "num 25 ≠ 24"

    def to_dict(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "entry_id": self.entry_id,
            "similarity": round(self.similarity, 4),
            "reward": round(self.reward, 4),
            "success": self.success,
            "agent": self.agent,
            "cluster_id": self.cluster_id,
            "threshold": round(self.threshold, 4),
            "signature": self.signature,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class LookupResult:
    lookup_id: str
    hit: bool
    tenant: str
    task: str
    signature: str
    entry: LakeEntry | None
    similarity: float
    reason: str  # "hit" or why it missed
    candidates: list[Candidate] = field(default_factory=list)
    latency_us: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "lookup_id": self.lookup_id,
            "hit": self.hit,
            "reason": self.reason,
            "tenant": self.tenant,
            "task": self.task,
            "signature": self.signature,
            "similarity": round(self.similarity, 4),
            "result": None
            if e is None
            else {
                "entry_id": e.entry_id,
                "task": e.task,
                "tool_sequence": list(e.tool_sequence),
                "plan": e.plan,
                "final_answer": e.final_answer,
                "reward": e.reward,
                "components": e.components,
                "agent": f"{e.agent_id}@{e.agent_version}",
                "documents": list(e.documents),
                "access": [list(r) for r in e.access],
                "produced_us": e.produced_us,
                "expires_us": e.expires_us,
            },
            "provenance": [c.to_dict() for c in self.candidates],
            "latency_us": round(self.latency_us, 1),
        }


@dataclass
class ClusterStats:
    threshold: float
    hits: int = 0
    wrong_hits: int = 0
    confirmed: int = 0


class Lake:
    """The context lake's in-process core: hot tier, clusters, cache rules, fusing.

    Args:
        embedder: task text -> L2-normalized vector.
        policy: thresholds, TTL, cross-version policy.
        clock: microseconds since the epoch (tests move time with it).
        ivf_min: entries per tenant above which the index becomes IVF.

    Events (centroids, memberships, lookups, outcomes) accumulate in
    :attr:`events` as ``(record, key, value)``; the service drains them to Kafka.
    """

    def __init__(
        self,
        embedder: Embedder,
        policy: LakePolicy | None = None,
        *,
        clock: Callable[[], int] = now_us,
        ivf_min: int = 4096,
        record_events: bool = True,
    ) -> None:
        self.embedder = embedder
        self.policy = policy or LakePolicy()
        self.clock = clock
        self.hot = HotTier(embedder.dim, ivf_min=ivf_min)
        self.clusters: dict[tuple[str, int, int], ClusterStats] = {}
        self.demoted: set[tuple[str, str]] = set()
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.record_events = record_events
        self._lookups: OrderedDict[str, tuple[str, str, int, int]] = OrderedDict()
        self._steps: dict[tuple[str, str, tuple[str, ...]], list[tuple[str, str]]] = defaultdict(list)
        self._seq = 0
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # task text -> query vector
        self._vectors_of: Embedder = embedder

    # -- ingest ------------------------------------------------------------------
    def add(self, entries: list[LakeEntry], vectors: np.ndarray | None = None) -> list[Membership]:
        """Insert or replace entries; embeds their tasks unless `vectors` is given."""
        if not entries:
            return []
        vecs = self.embedder.embed([e.task for e in entries]) if vectors is None else vectors
        before = {name: t.clusters.version for name, t in self.hot.tenants.items()}
        members = self.hot.add(entries, vecs)
        for e in entries:
            self._index_steps(e)
        if self.record_events:
            for m in members:
                self._emit(
                    "ClusterMembership",
                    f"{m.tenant}/{m.entry_id}",
                    {
                        "tenant": m.tenant,
                        "entry_id": m.entry_id,
                        "cluster_id": m.cluster_id,
                        "version": m.version,
                    },
                )
            touched: dict[str, set[int]] = defaultdict(set)
            for m in members:
                touched[m.tenant].add(m.cluster_id)
            for tenant, ids in touched.items():
                t = self.hot.tenant(tenant)
                refitted = t is not None and before.get(tenant) != t.clusters.version
                # a mini-batch moves only the centroids it touched; a refit moves them all
                self._emit_centroids(tenant, None if refitted else ids)
        return members

    def _index_steps(self, e: LakeEntry) -> None:
        if not e.success:
            return
        seq = e.tool_sequence
        for i in range(len(seq) + 1):
            self._steps[(e.tenant, e.toolset, seq[:i])].append(
                (e.entry_id, seq[i] if i < len(seq) else "<end>")
            )

    def _emit_centroids(self, tenant: str, clusters: set[int] | None = None) -> None:
        t = self.hot.tenant(tenant)
        if t is None:
            return
        c = t.clusters
        for cid in sorted(clusters) if clusters is not None else range(c.k):
            if not 0 <= cid < c.k:
                continue
            self._emit(
                "ClusterCentroid",
                f"{tenant}/{cid}",
                {
                    "tenant": tenant,
                    "cluster_id": cid,
                    "version": c.version,
                    "size": int(c.sizes[cid]) if cid < len(c.sizes) else 0,
                    "centroid": [float(x) for x in c.centroids[cid]],
                    "threshold": self._stats(tenant, c.version, cid).threshold,
                },
            )

    def remove(self, tenant: str, entry_ids: list[str]) -> int:
        t = self.hot.tenant(tenant)
        return t.remove(entry_ids) if t else 0

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        toolset: str | None = None,
        document: str | None = None,
        tool: str | None = None,
    ) -> dict[str, list[str]]:
        """Drop the entries that depend on a changed tool set (fingerprint), a changed or
        deleted document, or a tool whose schema changed; returns the dropped entry ids per tenant."""
        dropped: dict[str, list[str]] = {}
        for name, t in self.hot.tenants.items():
            if tenant is not None and name != tenant:
                continue
            ids = [
                e.entry_id
                for e in t.entries.values()
                if (toolset is not None and e.toolset == toolset)
                or (document is not None and document in e.documents)
                or (tool is not None and tool in e.tool_sequence)
            ]
            if ids:
                t.remove(ids)
                dropped[name] = ids
        return dropped

    def expire(self) -> int:
        """Remove expired entries (lookups never serve them anyway); returns how many."""
        now = self.clock()
        n = 0
        for t in self.hot.tenants.values():
            n += t.remove([e.entry_id for e in t.entries.values() if e.expires_us and e.expires_us <= now])
        return n

    # -- lookup ------------------------------------------------------------------
    def query_vector(self, task: str) -> np.ndarray:
        """The embedding of a query's task (shape ``(dim,)``, read-only), remembered for the last
        ``QUERY_CACHE_SIZE`` distinct texts of at most ``QUERY_CACHE_MAX_CHARS`` characters:
        an agent asks the same task on every step, and embedders are deterministic. Replacing
        :attr:`embedder` forgets them."""
        v = self._remembered(task)
        if v is not None:
            return v
        return self._remember(task, self.embedder.embed([task])[0])

    def _remembered(self, task: str) -> np.ndarray | None:
        if self.embedder is not self._vectors_of:
            self._vectors.clear()
            self._vectors_of = self.embedder
        v = self._vectors.get(task)
        if v is not None:
            self._vectors.move_to_end(task)
        return v

    def _remember(self, task: str, vector: np.ndarray) -> np.ndarray:
        v = np.array(vector, dtype=np.float32)
        v.setflags(write=False)
        if len(task) <= QUERY_CACHE_MAX_CHARS:
            self._vectors[task] = v
            if len(self._vectors) > QUERY_CACHE_SIZE:
                self._vectors.popitem(last=False)
        return v

    def _stats(self, tenant: str, version: int, cluster_id: int) -> ClusterStats:
        key = (tenant, version, cluster_id)
        s = self.clusters.get(key)
        if s is None:
            s = self.clusters[key] = ClusterStats(self.policy.base_threshold)
        return s

    def threshold(self, tenant: str, cluster_id: int) -> float:
        t = self.hot.tenant(tenant)
        return self._stats(tenant, t.clusters.version if t else 0, cluster_id).threshold

    def _scope_refusal(self, e: LakeEntry, req: LookupRequest, now: int) -> str | None:
        if e.toolset != req.toolset:
            return "other_toolset"
        if e.user_scoped and e.user_id != req.user_id:
            return "other_user"
        cv = self.policy.cross_version
        if cv != "any" and req.agent_id is not None and e.agent_id != req.agent_id:
            return "other_agent"
        if cv == "same-version" and req.agent_version is not None and e.agent_version != req.agent_version:
            return "other_agent_version"
        if e.expires_us and e.expires_us <= now:
            return "expired"
        if (e.tenant, e.entry_id) in self.demoted:
            return "demoted"
        if not e.cacheable:
            return "not_cacheable"
        if e.access and not may_read(e.access, req.principal):
            return "no_access"  # a document it used is not readable by this principal
        return None

    def lookup(self, req: LookupRequest, vector: np.ndarray | None = None) -> LookupResult:
        """Cache lookup for `req` (see the module docstring for the rule); `vector` is the task's
        embedding when the caller has it. (Its own short path: as `lookup_many` of one request
        it cost ≈ 40 µs more CPU per lookup, 300 → 340 µs at 100k entries in bench/lake.py.)"""
        t0 = time.perf_counter()
        part = self.hot.tenant(req.tenant)
        found = None
        if part is not None and len(part):
            v = self.query_vector(req.task) if vector is None else vector
            sims, ids = part.search_batch(v.reshape(1, -1), self.policy.candidates, self.policy.nprobe)
            found = (sims[0], ids[0])
        return self._decide(req, part, found, t0)

    def lookup_many(
        self, reqs: Sequence[LookupRequest], vectors: Sequence[np.ndarray | None] | None = None
    ) -> list[LookupResult]:
        """:meth:`lookup` for each request, answered together: the tasks not remembered are
        embedded in one embedder call, each tenant's index is searched once for all its
        requests, then each request's candidates are checked in order. Every result (hit,
        reason, candidates, lookup id, event) is the one `lookup` gives for the same requests
        in the same order when the embedder embeds a text alike alone and in a batch (wordllama
        does; a transformer's padding may move the last bits); `latency_us` counts from the
        start of the batch. `vectors`, when given, holds each request's task embedding or None."""
        t0 = time.perf_counter()
        parts: list[TenantIndex | None] = []
        vecs: list[np.ndarray | None] = []
        for i, req in enumerate(reqs):
            part = self.hot.tenant(req.tenant)
            parts.append(part if part is not None and len(part) else None)
            v = vectors[i] if vectors is not None else None
            vecs.append(v if v is not None or parts[-1] is None else self._remembered(req.task))
        todo = list(
            dict.fromkeys(
                r.task for r, v, p in zip(reqs, vecs, parts, strict=True) if v is None and p is not None
            )
        )
        if todo:
            new = {t: self._remember(t, v) for t, v in zip(todo, self.embedder.embed(todo), strict=True)}
            vecs = [
                new[r.task] if v is None and p is not None else v
                for r, v, p in zip(reqs, vecs, parts, strict=True)
            ]
        rows: dict[int, list[int]] = {}  # partition -> its requests
        for i, p in enumerate(parts):
            if p is not None:
                rows.setdefault(id(p), []).append(i)
        found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(reqs)
        for idx in rows.values():
            part = parts[idx[0]]
            assert part is not None
            q = np.stack([vecs[i] for i in idx])  # type: ignore[misc]
            sims, ids = part.search_batch(q, self.policy.candidates, self.policy.nprobe)
            for j, i in enumerate(idx):
                found[i] = (sims[j], ids[j])
        return [self._decide(req, part, hits, t0) for req, part, hits in zip(reqs, parts, found, strict=True)]

    def _decide(
        self,
        req: LookupRequest,
        part: TenantIndex | None,
        found: tuple[np.ndarray, np.ndarray] | None,
        t0: float,
    ) -> LookupResult:
        """The hit rule over the searched candidates `found` (cosines, internal ids) of `req`."""
        now = self.clock()
        sig = query_signature(req.task)
        self._seq += 1
        lookup_id = f"{now:x}-{self._seq:x}"
        cands: list[Candidate] = []
        best: tuple[LakeEntry, float, int, int] | None = None
        reason = "empty_tenant"
        if part is not None and found is not None:
            version = part.clusters.version
            reason = "no_candidates"
            min_reward = self.policy.min_reward
            top: float | None = None  # cosine of the most similar entry that passes every rule
            for e, sim, cid in part.hits(*found):
                if top is not None and sim < top - TIE_EPSILON:
                    break  # candidates come most similar first: no further tie
                thr = self._stats(req.tenant, version, cid).threshold
                if sim < thr and len(cands) >= PROVENANCE:
                    continue  # cannot be the hit and is past the provenance: the other rules can wait
                verdict = self._scope_refusal(e, req, now)
                detail = ""
                if verdict is None:
                    if not e.success:
                        verdict = "failed_trajectory"
                    elif e.reward < min_reward:
                        verdict = "low_reward"
                    elif sim < thr:
                        verdict = "below_threshold"
                    elif not signatures_agree(sig, e.signature):
                        verdict = "signature_mismatch"
                        if len(cands) < PROVENANCE:
                            detail = signature_difference(sig, e.signature)
                    else:
                        verdict = "hit"
                if len(cands) < PROVENANCE:
                    cands.append(
                        Candidate(
                            e.entry_id,
                            sim,
                            e.reward,
                            e.success,
                            f"{e.agent_id}@{e.agent_version}",
                            cid,
                            thr,
                            e.signature.describe(),
                            verdict,
                            detail,
                        )
                    )
                if verdict == "hit":
                    top = sim if top is None else top
                    if best is None or _tie_key(e) < _tie_key(best[0]):
                        best = (e, sim, cid, version)
            if best is not None:  # the ties that lost stay in the provenance, marked
                chosen = best[0].entry_id
                cands = [
                    replace(c, verdict="outranked") if c.verdict == "hit" and c.entry_id != chosen else c
                    for c in cands
                ]
            if best is None and cands:
                reason = Counter(c.verdict for c in cands).most_common(1)[0][0]
        latency = (time.perf_counter() - t0) * 1e6
        entry = best[0] if best else None
        if best is not None:
            e, sim, cid, version = best
            self._stats(req.tenant, version, cid).hits += 1
            self._lookups[lookup_id] = (req.tenant, e.entry_id, version, cid)
            while len(self._lookups) > 100_000:
                self._lookups.popitem(last=False)
            reason = "hit"
        res = LookupResult(
            lookup_id,
            best is not None,
            req.tenant,
            req.task,
            sig.describe(),
            entry,
            best[1] if best else (cands[0].similarity if cands else 0.0),
            reason,
            cands,
            latency,
        )
        if self.record_events:
            self._emit(
                "LakeLookup",
                lookup_id,
                {
                    "lookup_id": lookup_id,
                    "tenant": req.tenant,
                    "task": req.task[:2000],
                    "hit": res.hit,
                    "reason": reason,
                    "entry_id": entry.entry_id if entry else None,
                    "similarity": float(res.similarity),
                    "cluster_id": best[2] if best else None,
                    "latency_us": float(latency),
                    "ts_us": now,
                },
            )
        return res

    def report_outcome(self, lookup_id: str, success: bool) -> dict[str, Any]:
        """Record what happened when a hit was reused. A failure is a *wrong hit*: the entry is
        demoted and its cluster's threshold tightens. Raises KeyError for an unknown lookup."""
        tenant, entry_id, version, cid = self._lookups[lookup_id]
        s = self._apply_outcome(tenant, entry_id, version, cid, success)
        out = {
            "lookup_id": lookup_id,
            "tenant": tenant,
            "entry_id": entry_id,
            "cluster_id": cid,
            "success": success,
            "wrong_hit": not success,
            "threshold": s.threshold,
            "ts_us": self.clock(),
        }
        if self.record_events:
            self._emit("LakeOutcome", lookup_id, out)
        return out

    def replay(self, record: str, d: dict[str, Any]) -> bool:
        """Re-apply one recorded ``lake.cache`` event after a restart (nothing is emitted).

        A ``LakeLookup`` hit makes its lookup id reportable again (`report_outcome`); a
        ``LakeOutcome`` re-applies its demotion and its threshold step. Clusterings are refit
        when the hot tier is rebuilt, so cluster ids from before a restart are not reused:
        both are mapped to the cluster the entry belongs to *now*. Replaying the log in order
        therefore reproduces every demotion, and each cluster's threshold as the same
        sequence of steps over the entries it now holds.

        Args:
            record: the record name (``LakeLookup``, ``LakeOutcome``; others are ignored).
            d: the decoded record (the dicts `lookup` and `report_outcome` emit).

        Returns:
            whether it changed anything (False for an entry no longer in the lake).
        """
        if record not in ("LakeLookup", "LakeOutcome") or not d.get("entry_id"):
            return False
        tenant, entry_id = d["tenant"], d["entry_id"]
        t = self.hot.tenant(tenant)
        i = t.ids.get(entry_id) if t is not None else None
        if t is None or i is None:
            return False
        version, cid = t.clusters.version, t.cluster_of.get(i, -1)
        if record == "LakeLookup":
            if not d.get("hit"):
                return False
            self._lookups[d["lookup_id"]] = (tenant, entry_id, version, cid)
            while len(self._lookups) > 100_000:
                self._lookups.popitem(last=False)
            return True
        self._apply_outcome(tenant, entry_id, version, cid, bool(d["success"]))
        return True

    def _apply_outcome(
        self, tenant: str, entry_id: str, version: int, cid: int, success: bool
    ) -> ClusterStats:
        s = self._stats(tenant, version, cid)
        if success:
            s.confirmed += 1
            s.threshold = max(self.policy.base_threshold, s.threshold - self.policy.relax_step)
        else:
            s.wrong_hits += 1
            s.threshold = min(self.policy.max_threshold, s.threshold + self.policy.tighten_step)
            self.demoted.add((tenant, entry_id))
        return s

    # -- retrieval, fusing, next step ----------------------------------------------
    def search(
        self,
        tenant: str,
        task: str,
        k: int = 5,
        *,
        toolset: str | None = None,
        principal: frozenset[str] = frozenset(),
    ) -> list[dict[str, Any]]:
        """The `k` most similar past trajectories of `tenant` (any outcome), with provenance."""
        part = self.hot.tenant(tenant)
        if part is None:
            return []
        v = self.query_vector(task)
        sig = query_signature(task)
        now = self.clock()
        out = []
        for e, sim, cid in part.search(v, max(k * 4, k), self.policy.nprobe):
            if (toolset is not None and e.toolset != toolset) or (e.expires_us and e.expires_us <= now):
                continue
            if e.access and not may_read(e.access, principal):
                continue
            out.append(
                {
                    "entry_id": e.entry_id,
                    "similarity": round(sim, 4),
                    "task": e.task,
                    "same_signature": signatures_agree(sig, e.signature),
                    "signature": e.signature.describe(),
                    "agent": f"{e.agent_id}@{e.agent_version}",
                    "success": e.success,
                    "reward": e.reward,
                    "components": e.components,
                    "outcome": e.outcome,
                    "tool_sequence": list(e.tool_sequence),
                    "plan": e.plan,
                    "cluster_id": cid,
                    "documents": list(e.documents),
                    "access": [list(r) for r in e.access],
                }
            )
            if len(out) >= k:
                break
        return out

    def _neighbours(self, req: LookupRequest, k: int) -> tuple[list[Neighbour], TaskSignature]:
        part = self.hot.tenant(req.tenant)
        sig = query_signature(req.task)
        if part is None:
            return [], sig
        v = self.query_vector(req.task)
        now = self.clock()
        out = []
        for e, sim, _ in part.search(v, max(k * 4, 16), self.policy.nprobe):
            refusal = self._scope_refusal(e, req, now)
            if refusal not in (None, "demoted") or sim <= 0:
                continue
            ok = e.success and refusal is None and e.reward >= self.policy.min_reward
            # a plan keeps its shape across parameters; the other intent's plan is not ours
            if e.signature.action != sig.action or e.signature.polarity != sig.polarity:
                continue
            out.append(Neighbour(e.entry_id, sim, e.reward, ok, e.tool_sequence, e.lessons, e.final_answer))
            if len(out) >= k:
                break
        return out, sig

    def suggest_plan(self, req: LookupRequest, k: int = 8) -> FusedPlan:
        """A fused plan from the `k` most similar same-intent trajectories in scope."""
        neighbours, _ = self._neighbours(req, k)
        return fuse(neighbours)

    def next_tools(self, req: LookupRequest, calls: list[str], k: int = 20) -> list[dict[str, Any]]:
        """Given the task and the tool calls so far, what successful agents called next:
        ``[{"tool", "weight", "support"}]`` (``<end>`` = they stopped), best first.
        Weight sums reward × similarity over the similar successful trajectories whose
        tool sequence starts with `calls`."""
        followers = self._steps.get((req.tenant, req.toolset, tuple(calls)), [])
        if not followers:
            return []
        neighbours, _ = self._neighbours(req, k)
        sim = {n.entry_id: (n.similarity, n.reward) for n in neighbours if n.success}
        weights: dict[str, float] = defaultdict(float)
        support: Counter[str] = Counter()
        part = self.hot.tenant(req.tenant)
        for entry_id, nxt in followers:
            if entry_id in sim and part is not None and entry_id in part.ids:
                s, r = sim[entry_id]
                weights[nxt] += s * r
                support[nxt] += 1
        total = sum(weights.values()) or 1.0
        return [
            {"tool": t, "weight": round(w / total, 4), "support": support[t]}
            for t, w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    # -- events --------------------------------------------------------------------
    def _emit(self, record: str, key: str, value: dict[str, Any]) -> None:
        self.events.append((record, key, value))

    def drain_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        out, self.events = self.events, []
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self.hot),
            "tenants": {
                name: {"entries": len(t), "clusters": t.clusters.k, "ivf": t.is_ivf}
                for name, t in sorted(self.hot.tenants.items())
            },
            "demoted": len(self.demoted),
            "wrong_hits": sum(s.wrong_hits for s in self.clusters.values()),
            "hits": sum(s.hits for s in self.clusters.values()),
            "tightened_clusters": sum(
                1 for s in self.clusters.values() if s.threshold > self.policy.base_threshold
            ),
        }


def _tie_key(e: LakeEntry) -> tuple[float, int, str]:
    """Order of passing entries within `TIE_EPSILON`: higher reward, fewer tool calls, entry id."""
    return (-e.reward, len(e.tool_sequence), e.entry_id)


def with_policy(lake: Lake, **changes: Any) -> Lake:
    """`lake` with some policy fields changed (same entries)."""
    lake.policy = replace(lake.policy, **changes)
    return lake
