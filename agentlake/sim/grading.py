"""Grading one trial: did the agent succeed, and if not, whose failure was it.

:func:`grade` compares what was observed in a trial (:class:`Observation`:
tool calls, final state, final answer, outcome, crash, budgets) with the
trial's :class:`~agentlake.sim.suite.Criteria` and returns a :class:`Verdict`:
one :class:`CheckResult` per assertion, ``success`` when all of them pass, and
an attribution of a failure.

Tool-call matching. A call matches an expected call when the tool names are
equal and every expected argument is present with an equal value (a *subset*
match, recursive into mappings; ``1 == True`` and ``12 == "12"`` do not hold).
Calls that returned an error are left out unless ``include_errors`` is set, so
a retried call counts once. With A the actual calls and E the expected ones:

* ``strict``: A and E have the same length and A[i] matches E[i] for every i.
* ``unordered``: same multiset: A and E have the same length and can be paired
  one-to-one so that each pair matches.
* ``subset``: every actual call pairs with a distinct expected call (the agent
  did nothing extra; expected calls may be missing).
* ``superset``: every expected call pairs with a distinct actual call (all
  expected calls happened; extra calls are allowed). The default.

Pairings are maximum bipartite matchings, so the order in which calls are
listed never causes a false mismatch.

Attribution of a failed trial. The first rule that applies wins:

1. ``grader``: evaluating a check raised: a ``final_state`` path that exists in
   neither the initial nor the final state, a value compared with one of another
   JSON kind (a string with a boolean), a regex that fails after rendering. The
   verdict says nothing about the agent. (What can be known before the first
   trial — unknown tools, paths outside the initial state — is a setup error
   raised by ``runner.check_setup`` instead.)
2. ``infrastructure``: the agent's model provider failed (transport error,
   timeout, exhausted 429/5xx retries, a garbage body): not a regression.
3. ``tool``: some call suffered a fault — ``injected`` is set, or its
   ``error_kind`` is one of ``injected_error``, ``timeout``, ``malformed``,
   ``replay_miss``, ``transport`` — that was not recovered (no later call to the
   same tool with the same arguments succeeded), *and* the agent otherwise
   followed the expected calls: taking every call it attempted (errors
   included), with repeats of a faulted call dropped, the list is a prefix of
   the expected sequence (``strict``), or each call pairs with a distinct
   expected call (``unordered``, ``subset``); ``superset`` and scenarios
   without tool-call criteria accept any calls. The gate report then checks
   the baseline's evidence: when the baseline run's trial with the same seed
   met the same fault and recovered, the failure is re-attributed to ``agent``
   (``gate.reattribute``).
4. ``user``: the simulated user failed (``user_error``).
5. ``agent``: everything else — wrong or missing calls, wrong state or answer,
   business errors (``tool_error``, ``invalid_arguments``), a crash, an outcome
   of ``error``/``timeout``/``aborted``, a budget overrun.

A successful trial is attributed ``none``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentlake.sim.suite import Criteria, FinalAnswerCheck, StateCheck, ToolCallsCheck, ToolCallSpec, Trial

__all__ = [
    "FAULT_KINDS",
    "Attribution",
    "CheckResult",
    "Observation",
    "ObservedCall",
    "Verdict",
    "arguments_match",
    "comparable",
    "grade",
    "lookup",
    "match_tool_calls",
]

FAULT_KINDS = frozenset({"injected_error", "timeout", "malformed", "replay_miss", "transport"})
"""``error_kind`` values that are the environment's fault, not the agent's."""

Attribution = Literal["none", "agent", "user", "tool", "grader", "infrastructure"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObservedCall(_Model):
    """One tool call the agent made, as the runner saw it."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    is_error: bool = False
    error_kind: str | None = None
    injected: bool = Field(default=False, description="a fault was injected into this call")

    @property
    def is_fault(self) -> bool:
        """The call suffered an injected fault or a staging/transport error."""
        return self.injected or self.error_kind in FAULT_KINDS


class Observation(_Model):
    """Everything the runner observed about one trial."""

    tool_calls: list[ObservedCall] = Field(default_factory=list)
    initial_state: dict[str, Any] | None = Field(
        default=None, description="the state before the agent ran (to tell a bad path from a missing key)"
    )
    final_state: dict[str, Any] = Field(default_factory=dict)
    final_answer: str | None = None
    outcome: str | None = Field(default=None, description="outcome the agent reported")
    steps: int = 0
    error: str | None = Field(default=None, description="exception text if the agent crashed")
    user_error: str | None = Field(default=None, description="failure of the simulated user")
    infrastructure_error: str | None = Field(
        default=None, description="the agent's model provider failed (outage, rate limit, garbage answer)"
    )
    budget_exceeded: Literal["max_steps", "max_tool_calls", "timeout_s"] | None = None


