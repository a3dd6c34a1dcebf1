"""The CI gate: read a run's scored trials back from ClickHouse, compute pass^k and
compare with a baseline run, and write the reports (table, JSON, JUnit, Markdown).

Runs are recorded as `SimRunRecorded` events on the compacted ``sim.runs`` topic
(keyed by run id) so a later run finds its baseline by run id or by tag.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from agentlake.projections.clickhouse import query
from agentlake.schemas import codec, new_id
from agentlake.settings import Settings
from agentlake.sim.metrics import GateResult, GateSpec, SuiteMetrics, compare, suite_metrics
from agentlake.topics import SIM_RUNS

RUN_RECORD = "SimRunRecorded"


@dataclass
class TrialRow:
    """One scored trial as the pipeline stored it."""

    trajectory_id: str
    case_id: str
    trial: int
    seed: int | None
    success: bool
    total: float
    components: dict[str, float]
    tool_calls: float
    attribution: str | None
    checks: dict[str, bool]
    task: str

    def to_json(self) -> dict[str, Any]:
        return {
            "trajectory_id": self.trajectory_id,
            "scenario": self.case_id,
            "trial": self.trial,
            "seed": self.seed,
            "success": self.success,
            "reward": self.total,
            "components": self.components,
            "tool_calls": self.tool_calls,
            "attribution": self.attribution,
            "checks": self.checks,
            "task": self.task,
        }


def read_trials(client: Any, run_id: str) -> list[TrialRow]:
    """The final reward of every trial of `run_id` (ClickHouse, deduplicated with FINAL)."""
    rows = query(
        client,
        "SELECT trajectory_id, scenario_id, trial, seed, success, total, components, "
        "metrics['tool_calls'] AS tool_calls, attribution, checks, task "
        "FROM rewards FINAL WHERE run_id = {r:String} AND is_final = 1 ORDER BY scenario_id, trial",
        {"r": run_id},
    )
    return [
        TrialRow(
            trajectory_id=r["trajectory_id"],
            case_id=r["scenario_id"] or "",
            trial=int(r["trial"] or 0),
            seed=r["seed"],
            success=bool(r["success"]),
            total=float(r["total"]),
            components=dict(r["components"]),
            tool_calls=float(r["tool_calls"] or 0.0),
            attribution=r["attribution"],
            checks={k: bool(v) for k, v in dict(r["checks"] or {}).items()},
            task=r["task"],
        )
        for r in rows
    ]


def count_scored(client: Any, run_id: str) -> int:
    r = query(
        client,
        "SELECT count() AS n FROM rewards FINAL WHERE run_id = {r:String} AND is_final = 1",
        {"r": run_id},
    )
    return int(r[0]["n"])


def metrics_of(rows: list[TrialRow], seed: int = 0) -> SuiteMetrics:
    results: dict[str, list[bool]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.case_id, r.trial)):
        results[r.case_id].append(r.success)
    return suite_metrics(
        results,
        reward_totals=[r.total for r in rows],
        reward_components=[r.components for r in rows],
        tool_calls=[r.tool_calls for r in rows],
        seed=seed,
    )


# -- the run manifest on the log ---------------------------------------------------
@dataclass
class RunRecord:
    run_id: str
    suite_id: str
    agent_id: str
    agent_version: str
    tag: str | None
    baseline_run_id: str | None
    started_us: int
    finished_us: int
    trials: int
    skipped: int
    passed: bool | None
    report: dict[str, Any] = field(default_factory=dict)


def encode_run(r: RunRecord) -> bytes:
    return codec().encode_record(
        RUN_RECORD,
        {
            "event_id": new_id(),
            "run_id": r.run_id,
            "suite_id": r.suite_id,
            "agent_id": r.agent_id,
            "agent_version": r.agent_version,
            "tag": r.tag,
            "baseline_run_id": r.baseline_run_id,
            "started_us": r.started_us,
            "finished_us": r.finished_us,
            "trials": r.trials,
            "skipped": r.skipped,
            "passed": r.passed,
            "report_json": json.dumps(r.report, default=str),
        },
        strict=True,
    )


async def record_run(settings: Settings, r: RunRecord) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(SIM_RUNS), encode_run(r), key=r.run_id.encode())
    finally:
        await producer.stop()


async def read_runs(settings: Settings, timeout: float = 15.0) -> list[RunRecord]:
    """Every recorded run (latest record per run id), oldest first."""
    from agentlake.kafka_io import read_to_end

    runs: dict[str, RunRecord] = {}
    for m in await read_to_end(settings, [settings.topic(SIM_RUNS)], timeout):
        try:
            name, d = codec().decode_dict(m.value or b"")
        except Exception:
            continue
        if name != RUN_RECORD:
            continue
        d["report"] = json.loads(d.pop("report_json"))
        d.pop("event_id")
        runs[d["run_id"]] = RunRecord(**d)
    return sorted(runs.values(), key=lambda r: r.finished_us)


def resolve_baseline(runs: list[RunRecord], ref: str, suite_id: str | None = None) -> RunRecord | None:
    """A run id, or the latest run with that tag (of the same suite when given)."""
    for r in runs:
        if r.run_id == ref:
            return r
    tagged = [r for r in runs if r.tag == ref and (suite_id is None or r.suite_id == suite_id)]
    return tagged[-1] if tagged else None


# -- reports ------------------------------------------------------------------------
def gate_of(
    spec: GateSpec | None, candidate: SuiteMetrics, baseline: SuiteMetrics | None
) -> GateResult | None:
    return compare(candidate, baseline, spec) if spec is not None else None


def case_table(rows: list[TrialRow], metrics: SuiteMetrics, skipped: dict[str, int]) -> list[dict[str, Any]]:
    """Per scenario case: n, successes, pass^1, pass^k (k = n), component means, tool calls."""
    by_case: dict[str, list[TrialRow]] = defaultdict(list)
    for r in rows:
        by_case[r.case_id].append(r)
    out = []
    for sm in metrics.scenarios:
        trials = by_case.get(sm.scenario_id, [])
        comps: dict[str, list[float]] = defaultdict(list)
        for t in trials:
            for k, v in t.components.items():
                comps[k].append(v)
        blame: dict[str, int] = defaultdict(int)
        for t in trials:
            if not t.success and t.attribution:
                blame[t.attribution] += 1
        out.append(
            {
                "scenario": sm.scenario_id,
                "n": sm.n,
                "successes": sm.c,
                "pass_hat_1": sm.pass_hat.get(1),
                "pass_hat_k": sm.pass_hat.get(sm.n),
                "k": sm.n,
                "reward": sum(t.total for t in trials) / len(trials) if trials else None,
                "components": {k: sum(v) / len(v) for k, v in sorted(comps.items())},
                "tool_calls": sum(t.tool_calls for t in trials) / len(trials) if trials else None,
                "skipped": skipped.get(sm.scenario_id, 0),
                "failures_by": dict(blame),
            }
        )
    return out


def report_json(
    *,
    run_id: str,
    suite_id: str,
    agent: str,
    rows: list[TrialRow],
    metrics: SuiteMetrics,
    gate: GateResult | None,
    baseline: RunRecord | None,
    baseline_metrics: SuiteMetrics | None,
    skipped: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    skipped_by_case: dict[str, int] = defaultdict(int)
    for s in skipped:
        skipped_by_case[s["scenario"]] += 1
    return {
        "run_id": run_id,
        "suite": suite_id,
        "agent": agent,
        "seconds": round(seconds, 2),
        "baseline": baseline.run_id if baseline else None,
        "passed": gate.passed if gate else None,
        "suite_metrics": {
            "pass_hat": metrics.pass_hat,
            "pass_at": metrics.pass_at,
            "pass_hat_ci": {k: [i.low, i.high] for k, i in metrics.pass_hat_ci.items()},
            "reward": metrics.reward_total,
            "components": metrics.reward_components,
            "tool_calls": metrics.tool_calls,
        },
        "baseline_metrics": (
            {
                "pass_hat": baseline_metrics.pass_hat,
                "reward": baseline_metrics.reward_total,
                "components": baseline_metrics.reward_components,
                "tool_calls": baseline_metrics.tool_calls,
            }
            if baseline_metrics
            else None
        ),
        "scenarios": case_table(rows, metrics, skipped_by_case),
        "gate": [c.model_dump() for c in gate.checks] if gate else [],
        "trials": [r.to_json() for r in rows],
        "skipped": skipped,
    }


def junit_xml(report: dict[str, Any]) -> str:
    """One testcase per trial (failures carry the attribution and failed checks), plus the gate."""
    trials = report["trials"]
    gate = report["gate"]
    failures = sum(1 for t in trials if not t["success"]) + sum(1 for c in gate if not c["passed"])
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites name="agentlake" tests="{len(trials) + len(gate)}" failures="{failures}">',
        f'<testsuite name={quoteattr(report["suite"] + " / " + report["agent"])} tests="{len(trials)}" '
        f'failures="{sum(1 for t in trials if not t["success"])}" skipped="{len(report["skipped"])}" '
        f'time="{report["seconds"]}">',
    ]
    for t in trials:
        name = f"{t['scenario']}#{t['trial']}"
        lines.append(f"<testcase classname={quoteattr(t['scenario'])} name={quoteattr(name)}>")
        if not t["success"]:
            failed = ", ".join(k for k, v in t["checks"].items() if not v) or "gates"
            msg = f"blamed on {t['attribution'] or 'agent'}; failed: {failed}"
            lines.append(f"<failure message={quoteattr(msg)}>{escape(json.dumps(t, default=str))}</failure>")
        lines.append("</testcase>")
    for s in report["skipped"]:
        lines.append(
            f"<testcase classname={quoteattr(s['scenario'])} name={quoteattr(s['trial_id'])}>"
            f'<skipped message="early stop: the gate outcome of this case was already decided"/></testcase>'
        )
    lines.append("</testsuite>")
    lines.append(
        f'<testsuite name="gate" tests="{len(gate)}" failures="{sum(1 for c in gate if not c["passed"])}">'
    )
    for c in gate:
        lines.append(f'<testcase classname="gate" name={quoteattr(c["name"] + " " + c["kind"])}>')
        if not c["passed"]:
            lines.append(f"<failure message={quoteattr(c['detail'])}/>")
        lines.append("</testcase>")
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"


def _at(d: dict[Any, Any], k: int) -> Any:
    return d.get(k, d.get(str(k)))


def _f(x: Any, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown(report: dict[str, Any]) -> str:
    verdict = {True: "✅ passed", False: "❌ failed", None: "no gate"}[report["passed"]]
    m = report["suite_metrics"]
    ks = sorted(int(k) for k in m["pass_hat"])
    out = [
        f"## AgentLake simulation: {report['suite']} — {report['agent']}",
        "",
        f"Run `{report['run_id']}`"
        + (f" vs baseline `{report['baseline']}`" if report["baseline"] else "")
        + f": **{verdict}** ({len(report['trials'])} trials, "
        f"{len(report['skipped'])} skipped by early stop).",
        "",
        "| k | " + " | ".join(str(k) for k in ks) + " |",
        "|---|" + "---|" * len(ks),
        "| pass^k | " + " | ".join(_f(_at(m["pass_hat"], k)) for k in ks) + " |",
        "| pass@k | " + " | ".join(_f(_at(m["pass_at"], k)) for k in ks) + " |",
        "",
        "| scenario | n | pass^1 | pass^k | reward | tool calls | failures by |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        blame = ", ".join(f"{k}: {v}" for k, v in s["failures_by"].items()) or "–"
        out.append(
            f"| {s['scenario']} | {s['n']} | {_f(s['pass_hat_1'])} | {_f(s['pass_hat_k'])} (k={s['k']}) | "
            f"{_f(s['reward'])} | {_f(s['tool_calls'], '{:.2f}')} | {blame} |"
        )
    if report["gate"]:
        out += ["", "| gate check | value | baseline | threshold | result |", "|---|---|---|---|---|"]
        for c in report["gate"]:
            out.append(
                f"| {c['name']} {c['kind']} | {_f(c['value'])} | {_f(c['baseline'])} | {c['threshold']} | "
                f"{'pass' if c['passed'] else '**FAIL**'} |"
            )
    return "\n".join(out) + "\n"
