"""The CI gate: read a run's scored trials back from ClickHouse, compute pass^k and
compare with a baseline run, and write the reports (table, JSON, JUnit, Markdown).

Runs are recorded as `SimRunRecorded` events on the compacted ``sim.runs`` topic
(keyed by run id) so a later run finds its baseline by run id or by tag.
"""

from __future__ import annotations

import json
import re
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
    gates: list[str] = field(default_factory=list)
    reward_spec: str = ""
    note: str | None = None

    @property
    def gated_reward(self) -> float:
        """The reward the gate counts: the scored total for a success, 0 for a failed trial."""
        return self.total if self.success else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "trajectory_id": self.trajectory_id,
            "scenario": self.case_id,
            "trial": self.trial,
            "seed": self.seed,
            "success": self.success,
            "reward": self.gated_reward,
            "reward_raw": self.total,
            "components": self.components,
            "tool_calls": self.tool_calls,
            "attribution": self.attribution,
            "attribution_note": self.note,
            "checks": self.checks,
            "task": self.task,
        }


def read_trials(client: Any, run_id: str) -> list[TrialRow]:
    """The final reward of every trial of `run_id` (ClickHouse, deduplicated with FINAL)."""
    rows = query(
        client,
        "SELECT trajectory_id, scenario_id, trial, seed, success, total, components, "
        "metrics['tool_calls'] AS tool_calls, attribution, checks, task, gates, reward_spec "
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
            gates=list(r["gates"] or []),
            reward_spec=r["reward_spec"] or "",
        )
        for r in rows
    ]


def faults_of(client: Any, trajectory_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Per trajectory, the (tool, error_kind) of every call that suffered a staging fault, in order."""
    from agentlake.sim.grading import FAULT_KINDS

    if not trajectory_ids:
        return {}
    rows = query(
        client,
        "SELECT trajectory_id, tool, error_kind FROM tool_calls FINAL "
        "WHERE trajectory_id IN {ids:Array(String)} AND error_kind IN {kinds:Array(String)} "
        "ORDER BY trajectory_id, request_seq",
        {"ids": trajectory_ids, "kinds": sorted(FAULT_KINDS)},
    )
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        out[r["trajectory_id"]].append((r["tool"], r["error_kind"]))
    return dict(out)


def reattribute(
    rows: list[TrialRow],
    base_rows: list[TrialRow],
    faults: dict[str, list[tuple[str, str]]],
) -> int:
    """Use the baseline's evidence on identical seeded faults (in place).

    A candidate trial blamed on ``tool`` is re-attributed to ``agent`` when the
    baseline's trial of the same case, index and seed (so the same seeded faults
    per tool) met a fault of the same kind on the same tool and still succeeded:
    the fault was recoverable, this agent did not recover.

    Args:
        rows: the candidate's trials.
        base_rows: the baseline's trials.
        faults: `faults_of` both runs' trajectories.

    Returns:
        How many trials were re-attributed.
    """
    base = {(b.case_id, b.trial, b.seed): b for b in base_rows}
    changed = 0
    for r in rows:
        if r.success or r.attribution != "tool":
            continue
        b = base.get((r.case_id, r.trial, r.seed))
        if b is None or not b.success:
            continue
        mine, theirs = faults.get(r.trajectory_id, []), set(faults.get(b.trajectory_id, []))
        shared = [f for f in mine if f in theirs]
        if shared:
            tool, kind = shared[0]
            r.attribution = "agent"
            r.note = (
                f"re-attributed from tool: the baseline ({b.trajectory_id}) met the same seeded "
                f"{kind} on {tool} and recovered"
            )
            changed += 1
    return changed


def count_scored(client: Any, run_id: str) -> int:
    r = query(
        client,
        "SELECT count() AS n FROM rewards FINAL WHERE run_id = {r:String} AND is_final = 1",
        {"r": run_id},
    )
    return int(r[0]["n"])


def metrics_of(rows: list[TrialRow], seed: int = 0, planned: dict[str, int] | None = None) -> SuiteMetrics:
    """Suite metrics over the *planned* trials.

    A planned trial without a scored row (skipped by early stop, missing) counts as a
    failure, so a trial that did not run never raises pass^k or pass@k; a case
    with no row at all still takes part. The reward the gate sees is success-gated
    (`TrialRow.gated_reward`): a failed trial counts 0 whatever its reward spec.

    Args:
        rows: the scored trials.
        seed: bootstrap seed.
        planned: case id -> trials planned (default: the trials that have rows).
    """
    results: dict[str, list[bool]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.case_id, r.trial)):
        results[r.case_id].append(r.success)
    missing = 0
    for case, n in (planned or {}).items():
        have = results[case]
        missing += max(0, n - len(have))
        have.extend([False] * max(0, n - len(have)))
    # a missing trial scores 0 on the reward and on every component (never raises them);
    # tool calls are averaged over the trials that ran
    names = {k for r in rows for k in r.components}
    zeros: list[dict[str, float | None]] = [dict.fromkeys(names, 0.0) for _ in range(missing)]
    return suite_metrics(
        results,
        reward_totals=[r.gated_reward for r in rows] + [0.0] * missing,
        reward_components=[*(dict[str, float | None](r.components) for r in rows), *zeros],
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
    planned: int | None = None,
    missing: list[dict[str, Any]] | None = None,
    gate_source: str = "suite",
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The run's JSON report. ``suite_metrics`` are over the planned trials: recompute them
    from ``trials`` plus ``skipped`` and ``missing`` (each a failure)."""
    skipped_by_case: dict[str, int] = defaultdict(int)
    for s in [*skipped, *(missing or [])]:
        skipped_by_case[s["scenario"]] += 1
    blame: dict[str, int] = defaultdict(int)
    for r in rows:
        if not r.success:
            blame[r.attribution or "agent"] += 1
    return {
        "run_id": run_id,
        "suite": suite_id,
        "agent": agent,
        "seconds": round(seconds, 2),
        "baseline": baseline.run_id if baseline else None,
        "passed": gate.passed if gate else None,
        "gate_source": gate_source,
        "planned": planned if planned is not None else len(rows) + len(skipped) + len(missing or []),
        "failures_by": dict(blame),
        "warnings": list(warnings or []),
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
        "missing": list(missing or []),
    }


