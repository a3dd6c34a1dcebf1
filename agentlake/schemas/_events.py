"""Pydantic mirrors of the Avro records: what Python code builds and reads.

The `.avsc` files are the wire contract; these classes mirror the newest
version of each. `tests/unit/test_schemas.py` checks that the two agree.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentlake.schemas._bounds import bounded

StepKind = Literal["thought", "message", "plan", "final", "user"]
Outcome = Literal["success", "failure", "error", "timeout", "aborted"]
OUTCOMES: tuple[str, ...] = ("success", "failure", "error", "timeout", "aborted")


def now_us() -> int:
    return time.time_ns() // 1000


def new_id() -> str:
    """128 random bits as 32 hex chars (what uuid4().hex gives, without the object)."""
    return os.urandom(16).hex()


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


class Payload(BaseModel):
    """A JSON payload bounded in size: one giant tool result cannot break the pipeline."""

    model_config = ConfigDict(frozen=True)

    json_: str = Field(alias="json")
    truncated: bool = False
    size: int
    sha256: str

    @classmethod
    def of(cls, value: Any, limit: int) -> Payload:
        """Serialize `value` as JSON and cut it at `limit` bytes (on a UTF-8 boundary).

        `size` and `sha256` always describe the full serialization, so a truncated
        payload can still be matched against the original.
        """
        return cls.model_validate(bounded(value, limit))

    def value(self) -> Any:
        """The payload parsed back, or the raw (possibly truncated) text when it is not JSON."""
        if self.truncated:
            return self.json_
        try:
            return json.loads(self.json_)
        except ValueError:
            return self.json_

    def to_avro(self) -> dict[str, Any]:
        return {"json": self.json_, "truncated": self.truncated, "size": self.size, "sha256": self.sha256}


class Event(BaseModel):
    """Fields every event carries. Subclasses name their Avro record and topic."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    record: ClassVar[str] = ""
    topic: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_id)
    trajectory_id: str
    tenant: str = "default"
    agent_id: str
    agent_version: str
    seq: int
    ts_us: int = Field(default_factory=now_us)
    trace_id: str = Field(default_factory=new_trace_id)
    span_id: str = Field(default_factory=new_span_id)
    parent_span_id: str | None = None

    def to_avro(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            v = getattr(self, name)
            out[name] = v.to_avro() if isinstance(v, Payload) else v
        return out

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Event:
        return cls.model_validate(data)


class TrajectoryStarted(Event):
    record: ClassVar[str] = "TrajectoryStarted"
    topic: ClassVar[str] = "agent.trajectories"

    task: str
    user_id: str | None = None
    scenario_id: str | None = None
    run_id: str | None = None
    trial: int | None = None
    seed: int | None = None
    expected_tool_calls: int | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class AgentStep(Event):
    record: ClassVar[str] = "AgentStep"
    topic: ClassVar[str] = "agent.steps"

    kind: StepKind
    content: str
    content_truncated: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None


class ToolCallRequested(Event):
    record: ClassVar[str] = "ToolCallRequested"
    topic: ClassVar[str] = "agent.tool_calls"

    call_id: str
    server_id: str
    tool: str
    arguments: Payload


class ToolCallCompleted(Event):
    record: ClassVar[str] = "ToolCallCompleted"
    topic: ClassVar[str] = "agent.tool_calls"

    call_id: str
    server_id: str
    tool: str
    result: Payload
    is_error: bool
    error: str | None = None
    latency_ms: float
    cost_usd: float | None = None
    error_kind: str | None = None


class TrajectoryEnded(Event):
    record: ClassVar[str] = "TrajectoryEnded"
    topic: ClassVar[str] = "agent.trajectories"

    outcome: Outcome
    final_answer: str | None = None
    error: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    checks: dict[str, bool] = Field(default_factory=dict)
    attribution: str | None = None
    verdict: str | None = None


class RewardScored(Event):
    record: ClassVar[str] = "RewardScored"
    topic: ClassVar[str] = "rewards.scored"

    is_final: bool
    reward_spec: str
    components: dict[str, float]
    weights: dict[str, float]
    metrics: dict[str, float]
    total: float
    gates: list[str] = Field(default_factory=list)
    failed_gates: list[str] = Field(default_factory=list)
    task: str
    outcome: str | None = None
    tool_sequence: list[str] = Field(default_factory=list)
    scenario_id: str | None = None
    run_id: str | None = None
    trial: int | None = None
    seed: int | None = None
    flags: list[str] = Field(default_factory=list)
    checks: dict[str, bool] = Field(default_factory=dict)
    attribution: str | None = None

    @property
    def success(self) -> bool:
        """A graded trial succeeds when every check passed (a correct refusal reports
        outcome ``failure`` and still succeeds); otherwise the agent's own outcome counts.
        Failed gates always fail it."""
        if self.failed_gates:
            return False
        if self.checks:
            return all(self.checks.values())
        return self.outcome == "success"


class PolicyViolation(Event):
    record: ClassVar[str] = "PolicyViolation"
    topic: ClassVar[str] = "policy.findings"

    call_id: str
    server_id: str
    tool: str
    rule: str
    detail: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.record: cls
    for cls in (
        TrajectoryStarted,
        AgentStep,
        ToolCallRequested,
        ToolCallCompleted,
        TrajectoryEnded,
        RewardScored,
        PolicyViolation,
    )
}
TRAJECTORY_TOPICS: tuple[str, ...] = ("agent.trajectories", "agent.steps", "agent.tool_calls")
