"""Spans of the OpenTelemetry GenAI semantic conventions -> AgentLake trajectory events.

Pure: no I/O, the clock is an argument. One trace is one trajectory (its id is
the trace id). Spans arrive in any order, in several requests, possibly from
several processes; the assembler buffers them per trace and emits the whole
trajectory once

* its root ``invoke_agent`` span (one with no ``invoke_agent`` ancestor among
  the spans received) has arrived and no span of the trace came for
  ``end_grace_s`` (children exported late by another process still make it), or
* nothing arrived for ``idle_timeout_s`` and there is no root: the trajectory
  ends with outcome ``timeout``.

Buffering until the end is what lets `seq` follow the spans' start times: the
stream worker needs ``TrajectoryStarted`` at seq 0 and ``TrajectoryEnded`` last.

Mapping (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/):

=====================================  ==============================================
span                                   events
=====================================  ==============================================
root ``invoke_agent``                  ``TrajectoryStarted`` (start), ``TrajectoryEnded`` (end)
``execute_tool``                       ``ToolCallRequested`` (start), ``ToolCallCompleted`` (end)
``chat`` / ``text_completion`` /       ``AgentStep`` kind ``message`` (end): output text, tokens
``generate_content``
nested ``invoke_agent``, other gen_ai  ``AgentStep`` kind ``plan`` (start)
anything else                          ignored
=====================================  ==============================================
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from agentlake.otel._wire import Span
from agentlake.schemas._bounds import bounded

_NS = uuid.UUID("6f1c3a52-4e0e-4c1e-9d7e-0a2f5b7c9e11")
MODEL_OPS = {"chat", "text_completion", "generate_content"}
GENAI_OPS = MODEL_OPS | {"invoke_agent", "execute_tool", "create_agent", "embeddings"}

Emitted = tuple[str, str, dict[str, Any]]  # record, topic (unprefixed), Avro dict


class Overloaded(RuntimeError):
    """Too many traces are pending: the client should retry later (HTTP 503)."""


@dataclass
class Finished:
    """A trajectory ready to emit: its events in seq order, and why it ended."""

    trajectory_id: str
    events: list[Emitted]
    reason: str  # root_ended | idle_timeout | shutdown


@dataclass
class AddResult:
    """What `TraceAssembler.add` did with a batch; `kept` are the accepted spans, in batch order."""

    accepted: int = 0
    rejected: int = 0
    ignored: int = 0
    reasons: list[str] = field(default_factory=list)
    kept: list[Span] = field(default_factory=list)


@dataclass
class _Pending:
    spans: dict[str, Span] = field(default_factory=dict)
    last_seen_us: int = 0


class TraceAssembler:
    """Buffers spans per trace and turns finished traces into events.

    Args:
        end_grace_s: quiet time after the root span before the trace is emitted.
        idle_timeout_s: quiet time after which a trace without a root is emitted as ``timeout``.
        max_spans_per_trace: spans beyond this are rejected (reported as partial success).
        max_traces: pending traces; a new trace beyond this raises `Overloaded`.
        max_payload: byte limit of arguments, results and step content (truncated beyond).
        tenant: tenant when spans carry none (``agentlake.tenant`` / ``tenant.id``).
    """

    def __init__(
        self,
        *,
        end_grace_s: float = 5.0,
        idle_timeout_s: float = 120.0,
        max_spans_per_trace: int = 20_000,
        max_traces: int = 10_000,
        max_payload: int = 64 * 1024,
        tenant: str = "default",
        remember: int = 100_000,
    ) -> None:
        self.end_grace_us = int(end_grace_s * 1e6)
        self.idle_timeout_us = int(idle_timeout_s * 1e6)
        self.max_spans = max_spans_per_trace
        self.max_traces = max_traces
        self.max_payload = max_payload
        self.tenant = tenant
        self._pending: dict[str, _Pending] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, spans: list[Span], now_us: int, *, limit_traces: bool = True) -> AddResult:
        """Buffer spans that arrived at `now_us` (µs). A duplicate span (same trace and span
        id) replaces itself.

        Args:
            limit_traces: False when restoring spans accepted before a restart: they are
                kept even beyond `max_traces`.

        Raises:
            Overloaded: when a new trace would exceed `max_traces` (nothing of this batch is kept).
        """
        res = AddResult()
        new = {s.trace_id for s in spans if s.trace_id not in self._pending and s.trace_id not in self._done}
        if limit_traces and new and len(self._pending) + len(new) > self.max_traces:
            raise Overloaded(f"{len(self._pending)} traces pending (max {self.max_traces}); retry later")
        for s in spans:
            if s.operation not in GENAI_OPS:
                res.ignored += 1
                continue
            if s.trace_id in self._done:
                res.rejected += 1
                res.reasons.append(f"trace {s.trace_id} already ended (span {s.name!r} arrived late)")
                continue
            p = self._pending.setdefault(s.trace_id, _Pending())
            if s.span_id not in p.spans and len(p.spans) >= self.max_spans:
                res.rejected += 1
                res.reasons.append(f"trace {s.trace_id} exceeds {self.max_spans} spans")
                continue
            p.spans[s.span_id] = s
            p.last_seen_us = now_us
            res.accepted += 1
            res.kept.append(s)
        return res

    def remember_done(self, trace_ids: list[str]) -> None:
        """Treat these traces (not pending) as already emitted: their late spans are rejected.

        Used after a restart, for the traces whose end the spool recorded.
        """
        for tid in trace_ids:
            if tid not in self._pending:
                self._done[tid] = None
        while len(self._done) > self._remember:
            self._done.popitem(last=False)

    def due(self, now_us: int) -> list[Finished]:
        """Traces whose root ended (plus the grace period) or that went idle, removed from the buffer."""
        out = []
        for tid, p in list(self._pending.items()):
            quiet = now_us - p.last_seen_us
            root = _root(p.spans)
            if root is not None and quiet >= self.end_grace_us:
                out.append(self._finish(tid, p, root, "root_ended"))
            elif root is None and quiet >= self.idle_timeout_us:
                out.append(self._finish(tid, p, None, "idle_timeout"))
        return out

    def drain(self, *, rootless: bool = True) -> list[Finished]:
        """Everything pending, now (at shutdown): traces without a root end as ``aborted``.

        Args:
            rootless: False leaves the traces without a root pending (e.g. kept in a spool
                to continue after a restart) and drains only those whose root arrived.
        """
        out = []
        for tid, p in list(self._pending.items()):
            root = _root(p.spans)
            if root is not None or rootless:
                out.append(self._finish(tid, p, root, "shutdown"))
        return out

    def _finish(self, tid: str, p: _Pending, root: Span | None, reason: str) -> Finished:
        del self._pending[tid]
        self._done[tid] = None
        while len(self._done) > self._remember:
            self._done.popitem(last=False)
        return Finished(tid, trajectory_events(tid, list(p.spans.values()), root, reason, self), reason)


def _root(spans: dict[str, Span]) -> Span | None:
    """The outermost `invoke_agent` span: no `invoke_agent` ancestor among `spans` (earliest wins)."""
    best: Span | None = None
    for s in spans.values():
        if s.operation != "invoke_agent":
            continue
        parent, seen = s.parent_span_id, 0
        nested = False
        while parent and parent in spans and seen < 10_000:
            if spans[parent].operation == "invoke_agent":
                nested = True
                break
            parent, seen = spans[parent].parent_span_id, seen + 1
        if not nested and (best is None or s.start_us < best.start_us):
            best = s
    return best


def _eid(trace_id: str, span_id: str, kind: str) -> str:
    return uuid.uuid5(_NS, f"{trace_id}:{span_id}:{kind}").hex


def _json_value(v: Any) -> Any:
    """Attribute values that hold JSON text (arguments, results, messages) as their value."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def message_text(messages: Any, role: str | None = None) -> str | None:
    """The text of the last message (of `role`) in GenAI semconv messages.

    Accepts the structured form (``[{"role": "user", "parts": [{"type": "text",
    "content": "..."}]}]``, as a list or JSON text), the older ``content`` string
    form, or plain text.
    """
    msgs = _json_value(messages)
    if isinstance(msgs, str):
        return msgs or None
    if isinstance(msgs, dict):
        msgs = [msgs]
    if not isinstance(msgs, list):
        return None
    for m in reversed(msgs):
        if not isinstance(m, dict) or (role and m.get("role") not in (role, None)):
            continue
        if isinstance(m.get("content"), str):
            return str(m["content"])
        texts = [
            str(p.get("content"))
            for p in m.get("parts") or []
            if isinstance(p, dict) and p.get("type") == "text" and p.get("content") is not None
        ]
        if texts:
            return "\n".join(texts)
    return None


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def trajectory_events(
    trajectory_id: str, spans: list[Span], root: Span | None, reason: str, cfg: TraceAssembler
) -> list[Emitted]:
    """The events of one trace, in seq order (see the module docstring for the mapping)."""
    spans = sorted(spans, key=lambda s: (s.start_us, s.end_us, s.span_id))
    head = root or spans[0]
    trace_id = head.trace_id
    agent_id = str(head.attr("gen_ai.agent.name", "gen_ai.agent.id", "service.name") or "unknown")
    agent_version = str(head.attr("gen_ai.agent.version", "service.version") or "unknown")
    tenant = str(head.attr("agentlake.tenant", "tenant.id") or cfg.tenant)
    limit = cfg.max_payload

    def envelope(span: Span, kind: str, ts: int, parent: str | None) -> dict[str, Any]:
        return {
            "event_id": _eid(trace_id, span.span_id, kind),
            "trajectory_id": trajectory_id,
            "tenant": tenant,
            "agent_id": agent_id,
            "agent_version": agent_version,
            "seq": -1,
            "ts_us": ts,
            "trace_id": trace_id,
            "span_id": span.span_id,
            "parent_span_id": parent,
        }

    body: list[tuple[int, int, Emitted]] = []  # (ts, tie-break, event)
    tokens_in = tokens_out = 0
    for s in spans:
        if s is root:
            continue
        op = s.operation
        parent = s.parent_span_id
        if op == "execute_tool":
            call_id = str(s.attr("gen_ai.tool.call.id") or s.span_id)
            tool = str(s.attr("gen_ai.tool.name") or s.name.removeprefix("execute_tool").strip() or "unknown")
            server = str(s.attr("agentlake.server_id", "mcp.server.name", "server.address") or "otel")
            args = _json_value(s.attributes.get("gen_ai.tool.call.arguments"))
            result = _json_value(s.attributes.get("gen_ai.tool.call.result"))
            err_type = s.attributes.get("error.type")
            is_error = s.status_error or err_type is not None
            common = {"call_id": call_id, "server_id": server, "tool": tool}
            req = {**envelope(s, "request", s.start_us, parent), **common, "arguments": bounded(args, limit)}
            done = {
                **envelope(s, "complete", s.end_us, parent),
                **common,
                "result": bounded(result, limit),
                "is_error": is_error,
                "error": (s.status_message or str(err_type or "error")) if is_error else None,
                "latency_ms": (s.end_us - s.start_us) / 1000,
                "cost_usd": None,
                "error_kind": (str(err_type) if err_type else "tool_error") if is_error else None,
            }
            body.append((s.start_us, 0, ("ToolCallRequested", "agent.tool_calls", req)))
            body.append((s.end_us, 2, ("ToolCallCompleted", "agent.tool_calls", done)))
        elif op in MODEL_OPS:
            t_in = _int(s.attr("gen_ai.usage.input_tokens"))
            t_out = _int(s.attr("gen_ai.usage.output_tokens"))
            tokens_in += t_in or 0
            tokens_out += t_out or 0
            text = message_text(s.attributes.get("gen_ai.output.messages")) or s.name
            body.append(
                (
                    s.end_us,
                    1,
                    (
                        "AgentStep",
                        "agent.steps",
                        _step(envelope(s, "step", s.end_us, parent), "message", text, limit, t_in, t_out),
                    ),
                )
            )
        else:
            text = s.name if op == "invoke_agent" else f"{op}: {s.name}"
            body.append(
                (
                    s.start_us,
                    1,
                    (
                        "AgentStep",
                        "agent.steps",
                        _step(envelope(s, "step", s.start_us, parent), "plan", text, limit, None, None),
                    ),
                )
            )
    body.sort(key=lambda x: (x[0], x[1]))

    task = head.attr("agentlake.task") or message_text(head.attributes.get("gen_ai.input.messages"), "user")
    attributes = {
        k: str(v)
        for k, v in head.attributes.items()
        if k.startswith("agentlake.") or k in ("gen_ai.conversation.id", "gen_ai.agent.id")
    }
    attributes["otel.root_span"] = root.name if root else ""
    start_ts = min(s.start_us for s in spans)
    started = {
        **envelope(head, "start", start_ts, None),
        "task": str(task or head.name),
        "user_id": _str(head.attr("user.id", "enduser.id")),
        "scenario_id": _str(head.attr("agentlake.scenario_id")),
        "run_id": _str(head.attr("agentlake.run_id")),
        "trial": _int(head.attr("agentlake.trial")),
        "seed": _int(head.attr("agentlake.seed")),
        "expected_tool_calls": _int(head.attr("agentlake.expected_tool_calls")),
        "attributes": attributes,
    }
    if root is not None:
        end_ts = max(root.end_us, max(s.end_us for s in spans))
        err = root.attributes.get("error.type")
        failed = root.status_error or err is not None
        outcome = str(root.attributes.get("agentlake.outcome") or ("error" if failed else "success"))
        error = (root.status_message or str(err or "error")) if failed else None
        answer = message_text(root.attributes.get("gen_ai.output.messages"))
        t_in = _int(root.attr("gen_ai.usage.input_tokens"))
        t_out = _int(root.attr("gen_ai.usage.output_tokens"))
    else:
        end_ts = max(s.end_us for s in spans)
        outcome = "timeout" if reason == "idle_timeout" else "aborted"
        error = f"root invoke_agent span not received ({reason.replace('_', ' ')})"
        answer, t_in, t_out = None, None, None
    if outcome not in ("success", "failure", "error", "timeout", "aborted"):
        outcome = "failure"
    ended = {
        **envelope(head, "end", end_ts, None),
        "outcome": outcome,
        "final_answer": answer,
        "error": error,
        "tokens_in": t_in if t_in is not None else (tokens_in or None),
        "tokens_out": t_out if t_out is not None else (tokens_out or None),
        "cost_usd": None,
        "checks": {},
        "attribution": None,
        "verdict": None,
    }
    ended["event_id"] = _eid(trace_id, head.span_id, "end")
    events: list[Emitted] = [("TrajectoryStarted", "agent.trajectories", started)]
    events += [e for _, _, e in body]
    events.append(("TrajectoryEnded", "agent.trajectories", ended))
    for i, (_, _, data) in enumerate(events):
        data["seq"] = i
        if data["parent_span_id"] is None and i not in (0, len(events) - 1):
            data["parent_span_id"] = head.span_id
    return events


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _step(
    env: dict[str, Any], kind: str, text: str, limit: int, t_in: int | None, t_out: int | None
) -> dict[str, Any]:
    raw = text.encode()
    cut = len(raw) > limit
    return {
        **env,
        "kind": kind,
        "content": raw[:limit].decode("utf-8", errors="ignore") if cut else text,
        "content_truncated": cut,
        "tokens_in": t_in,
        "tokens_out": t_out,
        "cost_usd": None,
    }