def reward_warnings(rows: list[TrialRow]) -> list[str]:
    """A loud line per reward spec that let failed trials score a reward (no gated component
    such as ``task_success``): the gate counts those rewards as 0, the report says so."""
    out = []
    by_spec: dict[str, list[TrialRow]] = defaultdict(list)
    for r in rows:
        if not r.success and r.total > 0 and not r.gates:
            by_spec[r.reward_spec or "?"].append(r)
    for spec, failed in sorted(by_spec.items()):
        top = max(r.total for r in failed)
        out.append(
            f"reward spec {spec} gates nothing (no task_success gate): {len(failed)} failed trial(s) "
            f"scored up to {top:.3f}; the gate counts a failed trial's reward as 0"
        )
    return out


_XML_FORBIDDEN = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: Any) -> str:
    """A string XML 1.0 can carry: each forbidden character (C0 controls but TAB/LF/CR,
    lone surrogates, U+FFFE/U+FFFF) is written as a visible ``\\xNN`` / ``\\uNNNN`` escape."""

    def esc(m: re.Match[str]) -> str:
        code = ord(m.group(0))
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _XML_FORBIDDEN.sub(esc, str(value))


def _attr(value: Any) -> str:
    return quoteattr(xml_text(value), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def junit_xml(report: dict[str, Any]) -> str:
    """The report as JUnit XML (valid against the common JUnit XSD, see tests/data/junit.xsd).

    One ``<testsuite>`` for the trials: a testcase per trial (a failure names the
    attribution and the failed checks; a trial blamed on ``infrastructure`` or the
    ``grader`` is an ``<error>``, not a ``<failure>``), one skipped testcase per
    trial skipped by early stop or missing. One ``<testsuite name="gate">`` with a
    testcase per gate check. ``tests`` counts every testcase, skipped ones included.
    Characters XML 1.0 forbids are escaped visibly (`xml_text`).
    """
    trials = report["trials"]
    gate = report["gate"]
    not_run = [*report["skipped"], *report.get("missing", [])]
    errors = [t for t in trials if not t["success"] and t["attribution"] in ("infrastructure", "grader")]
    failures = [t for t in trials if not t["success"] and t not in errors]
    gate_failures = sum(1 for c in gate if not c["passed"])
    n_trials = len(trials) + len(not_run)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuites name="agentlake" tests="{n_trials + len(gate)}" '
        f'failures="{len(failures) + gate_failures}" errors="{len(errors)}" time="{report["seconds"]}">',
        f'<testsuite name={_attr(report["suite"] + " / " + report["agent"])} tests="{n_trials}" '
        f'failures="{len(failures)}" errors="{len(errors)}" skipped="{len(not_run)}" '
        f'time="{report["seconds"]}">',
    ]
    for t in trials:
        name = f"{t['scenario']}#{t['trial']}"
        lines.append(f"<testcase classname={_attr(t['scenario'])} name={_attr(name)}>")
        if not t["success"]:
            failed = ", ".join(k for k, v in t["checks"].items() if not v) or "gates"
            who = t["attribution"] or "agent"
            msg = f"blamed on {who}; failed: {failed}"
            tag = "error" if t in errors else "failure"
            body = escape(xml_text(json.dumps(t, default=str, ensure_ascii=False)))
            lines.append(f"<{tag} message={_attr(msg)} type={_attr(who)}>{body}</{tag}>")
        lines.append("</testcase>")
    for s in report["skipped"]:
        lines.append(
            f"<testcase classname={_attr(s['scenario'])} name={_attr(s['trial_id'])}>"
            f'<skipped message="early stop: the suite verdict was already decided; counted as a failure"/>'
            "</testcase>"
        )
    for s in report.get("missing", []):
        lines.append(
            f"<testcase classname={_attr(s['scenario'])} name={_attr(s['trial_id'])}>"
            f'<skipped message="planned but never scored; counted as a failure"/></testcase>'
        )
    lines.append("</testsuite>")
    lines.append(
        f'<testsuite name="gate" tests="{len(gate)}" failures="{gate_failures}" errors="0" skipped="0">'
    )
    for c in gate:
        lines.append(f'<testcase classname="gate" name={_attr(c["name"] + " " + c["kind"])}>')
        if not c["passed"]:
            lines.append(f"<failure message={_attr(c['detail'])}/>")
        lines.append("</testcase>")
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"


def _at(d: dict[Any, Any], k: int) -> Any:
    return d.get(k, d.get(str(k)))


def _f(x: Any, fmt: str = "{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def _md(text: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks and XML-forbidden characters made visible."""
    return xml_text(str(text)).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


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
        *(f"> ⚠️ {w}" for w in report.get("warnings", [])),
        *([""] if report.get("warnings") else []),
        "| scenario | n | pass^1 | pass^k | reward | tool calls | failures by |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        blame = ", ".join(f"{k}: {v}" for k, v in s["failures_by"].items()) or "–"
        out.append(
            f"| {_md(s['scenario'])} | {s['n']} | {_f(s['pass_hat_1'])} | "
            f"{_f(s['pass_hat_k'])} (k={s['k']}) | "
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
