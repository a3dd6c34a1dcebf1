"""The CI gate never shows a false green: planned trials, suite-level early stop, the
default gate, success-gated rewards, JUnit that CI systems parse, blame from the baseline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from rich.console import Console

from agentlake.cli import sim as sim_cli
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings
from agentlake.sim import gate as g
from agentlake.sim.metrics import DEFAULT_GATE, compare, pass_hat_k, suite_decided
from agentlake.sim.runner import AgentTarget, run_suite
from agentlake.sim.suite import expand, parse_suite

XSD = xmlschema.XMLSchema(Path(__file__).resolve().parents[1] / "data" / "junit.xsd")
SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]


def row(case: str, trial: int, success: bool, **kw: Any) -> g.TrialRow:
    base: dict[str, Any] = {
        "trajectory_id": f"{case}-{trial}-{kw.pop('tag', 'c')}",
        "case_id": case,
        "trial": trial,
        "seed": trial,
        "success": success,
        "total": 0.9 if success else 0.2,
        "components": {"task_success": 1.0 if success else 0.0},
        "tool_calls": 2.0,
        "attribution": None if success else "agent",
        "checks": {"final_state.x": success},
        "task": "t",
        "gates": ["task_success"],
        "reward_spec": "default@1",
    }
    base.update(kw)
    return g.TrialRow(**base)


def report(rows: list[g.TrialRow], skipped: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    planned: dict[str, int] = {}
    for r in rows:
        planned[r.case_id] = planned.get(r.case_id, 0) + 1
    for s in skipped or []:
        planned[s["scenario"]] = planned.get(s["scenario"], 0) + 1
    metrics = g.metrics_of(rows, planned=planned)
    gate = compare(metrics, None, kw.pop("gate", DEFAULT_GATE))
    return g.report_json(
        run_id="r1",
        suite_id="s",
        agent="a@1",
        rows=rows,
        metrics=metrics,
        gate=gate,
        baseline=None,
        baseline_metrics=None,
        skipped=skipped or [],
        seconds=1.5,
        **kw,
    )


# -- pass^k over the planned trials ------------------------------------------------


def test_a_skipped_trial_never_raises_pass_hat_k() -> None:
    # the example: a case failing its first 2 of 4 trials, the rest skipped
    rows = [row("bad", 0, False), row("bad", 1, False), *[row("good", i, True) for i in range(4)]]
    skipped = [{"trial_id": f"s:bad:{i}", "scenario": "bad"} for i in (2, 3)]
    rep = report(rows, skipped, gate={"pass_hat_k": {"k": 3, "min": 0.8}})
    assert rep["suite_metrics"]["pass_hat"][3] == pytest.approx(0.5)  # (0 + 1) / 2, not 1.0
    assert rep["passed"] is False
    assert rep["scenarios"][0]["n"] == 4 and rep["scenarios"][0]["skipped"] == 2
    # recomputed from the JSON: trials plus skipped ones as failures
    by_case: dict[str, list[bool]] = {}
    for t in rep["trials"]:
        by_case.setdefault(t["scenario"], []).append(t["success"])
    for s in rep["skipped"]:
        by_case[s["scenario"]].append(False)
    expected = sum(pass_hat_k(len(v), sum(v), 3) for v in by_case.values()) / len(by_case)
    assert rep["suite_metrics"]["pass_hat"][3] == pytest.approx(expected)


def test_the_suite_verdict_decides_early_stop_not_one_case() -> None:
    # a case failing 2 of 4: its pass^3 is 0 whatever follows; the suite's best is (0 + 1) / 2
    assert suite_decided({"a": (4, 2, 0), "b": (4, 0, 0)}, 3, 0.8) is False
    assert suite_decided({"a": (4, 2, 0), "b": (4, 0, 0)}, 3, 0.5) is None  # the other case decides
    assert suite_decided({"a": (4, 2, 0), "b": (4, 1, 0)}, 3, 0.5) is False
    assert suite_decided({"a": (4, 4, 4), "b": (4, 4, 4)}, 3, 0.8) is True
    assert suite_decided({"a": (4, 1, 1), "b": (4, 4, 4)}, 3, 0.8) is None
    assert suite_decided({"a": (2, 0, 0)}, 3, 0.8) is None  # no case has k planned trials


SUITE = """
id: es
trials: 4
scenarios:
  - id: lookups
    variables: {grid: {oid: [1, 2]}}
    task: "What is the status of order {oid}?"
    initial_state: {$generator: "agentlake.sim.reference:shop_state", args: {seed: 1}}
    criteria:
      tool_calls: {mode: superset, calls: [{tool: get_order}]}
