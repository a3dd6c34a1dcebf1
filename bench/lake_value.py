"""Does the context lake make agents better? Measured with the simulator, not assumed.

The same suite (``agentlake/examples/suite.yaml`` by default: refunds, cancellations,
status questions, a refusal, a multi-turn case) is run by the same reference agent
(`agentlake.lake.agent.ShopAgent`, a weak tool-calling agent with seeded habits)
in several arms, trial by trial, with the same seeds:

- ``alone``: no lake;
- ``lake: plans``: before acting, the agent asks the lake: a hit gives the cached
  plan of a successful past trajectory with the same task signature, a miss the
  plan fused from similar successful ones, plus lessons from failed ones;
- ``lake: fused plans only``: hits ignored, so every suggestion is fused from
  *other* tasks (what memory gives a task it has never seen);
- ``lake: plans, no lessons``: the same as ``lake: plans`` without "what not to do";
- ``lake: plans followed verbatim``: the advised tool sequence replaces the agent's
  own reading of the task (by default the advice orders the calls and the agent
  keeps the action it read in the task);
- ``lake: plans + cached answers``: a hit whose cached plan is read-only returns
  the cached answer without calling a tool (cheapest, and where reuse goes wrong
  when the world changed: same question, other state);
- ``support-bot@1.0 alone``: the good hand-written reference agent, as a ceiling.

Each lake arm starts empty and learns online: every finished trial is scored by
the stream worker's own code (`RewardProcessor`, in-process) and folded into a
lake entry (`EntryBuilder`) that later trials can reuse. Trials run in the
runner's interleaved order (every case's first trial, then every second...), so
pass^k counts what memory does to repeated attempts at the same task.

Reported per arm: pass^1, pass^k (C(c,k)/C(n,k) per case, averaged), tool calls
per task, hits, wrong hits (a reused hit whose trial failed), and per scenario
where the lake helps and where it hurts.

    .venv/bin/python bench/lake_value.py [--trials 5] [--repeats 3] [--k 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlake.lake.agent import AgentRecord, Habits, LakeAdvisor, ShopAgent
from agentlake.schemas import RewardScored, codec
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings
from agentlake.sim.metrics import pass_hat_k
from agentlake.sim.reference import support_bot_v1
from agentlake.sim.runner import AgentTarget, StagingFactory, interleave, run_trial
from agentlake.sim.suite import Trial, expand, load_suite
from agentlake.streams.processor import RewardProcessor

SUITE = Path(__file__).resolve().parent.parent / "agentlake" / "examples" / "suite.yaml"
AGENT = ("shop-novice", "1.0")
TENANT = "sim"


@dataclass
class ArmSpec:
    name: str
    lake: bool
    reuse_results: bool = False
    use_lessons: bool = True
    verbatim: bool = False
    reference: bool = False  # the good reference agent (support-bot@1.0) instead of the novice
    hits: bool = True


ARMS = (
    ArmSpec("alone", lake=False),
    ArmSpec("lake: plans", lake=True),
    ArmSpec("lake: fused plans only (hits ignored)", lake=True, hits=False),
    ArmSpec("lake: plans, no lessons", lake=True, use_lessons=False),
    ArmSpec("lake: plans followed verbatim", lake=True, verbatim=True),
    ArmSpec("lake: plans + cached answers", lake=True, reuse_results=True),
    ArmSpec("support-bot@1.0 alone (ceiling)", lake=False, reference=True),
)


@dataclass
class TrialOutcome:
    case_id: str
    scenario_id: str
    success: bool
    tool_calls: int
    used: str
    advice: str
    wrong_hit: bool
    reason: str


@dataclass
class ArmResult:
    name: str
    outcomes: list[TrialOutcome] = field(default_factory=list)
    lake_stats: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class OnlineLearner:
    """Scores finished trials with the stream worker's code and adds them to the lake."""

    def __init__(self, lake: Any, emitter: MemoryEmitter) -> None:
        entries = importlib.import_module("agentlake.lake.entries")
        self.lake = lake
        self.emitter = emitter
        self.processor = RewardProcessor(live_scores=False)
        self.builder = entries.EntryBuilder(ttl_s=7 * 24 * 3600.0)
        self.states: dict[str, Any] = {}
        self.seen = 0
        self.codec = codec()

    def learn(self) -> int:
        """Fold the events emitted since the last call; returns entries added."""
        new = self.emitter.records[self.seen :]
        self.seen = len(self.emitter.records)
        added = []
        for topic, key, value in new:
            ev = self.codec.decode(value)
            e = self.builder.add(ev)
            if e is not None:
                added.append(e)
            res = self.processor.process(self.states.get(ev.trajectory_id), topic, key, value)
            self.states[ev.trajectory_id] = res.state
            for out in res.outputs:
                scored = self.codec.decode(out.value)
                if isinstance(scored, RewardScored) and scored.is_final:
                    e = self.builder.add(scored)
                    if e is not None:
                        added.append(e)
                    self.states.pop(ev.trajectory_id, None)
        if added:
            self.lake.add(added)
        return len(added)


