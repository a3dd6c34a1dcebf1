"""What agent code imports to record what it does.

    tracer = Tracer(agent_id="support-bot", agent_version="1.2.0", tenant="acme")
    with tracer.trajectory("Refund order 42") as t:
        t.step("thought", "look the order up first")
        with t.tool_call("orders", "get_order", {"id": 42}) as call:
            call.result(orders.get(42))
        t.end("success", final_answer="refunded")

The same objects work under `async with`. Every method only encodes an event
and hands it to the emitter: it never waits for the network.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from types import TracebackType
from typing import Any, TypeVar

from agentlake.schemas import codec, new_id, new_span_id, new_trace_id, now_us
from agentlake.schemas._bounds import (
    bounded,
    cap_text,
    capped_text,
    finite,
    ident,
    long_or_none,
    opt_ident,
    opt_text,
    string_map,
)
from agentlake.sdk._emitter import Emitter, KafkaEmitter
from agentlake.settings import Settings, get_settings
from agentlake.topics import SCHEMAS

log = logging.getLogger("agentlake.sdk")
_N = TypeVar("_N", int | None, float | None)


class Tracer:
    """Factory of trajectories for one agent identity.

    Args:
        agent_id: registry id of the agent.
        agent_version: version being run (what the CI gate compares).
        tenant: tenant the traffic belongs to.
        emitter: where encoded events go; defaults to a `KafkaEmitter` built from settings.
        settings: overrides the environment-derived settings.

    Raises:
        ValueError: `agent_id`, `agent_version` or `tenant` is empty (or not a string): a
            setup error of the caller, raised at construction. Recording never raises on data:
            a count or cost that is negative, NaN or out of range is recorded as null and
            counted in `invalid_values`.
    """

    def __init__(
        self,
        agent_id: str,
        agent_version: str,
        tenant: str = "default",
        *,
        emitter: Emitter | None = None,
        settings: Settings | None = None,
    ) -> None:
        for name, value in (("agent_id", agent_id), ("agent_version", agent_version), ("tenant", tenant)):
            if not isinstance(value, str) or not value.strip():
                # the caller's own setup, not recorded data: a report row with no agent is useless
                raise ValueError(f"Tracer: {name} must be a non-empty string (got {value!r})")
        self.settings = settings or get_settings()
        self.agent_id = ident(agent_id)
        self.agent_version = ident(agent_version)
        self.tenant = ident(tenant)
        self._owns_emitter = emitter is None
        self.emitter: Emitter = emitter or KafkaEmitter(
            self.settings.bootstrap_servers,
            self.settings.spill_dir,
            max_queue=self.settings.sdk_queue_size,
            linger_ms=self.settings.sdk_linger_ms,
            max_record_bytes=self.settings.max_event_bytes,
            max_request_size=self.settings.max_message_bytes,
            announce=[(self.settings.topic(SCHEMAS), k, v) for k, v in codec().publishable()],
        )
        self.max_payload = self.settings.max_payload_bytes
        self._codec = codec()
        self.unrecordable = 0  # events that could not be encoded at all (logged, never raised)
        # numbers recorded as null: NaN, +/-Inf, negative counts/costs, not integral, out of range
        self.invalid_values = 0

    def count(self, value: Any) -> int | None:
        """A token count as recorded: an int >= 0, else None (counted in `invalid_values`)."""
        clean = long_or_none(value)
        return self._kept(value, clean if clean is None or clean >= 0 else None)

    def amount(self, value: Any) -> float | None:
        """A cost (USD) as recorded: a finite float >= 0, else None (counted in `invalid_values`)."""
        clean = finite(value)
        return self._kept(value, clean if clean is None or clean >= 0 else None)

    def _kept(self, value: Any, clean: _N) -> _N:
        if value is not None and clean is None:
            self.invalid_values += 1
            if self.invalid_values == 1:  # once per tracer: a bad value is usually repeated
                log.warning("agentlake: recorded %r as null (counts and costs are finite and >= 0)", value)
        return clean

    def trajectory(
        self,
        task: str,
        *,
        trajectory_id: str | None = None,
        scenario_id: str | None = None,
        run_id: str | None = None,
        trial: int | None = None,
        seed: int | None = None,
        expected_tool_calls: int | None = None,
        user_id: str | None = None,
        attributes: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> Trajectory:
        """Start a trajectory: emits `TrajectoryStarted` (seq 0) immediately.

        `task` is cut at the payload limit; ids are capped (see `agentlake.schemas._bounds`);
        `attributes` are capped to the payload limit as a whole. Never raises on data.
        """
        return Trajectory(
            self,
            capped_text(task, self.max_payload),
            trajectory_id=ident(trajectory_id) if trajectory_id else uuid.uuid4().hex,
            trace_id=ident(trace_id) if trace_id else new_trace_id(),
            extra={
                "scenario_id": opt_ident(scenario_id),
                "run_id": opt_ident(run_id),
                "trial": long_or_none(trial, 32),
                "seed": long_or_none(seed),
                "expected_tool_calls": self._expected(expected_tool_calls),
                "user_id": opt_ident(user_id),
                "attributes": string_map(attributes, self.max_payload),
            },
        )

    def _expected(self, value: Any) -> int | None:
        clean = long_or_none(value, 32)
        return self._kept(value, clean if clean is None or clean >= 0 else None)

    def flush(self, timeout: float = 30.0) -> bool:
        return self.emitter.flush(timeout)

    async def aflush(self, timeout: float = 30.0) -> bool:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.emitter.flush, timeout)

    def close(self, timeout: float = 30.0) -> None:
        if self._owns_emitter:
            self.emitter.close(timeout)

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _emit(self, record: str, topic: str, trajectory_id: str, data: dict[str, Any]) -> None:
        """Encode and hand over. The fields are sanitized by the callers; should encoding
        still fail, the event is counted and logged, never raised into the agent."""
        try:
            value = self._codec.encode_record(record, data)
        except Exception as e:
            self.unrecordable += 1
            log.error("agentlake: could not encode a %s of trajectory %s (%s)", record, trajectory_id, e)
            return
        self.emitter.emit(self.settings.topic(topic), trajectory_id.encode(), value)


class Trajectory:
    """One task attempt. Use as a (sync or async) context manager, or call `end()`.

    Leaving the block without `end()` ends the trajectory with outcome
    ``success``, or ``error`` (with the exception text) when an exception escaped.
    """

    def __init__(
        self, tracer: Tracer, task: str, *, trajectory_id: str, trace_id: str, extra: dict[str, Any]
    ) -> None:
        self.tracer = tracer
        self.task = task
        self.trajectory_id = trajectory_id
        self.trace_id = trace_id
        self.root_span = new_span_id()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.ended = False
        self.outcome: str | None = None
        self.final_answer: str | None = None
        self._held = False
        self._pending_end: dict[str, Any] | None = None
        self.tool_calls = 0
        self.steps = 0
        self._emit(
            "TrajectoryStarted",
            "agent.trajectories",
            {"task": task, **extra},
            span_id=self.root_span,
            parent=None,
        )

    # -- events ---------------------------------------------------------------
    def step(
        self,
        kind: str,
        content: str,
        *,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Record a thought / message / plan / final step (content bounded like payloads)."""
        if kind not in ("thought", "message", "plan", "final", "user"):
            raise ValueError(f"step kind must be thought|message|plan|final|user, got {kind!r}")
        self.steps += 1
        text, size = cap_text(content, self.tracer.max_payload)
        self._emit(
            "AgentStep",
            "agent.steps",
            {
                "kind": kind,
                "content": text,
                "content_truncated": size > self.tracer.max_payload,
                "tokens_in": self.tracer.count(tokens_in),
                "tokens_out": self.tracer.count(tokens_out),
                "cost_usd": self.tracer.amount(cost_usd),
            },
        )

    def tool_call(self, server_id: str, tool: str, arguments: Any) -> ToolCall:
        """Record a tool call request; returns the handle to record its outcome."""
        self.tool_calls += 1
        return ToolCall(self, server_id, tool, arguments)

    def end(
        self,
        outcome: str = "success",
        *,
        final_answer: str | None = None,
        error: str | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        cost_usd: float | None = None,
    ) -> None:
        """Emit `TrajectoryEnded`. Its seq is the last one: the stream knows it has everything.

        After `hold_end()` the event is kept until `release_end()` adds the grader's checks.
        """
        if self.ended:
            return
        if outcome not in ("success", "failure", "error", "timeout", "aborted"):
            raise ValueError(f"outcome must be success|failure|error|timeout|aborted, got {outcome!r}")
        self.ended = True
        self.outcome = outcome
        self.final_answer = final_answer
        limit = self.tracer.max_payload
        fields: dict[str, Any] = {
            "outcome": outcome,
            "final_answer": opt_text(final_answer, limit),
            "error": opt_text(error, limit),
            "tokens_in": self.tracer.count(tokens_in),
            "tokens_out": self.tracer.count(tokens_out),
            "cost_usd": self.tracer.amount(cost_usd),
            "checks": {},
            "attribution": None,
            "verdict": None,
        }
        if self._held:
            self._pending_end = fields
            return
        self._emit("TrajectoryEnded", "agent.trajectories", fields, span_id=new_span_id())

    def hold_end(self) -> None:
        """Defer `TrajectoryEnded` until `release_end()`.

        A simulation runner grades the trial after the agent has ended it, then
        releases the end event with the checks attached, so that the stream
        processor computes the rewards from the events alone.
        """
        self._held = True

    def release_end(
        self,
        *,
        checks: dict[str, bool] | None = None,
        attribution: str | None = None,
        verdict: str | None = None,
        outcome_if_missing: str = "error",
        error: str | None = None,
    ) -> None:
        """Emit the held `TrajectoryEnded` with the grader's checks (or end it now if the
        agent never did, with `outcome_if_missing` and `error`)."""
        if not self.ended:
            self.end(outcome_if_missing, error=error)
        fields = self._pending_end
        self._held = False
        self._pending_end = None
        if fields is None:
            return  # already emitted: end() ran before hold_end()
        limit = self.tracer.max_payload
        fields.update(
            checks=string_map(checks, limit, cast=bool),
            attribution=opt_ident(attribution),
            verdict=opt_text(verdict, limit),
        )
        if error and not fields.get("error"):
            fields["error"] = opt_text(error, limit)
        self._emit("TrajectoryEnded", "agent.trajectories", fields, span_id=new_span_id())

    def _emit(
        self,
        record: str,
        topic: str,
        fields: dict[str, Any],
        *,
        span_id: str | None = None,
        parent: str | bool | None = True,
    ) -> None:
        with self._lock:
            seq = next(self._seq)
        data = {
            "event_id": new_id(),
            "trajectory_id": self.trajectory_id,
            "tenant": self.tracer.tenant,
            "agent_id": self.tracer.agent_id,
            "agent_version": self.tracer.agent_version,
            "seq": seq,
            "ts_us": now_us(),
            "trace_id": self.trace_id,
            "span_id": span_id or new_span_id(),
            "parent_span_id": self.root_span if parent is True else parent or None,
            **fields,
        }
        self.tracer._emit(record, topic, self.trajectory_id, data)

    # -- context managers -----------------------------------------------------
    def __enter__(self) -> Trajectory:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.ended:
            if ev is None:
                self.end("success")
            else:
                self.end("error", error=f"{type(ev).__name__}: {ev}")

    async def __aenter__(self) -> Trajectory:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, ev, tb)