"""


async def flaky(task: str, tools: Any, trajectory: Any) -> str:
    if "order 1" in task:
        raise RuntimeError("broken")
    await tools.call_tool("get_order", {"order_id": 2})
    trajectory.end("success", final_answer="ok")
    return "ok"


async def test_early_stop_only_when_the_suite_verdict_is_decided() -> None:
    trials = expand(parse_suite(SUITE, "es.yaml"), 4)
    tracer = Tracer("a", "1", tenant="sim", emitter=MemoryEmitter(), settings=SETTINGS)
    out = await run_suite(trials, AgentTarget("a", "1", fn=flaky), tracer, concurrency=1, early_stop=(3, 0.8))
    # one failure of order 1 caps its pass^3 at C(3,3)/C(4,3) = 0.25 and the suite's at 0.625 < 0.8
    assert len(out.results) == 1 and len(out.skipped) == 7
    assert not out.results[0].verdict.success and out.results[0].trial.binding["oid"] == 1
    # with a floor of 0.5 case oid=1 alone is decided (0.25 < 0.5), the suite is not: all 8 run
    out = await run_suite(trials, AgentTarget("a", "1", fn=flaky), tracer, concurrency=1, early_stop=(3, 0.5))
    assert len(out.results) == 8 and not out.skipped


# -- default gate, rewards, empty checks ----------------------------------------------


def test_a_suite_without_a_gate_fails_when_trials_fail() -> None:
    rep = report([row("a", 0, False), row("a", 1, True)])
    assert rep["passed"] is False and rep["gate"][0]["name"] == "pass_hat_1"
    assert sim_cli.exit_code(rep) == 1
    assert report([row("a", 0, True)])["passed"] is True


def test_a_reward_spec_without_success_gating_cannot_pass_failed_trials() -> None:
    rows = [row("a", i, False, total=1.0, gates=[], reward_spec="lenient@1") for i in range(3)]
    rep = report(rows, gate={"reward": {"min": 0.9}}, warnings=g.reward_warnings(rows))
    assert rep["suite_metrics"]["reward"] == 0.0 and rep["passed"] is False
    assert all(t["reward"] == 0.0 and t["reward_raw"] == 1.0 for t in rep["trials"])
    assert "lenient@1 gates nothing" in rep["warnings"][0]


def test_infrastructure_failures_make_a_failed_gate_exit_3() -> None:
    rows = [row("a", 0, False, attribution="infrastructure"), row("a", 1, True)]
    rep = report(rows)
    assert rep["failures_by"] == {"infrastructure": 1} and sim_cli.exit_code(rep) == 3


@pytest.mark.parametrize(
    ("criteria", "message"),
    [("tool_calls: {}", "checks nothing"), ("final_answer: {}", "checks nothing")],
)
def test_a_check_that_checks_nothing_is_an_error(criteria: str, message: str) -> None:
    from agentlake.sim.suite import SuiteError

    text = f"id: x\nscenarios:\n  - id: s\n    task: t\n    criteria: {{{criteria}}}\n"
    with pytest.raises(SuiteError, match=message):
        parse_suite(text, "x.yaml")
    parse_suite("id: x\nscenarios:\n  - id: s\n    task: t\n    criteria: {tool_calls: {mode: strict}}\n")


# -- JUnit -------------------------------------------------------------------------------------


def test_junit_is_valid_against_the_xsd_even_with_characters_xml_forbids() -> None:
    nasty = "case[user=\x1b[31mbob\x00\ufffe\ud800]"
    rows = [
        row(nasty, 0, False),
        row(nasty, 1, True),
        row("ok", 0, False, attribution="infrastructure"),
        row("ok", 1, False, attribution="grader"),
    ]
    skipped = [{"trial_id": f"s:{nasty}:2", "scenario": nasty}]
    rep = report(rows, skipped, missing=[{"trial_id": "s:ok:2", "scenario": "ok"}])
    xml = g.junit_xml(rep)
    XSD.validate(xml)  # raises on any violation
    doc: Any = XSD.to_dict(xml)
    trials_suite = doc["testsuite"][0]
    assert trials_suite["@tests"] == 6 == len(trials_suite["testcase"])  # skipped & missing included
    assert (trials_suite["@failures"], trials_suite["@errors"], trials_suite["@skipped"]) == (1, 2, 2)
    assert "\\x1b" in trials_suite["testcase"][0]["@classname"]  # escaped visibly, not dropped
    assert doc["@tests"] == 6 + len(rep["gate"])


# -- blame from the baseline ---------------------------------------------------------------


def test_the_baseline_recovering_from_the_same_seeded_fault_moves_the_blame_to_the_agent() -> None:
    cand = [row("a", 0, False, attribution="tool"), row("b", 0, False, attribution="tool")]
    base = [row("a", 0, True, tag="b"), row("b", 0, True, tag="b")]
    faults = {
        "a-0-c": [("refund_order", "injected_error")],
        "a-0-b": [("refund_order", "injected_error")],  # baseline met it too, and recovered
        "b-0-c": [("get_order", "timeout")],
        "b-0-b": [],  # the baseline never met this fault: no evidence
    }
    assert g.reattribute(cand, base, faults) == 1
    assert cand[0].attribution == "agent" and "recovered" in (cand[0].note or "")
    assert cand[1].attribution == "tool"


# -- the text table ----------------------------------------------------------------------------


def test_the_text_table_prints_whole_case_ids_and_escapes_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"refund-delivered[oid={i},user=bob,region=eu-west-1]" for i in (3, 17)]
    rep = report([row(ids[0], 0, True), row(ids[1], 0, False)])
    buffer = io.StringIO()
    monkeypatch.setattr(sim_cli, "out", Console(file=buffer, width=80, color_system=None))
    sim_cli.render_sim_report(rep)
    cells: list[str] = []  # the first column, row by row (rows are separated by rules)
    for line in buffer.getvalue().splitlines()[4:]:
        if line.startswith("│"):
            cells[-1] += line.split("│")[1].strip()
        elif line.startswith(("├", "┡")):
            cells.append("")
        elif line.startswith("└"):
            break
    assert sorted(cells) == sorted(ids)  # whole ids, nothing cut, markup ([user=bob]) kept as text
    assert all(len(line) <= 80 for line in buffer.getvalue().splitlines())


def test_the_markdown_table_survives_pipes_in_case_ids() -> None:
    rep = report([row("case[q=a|b]", 0, True)])
    line = next(x for x in g.markdown(rep).splitlines() if x.startswith("| case"))
    assert line.count(" | ") == 6 and "case[q=a\\|b]" in line  # 7 cells, the pipe escaped
