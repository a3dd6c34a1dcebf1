"""The simulation runner: trials of a suite against staging MCP servers, through the log.

For each trial the runner builds the staging server (fresh initial state, seeded
faults), connects the agent under test to it over the real MCP protocol, records
every step and tool call through the SDK, grades the outcome (final state,
expected calls, answer) and attaches the grader's checks to `TrajectoryEnded`.
The rewards are *not* computed here: the stream processor scores each trajectory
from its events, the sink projects them into ClickHouse, and `read_trials` reads
them back — the same path production traffic takes.

Agents under test (`resolve_agent`):
* a built-in reference agent (``support-bot@1.0``, ``support-bot@1.1-beta``);
* a registered agent whose spec has an ``entrypoint: module:callable``;
* any ``module:callable`` (an async function ``(task, tools, trajectory, user=None, seed=None)``);
* ``openai:<model>``: the OpenAI-compatible tool-calling loop (`agentlake.sim.agents`);
* ``cmd:<shell command>``: an external process that connects to the staging server
  over streamable HTTP (``AGENTLAKE_MCP_URL``) and prints its final answer as the
  last line of stdout; its calls are recorded on the server side.

Where agents run is `agentlake.sim.harness`: in-process agents in a worker thread,
``cmd:`` agents in their own process group, each with the trial's ``timeout_s``
(default `DEFAULT_TIMEOUT_S`). Nothing an agent raises or does ends the runner.
`check_setup` validates servers, expected tools, state paths and personas before
the first trial, so a broken suite is a setup error, not failed trials.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import importlib
import inspect
import json
import os
import re
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp import Client

from agentlake.sdk import TracedSession, Tracer, Trajectory
from agentlake.sim.grading import Observation, ObservedCall, Verdict, grade
from agentlake.sim.harness import DEFAULT_TIMEOUT_S, LoopBridge, run_command, run_in_thread
from agentlake.sim.reference import REFERENCE_AGENTS, SHOP_TOOLS, shop_handler
from agentlake.sim.staging import Faults, HandlerBehaviour, StagingServer, ToolDef, tools_from_specs
from agentlake.sim.suite import Suite, Trial

AgentCallable = Callable[..., Awaitable[Any]]


class RunnerError(RuntimeError):
    """A run cannot start (unknown agent, unknown server...): one line for the user."""


# -- agents under test -----------------------------------------------------------
@dataclass
class AgentTarget:
    """What runs: an in-process callable or an external command."""

    agent_id: str
    version: str
    fn: AgentCallable | None = None
    command: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.agent_id}@{self.version}"


def _import(ref: str) -> AgentCallable:
    module, _, attr = ref.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as e:  # missing, or failing on import: either way it cannot run
        raise RunnerError(f"cannot import agent {ref!r}: {type(e).__name__}: {e}") from e
    if inspect.isclass(obj):
        obj = obj()
    if not callable(obj):
        raise RunnerError(f"{ref} is not callable")
    return obj  # type: ignore[no-any-return]


def _openai_agent(model: str) -> AgentCallable:
    """An `OpenAIChatAgent` per trial: its HTTP client belongs to the trial's own event loop."""
    from agentlake.sim.agents import OpenAIChatAgent
    from agentlake.sim.llm import ChatClient

    async def run(
        task: str, tools: Any, trajectory: Trajectory, user: Any = None, seed: int | None = None
    ) -> str:
        async with ChatClient.from_env(model=model) as client:
            return await OpenAIChatAgent(client)(task, tools, trajectory, user=user, seed=seed)

    return run