class ToolCall:
    """A tool call in flight. Record exactly one of `result()` or `error()`.

    As a context manager it measures latency and, if the block raises, records the
    exception as the call's error (and lets it propagate).
    """

    def __init__(self, trajectory: Trajectory, server_id: str, tool: str, arguments: Any) -> None:
        self.trajectory = trajectory
        self.server_id = ident(server_id)
        self.tool = ident(tool)
        self.call_id = new_id()
        self.span_id = new_span_id()
        self.done = False
        self._t0 = time.perf_counter()
        args = bounded(arguments, trajectory.tracer.max_payload)
        trajectory._emit(
            "ToolCallRequested",
            "agent.tool_calls",
            {"call_id": self.call_id, "server_id": self.server_id, "tool": self.tool, "arguments": args},
            span_id=self.span_id,
        )

    def result(self, value: Any, *, is_error: bool = False, cost_usd: float | None = None) -> None:
        self._complete(
            value,
            is_error=is_error,
            error=None,
            cost_usd=cost_usd,
            error_kind="tool_error" if is_error else None,
        )

    def error(self, message: str, value: Any = None, *, kind: str = "tool_error") -> None:
        """Record a failed call.

        `kind`: invalid_arguments | tool_error | timeout | injected_error | transport | ...
        """
        self._complete(value, is_error=True, error=message, cost_usd=None, error_kind=kind)

    def _complete(
        self,
        value: Any,
        *,
        is_error: bool,
        error: str | None,
        cost_usd: float | None,
        error_kind: str | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        latency_ms = (time.perf_counter() - self._t0) * 1000
        res = bounded(value, self.trajectory.tracer.max_payload)
        self.trajectory._emit(
            "ToolCallCompleted",
            "agent.tool_calls",
            {
                "call_id": self.call_id,
                "server_id": self.server_id,
                "tool": self.tool,
                "result": res,
                "is_error": bool(is_error),
                "error": opt_text(error, self.trajectory.tracer.max_payload),
                "latency_ms": latency_ms,
                "cost_usd": self.trajectory.tracer.amount(cost_usd),
                "error_kind": opt_ident(error_kind) if is_error else None,
            },
            span_id=self.span_id,
        )

    def __enter__(self) -> ToolCall:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.done:
            if ev is not None:
                self.error(f"{type(ev).__name__}: {ev}", kind="transport")
            else:
                self.result(None)

    async def __aenter__(self) -> ToolCall:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, ev, tb)
