"""Grading one trial: match modes, state and answer checks, and failure attribution."""

from __future__ import annotations

from typing import Any

import pytest

from agentlake.sim.grading import (
    Observation,
    ObservedCall,
    arguments_match,
    grade,
    lookup,
    match_tool_calls,
)
from agentlake.sim.suite import FinalAnswerCheck, ToolCallsCheck, Trial, expand, validate_suite


def _trial(criteria: dict[str, Any], **scenario: Any) -> Trial:
    suite = validate_suite(
        {
            "id": "g",
            "scenarios": [
                {
                    "id": "refund",
                    "task": "Please refund order {oid}.",
                    "variables": {"grid": {"oid": [12]}},
                    "criteria": criteria,
                    **scenario,
                }
            ],
        }
    )
    (trial,) = expand(suite, trials=1)
    return trial


def call(tool: str, error_kind: str | None = None, injected: bool = False, **args: Any) -> ObservedCall:
    return ObservedCall(
        tool=tool, args=args, is_error=error_kind is not None, error_kind=error_kind, injected=injected
    )


GET = call("get_order", order_id=12)
REFUND = call("refund_order", order_id=12)
SEARCH = call("search_orders", customer="ada")
EXPECTED = [
    {"tool": "get_order", "args": {"order_id": 12}},
    {"tool": "refund_order", "args": {"order_id": 12}},
]


def _check(mode: str, calls: list[dict[str, Any]] | None = None, **kw: Any) -> ToolCallsCheck:
    return ToolCallsCheck.model_validate({"mode": mode, "calls": EXPECTED if calls is None else calls, **kw})


# --- tool-call match modes ------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "actual", "passed"),
    [
        ("strict", [GET, REFUND], True),
        ("strict", [REFUND, GET], False),
        ("strict", [GET, REFUND, GET], False),
        ("strict", [GET], False),
        ("strict", [GET, call("refund_order", order_id=12, reason="broken")], True),  # args: subset match
        ("strict", [call("get_order", order_id="12"), REFUND], False),  # "12" is not 12
        ("unordered", [REFUND, GET], True),
        ("unordered", [GET, REFUND], True),
        ("unordered", [GET], False),
        ("unordered", [GET, REFUND, SEARCH], False),
        ("unordered", [GET, GET, REFUND], False),
        ("subset", [GET], True),
        ("subset", [], True),
        ("subset", [REFUND, GET], True),
        ("subset", [GET, SEARCH], False),
        ("subset", [GET, GET], False),  # one-to-one: the second lookup is extra
        ("superset", [SEARCH, GET, SEARCH, REFUND], True),
        ("superset", [REFUND, GET], True),
        ("superset", [GET], False),
        ("superset", [GET, GET], False),
    ],
)
def test_match_modes(mode: str, actual: list[ObservedCall], passed: bool) -> None:
    ok, detail = match_tool_calls(_check(mode), actual)
    assert ok is passed, detail


def test_failed_calls_are_ignored_unless_include_errors() -> None:
    calls = [
        call("get_order", "timeout", order_id=12),
        GET,
        call("refund_order", "tool_error", order_id=13),
        REFUND,
    ]
    assert match_tool_calls(_check("strict"), calls)[0]
    assert not match_tool_calls(_check("strict", include_errors=True), calls)[0]


def test_matching_is_a_maximum_matching_not_greedy() -> None:
    expected: list[dict[str, Any]] = [{"tool": "get_order"}, {"tool": "get_order", "args": {"order_id": 12}}]
    actual = [call("get_order", order_id=12), call("get_order", order_id=13)]
    assert match_tool_calls(_check("unordered", expected), actual)[0]


def test_mismatch_detail_names_missing_and_extra_calls() -> None:
    ok, detail = match_tool_calls(_check("unordered"), [GET, SEARCH])
    assert not ok
    assert (
        "missing refund_order(order_id=12)" in detail and "unexpected search_orders(customer='ada')" in detail
    )


def test_arguments_match_is_a_recursive_subset() -> None:
    assert arguments_match({}, {"a": 1})
    assert arguments_match({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3})
    assert not arguments_match({"a": {"b": 1}}, {"a": {"b": 2}})
    assert not arguments_match({"a": 1}, {"a": True})
    assert not arguments_match({"a": [1, 2]}, {"a": [1, 2, 3]})
    assert not arguments_match({"a": 1}, {})