def resolve_agent(ref: str, registry: Any = None) -> AgentTarget:
    """Turn ``NAME@VERSION`` / ``module:callable`` / ``openai:MODEL`` / ``cmd:COMMAND`` into a target.

    ``NAME@VERSION`` runs the registered entrypoint when `registry` has one (even over a
    built-in reference agent of the same name), else the built-in.

    Raises:
        RunnerError: one line: an unknown agent, no entrypoint, or one that cannot be
            imported (the registry checks only its form), before any trial runs.
    """
    if ref.startswith("cmd:"):
        command = ref[4:].strip()
        if not command:
            raise RunnerError("cmd: needs a command, e.g. cmd:'python my_agent.py'")
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise RunnerError(f"cmd: cannot split {command!r}: {e}") from None
        # two commands must be told apart in reports and baselines: a readable id + a hash
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", " ".join(os.path.basename(a) for a in argv[:3])).strip("-")
        digest = hashlib.sha256(command.encode()).hexdigest()[:10]
        return AgentTarget(f"cmd-{slug[:48] or 'agent'}", digest, command=command)
    if ref.startswith("openai:"):
        from agentlake.sim.llm import ChatClient

        model = ref[len("openai:") :] or None
        try:
            model_name = ChatClient.from_env(model=model).model
        except ValueError as e:
            raise RunnerError(f"{ref}: {e}") from None
        return AgentTarget("openai-agent", model_name, fn=_openai_agent(model_name))
    name, _, version = ref.partition("@")
    if ":" in name and not version:
        return AgentTarget(name.split(":")[-1], "local", fn=_import(name))
    if not version:
        raise RunnerError(f"agent {ref!r}: give NAME@VERSION, module:callable, openai:MODEL or cmd:COMMAND")
    spec = registry.agent(name, version) if registry is not None else None
    if spec is not None and spec.entrypoint:  # what is registered runs, even over a built-in
        return AgentTarget(name, version, fn=_import(spec.entrypoint))
    if (name, version) in REFERENCE_AGENTS:
        return AgentTarget(name, version, fn=REFERENCE_AGENTS[(name, version)])
    if spec is None:
        raise RunnerError(f"agent {ref} is neither built in nor registered (agentlake registry list)")
    if not spec.entrypoint:
        raise RunnerError(f"agent {ref} has no entrypoint in the registry; add `entrypoint: module:callable`")
    return AgentTarget(name, version, fn=_import(spec.entrypoint))


