"""The reward processor: trajectory events in, reward vectors (and dead letters) out.

Pure logic, no Kafka: `RewardProcessor.process()` takes the stored state of a
trajectory and one raw record, and returns the new state and the records to
emit. The faust agent in `app.py` is a thin adapter around it, and unit tests
drive it directly or through faust's `test_context()`.

Order and duplicates. Events of a trajectory travel on three topics and may be
re-delivered (at-least-once) or re-sent by the SDK after a spill, so the fold is
keyed by ``seq``: an event whose seq was already applied changes nothing. The
trajectory is complete when ``TrajectoryEnded`` (whose seq is the last) has been
seen together with every seq below it; only then is the final reward emitted.
A re-delivered event of a completed trajectory re-emits the same final reward
(same ``event_id``), so a crash between the state write and the send cannot
lose it, and the projections keep one row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentlake.schemas import (
    AgentStep,
    Codec,
    DecodeError,
    Event,
    PolicyViolation,
    RewardScored,
    ToolCallCompleted,
    ToolCallRequested,
    TrajectoryEnded,
    TrajectoryStarted,
    codec,
    new_span_id,
    now_us,
)
from agentlake.streams.rewards import DEFAULT_SPEC, RewardSpec, TrajectorySummary, score
from agentlake.topics import POLICY, REWARDS, TOOL_CALLS, TRAJECTORIES, TRAJECTORY_TOPICS, dlq

_NS = uuid.UUID("6d1a3c52-8f7e-4f0e-9a55-1f3e2b7c9d10")
_EXPECTED_TOPIC = {
    "TrajectoryStarted": TRAJECTORIES,
    "TrajectoryEnded": TRAJECTORIES,
    "AgentStep": "agent.steps",
    "ToolCallRequested": TOOL_CALLS,
    "ToolCallCompleted": TOOL_CALLS,
}


class ToolPolicy(Protocol):
    """What the processor asks of an agent's declared tools (see `agentlake.registry`)."""

    def check(self, server_id: str, tool: str, arguments: Any) -> tuple[str, str] | None:
        """None when allowed, else (rule, detail)."""
        ...


@dataclass(frozen=True)
class AgentRules:
    spec: RewardSpec = DEFAULT_SPEC
    policy: ToolPolicy | None = None


RulesLookup = Callable[[str, str], AgentRules]


def default_rules(agent_id: str, version: str) -> AgentRules:
    return AgentRules()


@dataclass
class Output:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Result:
    state: dict[str, Any] | None
    outputs: list[Output]
    changed: bool


def new_state() -> dict[str, Any]:
    return {
        "seen": [],
        "end_seq": None,
        "started": None,
        "outcome": None,
        "final_answer": None,
        "first_us": None,
        "last_us": None,
        "steps": 0,
        "tool_calls": 0,
        "tool_errors": 0,
        "invalid_calls": 0,
        "out_of_scope": 0,
        "redundant": 0,
        "call_keys": [],
        "tool_seq": [],
        "latency_ms": 0.0,
        "tokens_in": None,
        "tokens_out": None,
        "cost_usd": None,
        "flags": [],
        "final": None,
        "max_seq": -1,
        "checks": {},
        "attribution": None,
    }


def _add(a: float | int | None, b: float | int | None) -> Any:
    if b is None:
        return a
    return b if a is None else a + b


