"""Authorization replay: try a new policy against recorded tool calls before deploying it.

Every decision the gateway made is an `AuthDecision` on the log, with the
call's facts (server, tool, operation, resource, task, arguments, time, depth)
and the principals (agent, user). A policy file is authorizer Datalog over
those facts plus ``agent($a)`` and ``user($u)``: ``check if ...`` lines narrow
(a narrower token template is written the same way) and ``allow if`` /
``deny if`` policies decide; without any policy, ``allow if true`` is assumed.
Replay evaluates it on each recorded call and reports the calls it would have
denied (and allowed), per agent and tool. Refusals a policy cannot change (no
token, a token that does not verify, a revoked one: `CREDENTIAL_REASONS`) are
skipped and counted apart. Pure: it takes the recorded rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import biscuit_auth as ba

from agentlake.auth.policy import Request, request_code
from agentlake.auth.verify import explain

CREDENTIAL_REASONS = frozenset({"no_token", "invalid_token", "revoked"})
"""Decision reasons decided before any policy: replaying a policy cannot change them."""


class PolicyFileError(ValueError):
    """A policy file that is not valid authorizer Datalog."""


@dataclass(frozen=True)
class RecordedCall:
    """One recorded decision (a row of the `auth_decisions` table or an `AuthDecision` event)."""

    call_id: str
    ts: datetime
    server: str
    tool: str
    operation: str
    resource: str
    task: str
    arguments: Mapping[str, Any]
    agent: str | None
    user: str | None
    depth: int
    allowed: bool
    reason: str = ""

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> RecordedCall:
        try:
            args = json.loads(data.get("arguments_json") or "{}")
        except ValueError:
            args = {}
        return cls(
            call_id=data["call_id"],
            ts=datetime.fromtimestamp(data["ts_us"] / 1e6, UTC),
            server=data["server_id"],
            tool=data["tool"],
            operation=data["operation"],
            resource=data["resource"],
            task=data.get("task_id") or "",
            arguments=args if isinstance(args, dict) else {},
            agent=data.get("agent_id"),
            user=data.get("user_id"),
            depth=int(data.get("depth") or 0),
            allowed=bool(data["allowed"]),
            reason=str(data.get("reason") or ""),
        )


@dataclass
class ReplayReport:
    """What a policy would have changed. Counts are per (agent, tool)."""

    calls: int = 0
    skipped: int = 0  # refusals before any policy (`CREDENTIAL_REASONS`), not replayed
    newly_denied: list[tuple[RecordedCall, str]] = field(default_factory=list)
    newly_allowed: list[RecordedCall] = field(default_factory=list)
    by_agent_tool: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "skipped": self.skipped,
            "would_deny": len(self.newly_denied),
            "would_allow": len(self.newly_allowed),
            "by_agent_tool": [
                {"agent": a, "tool": t, **counts} for (a, t), counts in sorted(self.by_agent_tool.items())
            ],
            "denied_calls": [
                {"call_id": c.call_id, "ts": c.ts.isoformat(), "agent": c.agent, "tool": c.tool, "why": why}
                for c, why in self.newly_denied
            ],
        }


def load_policy(text: str) -> ba.AuthorizerBuilder:
    """Parse a policy file (authorizer Datalog). Raises `PolicyFileError` with the parser's message."""
    if "allow if" not in text and "deny if" not in text:
        text = text + "\nallow if true;"
    try:
        return ba.AuthorizerBuilder(text)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise PolicyFileError(f"policy is not valid Datalog: {str(e).splitlines()[0][:300]}") from None


def evaluate(policy: ba.AuthorizerBuilder, call: RecordedCall) -> tuple[bool, str | None]:
    """(allowed, failed check) of one recorded call under `policy`."""
    req = Request(call.server, call.tool, call.operation, call.resource, call.task, call.arguments, call.ts)
    code, params = request_code(req, call.depth, 0)
    facts = code
    if call.agent:
        facts += "\nagent({agent_name});"
        params["agent_name"] = call.agent
    if call.user:
        facts += "\nuser({user_name});"
        params["user_name"] = call.user
    try:
        builder = ba.AuthorizerBuilder.from_raw_snapshot(policy.raw_snapshot())
        builder.add_code(facts, params)
        builder.build_unauthenticated().authorize()  # type: ignore[attr-defined]
        return True, None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        return False, explain(str(e))[1]


def replay(policy_text: str, calls: Iterable[RecordedCall]) -> ReplayReport:
    """Evaluate `policy_text` on every recorded call that was allowed or denied at the time."""
    policy = load_policy(policy_text)
    report = ReplayReport()
    for call in calls:
        if not call.allowed and call.reason in CREDENTIAL_REASONS:
            report.skipped += 1
            continue
        report.calls += 1
        allowed, why = evaluate(policy, call)
        counts = report.by_agent_tool.setdefault(
            (call.agent or "?", call.tool), {"calls": 0, "would_deny": 0, "would_allow": 0}
        )
        counts["calls"] += 1
        if call.allowed and not allowed:
            report.newly_denied.append((call, why or "denied"))
            counts["would_deny"] += 1
        elif not call.allowed and allowed:
            report.newly_allowed.append(call)
            counts["would_allow"] += 1
    return report


MAX_DURATION = timedelta(days=36500)
"""The longest duration `parse_since` accepts (100 years: beyond it dates overflow)."""

_DURATION_RE = re.compile(r"^(\d+)([dhms])$", re.ASCII)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def format_duration(d: timedelta) -> str:
    """A duration in the largest unit that divides it: ``365d``, ``12h``, ``90s``."""
    seconds = int(d.total_seconds())
    for unit, size in _UNITS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_since(text: str, maximum: timedelta = MAX_DURATION) -> timedelta:
    """``7d`` / ``12h`` / ``30m`` / ``45s`` -> timedelta, at most `maximum`.

    Raises:
        ValueError: not ``<digits><d|h|m|s>``, or longer than `maximum` (the message says
            which, and the limit).
    """
    text = text.strip().lower()
    m = _DURATION_RE.match(text)
    if m is None:
        raise ValueError(f"bad duration {text!r}: expected a whole number and a unit, e.g. 7d, 12h, 30m, 45s")
    digits = m.group(1).lstrip("0") or "0"
    if len(digits) > 15 or int(digits) * _UNITS[m.group(2)] > maximum.total_seconds():
        raise ValueError(f"duration {text!r} is too long: at most {format_duration(maximum)}")
    return timedelta(seconds=int(digits) * _UNITS[m.group(2)])