async def run_arm(spec: ArmSpec, trials: list[Trial], settings: Settings) -> ArmResult:
    emitter = MemoryEmitter()
    tracer = Tracer(AGENT[0], AGENT[1], tenant=TENANT, emitter=emitter, settings=settings)
    lake: Any = None
    advisor: LakeAdvisor | None = None
    learner: OnlineLearner | None = None
    if spec.lake:
        from agentlake.projections.embeddings import get_embedder

        cache = importlib.import_module("agentlake.lake.cache")
        lake = cache.Lake(get_embedder(settings), record_events=False)
        advisor = LakeAdvisor(lake, agent_id=AGENT[0], agent_version=AGENT[1], hits=spec.hits)
        learner = OnlineLearner(lake, emitter)
    agent = ShopAgent(
        advisor,
        Habits(),
        tenant=TENANT,
        reuse_results=spec.reuse_results,
        use_lessons=spec.use_lessons,
        verbatim=spec.verbatim,
    )
    staging = StagingFactory.default()
    run_id = f"lake-value-{uuid.uuid4().hex[:8]}"
    result = ArmResult(spec.name)
    t0 = time.perf_counter()
    for trial in interleave(trials):
        fn = support_bot_v1 if spec.reference else agent.for_trial(trial.seed)
        target = AgentTarget(AGENT[0], AGENT[1], fn=fn)
        res = await run_trial(trial, target, tracer, run_id, staging)
        record: AgentRecord | None = agent.records.get(res.trajectory_id)
        success = res.verdict.success
        wrong = False
        if record is not None and advisor is not None:
            advisor.report(record.advice, success)
            wrong = record.advice.kind == "hit" and not success
        result.outcomes.append(
            TrialOutcome(
                trial.case_id,
                trial.scenario_id,
                success,
                res.tool_calls,
                record.used if record else "own",
                record.advice.kind if record else "none",
                wrong,
                res.verdict.reason,
            )
        )
        if learner is not None:
            learner.learn()
    result.seconds = time.perf_counter() - t0
    if lake is not None:
        result.lake_stats.append(lake.stats())
    return result


def pass_k(outcomes: list[TrialOutcome], k: int) -> float:
    per_case: dict[str, list[bool]] = defaultdict(list)
    for o in outcomes:
        per_case[o.case_id].append(o.success)
    vals = [pass_hat_k(len(v), sum(v), k) for v in per_case.values() if len(v) >= k]
    return statistics.fmean(vals) if vals else float("nan")


def summarize(arm: str, outcomes: list[TrialOutcome], k: int) -> dict[str, Any]:
    n = len(outcomes)
    passed = [o.tool_calls for o in outcomes if o.success]
    used: dict[str, int] = defaultdict(int)
    for o in outcomes:
        used[o.used] += 1
    return {
        "arm": arm,
        "trials": n,
        "pass_hat_1": pass_k(outcomes, 1),
        f"pass_hat_{k}": pass_k(outcomes, k),
        "tool_calls_per_task": statistics.fmean(o.tool_calls for o in outcomes) if n else 0.0,
        "tool_calls_per_passed_task": statistics.fmean(passed) if passed else 0.0,
        "hits": sum(1 for o in outcomes if o.advice == "hit"),
        "wrong_hits": sum(1 for o in outcomes if o.wrong_hit),
        "fused_plans_followed": used.get("fused_plan", 0),
        "cached_answers": used.get("cached_answer", 0),
        "own_plan": used.get("own", 0),
    }