def apply(state: dict[str, Any], ev: Event, rules: AgentRules) -> list[PolicyViolation]:
    """Fold one (not yet seen) event into the state. Returns policy findings."""
    findings: list[PolicyViolation] = []
    st = state
    st["seen"].append(ev.seq)
    st["max_seq"] = max(st["max_seq"], ev.seq)
    st["first_us"] = ev.ts_us if st["first_us"] is None else min(st["first_us"], ev.ts_us)
    st["last_us"] = ev.ts_us if st["last_us"] is None else max(st["last_us"], ev.ts_us)
    if st["started"] is None:
        st["started"] = {
            "tenant": ev.tenant,
            "agent_id": ev.agent_id,
            "agent_version": ev.agent_version,
            "trace_id": ev.trace_id,
            "task": None,
        }
    if isinstance(ev, TrajectoryStarted):
        st["started"].update(
            task=ev.task,
            scenario_id=ev.scenario_id,
            run_id=ev.run_id,
            trial=ev.trial,
            seed=ev.seed,
            expected_tool_calls=ev.expected_tool_calls,
            attributes=ev.attributes,
        )
    elif isinstance(ev, AgentStep):
        st["steps"] += 1
        st["tokens_in"] = _add(st["tokens_in"], ev.tokens_in)
        st["tokens_out"] = _add(st["tokens_out"], ev.tokens_out)
        st["cost_usd"] = _add(st["cost_usd"], ev.cost_usd)
    elif isinstance(ev, ToolCallRequested):
        st["tool_calls"] += 1
        st["tool_seq"].append([ev.seq, ev.tool])
        key = f"{ev.server_id}/{ev.tool}/{ev.arguments.sha256}"
        if key in st["call_keys"]:
            st["redundant"] += 1
        else:
            st["call_keys"].append(key)
        if rules.policy is not None:
            verdict = rules.policy.check(ev.server_id, ev.tool, ev.arguments.value())
            limit = getattr(rules.policy, "max_calls", None)
            if verdict is None and callable(limit):
                cap = limit(ev.server_id, ev.tool)
                made = sum(1 for _, t in st["tool_seq"] if t == ev.tool)
                if cap is not None and made > cap:
                    verdict = ("max_calls", f"{ev.server_id}.{ev.tool}: call {made} exceeds max_calls {cap}")
            if verdict is not None:
                rule, detail = verdict
                st["out_of_scope"] += 1
                flag = f"{rule}:{ev.tool}"
                if flag not in st["flags"]:
                    st["flags"].append(flag)
                findings.append(
                    PolicyViolation(
                        event_id=str(uuid.uuid5(_NS, f"{ev.trajectory_id}:{ev.seq}:policy")),
                        trajectory_id=ev.trajectory_id,
                        tenant=ev.tenant,
                        agent_id=ev.agent_id,
                        agent_version=ev.agent_version,
                        seq=ev.seq,
                        ts_us=ev.ts_us,
                        trace_id=ev.trace_id,
                        span_id=ev.span_id,
                        call_id=ev.call_id,
                        server_id=ev.server_id,
                        tool=ev.tool,
                        rule=rule,
                        detail=detail,
                    )
                )
    elif isinstance(ev, ToolCallCompleted):
        st["latency_ms"] += ev.latency_ms
        st["cost_usd"] = _add(st["cost_usd"], ev.cost_usd)
        if ev.is_error:
            st["tool_errors"] += 1
            if ev.error_kind == "invalid_arguments":
                st["invalid_calls"] += 1
    elif isinstance(ev, TrajectoryEnded):
        st["end_seq"] = ev.seq
        st["outcome"] = ev.outcome
        st["checks"] = dict(ev.checks)
        st["attribution"] = ev.attribution
        st["final_answer"] = ev.final_answer
        st["tokens_in"] = _add(st["tokens_in"], ev.tokens_in)
        st["tokens_out"] = _add(st["tokens_out"], ev.tokens_out)
        st["cost_usd"] = _add(st["cost_usd"], ev.cost_usd)
    return findings


def is_complete(state: dict[str, Any]) -> bool:
    end = state["end_seq"]
    return end is not None and len(state["seen"]) >= end + 1 and state["max_seq"] <= end


def summarize(state: dict[str, Any]) -> TrajectorySummary:
    started = state["started"] or {}
    first, last = state["first_us"], state["last_us"]
    return TrajectorySummary(
        outcome=state["outcome"],
        steps=state["steps"],
        tool_calls=state["tool_calls"],
        tool_errors=state["tool_errors"],
        redundant_calls=state["redundant"],
        invalid_calls=state["invalid_calls"],
        out_of_scope_calls=state["out_of_scope"],
        expected_tool_calls=started.get("expected_tool_calls"),
        duration_ms=((last - first) / 1000.0) if first is not None and last is not None else 0.0,
        tool_latency_ms=state["latency_ms"],
        tokens_in=state["tokens_in"],
        tokens_out=state["tokens_out"],
        cost_usd=state["cost_usd"],
        tool_sequence=[t for _, t in sorted(state["tool_seq"])],
        final_answer=state["final_answer"],
        attributes=started.get("attributes") or {},
        checks=dict(state.get("checks") or {}),
    )


def reward_event(trajectory_id: str, state: dict[str, Any], rules: AgentRules, final: bool) -> RewardScored:
    s = summarize(state)
    vec = score(s, rules.spec)
    started = state["started"] or {}
    through = state["end_seq"] if final else state["max_seq"]
    metrics = {
        "steps": float(s.steps),
        "tool_calls": float(s.tool_calls),
        "tool_errors": float(s.tool_errors),
        "redundant_calls": float(s.redundant_calls),
        "invalid_calls": float(s.invalid_calls),
        "out_of_scope_calls": float(s.out_of_scope_calls),
        "duration_ms": s.duration_ms,
        "tool_latency_ms": s.tool_latency_ms,
    }
    if s.expected_tool_calls is not None:
        metrics["expected_tool_calls"] = float(s.expected_tool_calls)
    if s.tokens is not None:
        metrics["tokens"] = float(s.tokens)
    if s.cost_usd is not None:
        metrics["cost_usd"] = s.cost_usd
    return RewardScored(
        event_id=str(uuid.uuid5(_NS, f"{trajectory_id}:{through}:{'final' if final else 'live'}")),
        trajectory_id=trajectory_id,
        tenant=started.get("tenant", "default"),
        agent_id=started.get("agent_id", ""),
        agent_version=started.get("agent_version", ""),
        seq=through,
        ts_us=now_us(),
        trace_id=started.get("trace_id", "0" * 32),
        span_id=new_span_id(),
        is_final=final,
        reward_spec=rules.spec.ref,
        components=vec.components,
        weights=vec.weights,
        metrics=metrics,
        total=vec.total,
        gates=vec.gates,
        failed_gates=vec.failed_gates,
        task=started.get("task") or "",
        outcome=s.outcome,
        tool_sequence=s.tool_sequence,
        scenario_id=started.get("scenario_id"),
        run_id=started.get("run_id"),
        trial=started.get("trial"),
        seed=started.get("seed"),
        flags=list(state["flags"]),
        checks=dict(state.get("checks") or {}) if final else {},
        attribution=state.get("attribution") if final else None,
    )


