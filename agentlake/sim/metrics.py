"""Reliability metrics for simulated trials and the CI gate over them.

This module owns the numbers every part of AgentLake must compute the same way
(see ARCHITECTURE.md, "Metrics everyone must compute the same way"):

* ``pass^k`` of a scenario with ``n`` trials and ``c`` successes is
  ``C(c, k) / C(n, k)``: the probability that ``k`` trials drawn without
  replacement from the ``n`` observed ones all succeed. It is *never*
  ``(c / n) ** k``.
* ``pass@k`` is ``1 - C(n - c, k) / C(n, k)``: the probability that at least one
  of ``k`` trials drawn without replacement succeeds.
* Suite-level values are the unweighted mean over scenarios.

It also holds the early-stopping rule (:func:`decided`) and the gate
(:class:`GateSpec`, :func:`compare`). Everything here is pure: no I/O, and the
bootstrap is deterministic for a given seed (and numpy version).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, RootModel, model_validator

__all__ = [
    "DEFAULT_GATE",
    "Bound",
    "Check",
    "GateResult",
    "GateSpec",
    "Interval",
    "ScenarioMetrics",
    "SuiteMetrics",
    "Threshold",
    "compare",
    "decided",
    "pass_at_k",
    "pass_hat_bounds",
    "pass_hat_k",
    "suite_decided",
    "suite_metrics",
    "wilson_interval",
]

# Float slack for threshold comparisons: 0.8 - 0.7 is 0.10000000000000009 in binary
# floating point, and a declared "max_drop: 0.1" must accept it.
_EPS = 1e-9


def _check_nck(n: int, c: int, k: int) -> None:
    if n < 1:
        raise ValueError(f"n must be at least 1 (got n={n})")
    if not 0 <= c <= n:
        raise ValueError(f"c must be between 0 and n={n} (got c={c})")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n} (got k={k}); run at least k trials")


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: probability that ``k`` of the ``n`` trials, drawn without replacement, all succeed.

    Computed as ``C(c, k) / C(n, k)`` with exact integer binomials, so the only
    rounding is the final (correctly rounded) division.

    Args:
        n: Number of trials run (≥ 1).
        c: Number of successful trials (0 ≤ c ≤ n).
        k: Number of trials that must all succeed (1 ≤ k ≤ n).

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: If ``k > n``, ``k < 1``, ``c > n``, ``c < 0`` or ``n < 1``.
    """
    _check_nck(n, c, k)
    return math.comb(c, k) / math.comb(n, k)


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k: probability that at least one of ``k`` trials drawn without replacement succeeds.

    Computed as ``1 - C(n - c, k) / C(n, k)``, evaluated as one exact integer
    fraction ``(C(n, k) - C(n - c, k)) / C(n, k)``.

    Args:
        n: Number of trials run (≥ 1).
        c: Number of successful trials (0 ≤ c ≤ n).
        k: Number of trials drawn (1 ≤ k ≤ n).

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: If ``k > n``, ``k < 1``, ``c > n``, ``c < 0`` or ``n < 1``.
    """
    _check_nck(n, c, k)
    total = math.comb(n, k)
    return (total - math.comb(n - c, k)) / total


def pass_hat_bounds(n_total: int, n_done: int, c_done: int, k: int) -> tuple[float, float]:
    """The worst and best pass^k a scenario can still end with.

    After ``n_done`` of ``n_total`` trials with ``c_done`` successes, the final
    success count lies in ``[c_done, c_done + n_total - n_done]``; pass^k is
    non-decreasing in ``c``, so the extremes are exact.

    Args:
        n_total: Trials planned for the scenario.
        n_done: Trials finished so far (0 ≤ n_done ≤ n_total).
        c_done: Successes among the finished trials (0 ≤ c_done ≤ n_done).
        k: The k of pass^k (1 ≤ k ≤ n_total).

    Returns:
        ``(worst, best)``.

    Raises:
        ValueError: On inconsistent counts.
    """
    if not 0 <= n_done <= n_total:
        raise ValueError(f"n_done must be between 0 and n_total={n_total} (got {n_done})")
    if not 0 <= c_done <= n_done:
        raise ValueError(f"c_done must be between 0 and n_done={n_done} (got {c_done})")
    remaining = n_total - n_done
    return pass_hat_k(n_total, c_done, k), pass_hat_k(n_total, c_done + remaining, k)


def suite_decided(cases: Mapping[str, tuple[int, int, int]], k: int, min_pass_hat: float) -> bool | None:
    """Whether the *suite-level* pass^k verdict against ``min_pass_hat`` is already certain.

    Suite pass^k is the mean over cases of ``pass_hat_k(n_total, c, k)`` over the
    planned trials; its worst (every remaining trial fails) and best (every one
    succeeds) values bound it. A case planned with fewer than ``k`` trials takes no
    part (as in :func:`suite_metrics`).

    Args:
        cases: case id -> ``(n_total planned, n_done, c_done)``.
        k: the k of pass^k.
        min_pass_hat: the gate's floor.

    Returns:
        True when it will pass whatever happens, False when it will fail whatever
        happens, None while undecided (or when no case has ``k`` planned trials).
    """
    worst: list[float] = []
    best: list[float] = []
    for n_total, n_done, c_done in cases.values():
        if n_total < k:
            continue
        lo, hi = pass_hat_bounds(n_total, n_done, c_done, k)
        worst.append(lo)
        best.append(hi)
    if not worst:
        return None
    if sum(worst) / len(worst) >= min_pass_hat - _EPS:
        return True
    if sum(best) / len(best) < min_pass_hat - _EPS:
        return False
    return None


def decided(n_total: int, n_done: int, c_done: int, k: int, min_pass_hat: float) -> bool:
    """Whether a scenario's pass^k verdict against ``min_pass_hat`` can no longer change.

    The scenario passes when its final ``pass_hat_k(n_total, c, k) >= min_pass_hat``.
    This returns True when even the worst case (all remaining trials fail)
    passes, or even the best case (all remaining trials succeed) fails; the
    runner may then skip the remaining trials and report the verdict as decided.

    Args:
        n_total: Trials planned for the scenario.
        n_done: Trials finished so far.
        c_done: Successes among the finished trials.
        k: The k of pass^k (1 ≤ k ≤ n_total).
        min_pass_hat: The threshold the scenario's pass^k is compared with.

    Returns:
        True if the outcome of the comparison is already certain.

    Raises:
        ValueError: On inconsistent counts.
    """
    worst, best = pass_hat_bounds(n_total, n_done, c_done, k)
    return worst >= min_pass_hat or best < min_pass_hat


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interval(_Frozen):
    """A closed confidence interval ``[low, high]``."""

    low: float
    high: float

    def __contains__(self, x: object) -> bool:
        return isinstance(x, int | float) and self.low - _EPS <= x <= self.high + _EPS


def wilson_interval(c: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion ``c / n``.

    Args:
        c: Successes (0 ≤ c ≤ n).
        n: Trials (≥ 1).
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        The interval, always inside [0, 1] and never empty even when c is 0 or n.

    Raises:
        ValueError: On inconsistent counts or a confidence outside (0, 1).
    """
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n ≥ 1 and 0 ≤ c ≤ n (got n={n}, c={c})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = c / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at c = 0 (c = n) the lower (upper) bound is exactly 0 (1); avoid float residue
    low = 0.0 if c == 0 else max(0.0, center - half)
    high = 1.0 if c == n else min(1.0, center + half)
    return Interval(low=low, high=high)


