"""Recorded trajectories as OpenAI chat fine-tuning rows (pure functions, no I/O but `write_jsonl`).

A row is what OpenAI's chat fine-tuning (and most open trainers) read, one JSON
object per line::

    {"messages": [{"role": "system", ...}, {"role": "user", "content": task},
                  {"role": "assistant", "content": thought, "tool_calls": [...]},
                  {"role": "tool", "tool_call_id": ..., "content": result}, ...,
                  {"role": "assistant", "content": final_answer}],
     "tools": [{"type": "function", "function": {...}}],
     "metadata": {"trajectory_id": ..., "outcome": ..., "reward": {...}, ...}}

The input is the events of one trajectory decoded to dicts: the ``body`` column of
the ClickHouse ``events`` table (``event.model_dump_json(by_alias=True)``) parsed
with `json.loads`, or ``event.model_dump(by_alias=True)`` of decoded events. The
body does not name its own type, so **the caller adds a ``"record"`` key** to each
dict (the ``record`` column, or ``event.record``)::

    rows = [json.loads(body) | {"record": record} for record, body in cursor]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "provider_safe_names",
    "tool_message_content",
    "tools_to_openai",
    "trajectory_to_chat",
    "write_jsonl",
]

_TRAJECTORY_RECORDS = frozenset(
    {"TrajectoryStarted", "AgentStep", "ToolCallRequested", "ToolCallCompleted", "TrajectoryEnded"}
)
_MISSING_RESULT = "the call has no recorded result"


_SAFE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def provider_safe_names(names: Iterable[str]) -> dict[str, str]:
    """A reversible mapping of tool names to names every provider accepts (``^[a-zA-Z0-9_-]{1,64}$``).

    A name that is already safe keeps its spelling. Any other character becomes
    ``_`` (``orders.refund`` -> ``orders_refund``); a name longer than 64 is cut and
    suffixed with a hash; a result that collides with another name gets a hash
    suffix too. The mapping is one-to-one, so ``{v: k for k, v in m.items()}``
    maps the model's calls back.

    Args:
        names: the MCP tool names (distinct).

    Returns:
        original name -> provider-safe name.
    """
    names = list(dict.fromkeys(names))
    taken = {n for n in names if _SAFE_NAME.match(n)}
    out: dict[str, str] = {n: n for n in names if n in taken}
    for n in names:
        if n in out:
            continue
        base = re.sub(r"[^a-zA-Z0-9_-]", "_", n)[:64] or "tool"
        candidate = base
        if candidate in taken or len(n) > 64 or not candidate:
            digest = hashlib.sha256(n.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            candidate = f"{base[:55]}_{digest}"
        taken.add(candidate)
        out[n] = candidate
    return out


def tools_to_openai(tool_specs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert MCP-style tool specs to OpenAI function tools.

    Args:
        tool_specs: mappings with ``name``, optional ``description`` and
            ``input_schema`` (MCP's wire spelling ``inputSchema`` is accepted too).
            A spec without a schema gets an empty object schema.

    Returns:
        ``[{"type": "function", "function": {"name", "description", "parameters"}}]``
        in the same order; ``description`` is left out when empty.

    Raises:
        ValueError: a spec has no name.
    """
    out: list[dict[str, Any]] = []
    for spec in tool_specs:
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool spec without a name: {dict(spec)!r}")
        schema = spec.get("input_schema", spec.get("inputSchema"))
        function: dict[str, Any] = {"name": name}
        if spec.get("description"):
            function["description"] = str(spec["description"])
        function["parameters"] = dict(schema) if schema else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def tool_message_content(value: Any, *, is_error: bool = False, error: str | None = None) -> str:
    """The text a model is shown for one tool result (the ``content`` of a ``tool`` message).

    A string is shown as is; any other value as compact JSON, exactly as the SDK
    records it in a payload, so an export reproduces what the agent sent. A failed
    call reads ``"Error: <text>"``, where the text is the result, or `error` when the
    result is empty.

    Args:
        value: the tool's result value (e.g. `agentlake.sdk.result_value` of an MCP result).
        is_error: the call failed.
        error: the error message, used when a failed call has no result value.

    Returns:
        The message content.
    """
    if value is None:
        text = None
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, separators=(",", ":"))
    return _tool_content(text, is_error, error)


