"""The simulation runner without a broker: trials, grading into events, budgets, early stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlake.schemas import ToolCallCompleted, TrajectoryEnded, TrajectoryStarted, codec
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings
from agentlake.sim.runner import (
    AgentTarget,
    RunnerError,
    StagingFactory,
    check_setup,
    interleave,
    resolve_agent,
    run_suite,
    run_trial,
)
from agentlake.sim.staging import Faults
from agentlake.sim.suite import expand, load_suite, parse_suite

EXAMPLES = Path(__file__).resolve().parents[2] / "agentlake" / "examples"
SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]


def events(em: MemoryEmitter) -> list[Any]:
    return [codec().decode(v) for _, _, v in em.records]


def tracer(em: MemoryEmitter, version: str = "1.0") -> Tracer:
    return Tracer("support-bot", version, tenant="sim", emitter=em, settings=SETTINGS)


async def test_a_trial_records_the_graders_checks_on_the_end_event() -> None:
    suite = load_suite(EXAMPLES / "suite.yaml")
    trial = next(t for t in expand(suite, 1) if t.scenario_id == "refund-delivered")
    em = MemoryEmitter()
    res = await run_trial(trial, resolve_agent("support-bot@1.0"), tracer(em), "r1", StagingFactory.default())
    assert res.verdict.success and res.tool_calls == 2
    evs = events(em)
    start, end = evs[0], evs[-1]
    assert (
        isinstance(start, TrajectoryStarted) and start.run_id == "r1" and start.scenario_id == trial.case_id
    )
    assert start.attributes["trial_id"] == trial.trial_id and start.seed == trial.seed
    assert isinstance(end, TrajectoryEnded) and end.seq == len(evs) - 1  # still the last event
    assert end.checks and all(end.checks.values()) and end.attribution is None
    assert "final_state.orders.{}.status".format(trial.binding["oid"]) in end.checks


async def test_a_failed_trial_carries_its_attribution() -> None:
    suite = load_suite(EXAMPLES / "suite.yaml")
    trial = next(t for t in expand(suite, 1) if t.scenario_id == "cancel-processing")
    em = MemoryEmitter()
    res = await run_trial(
        trial, resolve_agent("support-bot@1.1-beta"), tracer(em, "1.1-beta"), "r", StagingFactory.default()
    )
    assert not res.verdict.success and res.verdict.attribution == "agent"
    end = events(em)[-1]
    assert isinstance(end, TrajectoryEnded) and end.attribution == "agent" and not all(end.checks.values())
    kinds = [e.error_kind for e in events(em) if isinstance(e, ToolCallCompleted) and e.is_error]
    assert "invalid_arguments" in kinds  # the string order id, rejected by the input schema


async def test_injected_faults_are_seeded_and_blamed_on_the_tool() -> None:
    suite = load_suite(EXAMPLES / "suite.yaml")
    trials = [t for t in expand(suite, 2) if t.scenario_id == "refund-delivered"]
    staging = StagingFactory.default(faults=Faults(error_rate=1.0))
    results = []
    for t in trials:
        results.append(
            await run_trial(t, resolve_agent("support-bot@1.0"), tracer(MemoryEmitter()), "r", staging)
        )
    assert all(not r.verdict.success and r.verdict.attribution == "tool" for r in results)


SMALL = """
id: small
trials: 3
scenarios:
  - id: lookups
    variables: {grid: {oid: [1, 2]}}
    task: "What is the status of order {oid}?"
    initial_state: {$generator: "agentlake.sim.reference:shop_state", args: {seed: 1}}
    criteria:
      tool_calls: {mode: subset, calls: [{tool: get_order}]}
      outcome: success
    budgets: {max_tool_calls: 1}
