"""`sim run --auth` without a broker: a denied call is on the trajectory and counted by `authorized`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from agentlake.auth.gateway import DENIED_CODE
from agentlake.auth.policy import Grant
from agentlake.auth.simhook import SimAuth
from agentlake.schemas import RewardScored, ToolCallCompleted, codec
from agentlake.sdk import MemoryEmitter, TracedSession, Tracer
from agentlake.settings import Settings
from agentlake.streams.processor import RewardProcessor
from agentlake.streams.rewards import (
    DEFAULT_SPEC,
    RewardSpec,
    TrajectorySummary,
    authorized,
    score,
)
from tests.unit.auth.helpers import shop_server

SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]


def final_reward(records: list[tuple[str, bytes, bytes]], fold_lag: int | None = None) -> RewardScored:
    proc = (
        RewardProcessor(live_scores=False)
        if fold_lag is None
        else RewardProcessor(live_scores=False, fold_lag=fold_lag)
    )
    state: Any = None
    finals = []
    for i, (topic, key, value) in enumerate(records):
        res = proc.process(state, topic, key, value, f"0:{i}")
        if res.changed:
            state = res.state
        for o in res.outputs:
            if o.topic == "rewards.scored":
                ev = codec().decode(o.value)
                assert isinstance(ev, RewardScored)
                if ev.is_final:
                    finals.append(ev)
    [final] = finals
    return final


async def test_a_denied_call_is_recorded_as_unauthorized_and_scored_by_authorized() -> None:
    hook = SimAuth("support-bot", (Grant("shop", "get_order"),))
    em = MemoryEmitter()
    tracer = Tracer("support-bot", "1.0", emitter=em, settings=SETTINGS)
    trial = SimpleNamespace(trial_id="trial-1", server="shop", budgets=SimpleNamespace(timeout_s=30))
    async with (
        Client(shop_server()) as upstream,
        tracer.trajectory("look up 7", attributes=hook.attributes) as t,
    ):
        shop = TracedSession(hook.wrap(trial, upstream), t, "shop")
        ok = await shop.call_tool("get_order", {"order_id": 7})
        denied = await shop.call_tool("refund_order", {"order_id": 7})
        t.end("success")
    assert not ok.is_error and denied.is_error
    done = [codec().decode(v) for _, _, v in em.records if codec().decode(v).record == "ToolCallCompleted"]
    assert [(d.tool, d.is_error, d.error_kind) for d in done if isinstance(d, ToolCallCompleted)] == [
        ("get_order", False, None),
        ("refund_order", True, "unauthorized"),
    ]
    final = final_reward(em.records)
    assert final.components["authorized"] == 0.5
    assert final.metrics["unauthorized_calls"] == 1.0
    assert "unauthorized:refund_order" in final.flags
    assert final.components["tool_reliability"] == 0.5
    # the denial survives the worker folding the trajectory's settled prefix at once
    assert final_reward(em.records, fold_lag=0) == final


async def test_a_trajectory_through_the_gateway_with_no_denial_scores_authorized_1() -> None:
    hook = SimAuth("support-bot", (Grant("shop", "get_order"),))
    em = MemoryEmitter()
    tracer = Tracer("support-bot", "1.0", emitter=em, settings=SETTINGS)
    trial = SimpleNamespace(trial_id="trial-2", server="shop", budgets=SimpleNamespace(timeout_s=30))
    async with (
        Client(shop_server()) as upstream,
        tracer.trajectory("look up 7", attributes=hook.attributes) as t,
    ):
        await TracedSession(hook.wrap(trial, upstream), t, "shop").call_tool("get_order", {"order_id": 7})
        t.end("success")
    final = final_reward(em.records)
    assert final.components["authorized"] == 1.0 and final.metrics["unauthorized_calls"] == 0.0
    assert not any(f.startswith("unauthorized:") for f in final.flags)


async def test_without_a_gateway_authorized_does_not_apply_and_the_score_is_unchanged() -> None:
    em = MemoryEmitter()
    tracer = Tracer("support-bot", "1.0", emitter=em, settings=SETTINGS)
    async with Client(shop_server()) as upstream, tracer.trajectory("look up 7") as t:
        await TracedSession(upstream, t, "shop").call_tool("get_order", {"order_id": 7})
        t.end("success")
    final = final_reward(em.records)
    assert "authorized" not in final.components and "unauthorized_calls" not in final.metrics
    without = RewardSpec(id="x", components=[c for c in DEFAULT_SPEC.components if c.name != "authorized"])
    s = TrajectorySummary(outcome="success", tool_calls=1)
    assert score(s, DEFAULT_SPEC).total == score(s, without).total


def test_authorized_component() -> None:
    gw = {"auth": "gateway"}
    assert authorized(TrajectorySummary(outcome="success", tool_calls=4), {}) is None
    assert authorized(TrajectorySummary(outcome="success", tool_calls=4, attributes=gw), {}) == 1.0
    assert (
        authorized(
            TrajectorySummary(outcome="success", tool_calls=4, unauthorized_calls=1, attributes=gw), {}
        )
        == 0.75
    )
    # a denial recorded without the attribute (a production agent behind a gateway) still counts
    assert authorized(TrajectorySummary(outcome="success", tool_calls=2, unauthorized_calls=2), {}) == 0.0
    assert authorized(TrajectorySummary(outcome="success", attributes=gw), {}) == 1.0  # no calls


class _DeniedOverHttp:
    """What an MCP client raises when an HTTP gateway denies a call."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        raise MCPError(DENIED_CODE, "authorization denied (denied): …", {"error_kind": "unauthorized"})


