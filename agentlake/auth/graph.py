"""The delegation graph, pure: who could call a tool at a given time, and what a token
delegated. No I/O.

Input rows are shaped like the ClickHouse tables of `agentlake.projections.auth`
(``auth_blocks``, granted ``auth_approvals``, ``auth_revocations``), so the
adapter passes query results straight in and the tests pass dicts.

A token is a chain: an issued block, then attenuation blocks and approval
blocks (an approval is a third-party block appended to the token that asked for
it, and can be attenuated further). `who_could` answers, for every chain known
at time ``at``, whether its holder could have called ``tool`` on ``server``
then, modelling every check a minted or attenuated token carries:

- rights, narrowed along the chain (tools, operations, servers);
- expiry: the earliest along the chain, approval blocks included;
- revocation: of any block of the chain, by ``at``;
- task binding: two different tasks in one chain can never both hold;
- delegation depth: a block deeper than the root's ``max_depth`` is unusable;
- resource patterns: every block's globs must admit the resource (when one is
  given; otherwise the patterns are reported);
- approvals: a tool in the root's ``approval_tools`` needs a granted approval
  for it (and the chain's task) in the chain, unexpired at ``at``;
- budgets: a task-bound chain whose task had used up the root's ``budget``
  (allowed calls before ``at``, counted per task like the gateway) could not.

`derived` walks the same graph down from one token: attenuated blocks and
approved tokens, with the calls made with each.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Row = Mapping[str, Any]

# attenuation_block's audience check, as the block's source prints it (names cannot hold quotes)
_SERVER_CHECK = re.compile(r'^check if server\(\$s\), (\$s == "[^"]*"(?: \|\| \$s == "[^"]*")*);$', re.M)


def utc(t: datetime | None) -> datetime | None:
    """ClickHouse returns naive datetimes (UTC): make them comparable with aware ones."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@dataclass
class Chain:
    """What a token ending at one block may do: the narrowing of every block up to the root."""

    rid: str
    kind: str  # issued | attenuated | approved
    holder: str | None
    user: str | None
    depth: int
    ancestors: list[str]  # this block first, the root last
    rights: set[tuple[str, str, str]]
    servers: set[str]
    expires: datetime | None
    tasks: set[str]
    resources: list[list[str]]  # one list of globs per block that narrows resources
    max_depth: int | None
    budget: int | None
    approval_tools: set[str]
    root_task: str | None = None  # the root's binding decides how its approval checks read the task
    approvals: list[Row] = field(default_factory=list)  # granted approvals in the chain

    @property
    def task(self) -> str | None:
        return next(iter(self.tasks)) if len(self.tasks) == 1 else None


def _servers_of(block_source: str | None) -> set[str] | None:
    """Servers an attenuation block narrows the audience to (None: not narrowed)."""
    m = _SERVER_CHECK.search(block_source or "")
    return None if m is None else set(re.findall(r'"([^"]*)"', m.group(1)))


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _root(b: Row) -> Chain:
    rights = {(r[0], r[1], r[2]) for r in json.loads(b.get("rights_json") or "[]")}
    return Chain(
        rid=b["revocation_id"],
        kind="issued",
        holder=b.get("agent_id"),
        user=b.get("user_id"),
        depth=0,
        ancestors=[b["revocation_id"]],
        rights=rights,
        servers=set(b.get("servers") or []) or {r[0] for r in rights},
        expires=utc(b.get("expires_at")),
        tasks={b["task_id"]} if b.get("task_id") else set(),
        resources=[list(b["resources"])] if b.get("resources") else [],
        max_depth=b.get("max_depth"),
        budget=b.get("budget"),
        approval_tools=set(b.get("approval_tools") or []),
        root_task=b.get("task_id") or None,
    )


def _attenuated(b: Row, parent: Chain) -> Chain:
    rights = set(parent.rights)
    if b.get("tools_json"):
        allowed = {(a[0], a[1]) for a in json.loads(b["tools_json"])}
        rights = {(s, t, op) for (s, t) in allowed for (ps, pt, op) in rights if ps == s and pt in (t, "*")}
    if b.get("operations"):
        ops = set(str(b["operations"]).split(","))
        rights = {r for r in rights if r[2] in ops}
    narrowed = _servers_of(b.get("block_source"))
    servers = parent.servers if narrowed is None else parent.servers & narrowed
    return Chain(
        rid=b["revocation_id"],
        kind="attenuated",
        holder=b.get("agent_id") or parent.holder,
        user=parent.user,
        depth=int(b.get("depth") or parent.depth + 1),
        ancestors=[b["revocation_id"], *parent.ancestors],
        rights={r for r in rights if r[0] in servers},
        servers=servers,
        expires=_earliest(parent.expires, utc(b.get("expires_at"))),
        tasks=parent.tasks | ({b["task_id"]} if b.get("task_id") else set()),
        resources=parent.resources + ([list(b["resources"])] if b.get("resources") else []),
        max_depth=parent.max_depth,
        budget=parent.budget,
        approval_tools=parent.approval_tools,
        root_task=parent.root_task,
        approvals=parent.approvals,
    )