class ScenarioMetrics(_Frozen):
    """pass^k and pass@k of one scenario, for every k from 1 to its trial count."""

    scenario_id: str
    n: int = Field(description="trials run")
    c: int = Field(description="successful trials")
    pass_hat: dict[int, float] = Field(description="k -> pass^k, for k = 1..n")
    pass_at: dict[int, float] = Field(description="k -> pass@k, for k = 1..n")
    pass_hat_1_wilson: Interval = Field(description="Wilson score interval of pass^1 = c/n")


class SuiteMetrics(_Frozen):
    """Suite-level reliability numbers: what a CI gate compares between two runs.

    ``pass_hat[k]`` / ``pass_at[k]`` are means over the scenarios that ran at
    least ``k`` trials (``support[k]`` of them), for k = 1 .. the largest trial
    count; up to the smallest trial count every scenario takes part.
    """

    scenarios: list[ScenarioMetrics]
    n_trials: int
    pass_hat: dict[int, float]
    pass_at: dict[int, float]
    support: dict[int, int] = Field(description="k -> number of scenarios averaged for k")
    pass_hat_ci: dict[int, Interval] = Field(description="bootstrap interval for pass_hat[k]")
    pass_at_ci: dict[int, Interval] = Field(description="bootstrap interval for pass_at[k]")
    reward_total: float | None = None
    reward_components: dict[str, float] = Field(default_factory=dict)
    tool_calls: float | None = Field(default=None, description="mean tool calls per trial")
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0

    def scenario(self, scenario_id: str) -> ScenarioMetrics:
        """The metrics of one scenario.

        Raises:
            KeyError: If the scenario is not part of the suite.
        """
        for s in self.scenarios:
            if s.scenario_id == scenario_id:
                return s
        raise KeyError(scenario_id)

    def metric(self, name: str) -> float | None:
        """A suite-level value by gate name, or None when it was not measured.

        Args:
            name: ``pass_hat_<k>``, ``pass_at_<k>``, ``reward.total`` (or ``reward``),
                ``reward.<component>`` or ``tool_calls``.

        Returns:
            The value, or None (e.g. k above every scenario's trial count).

        Raises:
            ValueError: For a name outside that vocabulary.
        """
        m = _PASS_NAME.fullmatch(name)
        if m and m.group(2) != "k":
            table = self.pass_hat if m.group(1) == "pass_hat" else self.pass_at
            return table.get(int(m.group(2)))
        if name in ("reward", "reward.total"):
            return self.reward_total
        if name.startswith("reward."):
            return self.reward_components.get(name.removeprefix("reward."))
        if name == "tool_calls":
            return self.tool_calls
        raise ValueError(f"unknown metric {name!r}; {_METRIC_HELP}")


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def suite_metrics(
    results: Mapping[str, Sequence[bool]],
    *,
    reward_totals: Sequence[float] = (),
    reward_components: Sequence[Mapping[str, float | None]] = (),
    tool_calls: Sequence[float] = (),
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> SuiteMetrics:
    """pass^k and pass@k per scenario and for the suite, with confidence intervals.

    Method:

    * Per scenario with ``n`` trials and ``c`` successes: :func:`pass_hat_k` and
      :func:`pass_at_k` for k = 1..n, and the Wilson score interval of
      pass^1 = c/n.
    * Suite level, for k = 1 .. max n: the unweighted mean over the scenarios
      with n ≥ k (so for k ≤ min n, over every scenario).
    * Suite-level intervals: a two-level percentile bootstrap. Each of the
      ``n_resamples`` replicates draws the scenarios with replacement, then the
      trials within each drawn scenario with replacement (the resampled success
      count is Binomial(n, c/n), which is what drawing n trials with replacement
      gives), recomputes each scenario's pass^k / pass@k exactly and averages
      them like the point estimate. The interval is the (alpha/2, 1 - alpha/2) quantile
      pair of the replicates, alpha = 1 - confidence. A replicate in which no drawn
      scenario has n ≥ k is left out for that k. Scenarios are taken in sorted
      id order and numpy's PCG64 is seeded with ``seed``, so the result is
      deterministic for a given seed (and numpy version).

    Group trials by what you want reliability *of*: the runner keys them by
    scenario case (scenario id + variable binding), since pass^k means "the
    same task, k times".

    Args:
        results: Scenario id -> one boolean per trial (True = success).
        reward_totals: Scalar reward of every trial (any order), for ``reward.total``.
        reward_components: Reward vector of every trial; a None component does not apply
            to that trial and is left out of that component's mean.
        tool_calls: Tool calls made by every trial.
        n_resamples: Bootstrap replicates (0 disables the suite-level intervals).
        confidence: Two-sided confidence level in (0, 1).
        seed: Seed of the bootstrap.

    Returns:
        The suite metrics.

    Raises:
        ValueError: If there are no scenarios, a scenario has no trials, or an
            argument is out of range.
    """
    if not results:
        raise ValueError("no scenarios: suite_metrics needs at least one scenario with trials")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be ≥ 0 (got {n_resamples})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (got {confidence})")
    ids = sorted(results)
    per: list[ScenarioMetrics] = []
    for sid in ids:
        outcomes = results[sid]
        n, c = len(outcomes), sum(1 for o in outcomes if o)
        if n == 0:
            raise ValueError(f"scenario {sid!r} has no trials")
        per.append(
            ScenarioMetrics(
                scenario_id=sid,
                n=n,
                c=c,
                pass_hat={k: pass_hat_k(n, c, k) for k in range(1, n + 1)},
                pass_at={k: pass_at_k(n, c, k) for k in range(1, n + 1)},
                pass_hat_1_wilson=wilson_interval(c, n, confidence),
            )
        )
    max_n = max(s.n for s in per)
    ks = range(1, max_n + 1)
    support = {k: sum(1 for s in per if s.n >= k) for k in ks}
    hat = {k: sum(s.pass_hat[k] for s in per if s.n >= k) / support[k] for k in ks}
    at = {k: sum(s.pass_at[k] for s in per if s.n >= k) / support[k] for k in ks}
    hat_ci: dict[int, Interval] = {}
    at_ci: dict[int, Interval] = {}
    if n_resamples:
        hat_ci, at_ci = _bootstrap([s.n for s in per], [s.c for s in per], n_resamples, confidence, seed)

    components: dict[str, list[float]] = {}
    for vec in reward_components:
        for name, value in vec.items():
            if value is not None:
                components.setdefault(name, []).append(float(value))
    return SuiteMetrics(
        scenarios=per,
        n_trials=sum(s.n for s in per),
        pass_hat=hat,
        pass_at=at,
        support=support,
        pass_hat_ci=hat_ci,
        pass_at_ci=at_ci,
        reward_total=_mean([float(x) for x in reward_totals]),
        reward_components={name: sum(v) / len(v) for name, v in sorted(components.items())},
        tool_calls=_mean([float(x) for x in tool_calls]),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )


def _bootstrap(
    ns: list[int], cs: list[int], n_resamples: int, confidence: float, seed: int
) -> tuple[dict[int, Interval], dict[int, Interval]]:
    rng = np.random.default_rng(seed)
    n_arr = np.asarray(ns, dtype=np.int64)
    p_arr = np.asarray(cs, dtype=np.float64) / n_arr
    n_scen, max_n = len(ns), max(ns)
    idx = rng.integers(0, n_scen, size=(n_resamples, n_scen))
    n_b = n_arr[idx]
    c_b = rng.binomial(n_b, p_arr[idx])
    alpha = 1 - confidence
    hat_ci: dict[int, Interval] = {}
    at_ci: dict[int, Interval] = {}
    for k in range(1, max_n + 1):
        # exact per-(n, c) values, looked up for every drawn scenario
        hat_t = np.zeros((max_n + 1, max_n + 1))
        at_t = np.zeros((max_n + 1, max_n + 1))
        for n in set(ns):
            if n >= k:
                for c in range(n + 1):
                    hat_t[n, c] = pass_hat_k(n, c, k)
                    at_t[n, c] = pass_at_k(n, c, k)
        valid = n_b >= k
        count = valid.sum(axis=1)
        keep = count > 0
        if not keep.any():
            continue
        for table, out in ((hat_t, hat_ci), (at_t, at_ci)):
            means = (table[n_b, c_b] * valid).sum(axis=1)[keep] / count[keep]
            low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
            out[k] = Interval(low=float(low), high=float(high))
    return hat_ci, at_ci


# --- the gate -------------------------------------------------------------------

Bound = Literal["min", "max", "max_drop", "max_increase"]
_BOUNDS: tuple[Bound, ...] = ("min", "max", "max_drop", "max_increase")
_PASS_NAME = re.compile(r"(pass_hat|pass_at)_(k|[1-9][0-9]*)")
_REWARD_NAME = re.compile(r"reward(\.[A-Za-z0-9_\-]+)?")
_METRIC_HELP = (
    "use pass_hat_<k>, pass_hat_k, pass_at_<k>, pass_at_k, reward, reward.<component> or tool_calls"
)


class Threshold(_Frozen):
    """Bounds on one metric. Every bound that is set becomes one :class:`Check`.

    ``min``/``max`` are absolute limits on the candidate's value; ``max_drop``
    and ``max_increase`` limit the change against the baseline, in the metric's
    own units (absolute, not relative): ``baseline - candidate <= max_drop`` and
    ``candidate - baseline <= max_increase``.
    """

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    max_drop: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_increase: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    k: PositiveInt | None = Field(default=None, description="for pass_hat_k / pass_at_k")

    @model_validator(mode="after")
    def _some_bound(self) -> Threshold:
        if all(getattr(self, b) is None for b in _BOUNDS):
            raise ValueError("set at least one of min, max, max_drop, max_increase")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: no value can pass")
        return self

    def check_range(self, name: str, low: float, high: float) -> None:
        """Refuse bounds no value of a metric in [`low`, `high`] can meet, or that can never fail.

        Raises:
            ValueError: ``<name>.<bound>: must be in [low, high] ... (got x)``.
        """
        span = high - low
        for bound in _BOUNDS:
            value = getattr(self, bound)
            if value is None:
                continue
            top = span if bound in ("max_drop", "max_increase") else high
            bottom = 0.0 if bound in ("max_drop", "max_increase") else low
            if not bottom <= value <= top:
                what = "a share" if high == 1.0 else "a count"
                raise ValueError(
                    f"{name}.{bound}: must be in [{bottom:g}, {top:g}], {name} is {what} (got {value:g})"
                )


class GateSpec(RootModel[dict[str, Threshold]]):
    """What a candidate run must satisfy, alone and against a baseline run.

    A mapping from metric name to :class:`Threshold`::

        pass_hat_1: {min: 0.9}                   # absolute floor on pass^1
        pass_hat_k: {k: 3, max_drop: 0.05}       # pass^3 may drop by at most 0.05
        pass_at_2: {min: 0.95}
        reward: {min: 0.7}                       # mean scalar reward (alias reward.total)
        reward.task_success: {max_drop: 0.02}    # mean of one reward component
        tool_calls: {max_increase: 0.5}          # mean tool calls per trial

    ``pass_hat_k`` / ``pass_at_k`` need ``k``; ``pass_hat_<k>`` may repeat it
    only if it agrees.
    """

    @model_validator(mode="after")
    def _known_metrics(self) -> GateSpec:
        for name, t in self.root.items():
            m = _PASS_NAME.fullmatch(name)
            if m:
                if m.group(2) == "k" and t.k is None:
                    raise ValueError(f"{name}: set k (e.g. {{k: 3, max_drop: 0.05}})")
                if m.group(2) != "k" and t.k is not None and t.k != int(m.group(2)):
                    raise ValueError(f"{name}: k={t.k} contradicts the name; drop k or rename")
            elif t.k is not None:
                raise ValueError(f"{name}: k only applies to pass_hat_k / pass_at_k")
            elif not (_REWARD_NAME.fullmatch(name) or name == "tool_calls"):
                raise ValueError(f"unknown gate metric {name!r}; {_METRIC_HELP}")
            # pass^k, pass@k and rewards are shares in [0, 1]; tool calls per trial a count >= 0
            t.check_range(name, 0.0, math.inf if name == "tool_calls" else 1.0)
        return self

    def resolved(self) -> list[tuple[str, Threshold]]:
        """The thresholds keyed by canonical metric name (``pass_hat_3``, ``reward.total``)."""
        out: list[tuple[str, Threshold]] = []
        for name, t in self.root.items():
            m = _PASS_NAME.fullmatch(name)
            if m and m.group(2) == "k":
                name = f"{m.group(1)}_{t.k}"
            elif name == "reward":
                name = "reward.total"
            out.append((name, t))
        return out


DEFAULT_GATE = GateSpec({"pass_hat_1": Threshold(min=1.0)})
"""The gate of a suite that declares none: every planned trial must pass (pass^1 = 1).
A suite that wants no gate says so with ``gate: {}`` (report only)."""


class Check(_Frozen):
    """One bound of one metric, evaluated."""

    name: str = Field(description="canonical metric name, e.g. pass_hat_3 or reward.task_success")
    kind: Bound
    value: float | None = Field(description="candidate value (None: not measured)")
    baseline: float | None = Field(description="baseline value, for max_drop / max_increase")
    threshold: float
    passed: bool
    detail: str


class GateResult(_Frozen):
    """The gate's decision: passed when every check passed."""

    passed: bool
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]


