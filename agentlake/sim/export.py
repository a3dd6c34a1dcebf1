"""Recorded trajectories as OpenAI chat fine-tuning rows (pure functions, no I/O but `write_jsonl`).

A row is what OpenAI's chat fine-tuning (and most open trainers) read, one JSON
object per line::

    {"messages": [{"role": "system", ...}, {"role": "user", "content": task},
                  {"role": "assistant", "content": thought, "tool_calls": [...]},
                  {"role": "tool", "tool_call_id": ..., "content": result}, ...,
                  {"role": "assistant", "content": final_answer}],
     "tools": [{"type": "function", "function": {...}}]}

`trajectory_to_chat` also returns a ``metadata`` key (trajectory id, outcome,
reward...), which is not part of the format: `write_jsonl` writes it to a
sidecar file (one line per row, same order) and leaves it out of the rows
unless asked to inline it. `validate_chat_row` checks a row against the
format's rules; rows that cannot be made valid (truncated arguments, a
trajectory that crashed after a tool call) raise `NotExportable`.

The input is the events of one trajectory decoded to dicts: the ``body`` column of
the ClickHouse ``events`` table (``event.model_dump_json(by_alias=True)``) parsed
with `json.loads`, or ``event.model_dump(by_alias=True)`` of decoded events. The
body does not name its own type, so **the caller adds a ``"record"`` key** to each
dict (the ``record`` column, or ``event.record``)::

    rows = [json.loads(body) | {"record": record} for record, body in cursor]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "NotExportable",
    "jsonl_line",
    "provider_safe_names",
    "tool_message_content",
    "tools_to_openai",
    "trajectory_to_chat",
    "validate_chat_row",
    "write_jsonl",
]

_TRAJECTORY_RECORDS = frozenset(
    {"TrajectoryStarted", "AgentStep", "ToolCallRequested", "ToolCallCompleted", "TrajectoryEnded"}
)
_MISSING_RESULT = "the call has no recorded result"


class NotExportable(ValueError):
    """A trajectory that cannot become a valid training row (the message says why, in one line)."""


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
      message with ``content: null``. Calls requested before any call of the
      turn returned are parallel calls of one assistant message; a call requested
      after one of them returned depends on it and opens a new assistant turn.
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
      ``arguments`` field expects); truncated or non-object arguments make the
      trajectory `NotExportable` (never invalid JSON in a row).
    - ``tools`` lists the given tools plus any called tool they do not describe
      (with an open object schema). Tool names the providers reject
      (``shop.search``) are mapped with `provider_safe_names`, in ``tools`` and
      in the calls alike; ``metadata.tool_names`` maps them back.
    - The row must end on an assistant message: a trajectory that crashed after a
      tool call (or never answered) is `NotExportable`.

    Truncated results and step contents are exported as recorded (cut) and counted
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
        NotExportable: truncated or invalid arguments, or no final assistant message.
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
    completed: set[str] = set()

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
            text = _payload_text(arguments)
            if arguments.get("truncated"):
                raise NotExportable(f"the arguments of call {ev['call_id']} ({ev['tool']}) were truncated")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise NotExportable(
                    f"the arguments of call {ev['call_id']} ({ev['tool']}) are not a JSON object"
                )
            if pending is not None and any(c["id"] in completed for c in pending["tool_calls"]):
                # requested after an earlier call of the turn returned: a new, dependent turn
                flush()
            if pending is None:
                pending = {"role": "assistant", "content": None, "tool_calls": []}
            pending["tool_calls"].append(
                {"id": ev["call_id"], "type": "function", "function": {"name": ev["tool"], "arguments": text}}
            )
        elif record == "ToolCallCompleted":
            completed.add(ev["call_id"])
        elif record == "TrajectoryEnded":
            ended = ev
    flush()
    if ended is not None and not final_seen and ended.get("final_answer") is not None:
        messages.append({"role": "assistant", "content": ended["final_answer"]})

    if messages[-1]["role"] != "assistant":
        raise NotExportable(
            f"trajectory {started['trajectory_id']} ends on a {messages[-1]['role']} message, not an "
            "assistant answer (it crashed or never answered)"
        )
    called = [c["function"]["name"] for m in messages for c in m.get("tool_calls", [])]
    declared = [dict(t) for t in tools] if tools is not None else []
    known = {t["function"]["name"] for t in declared}
    for name in dict.fromkeys(called):
        if name not in known:  # a tool the caller did not describe: declare it, schema unknown
            declared.append(
                {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
            )
    alias = provider_safe_names([t["function"]["name"] for t in declared])
    for t in declared:
        t["function"] = {**t["function"], "name": alias[t["function"]["name"]]}
    for m in messages:
        for c in m.get("tool_calls", []):
            c["function"]["name"] = alias[c["function"]["name"]]
    row: dict[str, Any] = {"messages": messages}
    if declared:
        row["tools"] = declared
    renamed = {safe: real for real, safe in alias.items() if safe != real}
    row["metadata"] = {
        "trajectory_id": started["trajectory_id"],
        "agent_id": started.get("agent_id"),
        "agent_version": started.get("agent_version"),
        "outcome": ended.get("outcome") if ended is not None else None,
        "reward": dict(reward) if reward is not None else None,
        "truncated_payloads": truncated,
        "missing_results": missing,
        "tool_names": renamed,
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


def write_jsonl(
    rows: Iterable[Mapping[str, Any]],
    path_or_file: str | os.PathLike[str] | _TextSink,
    *,
    metadata: str | os.PathLike[str] | _TextSink | None = None,
    inline_metadata: bool = False,
) -> int:
    """Write rows as JSON Lines that any JSONL reader splits correctly.

    UTF-8, non-ASCII kept as is, except U+2028, U+2029 and U+0085 (NEL), which are
    written as ``\\uXXXX`` escapes: ``str.splitlines()`` and some JavaScript readers
    break lines at them. A lone surrogate (not encodable in UTF-8) becomes U+FFFD.
    Each row's ``metadata`` goes to `metadata` (a sidecar: one JSON line per row,
    in the same order, with ``line`` = the row's line number from 1), or stays in
    the row with `inline_metadata`, or is dropped.

    Args:
        rows: the rows, e.g. from `trajectory_to_chat`.
        path_or_file: a path (created or overwritten) or an open text file (left open).
        metadata: where the sidecar goes (path or open text file), or None.
        inline_metadata: keep ``metadata`` inside each row (not the fine-tuning format).

    Returns:
        The number of rows written.
    """
    with contextlib.ExitStack() as stack:
        sink = _open(path_or_file, stack)
        side = _open(metadata, stack) if metadata is not None else None
        n = 0
        for row in rows:
            n += 1
            body = {k: v for k, v in row.items() if k != "metadata" or inline_metadata}
            sink.write(jsonl_line(body))
            if side is not None:
                side.write(jsonl_line({"line": n, **dict(row.get("metadata") or {})}))
        return n


def _open(target: str | os.PathLike[str] | _TextSink, stack: contextlib.ExitStack) -> _TextSink:
    if isinstance(target, str | os.PathLike):
        return stack.enter_context(open(target, "w", encoding="utf-8", newline="\n"))
    return target


_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def jsonl_line(value: Any) -> str:
    """One JSON Lines line (with its newline): see `write_jsonl` for the escapes."""
    text = json.dumps(_clean(value), ensure_ascii=False)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text + "\n"


# --- the OpenAI chat fine-tuning format -------------------------------------------

_ROW_KEYS = {"messages", "tools", "parallel_tool_calls"}
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "weight"},
    "tool": {"role", "content", "tool_call_id"},
}


def validate_chat_row(row: Mapping[str, Any]) -> list[str]:
    """The ways a row breaks the OpenAI chat fine-tuning format (empty when it is valid).

    Rules (from OpenAI's fine-tuning guide and its data-format checker): only
    ``messages``, ``tools``, ``parallel_tool_calls`` at the top; a non-empty message
    list; roles system/user/assistant/tool with only their keys; text content is a
    string (an assistant message with tool calls may have null content); at least
    one assistant message, and the last message is an assistant's; each tool call
    has an id, type ``function``, a name matching ``^[a-zA-Z0-9_-]{1,64}$`` that
    ``tools`` declares, and arguments that are a JSON object in a string; every tool
    call is answered by a tool message before the next assistant message, and
    every tool message answers a pending call; ``weight`` is 0 or 1; tools are
    ``{"type": "function", "function": {"name", "parameters": object schema}}``
    with distinct names; all text is encodable as UTF-8 (no lone surrogates).

    Args:
        row: one decoded line.

    Returns:
        One short description per problem.
    """
    problems: list[str] = []
    if not isinstance(row, Mapping):
        return ["a row must be a JSON object"]
    extra = set(row) - _ROW_KEYS
    if extra:
        problems.append(f"unknown top-level keys {sorted(extra)}")
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError) as e:
        problems.append(f"not encodable as UTF-8 JSON: {type(e).__name__}")
    declared: set[str] = set()
    tools = row.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            problems.append("tools must be a list")
            tools = []
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, Mapping) else None
            if not isinstance(t, Mapping) or t.get("type") != "function" or not isinstance(fn, Mapping):
                problems.append(f"tools[{i}] must be {{type: function, function: {{...}}}}")
                continue
            name = fn.get("name")
            if not isinstance(name, str) or not _SAFE_NAME.match(name):
                problems.append(f"tools[{i}] has an invalid name {name!r}")
            elif name in declared:
                problems.append(f"tools[{i}] repeats the name {name!r}")
            else:
                declared.add(name)
            params = fn.get("parameters")
            if params is not None and not (isinstance(params, Mapping) and params.get("type") == "object"):
                problems.append(f"tools[{i}].parameters must be an object schema")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages must be a non-empty list"]
    pending: set[str] = set()
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping) or m.get("role") not in _MESSAGE_KEYS:
            problems.append(f"{where} has no valid role")
            continue
        role = m["role"]
        extra = set(m) - _MESSAGE_KEYS[role]
        if extra:
            problems.append(f"{where} ({role}) has unknown keys {sorted(extra)}")
        calls = m.get("tool_calls") if role == "assistant" else None
        content = m.get("content")
        if not (isinstance(content, str) or (content is None and calls)):
            problems.append(f"{where} ({role}) needs string content")
        if role in ("user", "assistant", "system") and pending:
            problems.append(f"{where}: tool call(s) {sorted(pending)} are not answered before it")
            pending = set()
        if role == "assistant" and "weight" in m and m["weight"] not in (0, 1):
            problems.append(f"{where}.weight must be 0 or 1")
        if role == "tool":
            ref = m.get("tool_call_id")
            if ref not in pending:
                problems.append(f"{where} answers {ref!r}, which no pending tool call has as id")
            pending.discard(ref)
        for j, c in enumerate(calls or []):
            cw = f"{where}.tool_calls[{j}]"
            fn = c.get("function") if isinstance(c, Mapping) else None
            if not isinstance(c, Mapping) or c.get("type") != "function" or not isinstance(fn, Mapping):
                problems.append(f"{cw} must be {{id, type: function, function: {{name, arguments}}}}")
                continue
            if not isinstance(c.get("id"), str) or not c["id"]:
                problems.append(f"{cw} has no id")
            else:
                pending.add(c["id"])
            name = fn.get("name")
            if not isinstance(name, str) or not _SAFE_NAME.match(name):
                problems.append(f"{cw} has an invalid function name {name!r}")
            elif name not in declared:
                problems.append(f"{cw} calls {name!r}, which tools does not declare")
            args = fn.get("arguments")
            try:
                ok = isinstance(args, str) and isinstance(json.loads(args), dict)
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{cw}.arguments must be a JSON object in a string")
    if pending:
        problems.append(f"tool call(s) {sorted(pending)} are never answered")
    roles = [m.get("role") for m in messages if isinstance(m, Mapping)]
    if "assistant" not in roles:
        problems.append("no assistant message")
    elif roles[-1] != "assistant":
        problems.append(f"the last message is a {roles[-1]!r} message, not an assistant's")
    return problems
