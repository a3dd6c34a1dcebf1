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
* any ``module:callable`` (an async function ``(task, tools, trajectory, user=None)``);
* ``openai:<model>``: the OpenAI-compatible tool-calling loop (`agentlake.sim.agents`);
* ``cmd:<shell command>``: an external process that connects to the staging server
  over streamable HTTP (``AGENTLAKE_MCP_URL``) and prints its final answer as the
  last line of stdout; its calls are recorded on the server side.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import json
import os
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp import Client

from agentlake.sdk import TracedSession, Tracer, Trajectory
from agentlake.sim.grading import Observation, ObservedCall, Verdict, grade
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
    except (ImportError, AttributeError, ValueError) as e:
        raise RunnerError(f"cannot import agent {ref!r}: {e}") from e
    if inspect.isclass(obj):
        obj = obj()
    if not callable(obj):
        raise RunnerError(f"{ref} is not callable")
    return obj  # type: ignore[no-any-return]


def resolve_agent(ref: str, registry: Any = None) -> AgentTarget:
    """Turn ``NAME@VERSION`` / ``module:callable`` / ``openai:MODEL`` / ``cmd:COMMAND`` into a target."""
    if ref.startswith("cmd:"):
        command = ref[4:].strip()
        if not command:
            raise RunnerError("cmd: needs a command, e.g. cmd:'python my_agent.py'")
        return AgentTarget("external", "cmd", command=command)
    if ref.startswith("openai:"):
        from agentlake.sim.agents import OpenAIChatAgent
        from agentlake.sim.llm import ChatClient

        model = ref[len("openai:") :] or None
        client = ChatClient.from_env(model=model)
        return AgentTarget("openai-agent", client.model, fn=OpenAIChatAgent(client))
    name, _, version = ref.partition("@")
    if ":" in name and not version:
        return AgentTarget(name.split(":")[-1], "local", fn=_import(name))
    if not version:
        raise RunnerError(f"agent {ref!r}: give NAME@VERSION, module:callable, openai:MODEL or cmd:COMMAND")
    if (name, version) in REFERENCE_AGENTS:
        return AgentTarget(name, version, fn=REFERENCE_AGENTS[(name, version)])
    spec = registry.agent(name, version) if registry is not None else None
    if spec is None:
        raise RunnerError(f"agent {ref} is neither built in nor registered (agentlake registry list)")
    if not spec.entrypoint:
        raise RunnerError(f"agent {ref} has no entrypoint in the registry; add `entrypoint: module:callable`")
    return AgentTarget(name, version, fn=_import(spec.entrypoint))


# -- staging servers --------------------------------------------------------------
@dataclass
class StagingFactory:
    """Builds a fresh staging server per trial, by server name."""

    servers: dict[str, list[ToolDef]] = field(default_factory=dict)
    faults: Faults | None = None

    @classmethod
    def default(cls, registry: Any = None, faults: Faults | None = None) -> StagingFactory:
        f = cls(faults=faults)
        f.servers["shop"] = tools_from_specs(SHOP_TOOLS, HandlerBehaviour(handler=shop_handler))
        if registry is not None:
            for spec in registry.servers():
                if spec.id in f.servers:
                    continue
                if spec.openapi:
                    from agentlake.sim.openapi import tools_from_openapi

                    f.servers[spec.id] = tools_from_openapi(spec.openapi, base_url=spec.url)
                elif spec.tools:
                    # declared tools without a behaviour: schema-validated, answered with a
                    # `not_configured` error until a staging spec (--staging) gives them one
                    f.servers[spec.id] = tools_from_specs(spec.tools)
        return f

    def add_spec_file(self, path: str) -> None:
        """Add a staging spec (YAML, see `agentlake.sim.staging.StagingSpec`) under its name."""
        from agentlake.sim.staging import load_staging_spec

        spec = load_staging_spec(path)
        self.servers[spec.name] = list(spec.tools)
        if spec.faults is not None and self.faults is None:
            self.faults = spec.faults

    def build(self, name: str, state: dict[str, Any], seed: int) -> StagingServer:
        tools = self.servers.get(name)
        if tools is None:
            raise RunnerError(
                f"no staging server {name!r}: known {sorted(self.servers)}; pass --staging SPEC.yaml"
            )
        return StagingServer(tools, state, faults=self.faults, seed=seed, name=name)


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
    )


async def _call_agent(fn: AgentCallable, task: str, tools: Any, t: Trajectory, user: Any) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if user is not None and ("user" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())):
        return await fn(task, tools, t, user=user)
    return await fn(task, tools, t)


