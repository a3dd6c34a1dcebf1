"""The stream processor's fold, with no broker: order, duplicates, dead letters, policy."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentlake.schemas import PolicyViolation, RewardScored, codec
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings
from agentlake.streams.processor import AgentRules, RewardProcessor, is_complete
from agentlake.streams.rewards import ComponentSpec, RewardSpec

SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]


def record_trajectory(
    tool_calls: int = 2, outcome: str = "success", error_on: int | None = None
) -> list[tuple[str, bytes, bytes]]:
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", tenant="acme", emitter=em, settings=SETTINGS)
    with tracer.trajectory("refund order 5", expected_tool_calls=1, run_id="r1", scenario_id="s1") as t:
        t.step("plan", "look it up")
        for i in range(tool_calls):
            with t.tool_call("shop", "get_order", {"order_id": 5}) as call:
                if error_on == i:
                    call.error("boom", kind="invalid_arguments")
                else:
                    call.result({"order_id": 5, "status": "delivered"})
        t.step("final", "done", tokens_in=10, tokens_out=5)
        t.end(outcome, final_answer="done")
    return em.records


def run(
    proc: RewardProcessor, records: list[tuple[str, bytes, bytes]]
) -> tuple[dict[str, Any] | None, list[Any]]:
    state: dict[str, Any] | None = None
    outputs = []
    for i, (topic, key, value) in enumerate(records):
        res = proc.process(state, topic, key, value, f"0:{i}")
        if res.changed:
            state = res.state
        outputs.extend(res.outputs)
    return state, outputs


def finals(outputs: list[Any]) -> list[RewardScored]:
    out = []
    for o in outputs:
        if o.topic == "rewards.scored":
            ev = codec().decode(o.value)
            assert isinstance(ev, RewardScored)
            if ev.is_final:
                out.append(ev)
    return out


def test_a_trajectory_gets_exactly_one_final_reward_vector() -> None:
    recs = record_trajectory(tool_calls=2)
    state, outputs = run(RewardProcessor(), recs)
    assert state is not None and is_complete(state)
    [final] = finals(outputs)
    assert final.is_final and final.seq == len(recs) - 1
    assert final.components["task_success"] == 1.0
    assert final.components["tool_efficiency"] == 0.5  # expected 1, made 2
    assert final.metrics["tool_calls"] == 2.0 and final.metrics["redundant_calls"] == 1.0
    assert final.metrics["tokens"] == 15.0
    assert final.tool_sequence == ["get_order", "get_order"]
    assert final.run_id == "r1" and final.scenario_id == "s1" and final.task == "refund order 5"
    # the final reward's time is the end event's, its span id derived: re-emission is byte-identical
    end = codec().decode(recs[-1][2])
    assert final.ts_us == end.ts_us
    _, again = run(RewardProcessor(), recs)
    assert [o.value for o in again] == [o.value for o in outputs]


@pytest.mark.parametrize("seed", range(5))
def test_any_arrival_order_gives_the_same_final_reward(seed: int) -> None:
    recs = record_trajectory(tool_calls=3, error_on=1)
    _, in_order = run(RewardProcessor(live_scores=False), recs)
    shuffled = recs[:]
    random.Random(seed).shuffle(shuffled)
    _, out = run(RewardProcessor(live_scores=False), shuffled)
    [a] = finals(in_order)
    [b] = finals(out)
    assert a.event_id == b.event_id  # deterministic id: a replay writes the same row
    assert (a.components, a.total, a.tool_sequence) == (b.components, b.total, b.tool_sequence)
    assert a.metrics["invalid_calls"] == 1.0


def test_redelivery_is_absorbed_and_a_completed_trajectory_reemits_the_same_reward() -> None:
    recs = record_trajectory()
    proc = RewardProcessor(live_scores=False)
    doubled = recs[:3] + recs[:3] + recs[3:]
    _state, outputs = run(proc, doubled)
    [final] = finals(outputs)
    assert final.metrics["tool_calls"] == 2.0  # duplicates were not counted twice
    # the worker crashed after scoring but before committing: the tail comes again, and its
    # done marker makes it change nothing; a seq past the end is a dead letter
    res = proc.process(None, *recs[-1], "0:99", done_end_seq=final.seq)
    assert not res.changed and res.outputs == []
    late = codec().encode(codec().decode(recs[1][2]).model_copy(update={"seq": final.seq + 1}))
    res = proc.process(None, recs[1][0], recs[1][1], late, "0:100", done_end_seq=final.seq)
    assert [dict(o.headers)["reason"] for o in res.outputs] == [b"after_end"]


def test_malformed_records_become_dead_letters_with_a_reason() -> None:
    proc = RewardProcessor()
    recs = record_trajectory()
    topic, key, value = recs[1]
    cases = [
        ("too_short", value[:4]),
        ("bad_magic", b"{}" + value[2:]),
        ("unknown_fingerprint", value[:2] + b"\x00" * 8 + value[10:]),
        ("schema_violation", value[:-3]),
        ("empty", None),
        ("empty", b""),  # an empty value is empty, not too short
    ]
    for reason, bad in cases:
        res = proc.process(None, topic, key, bad, "2:17")
        [out] = res.outputs
        assert out.topic == f"{topic}.dlq"
        headers = dict(out.headers)
        assert headers["reason"] == reason.encode(), reason
        assert headers["source_position"] == b"2:17"
        assert not res.changed
    wrong_key = proc.process(None, topic, b"someone-else", value)
    assert dict(wrong_key.outputs[0].headers)["reason"] == b"key_mismatch"
    wrong_topic = proc.process(None, "agent.steps", key, recs[0][2])
    assert dict(wrong_topic.outputs[0].headers)["reason"] == b"wrong_topic"


def test_events_after_the_end_are_dead_lettered() -> None:
    recs = record_trajectory()
    proc = RewardProcessor(live_scores=False)
    # everything but one middle event: ended, but not complete yet
    state, _ = run(proc, recs[:2] + recs[3:])
    assert state is not None and not is_complete(state)
    topic, key, value = recs[1]
    late = codec().encode(codec().decode(value).model_copy(update={"seq": 99}))
    res = proc.process(state, topic, key, late, "0:50")
    [out] = res.outputs
    assert out.topic == f"{topic}.dlq" and dict(out.headers)["reason"] == b"after_end"
    # the missing event completes it
    res = proc.process(state, *recs[2], "0:51")
    assert len(finals(res.outputs)) == 1


class DenyRefunds:
    def check(self, server_id: str, tool: str, arguments: Any) -> tuple[str, str] | None:
        if tool == "refund_order":
            return ("undeclared_tool", f"{server_id}.{tool} is not granted")
        return None


def test_policy_findings_are_events_and_a_reward_component() -> None:
    spec = RewardSpec(
        components=[ComponentSpec(name="task_success"), ComponentSpec(name="in_scope", gate=1.0)]
    )
    proc = RewardProcessor(lambda a, v: AgentRules(spec=spec, policy=DenyRefunds()), live_scores=False)
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    with tracer.trajectory("refund 5") as t:
        with t.tool_call("shop", "get_order", {"order_id": 5}) as c:
            c.result({})
        with t.tool_call("shop", "refund_order", {"order_id": 5}) as c:
            c.result({})
        t.end("success")
    _, outputs = run(proc, em.records)
    violations = [codec().decode(o.value) for o in outputs if o.topic == "policy.findings"]
    assert len(violations) == 1 and isinstance(violations[0], PolicyViolation)
    assert violations[0].rule == "undeclared_tool" and violations[0].tool == "refund_order"
    [final] = finals(outputs)
    assert final.components["in_scope"] == 0.5
    assert final.failed_gates == ["in_scope"]
    assert final.flags == ["undeclared_tool:refund_order"]


def test_incomplete_trajectory_has_no_final_reward() -> None:
    recs = record_trajectory()
    _, outputs = run(RewardProcessor(), recs[:2] + recs[3:])  # one event missing
    assert finals(outputs) == []


def _with(value: bytes, **update: Any) -> bytes:
    return codec().encode(codec().decode(value).model_copy(update=update))


def test_a_seq_far_ahead_is_a_dead_letter_and_the_trajectory_still_completes() -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    far = (topic, key, _with(value, seq=2_000_000, event_id="far"))
    gap = (topic, key, _with(value, seq=50_000, event_id="gap"))
    _, outputs = run(RewardProcessor(live_scores=False), [recs[0], far, gap, *recs[1:]])
    reasons = [dict(o.headers)["reason"] for o in outputs if o.topic.endswith(".dlq")]
    # out of range at once; 50,000 waits in the fold until the end makes it after_end
    assert reasons == [b"seq_out_of_range", b"after_end"]
    assert len(finals(outputs)) == 1


def test_an_end_far_ahead_of_its_steps_is_not_rejected() -> None:
    """The trajectory topics are consumed at independent rates: a 20,000-event trajectory's
    end may be read before most of its steps (found by the dashboard's 10k-step test)."""
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    with tracer.trajectory("a long task") as t:
        for i in range(20_000):
            t.step("thought", f"step {i}")
    recs = em.records
    start, steps, end = recs[0], recs[1:-1], recs[-1]
    _, outputs = run(RewardProcessor(live_scores=False), [start, *steps[:100], end, *steps[100:]])
    assert [o for o in outputs if o.topic.endswith(".dlq")] == []
    [final] = finals(outputs)
    assert final.metrics["steps"] == 20_000.0


def test_a_seq_past_the_end_that_arrives_before_the_end_leaves_the_fold() -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    end_seq = len(recs) - 1
    early = (topic, key, _with(value, seq=end_seq + 3, event_id="early"))
    _, outputs = run(RewardProcessor(live_scores=False), [early, *recs])
    [dl] = [o for o in outputs if o.topic.endswith(".dlq")]
    assert dict(dl.headers)["reason"] == b"after_end" and dict(dl.headers)["event_id"] == b"early"
    [final] = finals(outputs)
    assert final.seq == end_seq and final.metrics["steps"] == 2.0


@pytest.mark.parametrize("first", ["original", "other"])
def test_a_duplicate_seq_with_another_event_id_is_decided_by_the_smallest_event_id(first: str) -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    original = codec().decode(value)
    other_id = "0" * 32 if original.event_id > "0" * 32 else "f" * 32
    other = (topic, key, _with(value, event_id=other_id, content="something else"))
    order = [recs[1], other] if first == "original" else [other, recs[1]]
    _, outputs = run(RewardProcessor(live_scores=False), [recs[0], *order, *recs[2:]])
    [dl] = [o for o in outputs if o.topic.endswith(".dlq")]
    assert dict(dl.headers)["reason"] == b"duplicate_seq"
    loser = max(original.event_id, other_id)
    assert (dl.value and codec().decode(dl.value).event_id == loser) or dict(dl.headers)[
        "event_id"
    ] == loser.encode()
    assert len(finals(outputs)) == 1


def test_a_null_key_is_a_dead_letter_and_the_sink_rule_agrees() -> None:
    from agentlake.streams.processor import check_record

    recs = record_trajectory()
    topic, key, value = recs[1]
    res = RewardProcessor().process(None, topic, None, value)
    assert [dict(o.headers)["reason"] for o in res.outputs] == [b"null_key"]
    ev = codec().decode(value)
    assert check_record(topic, None, ev.record, ev.trajectory_id, ev.seq) == (
        "null_key",
        f"record has no key; it must be the trajectory_id {ev.trajectory_id}",
    )
    assert check_record(topic, key, ev.record, ev.trajectory_id, ev.seq) is None


class MaxTwoLookups:
    def check(self, server_id: str, tool: str, arguments: Any) -> tuple[str, str] | None:
        return ("undeclared_tool", tool) if tool == "tool_2" else None

    def max_calls(self, server_id: str, tool: str) -> int | None:
        return 2 if tool == "tool_0" else None


@pytest.mark.parametrize("lag", [0, 3])
def test_policy_counts_and_flags_survive_folding(lag: int) -> None:
    """max_calls counts the folded calls too; flags of folded calls stay in the reward."""
    from tests.unit.test_fold import long_trajectory

    recs = long_trajectory(12, [0.01], set())

    def go(fold_lag: int | None) -> tuple[list[Any], list[Any]]:
        proc = RewardProcessor(
            lambda a, v: AgentRules(policy=MaxTwoLookups()), live_scores=False, fold_lag=fold_lag
        )
        _, outputs = run(proc, recs)
        return [o.value for o in outputs if o.topic == "policy.findings"], finals(outputs)

    findings, [final] = go(lag)
    assert (findings, [final]) == go(None)
    rules = [codec().decode(v).rule for v in findings]
    assert rules.count("max_calls") == 2 and rules.count("undeclared_tool") == 4  # 4 x tool_0, 4 x tool_2
    assert final.flags == ["max_calls:tool_0", "undeclared_tool:tool_2"]


def _steps(*spend: dict[str, Any], run_id: str | None = None) -> list[tuple[str, bytes, bytes]]:
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    with tracer.trajectory("refund 5", run_id=run_id) as t:
        for i, _ in enumerate(spend):
            t.step("thought", f"step {i}")
        t.end("success")
    recs = list(em.records)
    for i, fields in enumerate(spend, start=1):  # another producer's values, past the SDK's checks
        topic, key, value = recs[i]
        recs[i] = (topic, key, _with(value, **fields))
    return recs


COST_ONLY = RewardSpec(
    components=[ComponentSpec(name="cost", params={"budget_tokens": 4000, "budget_usd": 0.01})]
)


@pytest.mark.parametrize(
    ("spend", "metric", "value", "component"),
    [
        ([{"tokens_in": 100000}, {"tokens_out": -100000}], "tokens", 100000.0, 4000 / 100000),
        ([{"cost_usd": 5.0}, {"cost_usd": -5.0}], "cost_usd", 5.0, 0.01 / 5.0),
        ([{"cost_usd": 5.0}, {"cost_usd": float("nan")}], "cost_usd", 5.0, 0.01 / 5.0),
    ],
)
def test_negative_spend_from_another_producer_counts_as_zero_not_as_a_refund(
    spend: list[dict[str, Any]], metric: str, value: float, component: float
) -> None:
    recs = _steps(*spend)
    proc = RewardProcessor(lambda a, v: AgentRules(spec=COST_ONLY), live_scores=False)
    _, outputs = run(proc, recs)
    [final] = finals(outputs)
    assert final.metrics[metric] == value
    assert final.components["cost"] == pytest.approx(component)
    _, again = run(RewardProcessor(lambda a, v: AgentRules(spec=COST_ONLY), live_scores=False), recs)
    assert [o.value for o in again] == [o.value for o in outputs]  # still byte-identical


def _boom(summary: Any, params: Any) -> float:
    raise RuntimeError("broken grader")


@pytest.mark.parametrize("run_id", [None, "run-1"])
def test_a_component_that_raises_is_flagged_in_production_and_fails_the_gate_in_a_simulation(
    run_id: str | None,
) -> None:
    spec = RewardSpec(
        components=[
            ComponentSpec(name="task_success", gate=1.0),
            ComponentSpec(name="bad", fn=f"{__name__}:_boom"),
        ]
    )
    proc = RewardProcessor(lambda a, v: AgentRules(spec=spec), live_scores=False)
    _, outputs = run(proc, _steps({}, run_id=run_id))
    [final] = finals(outputs)
    assert final.flags == ["reward_error:bad"]
    if run_id is None:  # production: the score stands without the broken component
        assert final.failed_gates == [] and final.success and "bad" not in final.components
    else:  # a simulation trial: a broken grader cannot pass the CI gate
        assert final.failed_gates == ["bad:error"] and not final.success
