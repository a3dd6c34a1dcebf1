"""Reward math: components, weighting, gates, spec validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agentlake.streams.rewards import (
    DEFAULT_SPEC,
    ComponentSpec,
    RewardSpec,
    TrajectorySummary,
    cost,
    in_scope,
    latency,
    score,
    task_success,
    tool_efficiency,
    tool_reliability,
    valid_calls,
)


def s(**kw: object) -> TrajectorySummary:
    return TrajectorySummary(**{"outcome": "success", **kw})  # type: ignore[arg-type]


def test_task_success() -> None:
    assert task_success(s(), {}) == 1.0
    assert task_success(s(outcome="failure"), {}) == 0.0
    assert task_success(s(outcome=None), {}) == 0.0


def test_tool_efficiency_uses_expected_calls_when_known() -> None:
    assert tool_efficiency(s(tool_calls=4, expected_tool_calls=2), {}) == 0.5
    assert tool_efficiency(s(tool_calls=1, expected_tool_calls=2), {}) == 1.0
    assert tool_efficiency(s(tool_calls=0, expected_tool_calls=0), {}) == 1.0
    assert tool_efficiency(s(tool_calls=0, expected_tool_calls=1), {}) == 0.0
    assert tool_efficiency(s(tool_calls=4), {"expected": 1}) == 0.25
    # unknown expectation: penalise exact repeats only
    assert tool_efficiency(s(tool_calls=4, redundant_calls=1), {}) == 0.75


def test_error_and_scope_ratios() -> None:
    assert tool_reliability(s(tool_calls=4, tool_errors=1), {}) == 0.75
    assert valid_calls(s(tool_calls=5, invalid_calls=5), {}) == 0.0
    assert in_scope(s(tool_calls=2, out_of_scope_calls=1), {}) == 0.5
    assert tool_reliability(s(tool_calls=0), {}) == 1.0


def test_latency_and_cost() -> None:
    assert latency(s(duration_ms=100), {}) == 1.0
    assert latency(s(duration_ms=10_000), {"target_ms": 5000}) == 0.5
    assert cost(s(), {}) is None  # nothing reported: not applicable
    assert cost(s(cost_usd=0.02), {"budget_usd": 0.01}) == 0.5
    assert cost(s(tokens_in=6000, tokens_out=2000), {"budget_tokens": 4000}) == 0.5


def test_total_is_the_weighted_mean_over_applicable_components() -> None:
    spec = RewardSpec(
        components=[
            ComponentSpec(name="task_success", weight=3, gate=1.0),
            ComponentSpec(name="tool_efficiency", weight=1),
            ComponentSpec(name="cost", weight=100),  # not reported: must not dilute the total
        ]
    )
    v = score(s(outcome="success", tool_calls=2, expected_tool_calls=1), spec)
    assert v.components == {"task_success": 1.0, "tool_efficiency": 0.5}
    assert v.total == pytest.approx((3 * 1.0 + 1 * 0.5) / 4)
    assert v.gates == ["task_success"] and v.failed_gates == []
    v2 = score(s(outcome="failure"), spec)
    assert v2.failed_gates == ["task_success"]


def _boom(summary: TrajectorySummary, params: object) -> float:
    raise RuntimeError("broken grader")


def _half(summary: TrajectorySummary, params: object) -> float:
    return 0.5


def test_custom_functions_and_a_broken_grader_never_passes_silently() -> None:
    spec = RewardSpec(
        components=[
            ComponentSpec(name="mine", fn=f"{__name__}:_half", weight=1, gate=0.4),
            ComponentSpec(name="bad", fn=f"{__name__}:_boom", weight=1),
        ]
    )
    v = score(s(), spec)
    assert v.components["mine"] == 0.5
    assert v.components["bad"] == 0.0
    assert "bad:error" in v.failed_gates


def test_spec_validation_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="unknown reward function 'nope'"):
        RewardSpec(components=[ComponentSpec(name="nope")])
    with pytest.raises(ValidationError, match="duplicate"):
        RewardSpec(components=[ComponentSpec(name="cost"), ComponentSpec(name="cost")])
    with pytest.raises(ValidationError):
        ComponentSpec(name="cost", weight=-1)
    with pytest.raises(ValidationError):
        RewardSpec(components=[])


def test_default_spec_gates_on_task_success() -> None:
    assert [c.name for c in DEFAULT_SPEC.components if c.gate is not None] == ["task_success"]


@pytest.mark.parametrize(
    ("component", "reason"),
    [
        # the new user's files: a string target, a negative budget
        (
            {"name": "latency", "params": {"target_ms": "fast"}},
            r"params\.target_ms: Input should be a valid number",
        ),
        (
            {"name": "cost", "params": {"budget_tokens": -4000}},
            r"params\.budget_tokens: .*greater than 0 \(got -4000\)",
        ),
        ({"name": "cost", "params": {"budget_usd": 0}}, r"params\.budget_usd: .*greater than 0"),
        ({"name": "cost", "params": {"budget_usd": float("inf")}}, r"params\.budget_usd: .*finite"),
        (
            {"name": "fewest_steps", "params": {"target": True}},
            r"params\.target: Input should be a valid integer",
        ),
        (
            {"name": "tool_efficiency", "params": {"expected": -1}},
            r"params\.expected: .*greater than or equal to 0",
        ),
        (
            {"name": "latency", "params": {"target": 100}},
            r"params\.target: unknown param of latency: did you mean 'target_ms'\?",
        ),
        (
            {"name": "cost", "params": {"spend": 1}},
            r"params\.spend: unknown param of cost: known: budget_tokens, budget_usd",
        ),
        ({"name": "task_success", "params": {"min": 1}}, r"params\.min: task_success takes no params"),
        ({"name": "in_scope", "weight": float("nan")}, r"weight\n.*finite number"),
        ({"name": "in_scope", "weight": float("inf")}, r"weight\n.*finite number"),
        ({"name": "in_scope", "gate": float("nan")}, r"gate\n.*finite number"),
        ({"name": "x", "fn": "my mod:fn"}, r"must look like 'package\.module:function'"),
        ({"name": "latencyy"}, r"unknown reward function 'latencyy': did you mean 'latency'\?"),
    ],
)
def test_builtin_params_weights_and_functions_are_checked_when_the_spec_is_made(
    component: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        ComponentSpec(**component)


def test_valid_params_and_a_custom_functions_own_params_are_accepted() -> None:
    ComponentSpec(name="latency", params={"target_ms": 250})  # an int where a float is expected is fine
    ComponentSpec(name="cost", params={"budget_usd": 0.5, "budget_tokens": 1000})
    ComponentSpec(name="tool_efficiency", params={"expected": 0})
    ComponentSpec(name="mine", fn=f"{__name__}:_half", params={"anything": "goes"})


def test_a_broken_grader_in_production_is_flagged_not_a_failed_gate() -> None:
    spec = RewardSpec(
        components=[
            ComponentSpec(name="task_success", weight=1, gate=1.0),
            ComponentSpec(name="bad", fn=f"{__name__}:_boom", weight=1, gate=0.5),
        ]
    )
    v = score(s(), spec, errors_fail=False)
    assert v.errors == ["bad"]
    assert v.failed_gates == [] and "bad" not in v.components and "bad" not in v.weights
    assert v.total == 1.0  # only the components that could be computed
    strict = score(s(), spec)  # simulation trials: the gate fails
    assert strict.errors == ["bad"] and strict.failed_gates == ["bad:error", "bad"]