# --- final state ----------------------------------------------------------------

STATE = {"orders": {"12": {"order_id": 12, "status": "refunded", "paid": True, "lines": [{"sku": "x"}]}}}


def test_lookup_dotted_paths() -> None:
    assert lookup(STATE, "orders.12.status") == (True, "refunded")
    assert lookup(STATE, "orders.12.lines.0.sku") == (True, "x")
    assert lookup(STATE, "orders.12.lines.-1.sku") == (True, "x")
    assert lookup({"m": {7: "int key"}}, "m.7") == (True, "int key")
    assert lookup(STATE, "orders.13.status") == (False, None)
    assert lookup(STATE, "orders.12.lines.5") == (False, None)
    assert lookup(STATE, "orders.12.status.deeper") == (False, None)


@pytest.mark.parametrize(
    ("check", "passed"),
    [
        ({"path": "orders.{oid}.status", "equals": "refunded"}, True),
        ({"path": "orders.{oid}.status", "equals": "delivered"}, False),
        ({"path": "orders.{oid}.order_id", "equals": "{oid}"}, True),
        ({"path": "orders.{oid}.paid", "equals": 1}, False),  # booleans never equal numbers
        ({"path": "orders.{oid}.status", "in": ["refunded", "cancelled"]}, True),
        ({"path": "orders.{oid}.status", "in": ["delivered", "shipped"]}, False),
        ({"path": "orders.{oid}.status", "not_equals": "delivered"}, True),
        ({"path": "orders.{oid}.status", "not_equals": "refunded"}, False),
        ({"path": "orders.{oid}.status", "exists": True}, True),
        ({"path": "orders.{oid}.refund_id", "exists": True}, False),
        ({"path": "orders.{oid}.refund_id", "exists": False}, True),
        ({"path": "orders.{oid}", "exists": False}, False),
        ({"path": "orders.99.status", "equals": "refunded"}, False),
        ({"path": "orders.99.status", "not_equals": "refunded"}, False),  # a missing value fails value checks
    ],
)
def test_final_state_operators(check: dict[str, Any], passed: bool) -> None:
    verdict = grade(_trial({"final_state": [check]}), Observation(final_state=STATE))
    (result,) = [c for c in verdict.checks if c.name.startswith("final_state.")]
    assert result.passed is passed, result.detail
    assert verdict.success is passed


# --- final answer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "answer", "passed"),
    [
        ({"contains": ["{oid}", "REFUNDED"]}, "Order 12 was refunded.", True),
        ({"contains": ["{oid}"]}, "Done.", False),
        ({"contains": ["Refunded"], "case_sensitive": True}, "Order 12 was refunded.", False),
        ({"not_contains": ["sorry"]}, "Order 12 was refunded.", True),
        ({"not_contains": ["sorry"]}, "Sorry, order 12 is shipped.", False),
        ({"not_contains": ["sorry"]}, None, True),
        ({"regex": r"order\s+{oid}\b"}, "Order 12 was refunded.", True),
        ({"regex": r"order\s+{oid}\b"}, "Order 123 was refunded.", False),
        ({"equals": "Order {oid}: refund done."}, "  order 12: refund done. ", True),
        ({"equals": "Order {oid}: refund done."}, "Order 12: refund done!", False),
        ({"contains": ["12"]}, None, False),
    ],
)
def test_final_answer_checks(spec: dict[str, Any], answer: str | None, passed: bool) -> None:
    verdict = grade(_trial({"final_answer": spec}), Observation(final_answer=answer))
    answer_checks = [c for c in verdict.checks if c.name.startswith("final_answer.")]
    assert len(answer_checks) == 1
    assert answer_checks[0].passed is passed, answer_checks[0].detail