"""


async def greedy(task: str, tools: Any, trajectory: Any) -> str:
    for _ in range(3):
        await tools.call_tool("get_order", {"order_id": 1})
    trajectory.end("success", final_answer="ok")
    return "ok"


async def test_the_tool_call_budget_stops_the_agent() -> None:
    suite = parse_suite(SMALL, "small.yaml")
    trial = expand(suite, 1)[0]
    em = MemoryEmitter()
    res = await run_trial(
        trial, AgentTarget("greedy", "1", fn=greedy), tracer(em), "r", StagingFactory.default()
    )
    assert not res.verdict.success
    end = events(em)[-1]
    assert (
        isinstance(end, TrajectoryEnded)
        and end.outcome == "aborted"
        and "more than 1 tool calls" in (end.error or "")
    )


async def test_early_stop_skips_cases_already_decided() -> None:
    suite = parse_suite(SMALL, "small.yaml")
    trials = expand(suite, 3)
    out = await run_suite(
        trials,
        AgentTarget("greedy", "1", fn=greedy),
        tracer(MemoryEmitter()),
        concurrency=1,
        early_stop=(1, 0.8),
    )
    # after one failure out of three, pass^1 can be at most 2/3 < 0.8: the rest is skipped
    assert len(out.results) == 2 and len(out.skipped) == 4
    assert {t.case_id for t in out.skipped} == {t.case_id for t in trials}
    full = await run_suite(
        trials, AgentTarget("greedy", "1", fn=greedy), tracer(MemoryEmitter()), concurrency=4
    )
    assert len(full.results) == 6 and not full.skipped


def test_interleave_runs_every_case_before_repeating_one() -> None:
    trials = expand(parse_suite(SMALL, "small.yaml"), 3)
    order = [(t.index, t.case_id) for t in interleave(trials)]
    assert [i for i, _ in order] == [0, 0, 1, 1, 2, 2]


def test_resolve_agent_forms_and_errors() -> None:
    assert resolve_agent("support-bot@1.1-beta").ref == "support-bot@1.1-beta"
    assert resolve_agent("agentlake.sim.reference:support_bot_v1").fn is not None
    assert resolve_agent("cmd:python agent.py").command == "python agent.py"
    with pytest.raises(RunnerError, match="neither built in nor registered"):
        resolve_agent("nobody@1")
    with pytest.raises(RunnerError, match="NAME@VERSION"):
        resolve_agent("nobody")
    with pytest.raises(RunnerError, match="cannot import"):
        resolve_agent("no.such.module:fn")
    with pytest.raises(RunnerError, match="no staging server 'crm'"):
        StagingFactory.default().build("crm", {}, 0)


# -- setup errors: before the first trial, one line ------------------------------------------

HELPDESK = """
name: helpdesk
state: {tickets: {"T-1": {"status": "open", "urgent": false}}}
faults: {error_rate: 1.0}
tools:
  - name: close_ticket
    input_schema: {type: object, properties: {id: {type: string}}, required: [id]}
    behaviour: {kind: handler, handler: "tests.unit.test_runner:close_ticket"}
"""


def close_ticket(state: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    state["tickets"][args["id"]]["status"] = "closed"
    return {"closed": args["id"]}


def helpdesk(tmp_path: Path, text: str = HELPDESK) -> StagingFactory:
    spec = tmp_path / "helpdesk.yaml"
    spec.write_text(text)
    factory = StagingFactory.default()
    factory.add_spec_file(str(spec))
    return factory


def helpdesk_suite(criteria: str) -> list[Any]:
    text = f"""
id: hd
scenarios:
  - id: close
    server: helpdesk
    task: "Close ticket T-1"
    criteria: {criteria}
