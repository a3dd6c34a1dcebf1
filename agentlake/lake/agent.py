"""A reference agent that takes the context lake's suggestions, to measure what the lake is worth.

`ShopAgent` does the demo shop's tasks (`agentlake.sim.reference`) the way a
weak tool-calling agent does: it reads the tool list, picks the action by the
verbs in the task, and has seeded habits that cost it success — it sometimes
acts before looking the order up, explores with a search first, or sends the
order id as a string. Those habits are drawn from the trial's seed in a fixed
order, so a run with the lake and a run without it make the same draws and
differ only by the advice.

Given an `Advisor`, before acting it asks for advice:

- a **hit** (a successful past trajectory with the same signature): it follows
  the cached plan (the tool sequence, with its own arguments); with
  ``reuse_results`` and a read-only cached plan it returns the cached answer
  without calling any tool — the cheapest reuse, and the one that goes wrong
  when the world changed since;
- a **fused plan** (consensus of similar successful trajectories): it follows it;
- **lessons** from failed trajectories ("what not to do"): it never calls a
  tool the lessons say only failures called, and an ``is not of type
  'integer'`` lesson makes it send integer ids.

After the trial, `Advisor.report` tells the lake whether a reused hit worked
(a failure is a wrong hit: the lake demotes the entry and tightens its cluster).
"""

from __future__ import annotations

import importlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentlake.sdk import Trajectory
from agentlake.sim.agents import list_tool_specs

AdviceKind = Literal["hit", "plan", "none"]
READ_ONLY_TOOLS = frozenset({"get_order", "search_orders"})
_ORDER = re.compile(r"order\s*#?\s*(\d+)", re.I)
_NUMBER = re.compile(r"#?\b(\d+)\b")
_AVOID = re.compile(r"^avoid (\S+):")
_REQUIRES = {"refund_order": "delivered", "cancel_order": "processing"}
_VERB_OF = {"refund_order": "refund", "cancel_order": "cancel"}


@dataclass(frozen=True)
class Advice:
    """What the lake suggests for one task.

    Attributes:
        kind: ``hit`` (a cached plan), ``plan`` (a fused plan) or ``none``.
        tool_sequence: the tools to call, in order (empty for ``none``).
        cached_answer: the cached final answer, when the agent may return it as is.
        lessons: "what not to do", from similar failed trajectories.
        lookup_id: the lookup to report the outcome of (hits only).
        entry_id: the cached entry (hits only).
        similarity: cosine of the task with the cached entry, or the best neighbour.
        support: share of the neighbours' weight behind a fused plan, in [0, 1].
    """

    kind: AdviceKind = "none"
    tool_sequence: tuple[str, ...] = ()
    cached_answer: str | None = None
    lessons: tuple[str, ...] = ()
    lookup_id: str | None = None
    entry_id: str | None = None
    similarity: float = 0.0
    support: float = 0.0

    def avoid(self) -> frozenset[str]:
        """Tools the lessons say only failed trajectories called."""
        return frozenset(m.group(1) for line in self.lessons if (m := _AVOID.match(line)))

    def wants_integer_ids(self) -> bool:
        return any("is not of type 'integer'" in line for line in self.lessons)


class Advisor(Protocol):
    """Where the agent's advice comes from (the lake, through `LakeAdvisor`)."""

    def advise(self, tenant: str, task: str) -> Advice: ...

    def report(self, advice: Advice, success: bool) -> None: ...


@dataclass(frozen=True)
class Habits:
    """Per-trial probabilities of the novice's costly habits (each drawn once per trial)."""

    skip_lookup: float = 0.3  # acts without looking the order up first
    explore: float = 0.3  # lists orders before anything else
    string_ids: float = 0.2  # sends the order id as a JSON string


@dataclass
class AgentRecord:
    """What the agent did in one trial (for the benchmark's accounting)."""

    advice: Advice
    used: Literal["cached_answer", "cached_plan", "fused_plan", "own"]
    calls: list[str] = field(default_factory=list)