def compare(
    candidate: SuiteMetrics,
    baseline: SuiteMetrics | None,
    thresholds: GateSpec | Mapping[str, Any],
) -> GateResult:
    """Evaluate a gate: the candidate's absolute limits and its regressions vs a baseline.

    Every bound of every threshold yields one :class:`Check`:

    * ``min`` / ``max``: ``candidate >= min`` / ``candidate <= max``.
    * ``max_drop``: ``baseline - candidate <= max_drop``.
    * ``max_increase``: ``candidate - baseline <= max_increase``.

    Comparisons allow 1e-9 of float slack. A metric the candidate did not
    measure (k above every trial count, an absent reward component) fails its
    checks; so does a regression check whose metric the baseline lacks. With
    ``baseline=None`` (first run, nothing to compare with) regression checks
    pass and say they were skipped.

    Args:
        candidate: Metrics of the run under test.
        baseline: Metrics of the reference run, or None.
        thresholds: A :class:`GateSpec` or its mapping form.

    Returns:
        The gate result.

    Raises:
        pydantic.ValidationError: If ``thresholds`` is a mapping that is not a valid GateSpec.
    """
    spec = thresholds if isinstance(thresholds, GateSpec) else GateSpec.model_validate(thresholds)
    checks: list[Check] = []
    for name, t in spec.resolved():
        value = candidate.metric(name)
        base = baseline.metric(name) if baseline is not None else None
        for kind in _BOUNDS:
            limit = getattr(t, kind)
            if limit is not None:
                checks.append(_evaluate(name, kind, float(limit), value, base, baseline is None))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


