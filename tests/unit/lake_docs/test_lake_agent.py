"""The reference agent that takes the lake's advice (the shop over real MCP, in memory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp import Client

from agentlake.lake.agent import Advice, Habits, LakeAdvisor, ShopAgent
from agentlake.sdk import MemoryEmitter, TracedSession, Tracer
from agentlake.sim.reference import shop_server, shop_state

NO_HABITS = Habits(skip_lookup=0.0, explore=0.0, string_ids=0.0)
ALL_HABITS = Habits(skip_lookup=1.0, explore=1.0, string_ids=1.0)


@dataclass
class FixedAdvisor:
    advice: Advice
    asked: list[tuple[str, str]] = field(default_factory=list)

    def advise(self, tenant: str, task: str) -> Advice:
        self.asked.append((tenant, task))
        return self.advice

    def report(self, advice: Advice, success: bool) -> None:
        raise AssertionError("the benchmark reports outcomes, not the agent")


async def run(
    agent: ShopAgent, task: str, status: str = "delivered", oid: int = 7
) -> tuple[str, list[str], Any]:
    state = shop_state(seed=1, ensure={oid: status})
    tracer = Tracer("novice", "1", emitter=MemoryEmitter())
    t = tracer.trajectory(task)
    async with Client(shop_server(state)) as client:
        answer = await agent.run(task, TracedSession(client, t, "shop"), t, seed=3)
    record = agent.records[t.trajectory_id]
    return answer, record.calls, state["orders"][str(oid)]["status"]


async def test_alone_without_habits_does_the_job() -> None:
    answer, calls, status = await run(ShopAgent(None, NO_HABITS), "Please refund order 7, it arrived broken.")
    assert (calls, status) == (["get_order", "refund_order"], "refunded")
    assert answer == "Order 7: refund done."


async def test_habits_cost_calls_and_success() -> None:
    _, calls, status = await run(
        ShopAgent(None, ALL_HABITS), "Cancel order 7, I changed my mind.", "processing"
    )
    # explores first, skips the lookup, sends a string id and retries it as an integer
    assert calls == ["search_orders", "cancel_order", "cancel_order"]
    assert status == "cancelled"


async def test_an_unrecognised_verb_is_fixed_by_a_fused_plan() -> None:
    task = "I want my money back for order #7."
    _, calls, status = await run(ShopAgent(None, NO_HABITS), task)
    assert (calls, status) == (["get_order"], "delivered")  # alone it only looks
    advisor = FixedAdvisor(Advice("plan", ("get_order", "refund_order", "refund_order"), support=0.9))
    _, calls, status = await run(ShopAgent(advisor, NO_HABITS, tenant="acme"), task)
    assert (calls, status) == (["get_order", "refund_order"], "refunded")  # retries in the plan are not steps
    assert advisor.asked == [("acme", task)]


async def test_lessons_say_what_not_to_do() -> None:
    lessons = (
        "avoid search_orders: only failed trajectories called it (3x)",
        "cancel_order: invalid arguments: '7' is not of type 'integer'",
    )
    agent = ShopAgent(
        FixedAdvisor(Advice(lessons=lessons)), Habits(skip_lookup=0.0, explore=1.0, string_ids=1.0)
    )
    _, calls, status = await run(agent, "Cancel order 7, I changed my mind.", "processing")
    assert (calls, status) == (["get_order", "cancel_order"], "cancelled")
    agent = ShopAgent(
        FixedAdvisor(Advice(lessons=lessons)),
        Habits(skip_lookup=0.0, explore=1.0, string_ids=1.0),
        use_lessons=False,
    )
    _, calls, _ = await run(agent, "Cancel order 7, I changed my mind.", "processing")
    assert calls == ["search_orders", "get_order", "get_order", "cancel_order", "cancel_order"]


async def test_a_plan_orders_the_calls_but_the_agent_keeps_its_action() -> None:
    refusal = Advice(
        "hit", ("get_order",), "Cannot refund order 7: it is shipped.", entry_id="e1", lookup_id="l1"
    )
    task = "Please refund order 7, it arrived broken."
    answer, calls, status = await run(ShopAgent(FixedAdvisor(refusal), NO_HABITS), task, "delivered")
    assert (calls, status, answer) == (["get_order", "refund_order"], "refunded", "Order 7: refund done.")
    answer, calls, status = await run(ShopAgent(FixedAdvisor(refusal), NO_HABITS, verbatim=True), task)
    assert (calls, status, answer) == (
        ["get_order"],
        "delivered",
        "Order 7 is delivered.",
    )  # where reuse hurts


async def test_a_read_only_hit_may_return_the_cached_answer_without_calls() -> None:
    hit = Advice("hit", ("get_order",), "Order 7 is shipped.", entry_id="e1", lookup_id="l1", similarity=0.97)
    task = "What is the status of order 7?"
    answer, calls, _ = await run(
        ShopAgent(FixedAdvisor(hit), NO_HABITS, reuse_results=True), task, "processing"
    )
    assert (answer, calls) == ("Order 7 is shipped.", [])  # stale: the order is processing now
    answer, calls, _ = await run(ShopAgent(FixedAdvisor(hit), NO_HABITS), task, "processing")
    assert (answer, calls) == ("Order 7 is processing.", ["get_order"])
    action_hit = Advice("hit", ("get_order", "refund_order"), "Order 7: refund done.", lookup_id="l2")
    _, calls, _ = await run(
        ShopAgent(FixedAdvisor(action_hit), NO_HABITS, reuse_results=True), "Refund order 7"
    )
    assert calls == ["get_order", "refund_order"]  # an action is never answered from cache


@dataclass
class _Req:
    tenant: str
    task: str
    toolset: str = ""
    agent_id: str | None = None
    agent_version: str | None = None


@dataclass
class _Entry:
    entry_id: str
    tool_sequence: tuple[str, ...]
    final_answer: str


@dataclass
class _Lookup:
    hit: bool
    entry: _Entry | None
    lookup_id: str
    similarity: float


@dataclass
class _Plan:
    tool_sequence: list[str]
    support: float
    lessons: list[str]
    sources: list[dict[str, Any]]


class FakeLake:
    def __init__(self, hit: bool, support: float) -> None:
        self.hit, self.support = hit, support
        self.outcomes: list[tuple[str, bool]] = []
        self.requests: list[_Req] = []

    def lookup(self, req: _Req) -> _Lookup:
        self.requests.append(req)
        entry = _Entry("e1", ("get_order",), "Order 7 is shipped.") if self.hit else None
        return _Lookup(self.hit, entry, "L1", 0.93)

    def suggest_plan(self, req: _Req, k: int = 8) -> _Plan:
        return _Plan(
            ["get_order", "refund_order"], self.support, ["avoid search_orders: x"], [{"similarity": 0.8}]
        )

    def report_outcome(self, lookup_id: str, success: bool) -> dict[str, Any]:
        self.outcomes.append((lookup_id, success))
        return {}


def test_lake_advisor_maps_hits_plans_and_misses() -> None:
    lake = FakeLake(hit=True, support=1.0)
    adv = LakeAdvisor(lake, agent_id="novice", agent_version="1", request=_Req)
    a = adv.advise("acme", "status of order 7")
    assert (a.kind, a.tool_sequence, a.cached_answer, a.lookup_id, a.entry_id) == (
        "hit",
        ("get_order",),
        "Order 7 is shipped.",
        "L1",
        "e1",
    )
    assert a.avoid() == {"search_orders"}
    assert lake.requests[0] == _Req("acme", "status of order 7", "", "novice", "1")
    adv.report(a, False)
    assert lake.outcomes == [("L1", False)]
    plan = LakeAdvisor(FakeLake(hit=False, support=0.6), request=_Req).advise("acme", "refund 7")
    assert (plan.kind, plan.tool_sequence, plan.support, plan.similarity) == (
        "plan",
        ("get_order", "refund_order"),
        0.6,
        0.8,
    )
    weak = LakeAdvisor(FakeLake(hit=False, support=0.3), request=_Req)
    none = weak.advise("acme", "refund 7")
    assert (none.kind, none.tool_sequence, none.lessons) == ("none", (), ("avoid search_orders: x",))
    weak.report(none, False)  # only hits are reported
    assert weak.lake.outcomes == []