def _tool_content(text: str | None, is_error: bool, error: str | None) -> str:
    if not is_error:
        return "null" if text is None else text
    return f"Error: {text or error or 'the tool call failed'}"


def trajectory_to_chat(
    events: Iterable[Mapping[str, Any]],
    *,
    system_prompt: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    reward: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert the events of one trajectory into one chat fine-tuning row.

    Events are ordered by ``seq`` (duplicates of a ``seq``, as at-least-once
    delivery may produce, are kept once). The conversation is rebuilt as follows:

    - ``TrajectoryStarted.task`` is the first user message (after `system_prompt`).
    - An ``AgentStep`` of kind ``thought`` or ``plan`` opens an assistant message
      with that content; the tool calls that follow it (up to the next step) become
      its ``tool_calls``. Tool calls with no step before them open an assistant
      message with ``content: null``. So consecutive calls without a step in
      between are grouped in one assistant message, as parallel calls.
    - After each such assistant message come its ``tool`` messages, in call order,
      with ``tool_call_id`` = the recorded ``call_id`` and the content of
      `tool_message_content` (failed calls read ``"Error: ..."``). A call without a
      ``ToolCallCompleted`` gets an error text and is counted in ``missing_results``.
    - A thought or plan followed by no call is an assistant message of its own; an
      empty one is dropped.
    - Steps of kind ``message`` and ``final`` are assistant messages; kind ``user``
      (a user turn, when the agent recorded one) is a user message.
    - When no ``final`` step was recorded, the ``final_answer`` of ``TrajectoryEnded``
      (if any) is the last assistant message.
    - Tool arguments are the recorded payload text, verbatim (the JSON string the
      ``arguments`` field expects).

    Truncated payloads and step contents are exported as recorded (cut) and counted
    in ``metadata.truncated_payloads``. Events of other records are ignored.

    Args:
        events: the trajectory's events as dicts (``model_dump(by_alias=True)`` or the
            parsed ``events.body``), each with a ``"record"`` key added by the caller.
        system_prompt: prepended as the system message when given.
        tools: OpenAI function tools (see `tools_to_openai`), copied to ``"tools"`` when given.
        reward: stored as ``metadata.reward`` (e.g. a row of the ``rewards`` table).

    Returns:
        ``{"messages": [...], "tools": [...] (when given), "metadata": {"trajectory_id",
        "agent_id", "agent_version", "outcome", "reward", "truncated_payloads",
        "missing_results"}}``; ``outcome`` is None when the trajectory has not ended.

    Raises:
        ValueError: an event has no ``record`` or ``seq``, the events belong to
            several trajectories, or there is no ``TrajectoryStarted``.
    """
    ordered = _ordered(events)
    started = next((e for e in ordered if e["record"] == "TrajectoryStarted"), None)
    if started is None:
        tid = ordered[0].get("trajectory_id") if ordered else None
        raise ValueError(f"trajectory {tid!r} has no TrajectoryStarted event: its task is unknown")

    results: dict[str, str] = {}
    truncated = 0
    for ev in ordered:
        if ev["record"] == "ToolCallCompleted":
            payload = ev["result"]
            text: str | None = _payload_text(payload)
            truncated += bool(payload.get("truncated"))
            if ev.get("is_error") and text == "null" and not payload.get("truncated"):
                text = None  # recorded as a failure with no value (e.g. a transport error)
            results.setdefault(ev["call_id"], _tool_content(text, bool(ev.get("is_error")), ev.get("error")))

    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": started["task"]})

    pending: dict[str, Any] | None = None
    missing = 0
    final_seen = False
    ended: Mapping[str, Any] | None = None

    def flush() -> None:
        nonlocal pending, missing
        if pending is None:
            return
        group, pending = pending, None
        calls: list[dict[str, Any]] = group["tool_calls"]
        if not calls:
            if group["content"]:
                messages.append({"role": "assistant", "content": group["content"]})
            return
        messages.append(group)
        for call in calls:
            content = results.get(call["id"])
            if content is None:
                missing += 1
                content = _tool_content(None, True, _MISSING_RESULT)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})

    for ev in ordered:
        record = ev["record"]
        if record == "AgentStep":
            kind, content = ev["kind"], ev["content"]
            truncated += bool(ev.get("content_truncated"))
            flush()
            if kind in ("thought", "plan"):
                pending = {"role": "assistant", "content": content or None, "tool_calls": []}
            elif kind == "user":
                messages.append({"role": "user", "content": content})
            else:  # message, final
                messages.append({"role": "assistant", "content": content})
                final_seen = final_seen or kind == "final"
        elif record == "ToolCallRequested":
            arguments = ev["arguments"]
            truncated += bool(arguments.get("truncated"))
            if pending is None:
                pending = {"role": "assistant", "content": None, "tool_calls": []}
            pending["tool_calls"].append(
                {
                    "id": ev["call_id"],
                    "type": "function",
                    "function": {"name": ev["tool"], "arguments": _payload_text(arguments)},
                }
            )
        elif record == "TrajectoryEnded":
            ended = ev
    flush()
    if ended is not None and not final_seen and ended.get("final_answer") is not None:
        messages.append({"role": "assistant", "content": ended["final_answer"]})

    row: dict[str, Any] = {"messages": messages}
    if tools is not None:
        row["tools"] = [dict(t) for t in tools]
    row["metadata"] = {
        "trajectory_id": started["trajectory_id"],
        "agent_id": started.get("agent_id"),
        "agent_version": started.get("agent_version"),
        "outcome": ended.get("outcome") if ended is not None else None,
        "reward": dict(reward) if reward is not None else None,
        "truncated_payloads": truncated,
        "missing_results": missing,
    }
    return row


def _ordered(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    by_seq: dict[int, Mapping[str, Any]] = {}
    trajectories: set[Any] = set()
    for ev in events:
        record, seq = ev.get("record"), ev.get("seq")
        if not isinstance(record, str):
            raise ValueError(
                f"event seq={seq!r} has no 'record' key: add the events.record column "
                "(or event.record) to each decoded event dict"
            )
        if not isinstance(seq, int):
            raise ValueError(f"{record} event has no integer 'seq'")
        if record not in _TRAJECTORY_RECORDS:
            continue
        trajectories.add(ev.get("trajectory_id"))
        by_seq.setdefault(seq, ev)
    if len(trajectories) > 1:
        raise ValueError(f"events of {len(trajectories)} trajectories given; export them one at a time")
    return [by_seq[s] for s in sorted(by_seq)]


def _payload_text(payload: Mapping[str, Any]) -> str:
    text = payload.get("json", payload.get("json_"))
    return text if isinstance(text, str) else json.dumps(text, separators=(",", ":"))


class _TextSink(Protocol):
    def write(self, s: str, /) -> object: ...


def write_jsonl(rows: Iterable[Mapping[str, Any]], path_or_file: str | os.PathLike[str] | _TextSink) -> int:
    """Write rows as JSON Lines (UTF-8, one object per line, non-ASCII kept as is).

    Args:
        rows: the rows, e.g. from `trajectory_to_chat`.
        path_or_file: a path (created or overwritten) or an open text file (left open).

    Returns:
        The number of rows written.
    """
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "w", encoding="utf-8", newline="\n") as f:
            return _write_rows(rows, f)
    return _write_rows(rows, path_or_file)


def _write_rows(rows: Iterable[Mapping[str, Any]], sink: _TextSink) -> int:
    n = 0
    for row in rows:
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n