"""
    return expand(parse_suite(text, "hd.yaml"), 1)


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        (
            "{tool_calls: {calls: [{tool: close_tikcet}]}}",
            "expected tool 'close_tikcet' is not a tool of server",
        ),
        ("{final_state: [{path: ticket.T-1.status, equals: closed}]}", "starts at 'ticket', which is not in"),
        ("{final_state: [{path: tickets.T-1.urgent, equals: 'no'}]}", "compares a str with the state's bool"),
    ],
)
def test_broken_checks_are_setup_errors_not_agent_failures(
    tmp_path: Path, criteria: str, message: str
) -> None:
    with pytest.raises(RunnerError, match=message):
        check_setup(helpdesk_suite(criteria), helpdesk(tmp_path))
    check_setup(helpdesk_suite("{final_state: [{path: tickets.T-2, exists: true}]}"), helpdesk(tmp_path))


def test_staging_spec_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match=r"missing.yaml does not exist"):
        StagingFactory().add_spec_file(str(tmp_path / "missing.yaml"))
    with pytest.raises(RunnerError, match=r"faults.error_rat: .*not permitted") as info:
        helpdesk(tmp_path, HELPDESK.replace("error_rate", "error_rat"))
    assert "\n" not in str(info.value)
    with pytest.raises(RunnerError, match="must have type 'object'"):
        helpdesk(tmp_path, HELPDESK.replace("input_schema: {type: object,", "input_schema: {type: array,"))
    with pytest.raises(RunnerError, match="no staging server 'helpdesk'"):
        check_setup(helpdesk_suite("{outcome: success}"), StagingFactory.default())


async def test_a_specs_faults_and_state_apply_to_its_own_server_only(tmp_path: Path) -> None:
    factory = helpdesk(tmp_path)
    hd = factory.build("helpdesk", {}, seed=1)
    assert hd.state == {"tickets": {"T-1": {"status": "open", "urgent": False}}}  # the spec's state
    assert hd.faults is not None and hd.faults.error_rate == 1.0
    assert factory.build("shop", {}, seed=1).faults is None  # no leak into the built-in shop
    suite = load_suite(EXAMPLES / "suite.yaml")
    trial = next(t for t in expand(suite, 1) if t.scenario_id == "refund-delivered")
    res = await run_trial(trial, resolve_agent("support-bot@1.0"), tracer(MemoryEmitter()), "r", factory)
    assert res.verdict.success, res.verdict.reason


# -- replay ----------------------------------------------------------------------------------


async def test_replay_needs_no_suite_and_stopping_early_is_a_divergence() -> None:
    from agentlake.sim.replay import RecordedCall, RecordedTrajectory
    from agentlake.sim.runner import replay

    recorded = RecordedTrajectory(
        trajectory_id="t-1",
        task="What is the status of order 1?",
        agent_id="a",
        agent_version="1",
        outcome="success",
        final_answer="ok",
        seed=1,
        attributes={},
        calls=[
            RecordedCall("get_order", {"order_id": 1}, '{"status": "delivered"}', False, None),
            RecordedCall("get_order", {"order_id": 2}, '{"status": "shipped"}', False, None),
            RecordedCall("get_order", {"order_id": 3}, '{"status": "shipped"}', False, None),
        ],
    )

    async def one_call(task: str, tools: Any, trajectory: Any) -> str:
        await tools.call_tool("get_order", {"order_id": 1})
        trajectory.end("success", final_answer="delivered")
        return "delivered"

    out = await replay(recorded, AgentTarget("b", "1", fn=one_call), tracer(MemoryEmitter()))
    assert out.replayed == 1 and out.result.verdict.success  # graded on its outcome, no suite needed
    assert out.divergence is not None and out.divergence.step == 1 and out.divergence.actual is None
    assert "stopped after 1 of 3" in out.divergence.reason


def test_a_registered_entrypoint_that_cannot_be_imported_fails_at_resolve_in_one_line() -> None:
    from agentlake.registry import Registry, parse_registry

    registry = Registry()
    text = (EXAMPLES / "registry.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(
        text.replace("entrypoint: agentlake.sim.reference:support_bot_v1\n", "entrypoint: nomodule:fn\n")
    )
    for spec in parse_registry(data, "r_entry.yaml"):  # the form is valid: the registry accepts it
        registry.apply(spec)
    # the registered entrypoint is what runs, even for the name of a built-in agent
    with pytest.raises(
        RunnerError,
        match=r"^cannot import agent 'nomodule:fn': ModuleNotFoundError: No module named 'nomodule'$",
    ):
        resolve_agent("support-bot@1.0", registry)
    assert resolve_agent("support-bot@1.1-beta", registry).fn is not None