def _evaluate(
    name: str, kind: Bound, limit: float, value: float | None, base: float | None, no_baseline: bool
) -> Check:
    def check(passed: bool, detail: str) -> Check:
        return Check(
            name=name, kind=kind, value=value, baseline=base, threshold=limit, passed=passed, detail=detail
        )

    relative = kind in ("max_drop", "max_increase")
    if relative and no_baseline:
        return check(True, f"{name} {kind}: skipped, no baseline")
    if value is None:
        return check(False, f"{name} was not measured in the candidate run")
    if kind == "min":
        ok = value >= limit - _EPS
        return check(ok, f"{name} = {value:.4f} {'>=' if ok else '<'} min {limit:g}")
    if kind == "max":
        ok = value <= limit + _EPS
        return check(ok, f"{name} = {value:.4f} {'<=' if ok else '>'} max {limit:g}")
    if base is None:
        return check(False, f"{name} was not measured in the baseline run")
    if kind == "max_drop":
        drop = base - value
        ok = drop <= limit + _EPS
        return check(
            ok,
            f"{name} = {value:.4f} vs baseline {base:.4f}: drop {drop:+.4f} "
            f"{'within' if ok else 'exceeds'} max_drop {limit:g}",
        )
    rise = value - base
    ok = rise <= limit + _EPS
    return check(
        ok,
        f"{name} = {value:.4f} vs baseline {base:.4f}: increase {rise:+.4f} "
        f"{'within' if ok else 'exceeds'} max_increase {limit:g}",
    )