class CheckResult(_Model):
    """One assertion of the criteria, evaluated."""

    name: str
    passed: bool
    detail: str


class Verdict(_Model):
    """The grade of one trial."""

    success: bool
    checks: list[CheckResult]
    attribution: Attribution
    reason: str

    @property
    def failed(self) -> list[CheckResult]:
        """The checks that did not pass."""
        return [c for c in self.checks if not c.passed]


_MISSING = object()


def lookup(data: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path (``orders.12.status``) into nested mappings and lists.

    A segment is a mapping key (tried as given, then as an int if it is all
    digits) or a list index. Keys containing dots cannot be addressed.

    Args:
        data: The root (usually the final state).
        path: Dot-separated segments.

    Returns:
        ``(found, value)``; value is None when not found.
    """
    cur = data
    for seg in path.split("."):
        nxt: Any = _MISSING
        if isinstance(cur, Mapping):
            if seg in cur:
                nxt = cur[seg]
            elif re.fullmatch(r"-?\d+", seg) and int(seg) in cur:
                nxt = cur[int(seg)]
        elif isinstance(cur, list | tuple) and re.fullmatch(r"-?\d+", seg):
            i = int(seg)
            if -len(cur) <= i < len(cur):
                nxt = cur[i]
        if nxt is _MISSING:
            return False, None
        cur = nxt
    return True, cur


def _equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, Mapping):
        return (
            isinstance(actual, Mapping)
            and expected.keys() == actual.keys()
            and all(_equal(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(expected) == len(actual)
            and all(_equal(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


def arguments_match(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Subset match: every expected key is in ``actual`` with an equal value.

    Nested mappings match recursively by subset; lists must be equal element by
    element; booleans never equal numbers.

    Args:
        expected: The expected arguments (may be a subset).
        actual: The arguments the agent sent.

    Returns:
        Whether the call's arguments satisfy the expectation.
    """
    for key, want in expected.items():
        if key not in actual:
            return False
        got = actual[key]
        if isinstance(want, Mapping):
            if not (isinstance(got, Mapping) and arguments_match(want, got)):
                return False
        elif not _equal(want, got):
            return False
    return True


def _matches(spec: ToolCallSpec, call: ObservedCall) -> bool:
    return spec.tool == call.tool and arguments_match(spec.args, call.args)


def _max_matching(expected: Sequence[ToolCallSpec], actual: Sequence[ObservedCall]) -> dict[int, int]:
    """Maximum bipartite matching (Kuhn): actual index -> expected index."""
    edges = [[j for j, spec in enumerate(expected) if _matches(spec, call)] for call in actual]
    owner: dict[int, int] = {}  # expected index -> actual index

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(actual)):
        augment(i, set())
    return {i: j for j, i in owner.items()}


def _fmt(call: ToolCallSpec | ObservedCall) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in call.args.items())
    return f"{call.tool}({args})"


def match_tool_calls(check: ToolCallsCheck, calls: Sequence[ObservedCall]) -> tuple[bool, str]:
    """Match observed calls against the expected ones (see the module docstring for the modes).

    Args:
        check: The expectation (mode, calls, include_errors).
        calls: The calls the agent made, in order.

    Returns:
        ``(passed, detail)``.
    """
    actual = [c for c in calls if check.include_errors or not c.is_error]
    expected = check.calls
    shown = "[" + ", ".join(_fmt(c) for c in actual) + "]"
    if check.mode == "strict":
        for i, (spec, call) in enumerate(zip(expected, actual, strict=False)):
            if not _matches(spec, call):
                return False, f"call {i}: expected {_fmt(spec)}, got {_fmt(call)}; actual {shown}"
        if len(actual) != len(expected):
            return False, f"expected {len(expected)} calls in order, got {len(actual)}: {shown}"
        return True, f"{len(actual)} calls in the expected order"
    pairs = _max_matching(expected, actual)
    paired_expected = set(pairs.values())
    missing = [_fmt(s) for j, s in enumerate(expected) if j not in paired_expected]
    extra = [_fmt(c) for i, c in enumerate(actual) if i not in pairs]
    if check.mode == "unordered":
        ok = not missing and not extra
    elif check.mode == "subset":
        ok = not extra
    else:
        ok = not missing
    if ok:
        return True, f"{check.mode} match of {len(actual)} calls against {len(expected)} expected"
    problems = []
    if missing and check.mode != "subset":
        problems.append("missing " + ", ".join(missing))
    if extra and check.mode != "superset":
        problems.append("unexpected " + ", ".join(extra))
    return False, f"{check.mode}: {'; '.join(problems)}; actual {shown}"


