"""pass^k / pass@k, their intervals, early stopping and the CI gate."""

from __future__ import annotations

import itertools
import math

import pytest
from pydantic import ValidationError

from agentlake.sim.metrics import (
    GateSpec,
    SuiteMetrics,
    compare,
    decided,
    pass_at_k,
    pass_hat_bounds,
    pass_hat_k,
    suite_metrics,
    wilson_interval,
)

# --- pass^k / pass@k -------------------------------------------------------------


def test_pass_hat_k_hand_computed_n5_c3() -> None:
    assert pass_hat_k(5, 3, 1) == pytest.approx(0.6)
    assert pass_hat_k(5, 3, 2) == pytest.approx(0.3)  # C(3,2)/C(5,2) = 3/10
    assert pass_hat_k(5, 3, 3) == pytest.approx(0.1)  # 1/10
    assert pass_hat_k(5, 3, 4) == 0.0
    assert pass_hat_k(5, 3, 2) != pytest.approx(0.6**2)  # never (c/n)^k


def test_pass_at_k_hand_computed_n5_c3() -> None:
    assert pass_at_k(5, 3, 1) == pytest.approx(0.6)
    assert pass_at_k(5, 3, 2) == pytest.approx(0.9)  # 1 - C(2,2)/C(5,2)
    assert pass_at_k(5, 3, 3) == 1.0  # C(2,3) = 0


def test_edges_all_or_nothing() -> None:
    assert pass_hat_k(4, 4, 4) == 1.0
    assert pass_hat_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 1, 0), (3, 4, 1), (3, -1, 1), (0, 0, 1)])
def test_invalid_arguments_raise(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_hat_k(n, c, k)
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_hat_matches_drawing_without_replacement() -> None:
    outcomes = [True, True, False, True, False, False, True]
    n, c = len(outcomes), sum(outcomes)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(outcomes, k))
        assert pass_hat_k(n, c, k) == pytest.approx(sum(all(s) for s in subsets) / len(subsets))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


# --- Wilson ----------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    iv = wilson_interval(3, 5)
    assert iv.low == pytest.approx(0.2307, abs=1e-4)
    assert iv.high == pytest.approx(0.8824, abs=1e-4)
    zero = wilson_interval(0, 10)
    assert zero.low == 0.0
    assert zero.high == pytest.approx(0.2775, abs=1e-4)
    full = wilson_interval(10, 10)
    assert full.high == 1.0 and full.low == pytest.approx(0.7225, abs=1e-4)


def test_wilson_narrows_with_confidence_and_rejects_bad_input() -> None:
    assert wilson_interval(3, 5, 0.8).high < wilson_interval(3, 5, 0.99).high
    with pytest.raises(ValueError):
        wilson_interval(6, 5)
    with pytest.raises(ValueError):
        wilson_interval(1, 5, 1.0)


# --- suite metrics ---------------------------------------------------------------

RESULTS = {
    "refund": [True, True, True, False, False],
    "cancel": [True, True, True, True, True],
    "status": [True, False, True, True, False],
    "shipped": [False, False, True, False, False],
}


def test_suite_metrics_averages_over_scenarios() -> None:
    m = suite_metrics(RESULTS)
    assert m.n_trials == 20
    assert m.pass_hat[1] == pytest.approx((0.6 + 1.0 + 0.6 + 0.2) / 4)
    assert m.pass_hat[2] == pytest.approx((0.3 + 1.0 + 0.3 + 0.0) / 4)
    assert m.pass_at[2] == pytest.approx((0.9 + 1.0 + 0.9 + 0.4) / 4)
    assert set(m.pass_hat) == {1, 2, 3, 4, 5}
    refund = m.scenario("refund")
    assert (refund.n, refund.c) == (5, 3)
    assert refund.pass_hat[3] == pytest.approx(0.1)
    assert refund.pass_hat_1_wilson.low == pytest.approx(0.2307, abs=1e-4)
    assert [s.scenario_id for s in m.scenarios] == sorted(RESULTS)


def test_uneven_trial_counts_average_over_scenarios_with_enough_trials() -> None:
    m = suite_metrics({"a": [True, True, True, False, False], "b": [True, False]}, n_resamples=200)
    assert m.support == {1: 2, 2: 2, 3: 1, 4: 1, 5: 1}
    assert m.pass_hat[1] == pytest.approx((0.6 + 0.5) / 2)
    assert m.pass_hat[2] == pytest.approx((0.3 + 0.0) / 2)
    assert m.pass_hat[3] == pytest.approx(0.1)
    assert 3 in m.pass_hat_ci


