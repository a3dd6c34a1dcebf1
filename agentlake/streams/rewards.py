"""Reward math: pure functions from a trajectory summary to a reward vector.

A reward is a vector. Each component is a number in [0, 1] (higher is better)
or ``None`` when it does not apply (e.g. no cost was reported); the scalar
``total`` is the declared weighting over the components that apply, and a
*gate* names a component that must reach its threshold for the trial to count
as a success. No I/O here: the stream processor and the tests call the same code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


@dataclass
class TrajectorySummary:
    """What the reward functions see: the fold of one trajectory's events."""

    outcome: str | None
    steps: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    redundant_calls: int = 0
    invalid_calls: int = 0
    out_of_scope_calls: int = 0
    # calls an auth gateway denied (recorded with error kind ``unauthorized``)
    unauthorized_calls: int = 0
    expected_tool_calls: int | None = None
    duration_ms: float = 0.0
    tool_latency_ms: float = 0.0
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tool_sequence: list[str] = field(default_factory=list)
    final_answer: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    # a simulation grader's checks (name -> passed), from TrajectoryEnded; empty in production
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def through_gateway(self) -> bool:
        """Whether the calls went through an auth gateway: the trajectory says so
        (attribute ``auth=gateway``, set by ``sim run --auth``) or a call was denied by one."""
        return self.attributes.get(AUTH_ATTRIBUTE) == "gateway" or self.unauthorized_calls > 0

    @property
    def tokens(self) -> int | None:
        if self.tokens_in is None and self.tokens_out is None:
            return None
        return (self.tokens_in or 0) + (self.tokens_out or 0)


AUTH_ATTRIBUTE = "auth"
"""Trajectory attribute naming how tool calls were authorized (``gateway``: through an auth gateway)."""
UNAUTHORIZED = "unauthorized"
"""The ``error_kind`` of a tool call an auth gateway denied."""

ComponentFn = Callable[[TrajectorySummary, Mapping[str, Any]], float | None]


def _clamp(x: float) -> float:
    return 0.0 if math.isnan(x) else max(0.0, min(1.0, x))