def _approved(a: Row, parent: Chain) -> Chain:
    rid = a["approval_revocation_id"]
    return Chain(
        **{
            **parent.__dict__,
            "rid": rid,
            "kind": "approved",
            "ancestors": [rid, *parent.ancestors],
            # the approval block's own expiry check bounds the whole approved token
            "expires": _earliest(parent.expires, utc(a.get("expires_at"))),
            "approvals": [*parent.approvals, a],
        }
    )


def chains(blocks: Iterable[Row], approvals: Iterable[Row], at: datetime) -> list[Chain]:
    """Every token known at `at`: issued and attenuated blocks, and granted approvals, by then."""
    at = utc(at) or at
    by_id = {b["revocation_id"]: b for b in blocks if (utc(b["ts"]) or at) <= at}
    granted = {
        a["approval_revocation_id"]: a
        for a in approvals
        if a.get("state") == "granted" and a.get("approval_revocation_id") and (utc(a["ts"]) or at) <= at
    }
    memo: dict[str, Chain | None] = {}

    def chain(rid: str, seen: frozenset[str] = frozenset()) -> Chain | None:
        if rid in memo:
            return memo[rid]
        if rid in seen:  # a cycle cannot come from signed tokens; refuse it rather than loop
            return None
        seen = seen | {rid}
        out: Chain | None = None
        if rid in by_id:
            b = by_id[rid]
            parent_id = b.get("parent_revocation_id")
            if parent_id is None:
                out = _root(b)
            else:
                parent = chain(parent_id, seen)
                out = None if parent is None else _attenuated(b, parent)
        elif rid in granted:
            a = granted[rid]
            parent = chain(a["token_revocation_id"], seen)
            out = None if parent is None else _approved(a, parent)
        memo[rid] = out
        return out

    found = [chain(rid) for rid in [*by_id, *granted]]
    return [c for c in found if c is not None]


def _admits(patterns: list[str], resource: str) -> bool:
    return any(fnmatch.fnmatchcase(resource, p) for p in patterns)


def could_call(
    c: Chain,
    server: str,
    tool: str,
    at: datetime,
    revoked: set[str],
    calls_by_task: Mapping[str, int],
    resource: str | None = None,
) -> str | None:
    """None when chain `c` could call `tool` on `server` at `at`; else why not (one line)."""
    at = utc(at) or at
    if revoked & set(c.ancestors):
        return "revoked"
    if c.expires is not None and c.expires < at:
        return "expired"
    if len(c.tasks) > 1:
        return "bound to two different tasks"
    if c.max_depth is not None and c.depth > c.max_depth:
        return f"depth {c.depth} over the root's max_depth {c.max_depth}"
    if not any(r[0] == server and r[1] in (tool, "*") for r in c.rights):
        return "no right for this tool"
    if resource is not None and not all(_admits(p, resource) for p in c.resources):
        return f"resource {resource} outside its patterns"
    if tool in c.approval_tools:
        ok = [
            a
            for a in c.approvals
            if a["tool"] == tool
            # a task-bound root checks approved(<its task>, tool); an unbound one, any task
            and (c.root_task is None or a.get("task_id") == c.root_task)
            and (utc(a.get("expires_at")) or at) >= at
        ]
        if not ok:
            return "needs an approval it does not have"
    if c.budget is not None and c.task is not None and calls_by_task.get(c.task, 0) >= c.budget:
        return f"budget of {c.budget} calls for task {c.task} used up"
    return None


