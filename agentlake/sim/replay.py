"""Replay past trajectories into simulations.

`replay_trajectory` rebuilds a trajectory from the log (its ClickHouse
projection), runs a candidate agent on the same task and serves it the
*recorded* tool results for as long as its calls match the recorded ones
(same tool, same arguments, in order) and the fork point is not reached. The
first call that differs is the divergence point; from there on the candidate
runs live against staging. Every call — replayed or live — is also applied to
the live staging server, so its state stays what the original run would have
seen when the candidate continues live after diverging.

`trials_of_run` turns a past simulation run (or any query over the
``trajectories`` table) back into the suite trials it ran, so a whole run can
be re-run against another agent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

from agentlake.projections.clickhouse import query, user_query_settings

REPLAYED = "agentlake/replayed"


@dataclass
class RecordedCall:
    tool: str
    args: Any
    result_text: str
    is_error: bool
    error_kind: str | None


@dataclass
class RecordedTrajectory:
    trajectory_id: str
    task: str
    agent_id: str
    agent_version: str
    outcome: str | None
    final_answer: str | None
    seed: int | None
    attributes: dict[str, str]
    calls: list[RecordedCall]


class ReplayError(LookupError):
    """The trajectory is not in the projections (yet)."""


def load_recorded(client: Any, trajectory_id: str) -> RecordedTrajectory:
    """A trajectory and its tool calls, from ClickHouse (FINAL: each event once)."""
    rows = query(
        client,
        "SELECT task, agent_id, agent_version, outcome, final_answer, seed FROM trajectories FINAL "
        "WHERE trajectory_id = {t:String}",
        {"t": trajectory_id},
    )
    if not rows or rows[0]["task"] is None:
        raise ReplayError(f"trajectory {trajectory_id} is not in ClickHouse (wrong id, or not projected yet)")
    head = rows[0]
    started = query(
        client,
        "SELECT body FROM events FINAL WHERE trajectory_id = {t:String} AND record = 'TrajectoryStarted'",
        {"t": trajectory_id},
    )
    attributes: dict[str, str] = {}
    if started:
        attributes = dict(json.loads(started[0]["body"]).get("attributes") or {})
    calls = query(
        client,
        "SELECT tool, arguments, result, is_error, error_kind FROM tool_calls FINAL "
        "WHERE trajectory_id = {t:String} ORDER BY request_seq",
        {"t": trajectory_id},
    )
    recorded = []
    for c in calls:
        try:
            args = json.loads(c["arguments"] or "{}")
        except ValueError:
            args = c["arguments"]
        recorded.append(
            RecordedCall(c["tool"], args, c["result"] or "", bool(c["is_error"]), c["error_kind"])
        )
    return RecordedTrajectory(
        trajectory_id=trajectory_id,
        task=head["task"],
        agent_id=head["agent_id"],
        agent_version=head["agent_version"],
        outcome=head["outcome"],
        final_answer=head["final_answer"],
        seed=head["seed"],
        attributes=attributes,
        calls=recorded,
    )


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def recorded_result(call: RecordedCall) -> types.CallToolResult:
    try:
        value = json.loads(call.result_text)
    except ValueError:
        value = None
    meta: dict[str, Any] = {REPLAYED: True}
    if call.error_kind:
        meta["agentlake/error_kind"] = call.error_kind
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=call.result_text)],
        structured_content=value if isinstance(value, dict) and not call.is_error else None,
        is_error=call.is_error,
        _meta=meta,
    )


@dataclass
class Divergence:
    step: int
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None  # None: the candidate stopped
    reason: str


@dataclass
class ReplayClient:
    """Sits between the agent's traced session and the live staging client."""

    live: Any
    recorded: list[RecordedCall]
    fork_at: int | None = None
    index: int = 0
    replayed: int = 0
    divergence: Divergence | None = None
    log: list[dict[str, Any]] = field(default_factory=list)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult:
        args = arguments or {}
        i = self.index
        self.index += 1
        live = await self.live.call_tool(name, args)  # keeps the staging state on the original path
        if self.divergence is None:
            expected = self.recorded[i] if i < len(self.recorded) else None
            if self.fork_at is not None and i >= self.fork_at:
                reason = f"fork point {self.fork_at} reached"
            elif expected is None:
                reason = "the recorded trajectory made no more calls"
            elif expected.tool != name or not _same(expected.args, args):
                reason = "different tool or arguments"
            else:
                self.replayed += 1
                self.log.append({"step": i, "tool": name, "served": "recorded"})
                return recorded_result(expected)
            self.divergence = Divergence(
                step=i,
                expected={"tool": expected.tool, "args": expected.args} if expected else None,
                actual={"tool": name, "args": args},
                reason=reason,
            )
        self.log.append({"step": i, "tool": name, "served": "live"})
        return live  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.live, name)


_TRIALS_SQL = (
    "SELECT DISTINCT JSONExtractString(body, 'attributes', 'trial_id') AS trial_id FROM events FINAL "
    "WHERE record = 'TrajectoryStarted' AND trajectory_id GLOBAL IN "
    "(SELECT trajectory_id FROM trajectories FINAL WHERE "
)
FILTER_OFFSET = len(_TRIALS_SQL) + 1
"""Where a `trials_of_run` filter starts in the query sent (0-based), for error positions."""


def trials_of_run(client: Any, run_id: str | None = None, where: str | None = None) -> list[str]:
    """Trial ids (suite:scenario:variant:index) of the trajectories of a run, or of a filter
    over the ``trajectories`` table (e.g. ``outcome != 'success' AND agent_version = '1.0'``)."""
    clauses = []
    params: dict[str, Any] = {}
    if where:  # first: a syntax error's position maps back to the filter (`filter_offset`)
        clauses.append(f"({where})")
    if run_id:
        clauses.append("run_id = {r:String}")
        params["r"] = run_id
    if not clauses:
        raise ValueError("give a run id or a filter")
    # a user's filter runs read-only and bounded in time, as `agentlake sql` does
    settings = user_query_settings() if where else None
    rows = query(client, _TRIALS_SQL + " AND ".join(clauses) + ")", params, settings)
    return sorted(r["trial_id"] for r in rows if r["trial_id"])