def _kind(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, int | float):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, Mapping):
        return "object"
    if isinstance(x, list | tuple):
        return "array"
    return type(x).__name__


def comparable(expected: Any, actual: Any) -> bool:
    """Whether comparing ``expected`` with ``actual`` can mean anything: same JSON kind,
    or either is null (a string is never compared with a boolean or a number)."""
    return expected is None or actual is None or _kind(expected) == _kind(actual)


def _state_check(
    sc: StateCheck, state: Mapping[str, Any], initial: Mapping[str, Any] | None = None
) -> tuple[bool, str]:
    op, operand = sc.op
    found, value = lookup(state, sc.path)
    if op == "exists":
        ok = found == bool(operand)
        return ok, f"{sc.path} {'exists' if found else 'does not exist'}"
    if not found:
        if initial is not None and not lookup(initial, sc.path)[0]:
            parent = sc.path.rsplit(".", 1)[0] if "." in sc.path else ""
            if not parent or not (lookup(state, parent)[0] or lookup(initial, parent)[0]):
                raise LookupError(f"path {sc.path} exists in neither the initial nor the final state")
        return False, f"{sc.path} not found in the final state"
    operands = operand if op == "in" else [operand]
    bad = [x for x in operands if not comparable(x, value)]
    if bad:
        raise TypeError(f"{sc.path}: cannot compare {_kind(bad[0])} {bad[0]!r} with {_kind(value)} {value!r}")
    if op == "equals":
        ok = _equal(operand, value)
        return ok, f"{sc.path} = {value!r}" + ("" if ok else f", expected {operand!r}")
    if op == "in":
        ok = any(_equal(x, value) for x in operand)
        return ok, f"{sc.path} = {value!r}" + ("" if ok else f", expected one of {operand!r}")
    ok = not _equal(operand, value)
    return ok, f"{sc.path} = {value!r}" + ("" if ok else f", must not equal {operand!r}")


def _answer_checks(
    fa: FinalAnswerCheck, answer: str | None
) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    def norm(s: str) -> str:
        return s if fa.case_sensitive else s.casefold()

    text = answer or ""
    out: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    if fa.contains:

        def contains() -> tuple[bool, str]:
            if answer is None:
                return False, "no final answer"
            absent = [s for s in fa.contains if norm(s) not in norm(text)]
            return not absent, f"missing {absent!r}" if absent else "contains all"

        out.append(("final_answer.contains", contains))
    if fa.not_contains:

        def not_contains() -> tuple[bool, str]:
            present = [s for s in fa.not_contains if norm(s) in norm(text)]
            return not present, f"must not contain {present!r}" if present else "contains none"

        out.append(("final_answer.not_contains", not_contains))
    if fa.regex is not None:
        pattern = fa.regex

        def regex() -> tuple[bool, str]:
            if answer is None:
                return False, "no final answer"
            flags = 0 if fa.case_sensitive else re.IGNORECASE
            ok = re.search(pattern, text, flags) is not None
            return ok, f"{'matches' if ok else 'does not match'} /{pattern}/"

        out.append(("final_answer.regex", regex))
    if fa.equals is not None:
        want = fa.equals

        def equals() -> tuple[bool, str]:
            if answer is None:
                return False, "no final answer"
            ok = norm(text.strip()) == norm(want.strip())
            return ok, "equal" if ok else f"got {text!r}, expected {want!r}"

        out.append(("final_answer.equals", equals))
    return out


def _unrecovered_faults(calls: Sequence[ObservedCall]) -> list[ObservedCall]:
    out = []
    for i, call in enumerate(calls):
        if call.is_fault:
            recovered = any(
                later.tool == call.tool
                and later.args == call.args
                and not later.is_error
                and not later.is_fault
                for later in calls[i + 1 :]
            )
            if not recovered:
                out.append(call)
    return out


def _followed_expected(check: ToolCallsCheck | None, calls: Sequence[ObservedCall]) -> bool:
    if check is None or check.mode == "superset":
        return True
    attempted: list[ObservedCall] = []
    faulted: list[ObservedCall] = []
    for call in calls:
        if any(f.tool == call.tool and f.args == call.args for f in faulted):
            continue  # a retry of a faulted call
        attempted.append(call)
        if call.is_fault:
            faulted.append(call)
    if check.mode == "strict":
        return len(attempted) <= len(check.calls) and all(
            _matches(spec, call) for spec, call in zip(check.calls, attempted, strict=False)
        )
    return len(_max_matching(check.calls, attempted)) == len(attempted)