class RewardProcessor:
    """Scores trajectories from their events.

    Args:
        rules: returns the reward spec and tool policy of an agent version.
        live_scores: also emit a running (``is_final=false``) score on each agent step.
        topic: maps a logical topic name to the physical one (prefixing).
    """

    def __init__(
        self,
        rules: RulesLookup = default_rules,
        *,
        live_scores: bool = True,
        topic: Callable[[str], str] = lambda t: t,
        the_codec: Codec | None = None,
    ) -> None:
        self.rules = rules
        self.live_scores = live_scores
        self.topic = topic
        self.codec = the_codec or codec()
        self._logical = {topic(t): t for t in TRAJECTORY_TOPICS}

    def dead_letter(
        self,
        source_topic: str,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        position: str = "",
    ) -> Output:
        return Output(
            self.topic(dlq(self._logical.get(source_topic, source_topic))),
            key,
            value or b"",
            [
                ("reason", reason.encode()),
                ("detail", detail[:1000].encode()),
                ("source_topic", source_topic.encode()),
                ("source_position", position.encode()),
            ],
        )

    def decode(
        self, topic: str, key: bytes | None, value: bytes | None, position: str = ""
    ) -> Event | Output:
        """The event, or the dead letter that explains why it is not one."""
        if value is None:
            return self.dead_letter(topic, key, value, "empty", "record has no value", position)
        try:
            ev = self.codec.decode(value)
        except DecodeError as e:
            return self.dead_letter(topic, key, value, e.reason, e.detail, position)
        logical = self._logical.get(topic, topic)
        expected = _EXPECTED_TOPIC.get(ev.record)
        if expected is None or (logical in TRAJECTORY_TOPICS and expected != logical):
            return self.dead_letter(
                topic, key, value, "wrong_topic", f"{ev.record} does not belong on {logical}", position
            )
        if key is not None and key != ev.trajectory_id.encode():
            return self.dead_letter(
                topic,
                key,
                value,
                "key_mismatch",
                f"key {key!r} != trajectory_id {ev.trajectory_id}",
                position,
            )
        if ev.seq < 0:
            return self.dead_letter(topic, key, value, "schema_violation", f"negative seq {ev.seq}", position)
        return ev

    def process(
        self,
        state: dict[str, Any] | None,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        position: str = "",
    ) -> Result:
        decoded = self.decode(topic, key, value, position)
        if isinstance(decoded, Output):
            return Result(state, [decoded], changed=False)
        ev = decoded
        st = state if state is not None else new_state()
        if st["final"] is not None:
            # Completed already: this is a re-delivery. Re-send the stored reward (same event id).
            return Result(st, [self._out(ev.trajectory_id, bytes.fromhex(st["final"]))], changed=False)
        if ev.seq in st["seen"]:
            return Result(st, [], changed=False)
        if st["end_seq"] is not None and ev.seq > st["end_seq"]:
            return Result(
                st,
                [
                    self.dead_letter(
                        topic, key, value, "after_end", f"seq {ev.seq} > end seq {st['end_seq']}", position
                    )
                ],
                changed=False,
            )
        rules = self.rules(ev.agent_id, ev.agent_version)
        findings = apply(st, ev, rules)
        outputs = [self._out(ev.trajectory_id, self.codec.encode(f), POLICY) for f in findings]
        if is_complete(st):
            reward = self.codec.encode(reward_event(ev.trajectory_id, st, rules, final=True))
            st["final"] = reward.hex()
            # Keep only what a re-delivery needs; the fold's working set is no longer used.
            for k in ("call_keys", "tool_seq"):
                st[k] = []
            outputs.append(self._out(ev.trajectory_id, reward))
        elif self.live_scores and isinstance(ev, AgentStep):
            outputs.append(
                self._out(
                    ev.trajectory_id, self.codec.encode(reward_event(ev.trajectory_id, st, rules, False))
                )
            )
        return Result(st, outputs, changed=True)

    def _out(self, trajectory_id: str, value: bytes, logical: str = REWARDS) -> Output:
        return Output(self.topic(logical), trajectory_id.encode(), value)