# -- staging servers --------------------------------------------------------------
@dataclass
class StagingFactory:
    """Builds a fresh staging server per trial, by server name.

    ``faults`` (``--fault-rate``) applies to every server; a staging spec's own
    top-level ``faults`` and ``state`` apply to the server that spec declares only.
    """

    servers: dict[str, list[ToolDef]] = field(default_factory=dict)
    faults: Faults | None = None
    server_faults: dict[str, Faults] = field(default_factory=dict)
    base_states: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def default(cls, registry: Any = None, faults: Faults | None = None) -> StagingFactory:
        """The reference shop plus every registered server (OpenAPI-generated or declared tools).

        Raises:
            RunnerError: a registered server's tools cannot be built (one line).
        """
        f = cls(faults=faults)
        f.servers["shop"] = tools_from_specs(SHOP_TOOLS, HandlerBehaviour(handler=shop_handler))
        if registry is not None:
            for spec in registry.servers():
                if spec.id in f.servers:
                    continue
                try:
                    if spec.openapi:
                        from agentlake.sim.openapi import tools_from_openapi

                        f.servers[spec.id] = tools_from_openapi(spec.openapi, base_url=spec.url)
                    elif spec.tools:
                        # declared tools without a behaviour: schema-validated, answered with a
                        # `not_configured` error until a staging spec (--staging) gives them one
                        f.servers[spec.id] = tools_from_specs(spec.tools)
                except ValueError as e:  # OpenAPIError, pydantic's ValidationError
                    raise RunnerError(_one_line(f"registered server {spec.id}: {e}")) from None
        return f

    def add_spec_file(self, path: str) -> None:
        """Add a staging spec (YAML, see `agentlake.sim.staging.StagingSpec`) under its name.

        Raises:
            RunnerError: the file is missing or the spec is invalid (one line).
        """
        from agentlake.sim.staging import load_staging_spec

        try:
            spec = load_staging_spec(path)
        except ValueError as e:
            raise RunnerError(_one_line(f"staging spec {path}: {e}")) from None
        self.servers[spec.name] = list(spec.tools)
        if spec.faults is not None:
            self.server_faults[spec.name] = spec.faults
        else:
            self.server_faults.pop(spec.name, None)
        self.base_states[spec.name] = copy.deepcopy(spec.state)

    def tool_names(self, name: str) -> set[str]:
        """The tools of a server.

        Raises:
            RunnerError: no such server.
        """
        tools = self.servers.get(name)
        if tools is None:
            raise RunnerError(
                f"no staging server {name!r}: known {sorted(self.servers)}; pass --staging SPEC.yaml"
            )
        return {t.name for t in tools}

    def initial_state(self, name: str, trial_state: dict[str, Any]) -> dict[str, Any]:
        """The spec's ``state`` (if any) overlaid, key by key, with the trial's initial state."""
        return {**copy.deepcopy(self.base_states.get(name, {})), **trial_state}

    def build(self, name: str, state: dict[str, Any], seed: int) -> StagingServer:
        self.tool_names(name)
        faults = self.faults if self.faults is not None else self.server_faults.get(name)
        return StagingServer(
            self.servers[name], self.initial_state(name, state), faults=faults, seed=seed, name=name
        )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_setup(trials: Sequence[Trial], staging: StagingFactory) -> None:
    """Validate what can be validated before the first trial; raise one line if not.

    * every trial's server exists;
    * every expected tool call names a tool of that server;
    * every ``final_state`` path starts at a top-level key of the initial state (for
      an ``exists`` check, the key's parent must exist) and, where the path already
      resolves, the expected value has a type comparable with the current one;
    * a persona user has a model (its own ``model`` or ``AGENTLAKE_LLM_MODEL``).

    Raises:
        RunnerError: the first problem found.
    """
    from agentlake.sim.grading import comparable, lookup

    seen_cases: set[str] = set()
    for tr in trials:
        if tr.case_id in seen_cases:
            continue
        seen_cases.add(tr.case_id)
        server = tr.server or "shop"
        tools = staging.tool_names(server)
        where = f"scenario {tr.scenario_id} [{tr.variant_id}]"
        tc = tr.criteria.tool_calls
        for spec in tc.calls if tc is not None else []:
            if spec.tool not in tools:
                raise RunnerError(
                    f"{where}: expected tool {spec.tool!r} is not a tool of server {server!r} "
                    f"(it has: {', '.join(sorted(tools))})"
                )
        if tr.criteria.final_state:
            state = staging.initial_state(server, tr.state())
            for sc in tr.criteria.final_state:
                head = sc.path.split(".")[0]
                parent = sc.path.rsplit(".", 1)[0] if "." in sc.path else None
                op, operand = sc.op
                anchored = lookup(state, head)[0] or (
                    op == "exists" and (parent is None or lookup(state, parent)[0])
                )
                if not anchored:
                    raise RunnerError(
                        f"{where}: final_state path {sc.path!r} starts at {head!r}, which is not in the "
                        f"initial state of server {server!r} (top-level keys: {', '.join(sorted(state))})"
                    )
                found, value = lookup(state, sc.path)
                operands = operand if op == "in" else [operand]
                if found and op != "exists" and not all(comparable(x, value) for x in operands):
                    raise RunnerError(
                        f"{where}: final_state {sc.path} {op} {operand!r} compares a "
                        f"{type(operand).__name__} with the state's {type(value).__name__} {value!r}"
                    )
        persona = tr.user.persona if tr.user is not None else None
        if persona is not None and not (persona.model or os.environ.get("AGENTLAKE_LLM_MODEL")):
            raise RunnerError(
                f"{where}: the persona user has no model; set user.persona.model or AGENTLAKE_LLM_MODEL"
            )


# -- one trial -----------------------------------------------------------------------
@dataclass
class TrialResult:
    trial: Trial
    trajectory_id: str
    verdict: Verdict
    tool_calls: int
    seconds: float


class BudgetExceeded(Exception):
    pass