def test_outcome_budget_and_crash_checks() -> None:
    trial = _trial({"outcome": "failure"}, budgets={"max_steps": 3, "max_tool_calls": 1})
    good = grade(trial, Observation(outcome="failure", steps=3, tool_calls=[GET]))
    assert good.success and good.attribution == "none"
    assert {c.name for c in good.checks} == {"outcome", "budget", "agent_completed"}
    assert not grade(trial, Observation(outcome="success")).success
    too_long = grade(trial, Observation(outcome="failure", steps=4))
    assert not too_long.success and "max_steps" in too_long.reason
    too_many = grade(trial, Observation(outcome="failure", tool_calls=[GET, GET]))
    assert not too_many.success and "max_tool_calls" in too_many.reason
    timed_out = grade(trial, Observation(outcome="failure", budget_exceeded="timeout_s"))
    assert not timed_out.success and timed_out.attribution == "agent"
    crashed = grade(trial, Observation(outcome="failure", error="KeyError: 'status'"))
    assert not crashed.success and crashed.attribution == "agent" and "KeyError" in crashed.reason


# --- attribution ----------------------------------------------------------------

REFUND_CRITERIA = {
    "final_state": [{"path": "orders.{oid}.status", "equals": "refunded"}],
    "tool_calls": {"mode": "strict", "calls": EXPECTED},
    "outcome": "success",
}
DELIVERED = {"orders": {"12": {"status": "delivered"}}}
REFUNDED = {"orders": {"12": {"status": "refunded"}}}


def test_success_is_attributed_to_none() -> None:
    v = grade(
        _trial(REFUND_CRITERIA),
        Observation(tool_calls=[GET, REFUND], final_state=REFUNDED, outcome="success"),
    )
    assert v.success and v.attribution == "none" and not v.failed


def test_wrong_behaviour_is_the_agents() -> None:
    v = grade(
        _trial(REFUND_CRITERIA), Observation(tool_calls=[GET], final_state=DELIVERED, outcome="success")
    )
    assert not v.success and v.attribution == "agent"
    assert v.reason.startswith("final_state.orders.12.status")


@pytest.mark.parametrize(
    "faulted",
    [
        call("refund_order", "injected_error", injected=True, order_id=12),
        call("refund_order", "timeout", order_id=12),
        call("refund_order", "transport", order_id=12),
        call("refund_order", "replay_miss", order_id=12),
        ObservedCall(tool="refund_order", args={"order_id": 12}, error_kind="malformed"),
    ],
)
def test_unrecovered_fault_with_expected_calls_is_the_tools(faulted: ObservedCall) -> None:
    obs = Observation(tool_calls=[GET, faulted, faulted], final_state=DELIVERED, outcome="failure")
    v = grade(_trial(REFUND_CRITERIA), obs)
    assert not v.success and v.attribution == "tool", v.reason
    assert "refund_order" in v.reason


def test_fault_that_stopped_the_agent_early_is_the_tools() -> None:
    fault = call("get_order", "timeout", order_id=12)
    v = grade(
        _trial(REFUND_CRITERIA), Observation(tool_calls=[fault], final_state=DELIVERED, outcome="failure")
    )
    assert v.attribution == "tool"


def test_recovered_fault_then_agent_mistake_is_the_agents() -> None:
    fault = call("refund_order", "injected_error", injected=True, order_id=12)
    obs = Observation(tool_calls=[GET, fault, REFUND], final_state=REFUNDED, outcome="failure")
    v = grade(_trial(REFUND_CRITERIA), obs)
    assert not v.success and v.attribution == "agent" and v.reason.startswith("outcome")


def test_fault_after_an_unexpected_call_is_the_agents() -> None:
    fault = call("refund_order", "injected_error", injected=True, order_id=12)
    obs = Observation(tool_calls=[SEARCH, GET, fault], final_state=DELIVERED, outcome="failure")
    assert grade(_trial(REFUND_CRITERIA), obs).attribution == "agent"
    unordered = {**REFUND_CRITERIA, "tool_calls": {"mode": "unordered", "calls": EXPECTED}}
    assert grade(_trial(unordered), obs).attribution == "agent"
    superset = {**REFUND_CRITERIA, "tool_calls": {"mode": "superset", "calls": EXPECTED}}
    assert grade(_trial(superset), obs).attribution == "tool"