def task_success(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """1 when the task was done: every grader check passed (simulations), or, with no
    checks, the trajectory ended with outcome ``success``. Else 0."""
    if s.checks:
        return 1.0 if all(s.checks.values()) else 0.0
    return 1.0 if s.outcome == "success" else 0.0


def _share(s: TrajectorySummary, prefix: str) -> float | None:
    named = [v for k, v in s.checks.items() if k == prefix or k.startswith(prefix + ".")]
    return sum(named) / len(named) if named else None


def state_correctness(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """Share of the final-state assertions that hold (simulations only)."""
    return _share(s, "final_state")


def expected_calls(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """1 when the tool calls matched the expected ones in the declared mode (simulations only)."""
    return _share(s, "tool_calls")


def answer_quality(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """Share of the final-answer checks that pass (simulations only)."""
    return _share(s, "final_answer")


def _good_share(bad: int, calls: int) -> float:
    """1 - bad / calls; 1 when no call was made."""
    return 1.0 if calls == 0 else _clamp(1 - bad / calls)


def tool_efficiency(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """expected / actual tool calls (capped at 1) when the expected count is known;
    otherwise the share of calls that were not exact repeats of an earlier call."""
    expected = p.get("expected", s.expected_tool_calls)
    if expected is None:
        return _good_share(s.redundant_calls, s.tool_calls)
    if s.tool_calls == 0:
        return 1.0 if expected == 0 else 0.0
    return _clamp(float(expected) / s.tool_calls)


def tool_reliability(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """1 - (tool calls that returned an error) / (tool calls)."""
    return _good_share(s.tool_errors, s.tool_calls)


def valid_calls(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """1 - (calls rejected by the tool's input schema) / (tool calls)."""
    return _good_share(s.invalid_calls, s.tool_calls)


def in_scope(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """1 - (calls outside the agent's declared tools or scopes) / (tool calls)."""
    return _good_share(s.out_of_scope_calls, s.tool_calls)


def authorized(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """1 - (calls the auth gateway denied) / (tool calls): how well the agent kept to the
    scope its token granted. Not applicable when the calls did not go through a gateway
    (`TrajectorySummary.through_gateway`), so other trajectories score as before."""
    if not s.through_gateway:
        return None
    return _good_share(s.unauthorized_calls, s.tool_calls)


def latency(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """min(1, target_ms / wall-clock duration). Default target: 5 s."""
    target = float(p.get("target_ms", 5000.0))
    if s.duration_ms <= target:
        return 1.0
    return _clamp(target / s.duration_ms)


def cost(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """min(1, budget / spend): USD when reported (budget_usd), else tokens (budget_tokens).
    Not applicable when the agent reported neither."""
    if s.cost_usd is not None:
        budget = float(p.get("budget_usd", 0.01))
        return 1.0 if s.cost_usd <= budget else _clamp(budget / s.cost_usd)
    tokens = s.tokens
    if tokens is not None:
        budget_t = float(p.get("budget_tokens", 4000))
        return 1.0 if tokens <= budget_t else _clamp(budget_t / tokens)
    return None


def fewest_steps(s: TrajectorySummary, p: Mapping[str, Any]) -> float | None:
    """min(1, max_steps_target / steps)."""
    target = float(p.get("target", 5))
    if s.steps <= target:
        return 1.0
    return _clamp(target / s.steps)


BUILTIN_COMPONENTS: dict[str, ComponentFn] = {
    "task_success": task_success,
    "tool_efficiency": tool_efficiency,
    "tool_reliability": tool_reliability,
    "valid_calls": valid_calls,
    "in_scope": in_scope,
    "authorized": authorized,
    "latency": latency,
    "cost": cost,
    "fewest_steps": fewest_steps,
    "state_correctness": state_correctness,
    "expected_calls": expected_calls,
    "answer_quality": answer_quality,
}


class _Params(BaseModel):
    """The params a builtin component takes: strict types (``"5000"`` is not a number,
    ``true`` not a count), finite, no unknown names."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ToolEfficiencyParams(_Params):
    expected: int | None = Field(default=None, ge=0, description="expected tool calls per trajectory")


class LatencyParams(_Params):
    target_ms: float = Field(default=5000.0, gt=0, description="wall-clock duration that scores 1, ms")


class CostParams(_Params):
    budget_usd: float = Field(
        default=0.01, gt=0, description="spend that scores 1 when cost is reported, USD"
    )
    budget_tokens: int = Field(default=4000, gt=0, description="tokens in + out that score 1 otherwise")


class FewestStepsParams(_Params):
    target: int = Field(default=5, gt=0, description="agent steps that score 1")


BUILTIN_PARAMS: dict[str, type[_Params]] = {
    "tool_efficiency": ToolEfficiencyParams,
    "latency": LatencyParams,
    "cost": CostParams,
    "fewest_steps": FewestStepsParams,
}
"""The params model of each builtin that takes params; the others take none."""

_FUNCTION_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def check_params(function_name: str, params: Mapping[str, Any]) -> None:
    """Validate a builtin component's params; a custom function's are its own business.

    Raises:
        ValueError: one line naming the param: an unknown name (with the nearest known
            one), a wrong type, or a value out of range (budgets and targets > 0).
    """
    if function_name not in BUILTIN_COMPONENTS:
        return
    model = BUILTIN_PARAMS.get(function_name)
    known = sorted(model.model_fields) if model is not None else []
    for key in params:
        if key not in known:
            if not known:
                raise ValueError(f"params.{key}: {function_name} takes no params")
            near = get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known)}"
            raise ValueError(f"params.{key}: unknown param of {function_name}: {hint}")
    if model is None:
        return
    try:
        model.model_validate(dict(params))
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        name = ".".join(str(x) for x in err["loc"])
        raise ValueError(f"params.{name}: {err['msg']} (got {err['input']!r})") from None


class ComponentSpec(BaseModel):
    """One reward component of a spec: which function, its weight, its gate, its params.

    A builtin's params are checked against its params model (`BUILTIN_PARAMS`) here,
    so a spec that validates can always be computed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    fn: str | None = Field(default=None, description="builtin name or 'module:function'; defaults to name")
    weight: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    gate: float | None = Field(
        default=None, ge=0, le=1, allow_inf_nan=False, description="minimum value for success"
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def function_name(self) -> str:
        return self.fn or self.name

    @model_validator(mode="after")
    def _function_and_params(self) -> ComponentSpec:
        fn = self.function_name
        if fn not in BUILTIN_COMPONENTS:
            if ":" not in fn:
                near = get_close_matches(fn, BUILTIN_COMPONENTS, n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ValueError(
                    f"unknown reward function {fn!r}: {hint}"
                    f"use one of {sorted(BUILTIN_COMPONENTS)} or 'module:function'"
                )
            if not _FUNCTION_REF.fullmatch(fn):
                raise ValueError(f"reward function must look like 'package.module:function' (got {fn!r})")
        check_params(fn, self.params)
        return self


class RewardSpec(BaseModel):
    """A declared reward: components with weights and gates. Versioned like agents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = "default"
    version: str = "1"
    components: list[ComponentSpec]

    @field_validator("components")
    @classmethod
    def _known(cls, v: list[ComponentSpec]) -> list[ComponentSpec]:
        if not v:
            raise ValueError("a reward spec needs at least one component")
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate component names in {names}")
        return v

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"


DEFAULT_SPEC = RewardSpec(
    id="default",
    version="1",
    components=[
        ComponentSpec(name="task_success", weight=0.5, gate=1.0),
        ComponentSpec(name="tool_efficiency", weight=0.2),
        ComponentSpec(name="tool_reliability", weight=0.1),
        ComponentSpec(name="in_scope", weight=0.1),
        # applies only through an auth gateway: other trajectories' totals are unchanged
        ComponentSpec(name="authorized", weight=0.1),
        ComponentSpec(name="latency", weight=0.05),
        ComponentSpec(name="cost", weight=0.05),
    ],
)

_custom_cache: dict[str, ComponentFn] = {}


def resolve_function(name: str) -> ComponentFn:
    if name in BUILTIN_COMPONENTS:
        return BUILTIN_COMPONENTS[name]
    if name not in _custom_cache:
        import importlib

        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward function {name!r} cannot be imported: {e}") from e
        _custom_cache[name] = fn
    return _custom_cache[name]


@dataclass(frozen=True)
class RewardVector:
    """A scored trajectory: component values in [0, 1] and weights by name, the weighted
    ``total``, the gated component names, those that failed, and the components whose
    function raised (`errors`, in spec order)."""

    components: dict[str, float]
    weights: dict[str, float]
    total: float
    gates: list[str]
    failed_gates: list[str]
    errors: list[str] = field(default_factory=list)


REWARD_ERROR_FLAG = "reward_error:"
"""Flag prefix (``reward_error:<component>``) on a score one of whose components raised."""


def score(
    summary: TrajectorySummary, spec: RewardSpec = DEFAULT_SPEC, *, errors_fail: bool = True
) -> RewardVector:
    """Compute every component, the weighted total over those that apply, and the gates.

    A component whose function raises (a custom grader's bug: builtins are computable
    for every spec that validates) is listed in ``errors``, and then:

    - ``errors_fail=True`` (simulation trials): it scores 0 and fails a gate named
      ``<component>:error``, so a broken grader cannot pass a CI gate;
    - ``errors_fail=False`` (production traffic): it does not apply (no value, no
      weight, no gate), so a broken grader does not turn every production trajectory
      into a failure; the caller flags the score (`REWARD_ERROR_FLAG`).
    """
    comps: dict[str, float] = {}
    weights: dict[str, float] = {}
    gates: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    for c in spec.components:
        try:
            value = resolve_function(c.function_name)(summary, c.params)
        except Exception:
            errors.append(c.name)
            if not errors_fail:
                continue
            value = 0.0
            failed.append(f"{c.name}:error")
        if c.gate is not None:
            gates.append(c.name)
        if value is None:
            continue
        v = _clamp(float(value))
        comps[c.name] = v
        weights[c.name] = c.weight
        if c.gate is not None and v + 1e-12 < c.gate:
            failed.append(c.name)
    wsum = sum(weights.values())
    total = sum(comps[n] * weights[n] for n in comps) / wsum if wsum > 0 else 0.0
    return RewardVector(comps, weights, total, gates, failed, errors)