class ShopAgent:
    """The demo shop's reference agent, with or without the lake's advice.

    Args:
        advisor: where advice comes from; None runs the agent alone.
        habits: the novice's habits.
        tenant: tenant of the lookups.
        reuse_results: on a hit whose cached plan is read-only, return the cached answer.
        use_lessons: follow "what not to do" lessons.
        verbatim: follow an advised plan exactly; by default the advice orders the calls
            (and supplies the action when the agent does not recognise one), but an action
            the agent read in the task is kept, and an advised action it did not read is dropped.
    """

    def __init__(
        self,
        advisor: Advisor | None = None,
        habits: Habits | None = None,
        *,
        tenant: str = "sim",
        reuse_results: bool = False,
        use_lessons: bool = True,
        verbatim: bool = False,
    ) -> None:
        self.advisor = advisor
        self.verbatim = verbatim
        self.habits = habits or Habits()
        self.tenant = tenant
        self.reuse_results = reuse_results
        self.use_lessons = use_lessons
        self.records: dict[str, AgentRecord] = {}

    def for_trial(self, seed: int) -> Any:
        """The agent callable for one trial (``(task, tools, trajectory, user=None)``)."""

        async def run(task: str, tools: Any, trajectory: Trajectory, user: Any = None) -> str:
            return await self.run(task, tools, trajectory, user, seed=seed)

        return run

    async def run(
        self, task: str, tools: Any, trajectory: Trajectory, user: Any = None, *, seed: int = 0
    ) -> str:
        """Do `task` with the shop's MCP `tools`; records into `trajectory` and ends it."""
        rng = random.Random(seed)
        skip_lookup = rng.random() < self.habits.skip_lookup
        explore = rng.random() < self.habits.explore
        string_ids = rng.random() < self.habits.string_ids
        specs = await list_tool_specs(tools)
        names = [s["name"] for s in specs]
        action = _action_tool(task, names)
        oid = await _order_id(task, trajectory, user)

        advice = self.advisor.advise(self.tenant, task) if self.advisor is not None else Advice()
        lessons = advice.lessons if self.use_lessons else ()
        avoid = Advice(lessons=lessons).avoid()
        if Advice(lessons=lessons).wants_integer_ids():
            string_ids = False
        record = AgentRecord(advice, "own")
        self.records[trajectory.trajectory_id] = record

        if oid is None:
            trajectory.step("final", "I need an order number.")
            trajectory.end("failure", final_answer="missing order number")
            return "missing order number"
        if (
            advice.kind == "hit"
            and self.reuse_results
            and advice.cached_answer
            and set(advice.tool_sequence) <= READ_ONLY_TOOLS
        ):
            record.used = "cached_answer"
            trajectory.step(
                "plan", f"cached answer of {advice.entry_id} (similarity {advice.similarity:.2f})"
            )
            trajectory.step("final", advice.cached_answer)
            trajectory.end("success", final_answer=advice.cached_answer)
            return advice.cached_answer
        if advice.kind in ("hit", "plan") and advice.tool_sequence:
            plan = _dedupe([t for t in advice.tool_sequence if t in names and t not in avoid])
            if not self.verbatim:
                # the advice orders the calls; the agent's own reading of the task keeps its action
                plan = [t for t in plan if t not in _VERB_OF or action is None or t == action]
                if action is not None and action not in plan:
                    plan.append(action)
            record.used = "cached_plan" if advice.kind == "hit" else "fused_plan"
        else:
            plan = []
            if explore and "search_orders" in names and "search_orders" not in avoid:
                plan.append("search_orders")
            if not (skip_lookup and action is not None) and "get_order" in names:
                plan.append("get_order")
            if action is not None:
                plan.append(action)
        trajectory.step("plan", f"{record.used}: {' -> '.join(plan) or '(nothing)'}")
        return await _execute(plan, oid, string_ids, tools, trajectory, record)


def _dedupe(plan: list[str]) -> list[str]:
    """A plan without repeats: a past trajectory's retries and double look-ups are not steps."""
    return list(dict.fromkeys(plan))


def _action_tool(task: str, names: list[str]) -> str | None:
    """The tool whose verb (``refund`` of ``refund_order``) appears in the task, if any."""
    words = set(re.findall(r"[a-z]+", task.lower()))
    for name in names:
        verb = name.split("_")[0]
        if verb not in ("get", "search", "list") and verb in words:
            return name
    return None


async def _order_id(task: str, trajectory: Trajectory, user: Any) -> int | None:
    m = _ORDER.search(task)
    if m:
        return int(m.group(1))
    if user is None:
        return None
    question = "Which order number is it?"
    trajectory.step("message", question)
    reply = await user.reply(question)
    if not reply:
        return None
    trajectory.step("user", reply)
    m = _ORDER.search(reply) or _NUMBER.search(reply)
    return int(m.group(1)) if m else None