def test_business_errors_are_not_faults() -> None:
    bad_args = call("refund_order", "invalid_arguments", order_id="12")
    obs = Observation(tool_calls=[GET, bad_args], final_state=DELIVERED, outcome="failure")
    assert grade(_trial(REFUND_CRITERIA), obs).attribution == "agent"


def test_user_simulator_failure_is_the_users() -> None:
    trial = _trial(REFUND_CRITERIA, user={"scripted": ["It is order {oid}."]})
    v = grade(
        trial, Observation(tool_calls=[], final_state=DELIVERED, user_error="ran out of scripted turns")
    )
    assert not v.success and v.attribution == "user" and "scripted turns" in v.reason
    ok = grade(trial, Observation(tool_calls=[GET, REFUND], final_state=REFUNDED, outcome="success"))
    assert ok.success and any(c.name == "user_simulator" and c.passed for c in ok.checks)


def test_tool_fault_takes_precedence_over_user_failure() -> None:
    fault = call("get_order", "transport", order_id=12)
    obs = Observation(tool_calls=[fault], final_state=DELIVERED, user_error="persona model unavailable")
    assert grade(_trial(REFUND_CRITERIA), obs).attribution == "tool"


def test_grader_exception_is_the_graders() -> None:
    trial = _trial({"final_answer": {"contains": ["12"]}})
    broken = trial.model_copy(
        update={
            "criteria": trial.criteria.model_copy(
                update={
                    "final_answer": FinalAnswerCheck.model_construct(
                        contains=[], not_contains=[], regex="((", equals=None, case_sensitive=False
                    )
                }
            )
        }
    )
    v = grade(broken, Observation(final_answer="Order 12 refunded."))
    assert not v.success and v.attribution == "grader"
    assert "grader error" in v.reason


def test_grader_exception_from_state_comparison() -> None:
    class Weird:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("cannot compare")

        __hash__ = object.__hash__

    trial = _trial({"final_state": [{"path": "orders.{oid}.status", "equals": "refunded"}]})
    v = grade(trial, Observation(final_state={"orders": {"12": {"status": Weird()}}}))
    assert v.attribution == "grader" and "grader error" in v.reason


def test_a_path_in_neither_state_is_the_graders_fault_not_the_agents() -> None:
    trial = _trial({"final_state": [{"path": "order.{oid}.status", "equals": "refunded"}]})  # typo: order
    state = {"orders": {"12": {"status": "delivered"}}}
    v = grade(trial, Observation(initial_state=state, final_state=state))
    assert not v.success and v.attribution == "grader" and "neither the initial nor the final" in v.reason
    # a key the agent removed is the agent's doing
    v = grade(trial, Observation(initial_state={"order": {"12": {"status": "x"}}}, final_state={"order": {}}))
    assert v.attribution == "agent"


def test_a_string_compared_with_a_boolean_is_the_graders_fault() -> None:
    trial = _trial({"final_state": [{"path": "orders.{oid}.refunded", "equals": "yes"}]})
    state = {"orders": {"12": {"refunded": True}}}
    v = grade(trial, Observation(initial_state=state, final_state=state))
    assert v.attribution == "grader" and "cannot compare string 'yes' with boolean True" in v.reason
    ok = _trial({"final_state": [{"path": "orders.{oid}.note", "equals": None}]})  # null compares with all
    assert grade(ok, Observation(final_state={"orders": {"12": {"note": "x"}}})).attribution == "agent"


@pytest.mark.parametrize("outcome", ["error", "timeout", "aborted"])
def test_an_agent_reporting_an_error_outcome_fails_even_when_the_state_is_right(outcome: str) -> None:
    trial = _trial({"final_state": [{"path": "orders.{oid}.status", "equals": "refunded"}]})
    state = {"orders": {"12": {"status": "refunded"}}}
    v = grade(trial, Observation(final_state=state, outcome=outcome))
    assert not v.success and v.attribution == "agent"
    assert "agent_completed" in {c.name for c in v.failed}


def test_an_infrastructure_failure_is_its_own_party() -> None:
    trial = _trial({"outcome": "success"})
    v = grade(trial, Observation(infrastructure_error="LLMError: HTTP 429 after 4 attempts"))
    assert not v.success and v.attribution == "infrastructure"