class _BudgetedTools:
    """The agent's view of the MCP session: records calls and enforces the call budget."""

    def __init__(self, inner: TracedSession, max_calls: int | None) -> None:
        self.inner = inner
        self.max_calls = max_calls
        self.calls = 0

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult:
        self.calls += 1
        if self.max_calls is not None and self.calls > self.max_calls:
            raise BudgetExceeded(f"more than {self.max_calls} tool calls")
        return await self.inner.call_tool(name, arguments)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Fenced:
    """The trajectory as the agent sees it: once the trial is over (e.g. it timed out while
    its thread was blocked), late steps and calls of the agent are dropped, so nothing is
    recorded after `TrajectoryEnded`."""

    def __init__(self, trajectory: Trajectory) -> None:
        self._trajectory = trajectory
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trajectory, name)

    def step(self, *args: Any, **kwargs: Any) -> None:
        if not self.closed:
            self._trajectory.step(*args, **kwargs)

    def end(self, *args: Any, **kwargs: Any) -> None:
        if not self.closed:
            self._trajectory.end(*args, **kwargs)

    def tool_call(self, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise RuntimeError("the trial is over: no more tool calls")
        return self._trajectory.tool_call(*args, **kwargs)


def _user_for(trial: Trial) -> Any:
    if trial.user is None:
        return None
    from agentlake.sim.agents import PersonaUser, ScriptedUser

    if trial.user.scripted is not None:
        return ScriptedUser(list(trial.user.scripted))
    persona = trial.user.persona
    assert persona is not None
    from agentlake.sim.llm import ChatClient

    return PersonaUser(
        ChatClient.from_env(model=persona.model),
        persona.instructions,
        hidden_info=persona.hidden_info or "",
        max_turns=persona.max_turns,
        opening=trial.task,
        seed=trial.seed,
    )


def _call_agent(fn: AgentCallable, task: str, tools: Any, t: Trajectory, user: Any, seed: int) -> Any:
    """Call the agent with what its signature accepts (``user=``, ``seed=`` are optional)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    any_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    if user is not None and ("user" in params or any_kw):
        kwargs["user"] = user
    if "seed" in params:
        kwargs["seed"] = seed
    return fn(task, tools, t, **kwargs)


def _unwrap(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _expected_calls(trial: Trial) -> int | None:
    tc = trial.criteria.tool_calls
    if tc is None or tc.mode in ("subset",):
        return None
    return len(tc.calls)


def _infrastructure_failure(e: BaseException) -> bool:
    """A failure of the model provider (outage, rate limit, garbage), not of the agent's logic."""
    from agentlake.sim.llm import LLMError

    if isinstance(e, LLMError):
        return e.status is None or e.status in (408, 429) or e.status >= 500 or 200 <= e.status < 300
    return False


async def run_trial(
    trial: Trial,
    target: AgentTarget,
    tracer: Tracer,
    run_id: str,
    staging: StagingFactory,
    wrap_client: Callable[..., Any] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> TrialResult:
    """Run, observe and grade one trial; its events go through `tracer`.

    The agent runs under `agentlake.sim.harness` (a worker thread, or its own
    process group for ``cmd:``) with the trial's ``timeout_s`` (default
    `DEFAULT_TIMEOUT_S`); nothing it raises or does ends the runner.
    `wrap_client(client, trajectory_id=...)` sits between the recorder and the live MCP
    client (e.g. the auth gateway, which records the trajectory on its decisions).
    `attributes` are added to the trajectory's (e.g. ``auth=gateway`` under ``sim run --auth``).
    """
    t0 = time.perf_counter()
    server_name = trial.server or "shop"
    server = staging.build(server_name, trial.state(), seed=trial.seed)
    initial_state = copy.deepcopy(server.state)
    attributes = {
        "suite": trial.suite_id,
        "trial_id": trial.trial_id,
        "scenario": trial.scenario_id,
        "variant": trial.variant_id,
        "perturbations": ",".join(trial.perturbations),
        **(attributes or {}),
    }
    t = tracer.trajectory(
        trial.task,
        run_id=run_id,
        scenario_id=trial.case_id,
        trial=trial.index,
        seed=trial.seed,
        expected_tool_calls=_expected_calls(trial),
        attributes=attributes,
    )
    t.hold_end()
    error: str | None = None
    user_error: str | None = None
    infra_error: str | None = None
    budget: Any = None
    answer: Any = None
    outcome_if_missing = "error"
    user = None
    try:
        user = _user_for(trial)
    except Exception as e:
        user_error = f"{type(e).__name__}: {e}"
    timeout = trial.budgets.timeout_s or DEFAULT_TIMEOUT_S
    try:
        if target.command is not None:
            answer = await _run_external(target.command, trial, server, t, timeout)
        else:
            assert target.fn is not None
            fenced = _Fenced(t)
            async with Client(server.server) as client:
                inner = (
                    wrap_client(client, trajectory_id=t.trajectory_id) if wrap_client is not None else client
                )
                bridge = LoopBridge(inner, asyncio.get_running_loop())
                session = TracedSession(bridge, fenced, server_name)  # type: ignore[arg-type]
                tools = _BudgetedTools(session, trial.budgets.max_tool_calls)
                try:
                    answer = await run_in_thread(
                        _call_agent, target.fn, trial.task, tools, fenced, user, trial.seed, timeout=timeout
                    )
                finally:
                    fenced.closed = True
    except Exception as exc:
        cause = _unwrap(exc)  # the MCP client's task group wraps what the agent raised
        if isinstance(cause, TimeoutError):
            budget, error, outcome_if_missing = "timeout_s", f"timed out after {timeout}s", "timeout"
        elif isinstance(cause, BudgetExceeded):
            budget, error, outcome_if_missing = "max_tool_calls", str(cause), "aborted"
        elif type(cause).__name__ == "UserSimulationError":
            user_error = str(cause)
        elif _infrastructure_failure(cause):
            infra_error = f"{type(cause).__name__}: {cause}"
        else:
            error = f"{type(cause).__name__}: {cause}"
    if budget is None and trial.budgets.max_steps is not None and t.steps > trial.budgets.max_steps:
        budget = "max_steps"
    obs = Observation(
        tool_calls=[
            ObservedCall(
                tool=c.tool, args=c.args, is_error=c.is_error, error_kind=c.error_kind, injected=c.injected
            )
            for c in server.calls
        ],
        initial_state=initial_state,
        final_state=server.state,
        final_answer=t.final_answer
        if t.final_answer is not None
        else (answer if isinstance(answer, str) else None),
        outcome=t.outcome if t.ended else None,
        steps=t.steps,
        error=error,
        user_error=user_error,
        infrastructure_error=infra_error,
        budget_exceeded=budget,
    )
    verdict = grade(trial, obs)
    t.release_end(
        checks={c.name: c.passed for c in verdict.checks},
        attribution=None if verdict.success else verdict.attribution,
        verdict=verdict.reason,
        outcome_if_missing=outcome_if_missing,
        error=error or user_error or infra_error,
    )
    return TrialResult(trial, t.trajectory_id, verdict, len(server.calls), time.perf_counter() - t0)


async def _run_external(
    command: str, trial: Trial, server: StagingServer, t: Trajectory, timeout: float
) -> str:
    """Serve the staging server over HTTP, run the command in its own process group, record
    its calls server-side. Its last stdout line is its answer: text, or JSON
    ``{"answer": ..., "outcome": ...}``; printing nothing, exiting non-zero, or an outcome
    other than ``success``/``failure`` fails the trial."""
    from agentlake.schemas import OUTCOMES
    from agentlake.sim.staging import serve_http

    recorded = 0

    def record_new_calls() -> None:
        nonlocal recorded
        for c in server.calls[recorded:]:
            call = t.tool_call(server.name, c.tool, c.args)
            if c.is_error:
                call.error(
                    str(c.result) if c.result is not None else "tool error", kind=c.error_kind or "tool_error"
                )
            else:
                call.result(c.result)
        recorded = len(server.calls)

    async with await serve_http(server) as handle:
        env = {
            **os.environ,
            "AGENTLAKE_MCP_URL": handle.url,
            "AGENTLAKE_TASK": trial.task,
            "AGENTLAKE_TRAJECTORY_ID": t.trajectory_id,
            "AGENTLAKE_SEED": str(trial.seed),
        }
        done = await run_command(shlex.split(command), env, timeout, on_exit=record_new_calls)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        raise RuntimeError(f"agent process exited {done.returncode}: {_one_line(done.stderr[-300:])}")
    if not lines:
        raise RuntimeError("agent process printed nothing on stdout (its last line must be its answer)")
    last = lines[-1]
    try:
        data = json.loads(last)
    except ValueError:
        data = {"answer": last}
    answer = str(data.get("answer", "")) if isinstance(data, dict) else str(data)
    outcome = data.get("outcome", "success") if isinstance(data, dict) else "success"
    t.step("final", answer)
    if outcome in ("success", "failure"):
        t.end(outcome, final_answer=answer)
    else:
        kind = outcome if outcome in OUTCOMES else "error"
        t.end(kind, final_answer=answer, error=f"agent reported outcome {outcome!r}")
    return answer


# -- a whole run -----------------------------------------------------------------------
@dataclass
class RunOutcome:
    run_id: str
    results: list[TrialResult]
    skipped: list[Trial]
    seconds: float


def interleave(trials: Sequence[Trial]) -> list[Trial]:
    """Trial index 0 of every case first, then index 1...: early stopping sees every case early."""
    return sorted(trials, key=lambda t: (t.index, t.case_id))


async def run_suite(
    trials: Sequence[Trial],
    target: AgentTarget,
    tracer: Tracer,
    *,
    run_id: str | None = None,
    staging: StagingFactory | None = None,
    concurrency: int = 8,
    early_stop: tuple[int, float] | None = None,
    stop_on_pass: bool = False,
    progress: Callable[[TrialResult | None], None] | None = None,
    wrap_client: Callable[..., Any] | None = None,
    attributes: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run the trials concurrently.

    Args:
        early_stop: (k, minimum suite pass^k) of the gate. The trials not yet started
            are skipped once the *suite-level* pass^k verdict is certain whatever
            they would give (`metrics.suite_decided`): certain to fail, or — with
            `stop_on_pass`, which the caller sets only when that floor is the gate's
            one check — certain to pass. Skipped trials count as failures in the
            metrics (over the planned trials), so skipping never raises a metric.
        progress: called with each result (None for a skipped trial).
        wrap_client: ``(trial, client, trajectory_id=...) -> client`` around each trial's MCP
            client (in-process agents; e.g. an auth gateway).
        attributes: added to every trial's trajectory attributes.
    """
    from agentlake.sim.metrics import suite_decided

    run_id = run_id or f"run-{uuid.uuid4().hex[:10]}"
    staging = staging or StagingFactory.default()
    ordered = interleave(trials)
    per_case_total: dict[str, int] = defaultdict(int)
    for tr in ordered:
        per_case_total[tr.case_id] += 1
    done: dict[str, list[bool]] = defaultdict(list)
    results: list[TrialResult] = []
    skipped: list[Trial] = []
    sem = asyncio.Semaphore(max(1, concurrency))
    t0 = time.perf_counter()
    stopped = False

    def verdict_decided() -> bool:
        if early_stop is None:
            return False
        k, threshold = early_stop
        cases = {c: (n, len(done[c]), sum(done[c])) for c, n in per_case_total.items()}
        verdict = suite_decided(cases, k, threshold)
        return verdict is False or (verdict is True and stop_on_pass)

    async def one(tr: Trial) -> None:
        nonlocal stopped
        async with sem:
            if stopped or verdict_decided():
                stopped = True
                skipped.append(tr)
                if progress:
                    progress(None)
                return
            wrap = functools.partial(wrap_client, tr) if wrap_client is not None else None
            res = await run_trial(
                tr, target, tracer, run_id, staging, wrap_client=wrap, attributes=attributes
            )
            results.append(res)
            done[tr.case_id].append(res.verdict.success)
            if progress:
                progress(res)

    await asyncio.gather(*(one(tr) for tr in ordered))
    return RunOutcome(run_id, results, skipped, time.perf_counter() - t0)


@dataclass
class ReplayOutcome:
    source: Any
    result: TrialResult
    replayed: int
    divergence: Any
    calls: list[dict[str, Any]]


def replay_trial(recorded: Any, suite: Suite | None, fork_at: int | None, server: str | None = None) -> Trial:
    """The trial a recorded trajectory ran (from its suite when given), else a bare one.

    Without a suite the trial runs on `server` (default: the reference ``shop``, with
    its state seeded like the original; any other server starts from its staging
    spec's ``state``) and is graded on one criterion: the candidate ends with
    outcome ``success``.

    Raises:
        RunnerError: the suite does not hold the recorded trial.
    """
    from agentlake.sim.suite import Budgets, Criteria, expand

    del fork_at  # the fork point is the replay client's business, not the trial's
    trial_id = recorded.attributes.get("trial_id")
    if suite is not None and trial_id:
        index = int(trial_id.rsplit(":", 1)[-1]) if trial_id.rsplit(":", 1)[-1].isdigit() else 0
        for tr in expand(suite, max(index + 1, suite.trials)):
            if tr.trial_id == trial_id:
                return tr.model_copy(update={"task": recorded.task})
        raise RunnerError(
            f"trial {trial_id} of trajectory {recorded.trajectory_id} is not in suite {suite.id}"
        )
    seed = int(recorded.seed or 0)
    shop = server is None or server == "shop"
    return Trial(
        trial_id=f"replay:{recorded.trajectory_id}",
        suite_id="replay",
        scenario_id="replay",
        variant_id=recorded.trajectory_id[:8],
        binding={},
        index=0,
        seed=seed,
        task=recorded.task,
        perturbations=[],
        initial_state={"$generator": "agentlake.sim.reference:shop_state", "args": {"seed": seed}}
        if shop
        else {},
        criteria=Criteria(outcome="success"),
        budgets=Budgets(),
        server=server or "shop",
    )


async def replay(
    recorded: Any,
    target: AgentTarget,
    tracer: Tracer,
    *,
    suite: Suite | None = None,
    fork_at: int | None = None,
    staging: StagingFactory | None = None,
    run_id: str | None = None,
    server: str | None = None,
) -> ReplayOutcome:
    """Re-run a recorded trajectory with `target`: recorded results while the calls match
    (and before `fork_at`), live staging after the first divergence. A candidate that
    stops before making every recorded call diverges where it stopped."""
    from agentlake.sim.replay import Divergence, ReplayClient

    trial = replay_trial(recorded, suite, fork_at, server)
    holder: dict[str, ReplayClient] = {}

    def wrap(client: Any, trajectory_id: str | None = None) -> Any:
        holder["c"] = ReplayClient(client, recorded.calls, fork_at)
        return holder["c"]

    result = await run_trial(
        trial,
        target,
        tracer,
        run_id or f"replay-{recorded.trajectory_id[:12]}",
        staging or StagingFactory.default(),
        wrap_client=wrap,
    )
    rc = holder.get("c")
    if rc is not None and rc.divergence is None and rc.index < len(recorded.calls):
        nxt = recorded.calls[rc.index]
        rc.divergence = Divergence(
            step=rc.index,
            expected={"tool": nxt.tool, "args": nxt.args},
            actual=None,
            reason=f"the candidate stopped after {rc.index} of {len(recorded.calls)} recorded calls",
        )
    return ReplayOutcome(
        recorded, result, rc.replayed if rc else 0, rc.divergence if rc else None, rc.log if rc else []
    )


def stable_run_id(suite: Suite, agent: str) -> str:
    return f"{suite.id}-{agent.replace('@', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


__all__ = [
    "AgentTarget",
    "ReplayOutcome",
    "RunOutcome",
    "RunnerError",
    "StagingFactory",
    "TrialResult",
    "interleave",
    "replay",
    "replay_trial",
    "resolve_agent",
    "run_suite",
    "run_trial",
    "stable_run_id",
]