def test_bootstrap_interval_contains_point_and_is_deterministic() -> None:
    a = suite_metrics(RESULTS, seed=42)
    b = suite_metrics(RESULTS, seed=42)
    c = suite_metrics(RESULTS, seed=43)
    assert a == b
    assert a.pass_hat_ci != c.pass_hat_ci
    for k in a.pass_hat:
        assert a.pass_hat[k] in a.pass_hat_ci[k], k
        assert a.pass_at[k] in a.pass_at_ci[k], k
        assert 0.0 <= a.pass_hat_ci[k].low <= a.pass_hat_ci[k].high <= 1.0


def test_bootstrap_is_independent_of_mapping_order() -> None:
    reordered = dict(reversed(list(RESULTS.items())))
    assert suite_metrics(RESULTS, seed=1) == suite_metrics(reordered, seed=1)


def test_bootstrap_degenerate_and_disabled() -> None:
    m = suite_metrics({"a": [True] * 4, "b": [True] * 4})
    assert (m.pass_hat_ci[4].low, m.pass_hat_ci[4].high) == (1.0, 1.0)
    assert suite_metrics(RESULTS, n_resamples=0).pass_hat_ci == {}


def test_bootstrap_interval_widens_with_confidence() -> None:
    narrow = suite_metrics(RESULTS, confidence=0.5)
    wide = suite_metrics(RESULTS, confidence=0.99)
    assert (
        wide.pass_hat_ci[1].high - wide.pass_hat_ci[1].low
        > narrow.pass_hat_ci[1].high - narrow.pass_hat_ci[1].low
    )


def test_rewards_and_tool_calls_are_averaged() -> None:
    m = suite_metrics(
        RESULTS,
        reward_totals=[1.0, 0.5],
        reward_components=[{"task_success": 1.0, "cost": None}, {"task_success": 0.0, "cost": 0.4}],
        tool_calls=[2, 3, 4],
        n_resamples=0,
    )
    assert m.reward_total == pytest.approx(0.75)
    assert m.reward_components == {"cost": pytest.approx(0.4), "task_success": pytest.approx(0.5)}
    assert m.tool_calls == pytest.approx(3.0)
    assert m.metric("reward") == m.metric("reward.total") == pytest.approx(0.75)
    assert m.metric("reward.task_success") == pytest.approx(0.5)
    assert m.metric("reward.unknown") is None
    assert m.metric("pass_hat_9") is None


def test_suite_metrics_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="no scenarios"):
        suite_metrics({})
    with pytest.raises(ValueError, match="'a' has no trials"):
        suite_metrics({"a": []})


def test_suite_metrics_round_trips_through_json() -> None:
    m = suite_metrics(RESULTS, n_resamples=50)
    assert SuiteMetrics.model_validate_json(m.model_dump_json()) == m


# --- early stopping --------------------------------------------------------------


def _brute_force_decided(n_total: int, n_done: int, c_done: int, k: int, threshold: float) -> bool:
    verdicts = {
        pass_hat_k(n_total, c_done + sum(rest), k) >= threshold
        for rest in itertools.product([False, True], repeat=n_total - n_done)
    }
    return len(verdicts) == 1


def test_decided_matches_brute_force() -> None:
    thresholds = [0.0, 0.05, 0.1, 0.3, 0.5, 0.6, 0.8, 0.9, 1.0]
    for n_total in range(1, 7):
        for k in range(1, n_total + 1):
            for n_done in range(n_total + 1):
                for c_done in range(n_done + 1):
                    for t in thresholds:
                        expected = _brute_force_decided(n_total, n_done, c_done, k, t)
                        assert decided(n_total, n_done, c_done, k, t) == expected, (
                            n_total,
                            n_done,
                            c_done,
                            k,
                            t,
                        )


def test_decided_examples() -> None:
    # 5 trials, pass^1 >= 0.8 needs 4 successes: two failures already decide it
    assert decided(5, 2, 0, 1, 0.8)
    assert not decided(5, 1, 0, 1, 0.8)
    # four successes out of four already guarantee 4/5
    assert decided(5, 4, 4, 1, 0.8)
    assert not decided(5, 0, 0, 1, 0.8)
    worst, best = pass_hat_bounds(5, 2, 1, 2)
    assert worst == 0.0  # C(1,2)/C(5,2)
    assert best == pytest.approx(0.6)  # C(4,2)/C(5,2)
    with pytest.raises(ValueError):
        decided(5, 6, 0, 1, 0.5)
    with pytest.raises(ValueError):
        decided(5, 2, 3, 1, 0.5)


# --- the gate --------------------------------------------------------------------