def _unwrap(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _expected_calls(trial: Trial) -> int | None:
    tc = trial.criteria.tool_calls
    if tc is None or tc.mode in ("subset",):
        return None
    return len(tc.calls)


async def run_trial(
    trial: Trial,
    target: AgentTarget,
    tracer: Tracer,
    run_id: str,
    staging: StagingFactory,
    wrap_client: Callable[[Any], Any] | None = None,
) -> TrialResult:
    """Run, observe and grade one trial; its events go through `tracer`.

    `wrap_client` sits between the recorder and the live MCP client (replay uses it).
    """
    t0 = time.perf_counter()
    server_name = trial.server or "shop"
    server = staging.build(server_name, trial.state(), seed=trial.seed)
    attributes = {
        "suite": trial.suite_id,
        "trial_id": trial.trial_id,
        "scenario": trial.scenario_id,
        "variant": trial.variant_id,
        "perturbations": ",".join(trial.perturbations),
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
    budget: Any = None
    answer: Any = None
    outcome_if_missing = "error"
    user = None
    try:
        user = _user_for(trial)
    except Exception as e:
        user_error = f"{type(e).__name__}: {e}"
    timeout = trial.budgets.timeout_s
    try:
        if target.command is not None:
            answer = await asyncio.wait_for(_run_external(target.command, trial, server, t), timeout)
        else:
            assert target.fn is not None
            async with Client(server.server) as client:
                inner = wrap_client(client) if wrap_client is not None else client
                tools = _BudgetedTools(TracedSession(inner, t, server_name), trial.budgets.max_tool_calls)
                answer = await asyncio.wait_for(_call_agent(target.fn, trial.task, tools, t, user), timeout)
    except Exception as exc:
        cause = _unwrap(exc)  # the MCP client's task group wraps what the agent raised
        if isinstance(cause, TimeoutError):
            budget, error, outcome_if_missing = "timeout_s", f"timed out after {timeout}s", "timeout"
        elif isinstance(cause, BudgetExceeded):
            budget, error, outcome_if_missing = "max_tool_calls", str(cause), "aborted"
        elif type(cause).__name__ == "UserSimulationError":
            user_error = str(cause)
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
        final_state=server.state,
        final_answer=t.final_answer
        if t.final_answer is not None
        else (answer if isinstance(answer, str) else None),
        outcome=t.outcome if t.ended else None,
        steps=t.steps,
        error=error,
        user_error=user_error,
        budget_exceeded=budget,
    )
    verdict = grade(trial, obs)
    t.release_end(
        checks={c.name: c.passed for c in verdict.checks},
        attribution=None if verdict.success else verdict.attribution,
        verdict=verdict.reason,
        outcome_if_missing=outcome_if_missing,
        error=error or user_error,
    )
    return TrialResult(trial, t.trajectory_id, verdict, len(server.calls), time.perf_counter() - t0)


async def _run_external(command: str, trial: Trial, server: StagingServer, t: Trajectory) -> str:
    """Serve the staging server over HTTP, run the command, record its calls server-side."""
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
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        finally:
            record_new_calls()
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    if proc.returncode != 0:
        raise RuntimeError(f"agent process exited {proc.returncode}: {err.decode(errors='replace')[-300:]}")
    last = lines[-1] if lines else ""
    try:
        data = json.loads(last)
    except ValueError:
        data = {"answer": last}
    answer = str(data.get("answer", "")) if isinstance(data, dict) else str(data)
    outcome = data.get("outcome", "success") if isinstance(data, dict) else "success"
    t.step("final", answer)
    t.end(outcome if outcome in ("success", "failure") else "success", final_answer=answer)
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
    progress: Callable[[TrialResult | None], None] | None = None,
    wrap_client: Callable[[Trial, Any], Any] | None = None,
) -> RunOutcome:
    """Run the trials concurrently.

    Args:
        early_stop: (k, minimum pass^k) of the gate: a case's remaining trials are
            skipped once the runner's own verdicts decide whether it meets it.
        progress: called with each result (None for a skipped trial).
        wrap_client: ``(trial, client) -> client`` around each trial's MCP client (`sim run --auth`).
    """
    from agentlake.sim.metrics import decided

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

    def is_decided(tr: Trial) -> bool:
        if early_stop is None:
            return False
        k, threshold = early_stop
        n = per_case_total[tr.case_id]
        outcomes = done[tr.case_id]
        if k > n or not outcomes:
            return False
        return decided(n, len(outcomes), sum(outcomes), k, threshold)

    async def one(tr: Trial) -> None:
        async with sem:
            if is_decided(tr):
                skipped.append(tr)
                if progress:
                    progress(None)
                return
            wrap = functools.partial(wrap_client, tr) if wrap_client is not None else None  # sim run --auth
            res = await run_trial(tr, target, tracer, run_id, staging, wrap_client=wrap)
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


def replay_trial(recorded: Any, suite: Suite | None, fork_at: int | None) -> Trial:
    """The trial a recorded trajectory ran (from its suite when given), else a bare one
    over the reference shop seeded like the original."""
    from agentlake.sim.suite import Budgets, Criteria, expand

    trial_id = recorded.attributes.get("trial_id")
    if suite is not None and trial_id:
        index = int(trial_id.rsplit(":", 1)[-1]) if trial_id.rsplit(":", 1)[-1].isdigit() else 0
        for tr in expand(suite, max(index + 1, suite.trials)):
            if tr.trial_id == trial_id:
                return tr.model_copy(update={"task": recorded.task})
        raise RunnerError(
            f"trial {trial_id} of trajectory {recorded.trajectory_id} is not in suite {suite.id}"
        )
    return Trial(
        trial_id=f"replay:{recorded.trajectory_id}",
        suite_id="replay",
        scenario_id="replay",
        variant_id=recorded.trajectory_id[:8],
        binding={},
        index=0,
        seed=int(recorded.seed or 0),
        task=recorded.task,
        perturbations=[],
        initial_state={
            "$generator": "agentlake.sim.reference:shop_state",
            "args": {"seed": int(recorded.seed or 0)},
        },
        criteria=Criteria.model_construct(),
        budgets=Budgets(),
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
) -> ReplayOutcome:
    """Re-run a recorded trajectory with `target`: recorded results while the calls match
    (and before `fork_at`), live staging after the first divergence."""
    from agentlake.sim.replay import ReplayClient

    trial = replay_trial(recorded, suite, fork_at)
    holder: dict[str, ReplayClient] = {}

    def wrap(client: Any) -> Any:
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