async def test_a_gateway_denial_raised_as_an_mcp_error_is_recorded_as_unauthorized() -> None:
    em = MemoryEmitter()
    tracer = Tracer("support-bot", "1.0", emitter=em, settings=SETTINGS)
    async with tracer.trajectory("refund 7") as t:
        with pytest.raises(MCPError):
            await TracedSession(_DeniedOverHttp(), t, "shop").call_tool("refund_order", {"order_id": 7})
        t.end("failure")
    done = [e for e in (codec().decode(v) for _, _, v in em.records) if isinstance(e, ToolCallCompleted)]
    assert [(d.is_error, d.error_kind) for d in done] == [(True, "unauthorized")]
    final = final_reward(em.records)
    assert final.components["authorized"] == 0.0


async def test_the_runner_with_the_auth_hook_records_the_denial_and_the_pipeline_scores_it() -> None:
    """`sim run --auth` minus Kafka: the example suite's refund trial with a token that may only look up."""
    from pathlib import Path

    from agentlake.schemas import TrajectoryStarted
    from agentlake.sim.runner import StagingFactory, resolve_agent, run_suite
    from agentlake.sim.suite import expand, load_suite

    examples = Path(__file__).resolve().parents[3] / "agentlake" / "examples"
    trial = next(
        t for t in expand(load_suite(examples / "suite.yaml"), 1) if t.scenario_id == "refund-delivered"
    )
    decisions = MemoryEmitter()
    hook = SimAuth(
        "support-bot", (Grant("shop", "get_order"), Grant("shop", "get_order", "write")), emitter=decisions
    )
    em = MemoryEmitter()
    tracer = Tracer("support-bot", "1.0", tenant="sim", emitter=em, settings=SETTINGS)
    out = await run_suite(
        [trial],
        resolve_agent("support-bot@1.0"),
        tracer,
        staging=StagingFactory.default(),
        wrap_client=hook.wrap,
        attributes=hook.attributes,
    )
    [res] = out.results
    assert not res.verdict.success  # the refund never reached staging
    assert hook.summary() == {"decisions": 2, "denied": 1, "denied_tools": {"refund_order": 1}}
    evs = [codec().decode(v) for _, _, v in em.records]
    start = evs[0]
    assert isinstance(start, TrajectoryStarted) and start.attributes["auth"] == "gateway"
    # each decision names the trial (its task) and the trajectory it was made in
    recorded = [codec().decode_dict(v) for _, _, v in decisions.records]
    auth = [body for record, body in recorded if record == "AuthDecision"]
    assert [(d["tool"], d["allowed"]) for d in auth] == [("get_order", True), ("refund_order", False)]
    assert {(d["task_id"], d["trajectory_id"]) for d in auth} == {(trial.trial_id, start.trajectory_id)}
    done = [e for e in evs if isinstance(e, ToolCallCompleted)]
    assert [(d.tool, d.error_kind) for d in done] == [("get_order", None), ("refund_order", "unauthorized")]
    final = final_reward(em.records)
    assert final.components["authorized"] == 0.5 and final.flags == ["unauthorized:refund_order"]