def who_could(
    blocks: Iterable[Row],
    approvals: Iterable[Row],
    revocations: Iterable[Row],
    calls_by_task: Mapping[str, int],
    server: str,
    tool: str,
    at: datetime,
    resource: str | None = None,
) -> list[dict[str, Any]]:
    """Tokens whose holder could call `tool` on `server` at `at` (UTC), one row each.

    Args:
        blocks: ``auth_blocks`` rows; approvals: ``auth_approvals`` rows (granted ones count);
            revocations: ``auth_revocations`` rows. Rows after `at` are ignored.
        calls_by_task: allowed calls per task before `at` (the gateway's budget count).
        resource: the resource of the call (``orders/42``); None: any, patterns are reported.

    Returns:
        ``{revocation_id, kind, holder, user_id, depth, task_id, operations, resources,
        expires_at, budget, calls_used, approved_by}``, sorted by depth then holder.
    """
    at = utc(at) or at
    revoked = {r["revocation_id"] for r in revocations if (utc(r["ts"]) or at) <= at}
    out = []
    for c in chains(blocks, approvals, at):
        if could_call(c, server, tool, at, revoked, calls_by_task, resource) is not None:
            continue
        approvers = [a.get("decided_by") for a in c.approvals if a["tool"] == tool]
        out.append(
            {
                "revocation_id": c.rid,
                "kind": c.kind,
                "holder": c.holder,
                "user_id": c.user,
                "depth": c.depth,
                "task_id": c.task,
                "operations": sorted({r[2] for r in c.rights if r[0] == server and r[1] in (tool, "*")}),
                "resources": c.resources,
                "expires_at": c.expires,
                "budget": c.budget,
                "calls_used": calls_by_task.get(c.task, 0) if c.task is not None else None,
                "approved_by": approvers[-1] if tool in c.approval_tools and approvers else None,
            }
        )
    return sorted(out, key=lambda r: (r["depth"], r["holder"] or "", r["kind"]))


def derived(
    blocks: Iterable[Row], approvals: Iterable[Row], calls: Iterable[Row], revocation_id: str
) -> list[dict[str, Any]]:
    """Every token derived from `revocation_id` (itself included), with the calls made with each.

    Args:
        blocks: ``auth_blocks`` rows (``revocation_id, parent_revocation_id, agent_id, depth, kind, ts``).
        approvals: ``auth_approvals`` rows; a granted one is a node too (kind ``approved``, held
            by its token's holder, ``approved_by`` its approver), so tokens attenuated from an
            approved token stay in the tree.
        calls: ``auth_decisions`` rows (``revocation_ids, allowed``); a call belongs to the deepest
            node of the tree in its chain.

    Returns:
        One row per node, ``calls_allowed`` and ``calls_denied`` added, by depth then time;
        [] when `revocation_id` is not a known block or approval.
    """
    nodes: dict[str, dict[str, Any]] = {}
    for b in blocks:
        nodes[b["revocation_id"]] = {**b, "approved_by": None}
    for a in approvals:
        rid = a.get("approval_revocation_id")
        if a.get("state", "granted") == "granted" and rid:
            nodes[rid] = {
                "revocation_id": rid,
                "parent_revocation_id": a["token_revocation_id"],
                "agent_id": None,
                "depth": None,
                "kind": "approved",
                "ts": a["ts"],
                "approved_by": a.get("decided_by"),
            }

    def inherit(n: dict[str, Any], seen: frozenset[str] = frozenset()) -> None:
        """An approval node is held by its token's holder, at its token's depth."""
        parent = nodes.get(n["parent_revocation_id"] or "")
        if n["kind"] != "approved" or parent is None or n["revocation_id"] in seen:
            n["depth"] = n["depth"] if n["depth"] is not None else 0
            return
        inherit(parent, seen | {n["revocation_id"]})
        n["agent_id"], n["depth"] = parent["agent_id"], parent["depth"]

    for n in nodes.values():
        inherit(n)
    if revocation_id not in nodes:
        return []
    children: dict[str | None, list[dict[str, Any]]] = {}
    for n in nodes.values():
        children.setdefault(n["parent_revocation_id"], []).append(n)
    out, stack, seen = [], [nodes[revocation_id]], set()
    while stack:
        n = stack.pop()
        if n["revocation_id"] in seen:
            continue
        seen.add(n["revocation_id"])
        out.append({**n, "calls_allowed": 0, "calls_denied": 0})
        stack.extend(children.get(n["revocation_id"], []))
    index = {n["revocation_id"]: n for n in out}
    for c in calls:
        owner = next((rid for rid in reversed(c["revocation_ids"]) if rid in index), None)
        if owner is not None:
            index[owner]["calls_allowed" if c["allowed"] else "calls_denied"] += 1
    return sorted(out, key=lambda r: (r["depth"], r["ts"]))