def by_scenario(outcomes: list[TrialOutcome]) -> dict[str, dict[str, float]]:
    per: dict[str, list[TrialOutcome]] = defaultdict(list)
    for o in outcomes:
        per[o.scenario_id].append(o)
    return {
        s: {
            "pass_hat_1": pass_k(os, 1),
            "tool_calls": statistics.fmean(o.tool_calls for o in os),
            "wrong_hits": float(sum(o.wrong_hit for o in os)),
        }
        for s, os in sorted(per.items())
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    suite = load_suite(args.suite)
    all_results: dict[str, list[TrialOutcome]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    lake_stats: dict[str, list[dict[str, Any]]] = defaultdict(list)
    arms = [a for a in ARMS if not args.arms or a.name in args.arms]
    for r in range(args.repeats):
        trials = expand(suite, trials=args.trials, base_seed=1000 * (r + 1))
        for spec in arms:
            res = await run_arm(spec, trials, settings)
            all_results[spec.name].extend(res.outcomes)
            seconds[spec.name] += res.seconds
            lake_stats[spec.name].extend(res.lake_stats)
            if not args.json:
                print(f"  repeat {r + 1}/{args.repeats} {spec.name}: {res.seconds:.1f}s", file=sys.stderr)
    summary = [summarize(a.name, all_results[a.name], args.k) for a in arms]
    scenarios = {a.name: by_scenario(all_results[a.name]) for a in arms}
    return {
        "suite": suite.id,
        "trials_per_case": args.trials,
        "repeats": args.repeats,
        "k": args.k,
        "habits": Habits().__dict__,
        "summary": summary,
        "scenarios": scenarios,
        "lake_stats": lake_stats,
        "seconds": dict(seconds),
    }


def render(report: dict[str, Any]) -> str:
    k = report["k"]
    base = report["summary"][0]
    lines = [
        f"suite {report['suite']}: {report['trials_per_case']} trials per case x {report['repeats']} repeats "
        f"(habits {report['habits']})",
        "",
        f"| arm | pass^1 | pass^{k} | tool calls / task (/ passed task) | hits | wrong hits "
        "| fused plans followed | cached answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["summary"]:
        d1 = s["pass_hat_1"] - base["pass_hat_1"]
        rel = f" ({d1 / base['pass_hat_1'] * 100:+.0f}%)" if s is not base and base["pass_hat_1"] else ""
        lines.append(
            f"| {s['arm']} | {s['pass_hat_1']:.3f}{rel} | {s[f'pass_hat_{k}']:.3f} | "
            f"{s['tool_calls_per_task']:.2f} ({s['tool_calls_per_passed_task']:.2f}) | "
            f"{s['hits']} | {s['wrong_hits']} | "
            f"{s['fused_plans_followed']} | {s['cached_answers']} |"
        )
    lines += ["", "pass^1 by scenario (tool calls per task):", ""]
    arms = [s["arm"] for s in report["summary"]]
    lines.append("| scenario | " + " | ".join(arms) + " |")
    lines.append("|---|" + "---|" * len(arms))
    scen = report["scenarios"]
    for name in scen[arms[0]]:
        cells = []
        for a in arms:
            v = scen[a][name]
            w = f", {int(v['wrong_hits'])} wrong" if v["wrong_hits"] else ""
            cells.append(f"{v['pass_hat_1']:.2f} ({v['tool_calls']:.2f}{w})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", type=Path, default=SUITE)
    p.add_argument("--trials", type=int, default=5, help="trials per case (pass^k needs >= k)")
    p.add_argument("--repeats", type=int, default=3, help="independent repeats (other seeds), pooled")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--arms", nargs="*", help="only these arms (by name)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from agentlake.cli import quiet_logs

    quiet_logs()
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))


if __name__ == "__main__":
    main()