def grade(trial: Trial, observation: Observation) -> Verdict:
    """Grade one trial against its (rendered) criteria and attribute a failure.

    Checks, in order: one per ``final_state`` assertion (``final_state.<path>``),
    ``tool_calls``, one per declared ``final_answer`` condition
    (``final_answer.contains`` …), ``outcome``, ``budget`` (when the trial has
    a limit or one was reported exceeded), ``agent_completed`` (the agent did
    not crash) and ``user_simulator`` (when the trial has a simulated user or a
    user error was reported). The trial succeeds when every check passes;
    attribution follows the rules in the module docstring. An exception in a
    check never escapes: it fails that check and attributes the trial to the
    grader.

    Args:
        trial: The trial (its criteria and budgets are already rendered).
        observation: What happened.

    Returns:
        The verdict.
    """
    criteria: Criteria = trial.criteria
    obs = observation
    planned: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    for sc in criteria.final_state:
        planned.append(
            (f"final_state.{sc.path}", partial(_state_check, sc, obs.final_state, obs.initial_state))
        )
    if criteria.tool_calls is not None:
        tc = criteria.tool_calls
        planned.append(("tool_calls", lambda: match_tool_calls(tc, obs.tool_calls)))
    if criteria.final_answer is not None:
        planned.extend(_answer_checks(criteria.final_answer, obs.final_answer))
    if criteria.outcome is not None:
        want = criteria.outcome
        planned.append(
            ("outcome", lambda: (obs.outcome == want, f"reported {obs.outcome!r}, expected {want!r}"))
        )
    b = trial.budgets
    if obs.budget_exceeded or b.max_steps is not None or b.max_tool_calls is not None:
        planned.append(("budget", lambda: _budget(trial, obs)))
    planned.append(("agent_completed", lambda: _completed(obs)))
    if trial.user is not None or obs.user_error is not None:
        planned.append(
            (
                "user_simulator",
                lambda: (
                    obs.user_error is None,
                    f"user failed: {obs.user_error}" if obs.user_error else "ok",
                ),
            )
        )

    checks: list[CheckResult] = []
    grader_failures: list[CheckResult] = []
    for name, run in planned:
        try:
            passed, detail = run()
        except Exception as e:
            result = CheckResult(name=name, passed=False, detail=f"grader error: {type(e).__name__}: {e}")
            grader_failures.append(result)
        else:
            result = CheckResult(name=name, passed=bool(passed), detail=detail)
        checks.append(result)

    success = all(c.passed for c in checks)
    attribution, reason = _attribute(success, checks, grader_failures, trial, obs)
    return Verdict(success=success, checks=checks, attribution=attribution, reason=reason)


def _completed(obs: Observation) -> tuple[bool, str]:
    if obs.error is not None:
        return False, f"agent raised: {obs.error}"
    if obs.infrastructure_error is not None:
        return False, f"the agent's model provider failed: {obs.infrastructure_error}"
    if obs.outcome in ("error", "timeout", "aborted"):
        return False, f"agent ended with outcome {obs.outcome!r}"
    return True, "completed"


def _budget(trial: Trial, obs: Observation) -> tuple[bool, str]:
    b = trial.budgets
    if obs.budget_exceeded:
        return False, f"{obs.budget_exceeded} exceeded"
    if b.max_steps is not None and obs.steps > b.max_steps:
        return False, f"{obs.steps} steps > max_steps {b.max_steps}"
    if b.max_tool_calls is not None and len(obs.tool_calls) > b.max_tool_calls:
        return False, f"{len(obs.tool_calls)} tool calls > max_tool_calls {b.max_tool_calls}"
    return True, f"{obs.steps} steps, {len(obs.tool_calls)} tool calls"


def _attribute(
    success: bool,
    checks: list[CheckResult],
    grader_failures: list[CheckResult],
    trial: Trial,
    obs: Observation,
) -> tuple[Attribution, str]:
    if grader_failures:
        first = grader_failures[0]
        return "grader", f"{first.name}: {first.detail}"
    if success:
        return "none", f"all {len(checks)} checks passed"
    failed = next(c for c in checks if not c.passed)
    what = f"{failed.name}: {failed.detail}"
    if obs.infrastructure_error is not None:
        return "infrastructure", f"model provider failed: {obs.infrastructure_error}"
    faults = _unrecovered_faults(obs.tool_calls)
    if faults and _followed_expected(trial.criteria.tool_calls, obs.tool_calls):
        f = faults[0]
        kind = f.error_kind or "injected fault"
        return "tool", f"{kind} on {_fmt(f)} was not recovered ({what})"
    if obs.user_error is not None:
        return "user", f"simulated user failed: {obs.user_error}"
    return "agent", what