def _metrics(results: dict[str, list[bool]], reward: float = 0.9, calls: float = 2.0) -> SuiteMetrics:
    return suite_metrics(
        results,
        reward_totals=[reward],
        reward_components=[{"task_success": reward}],
        tool_calls=[calls],
        n_resamples=0,
    )


BASELINE = _metrics({"a": [True] * 5, "b": [True, True, True, True, False]}, reward=0.9, calls=2.0)


def test_gate_passes_when_every_bound_holds() -> None:
    candidate = _metrics({"a": [True] * 5, "b": [True] * 5}, reward=0.92, calls=2.2)
    result = compare(
        candidate,
        BASELINE,
        {
            "pass_hat_1": {"min": 0.9},
            "pass_hat_k": {"k": 3, "max_drop": 0.05},
            "pass_at_2": {"min": 0.99},
            "reward.task_success": {"max_drop": 0.02},
            "reward": {"min": 0.5, "max": 1.0},
            "tool_calls": {"max_increase": 0.5, "max": 3},
        },
    )
    assert result.passed, result.failures
    assert [c.name for c in result.checks] == [
        "pass_hat_1",
        "pass_hat_3",
        "pass_at_2",
        "reward.task_success",
        "reward.total",
        "reward.total",
        "tool_calls",
        "tool_calls",
    ]


@pytest.mark.parametrize(
    ("threshold", "name", "kind"),
    [
        ({"pass_hat_1": {"min": 0.95}}, "pass_hat_1", "min"),
        ({"pass_hat_k": {"k": 3, "max_drop": 0.05}}, "pass_hat_3", "max_drop"),
        ({"pass_at_1": {"min": 0.9}}, "pass_at_1", "min"),
        ({"reward.task_success": {"max_drop": 0.02}}, "reward.task_success", "max_drop"),
        ({"reward": {"min": 0.8}}, "reward.total", "min"),
        ({"tool_calls": {"max_increase": 0.5}}, "tool_calls", "max_increase"),
        ({"tool_calls": {"max": 2.5}}, "tool_calls", "max"),
    ],
)
def test_gate_fails_on_each_threshold_kind(
    threshold: dict[str, dict[str, float]], name: str, kind: str
) -> None:
    worse = _metrics({"a": [True, True, True, False, True], "b": [True, False, True, False, True]}, 0.7, 3.0)
    result = compare(worse, BASELINE, threshold)
    assert not result.passed
    (check,) = result.checks
    assert (check.name, check.kind, check.passed) == (name, kind, False)
    assert check.value is not None and check.detail


def test_gate_tolerates_float_rounding_at_the_limit() -> None:
    base = _metrics({"a": [True] * 10}, reward=0.8)
    cand = _metrics({"a": [True] * 10}, reward=0.7)  # 0.8 - 0.7 = 0.10000000000000009
    assert compare(cand, base, {"reward.task_success": {"max_drop": 0.1}}).passed


def test_gate_without_baseline_skips_regression_checks() -> None:
    result = compare(BASELINE, None, {"pass_hat_1": {"min": 0.5, "max_drop": 0.0}})
    assert result.passed
    assert "skipped" in result.checks[1].detail


def test_gate_fails_on_unmeasured_metrics() -> None:
    result = compare(BASELINE, BASELINE, {"pass_hat_9": {"min": 0.1}, "reward.latency": {"max_drop": 0.1}})
    assert not result.passed
    assert all("not measured" in c.detail for c in result.checks)


def test_gate_spec_validation() -> None:
    with pytest.raises(ValidationError, match="set k"):
        GateSpec.model_validate({"pass_hat_k": {"max_drop": 0.1}})
    with pytest.raises(ValidationError, match="unknown gate metric"):
        GateSpec.model_validate({"accuracy": {"min": 0.1}})
    with pytest.raises(ValidationError, match="at least one of"):
        GateSpec.model_validate({"pass_hat_1": {}})
    with pytest.raises(ValidationError, match="contradicts"):
        GateSpec.model_validate({"pass_hat_2": {"k": 3, "min": 0.1}})
    with pytest.raises(ValidationError, match="only applies"):
        GateSpec.model_validate({"tool_calls": {"k": 3, "max": 1}})
    with pytest.raises(ValidationError):
        GateSpec.model_validate({"pass_hat_1": {"max_drop": -0.1}})
    spec = GateSpec.model_validate({"pass_at_k": {"k": 2, "min": 0.5}, "reward": {"min": 0.1}})
    assert [name for name, _ in spec.resolved()] == ["pass_at_2", "reward.total"]


def test_metric_names_outside_the_vocabulary_raise() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        BASELINE.metric("accuracy")
    assert math.isclose(BASELINE.metric("pass_hat_1") or 0, 0.9)