async def _execute(
    plan: list[str], oid: int, string_ids: bool, tools: Any, trajectory: Trajectory, record: AgentRecord
) -> str:
    status: str | None = None
    done: str | None = None
    succeeded: set[tuple[str, str]] = set()
    for tool in plan:
        args: dict[str, Any] = {"customer": "me"} if tool == "search_orders" else {"order_id": oid}
        if string_ids and "order_id" in args:
            args["order_id"] = str(oid)
        required = _REQUIRES.get(tool)
        if required is not None and status is not None and status != required:
            answer = f"Cannot {_VERB_OF[tool]} order {oid}: it is {status}."
            trajectory.step("final", answer)
            trajectory.end("failure", final_answer=answer)
            return answer
        if (tool, json.dumps(args, sort_keys=True)) in succeeded:
            continue  # done already: an action is never repeated
        res = await tools.call_tool(tool, args)
        record.calls.append(tool)
        if res.is_error and "order_id" in args and isinstance(args["order_id"], str):
            res = await tools.call_tool(tool, {**args, "order_id": oid})  # retry with the right type
            record.calls.append(tool)
        if res.is_error:
            text = _text(res)
            if tool in _VERB_OF:
                answer = f"Cannot {_VERB_OF[tool]} order {oid}: {text}"
                trajectory.step("final", answer)
                trajectory.end("failure", final_answer=answer)
                return answer
            continue
        succeeded.add((tool, json.dumps(args, sort_keys=True)))
        if tool == "get_order":
            status = (res.structured_content or {}).get("status")
        elif tool in _VERB_OF:
            done = _VERB_OF[tool]
    if done is not None:
        answer = f"Order {oid}: {done} done."
    elif status is not None:
        answer = f"Order {oid} is {status}."
    else:
        answer = f"I could not find out about order {oid}."
        trajectory.step("final", answer)
        trajectory.end("failure", final_answer=answer)
        return answer
    trajectory.step("final", answer, tokens_in=120, tokens_out=20)
    trajectory.end("success", final_answer=answer)
    return answer


def _text(res: Any) -> str:
    for c in getattr(res, "content", None) or []:
        text = getattr(c, "text", None)
        if text:
            return str(text)
    return json.dumps(getattr(res, "structured_content", None))


class LakeAdvisor:
    """`Advisor` over the context lake's core (`agentlake.lake.cache.Lake`).

    Args:
        lake: a ``Lake`` (its ``lookup``, ``suggest_plan`` and ``report_outcome``).
        toolset: the tool-set fingerprint of the lookups ("" when entries carry none).
        agent_id, agent_version: who asks (the lake's cross-version policy applies).
        min_support: a fused plan followed only with at least this share of weight behind it.
        k: neighbours fused.
        request: the lookup request type (default: ``agentlake.lake.cache.LookupRequest``).
        hits: serve cache hits (False: fused plans only, to measure them alone).
    """

    def __init__(
        self,
        lake: Any,
        *,
        toolset: str = "",
        agent_id: str | None = None,
        agent_version: str | None = None,
        min_support: float = 0.5,
        k: int = 8,
        request: Any = None,
        hits: bool = True,
    ) -> None:
        self.lake = lake
        self.hits = hits
        # the lake core's request type, imported by name: this module needs nothing else of it
        self._request = request or importlib.import_module("agentlake.lake.cache").LookupRequest
        self.toolset = toolset
        self.agent_id = agent_id
        self.agent_version = agent_version
        self.min_support = min_support
        self.k = k

    def advise(self, tenant: str, task: str) -> Advice:
        req = self._request(
            tenant=tenant,
            task=task,
            toolset=self.toolset,
            agent_id=self.agent_id,
            agent_version=self.agent_version,
        )
        res = self.lake.lookup(req)
        plan = self.lake.suggest_plan(req, k=self.k)
        lessons = tuple(plan.lessons)
        if self.hits and res.hit and res.entry is not None:
            e = res.entry
            return Advice(
                "hit",
                tuple(e.tool_sequence),
                e.final_answer or None,
                lessons,
                res.lookup_id,
                e.entry_id,
                float(res.similarity),
                1.0,
            )
        if plan.tool_sequence and plan.support >= self.min_support:
            best = max((float(s["similarity"]) for s in plan.sources), default=0.0)
            return Advice(
                "plan", tuple(plan.tool_sequence), None, lessons, similarity=best, support=plan.support
            )
        return Advice(lessons=lessons)

    def report(self, advice: Advice, success: bool) -> None:
        if advice.kind == "hit" and advice.lookup_id is not None:
            self.lake.report_outcome(advice.lookup_id, success)
