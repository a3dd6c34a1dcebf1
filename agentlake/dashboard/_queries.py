"""The dashboard's reads: every list is paginated and every chart's data is aggregated
in ClickHouse (one row per bar, bucket or point), so pages cost the same on real volumes.

Functions take a clickhouse-connect client and return JSON-able rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from agentlake.projections.clickhouse import jsonable, query
from agentlake.sim.metrics import pass_hat_k, suite_metrics

FINAL_REWARDS = "(SELECT * FROM rewards FINAL WHERE is_final = 1)"


def _rows(client: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    return jsonable(query(client, sql, params))


def runs(client: Any, *, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Simulation runs seen in the scored trials, newest first: (page, total count). ``agents``
    lists every ``agent@version`` scored in the run (the demo's run holds both versions)."""
    page = _rows(
        client,
        f"""SELECT run_id, arraySort(groupUniqArray(concat(agent_id, '@', agent_version))) AS agents,
                  count() AS trials, sum(success) AS successes, avg(total) AS mean_reward,
                  uniqExact(scenario_id) AS cases, min(scored_at) AS first_at, max(scored_at) AS last_at
           FROM {FINAL_REWARDS} WHERE run_id IS NOT NULL AND run_id != ''
           GROUP BY run_id ORDER BY last_at DESC, run_id LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}""",
        limit=limit,
        offset=offset,
    )
    total = _rows(
        client,
        f"SELECT uniqExact(run_id) AS n FROM {FINAL_REWARDS} WHERE run_id IS NOT NULL AND run_id != ''",
    )
    return page, int(total[0]["n"])


def run_cases(client: Any, run_id: str) -> list[dict[str, Any]]:
    """Per scenario case of a run: trials n, successes c, mean reward, failing trials."""
    rows = _rows(
        client,
        f"""SELECT ifNull(scenario_id, '') AS case_id, count() AS n, sum(success) AS c, avg(total) AS reward,
                  arraySort(x -> x.1, groupArrayIf((ifNull(trial, 0), trajectory_id), success = 0)) AS failing
           FROM {FINAL_REWARDS} WHERE run_id = {{r:String}} GROUP BY case_id ORDER BY case_id""",
        r=run_id,
    )
    for r in rows:
        r["failing"] = [{"trial": t, "trajectory_id": tid} for t, tid in r["failing"]]
    return rows


def run_components(client: Any, run_id: str) -> dict[str, float]:
    """Mean of each reward component over a run's trials (where the component applies)."""
    rows = _rows(
        client,
        f"""SELECT k AS component, avg(v) AS value FROM {FINAL_REWARDS}
            ARRAY JOIN mapKeys(components) AS k, mapValues(components) AS v
            WHERE run_id = {{r:String}} GROUP BY k ORDER BY k""",
        r=run_id,
    )
    return {r["component"]: float(r["value"]) for r in rows}


def pass_curve(cases: list[dict[str, Any]], n_resamples: int = 300) -> dict[str, Any]:
    """pass^k for k = 1..max n with the bootstrap interval, computed like the CI gate
    (`agentlake.sim.metrics.suite_metrics` over per-case success counts)."""
    results = {c["case_id"]: [True] * int(c["c"]) + [False] * (int(c["n"]) - int(c["c"])) for c in cases}
    if not results:
        return {"k": [], "pass_hat": [], "low": [], "high": [], "support": []}
    m = suite_metrics(results, n_resamples=n_resamples)
    ks = sorted(m.pass_hat)
    return {
        "k": ks,
        "pass_hat": [m.pass_hat[k] for k in ks],
        "low": [m.pass_hat_ci[k].low for k in ks],
        "high": [m.pass_hat_ci[k].high for k in ks],
        "support": [m.support[k] for k in ks],
    }


def compare_runs(
    cand_cases: list[dict[str, Any]],
    base_cases: list[dict[str, Any]],
    cand_components: dict[str, float],
    base_components: dict[str, float],
    tolerance: float = 0.0,
) -> dict[str, list[dict[str, Any]]]:
    """Candidate vs baseline, per case (pass^1 and pass^k at the common k) and per reward
    component; a row is a regression when the candidate is below the baseline by more than
    `tolerance` (absolute)."""
    base = {c["case_id"]: c for c in base_cases}
    cases = []
    for c in cand_cases:
        b = base.get(c["case_id"])
        row: dict[str, Any] = {"case_id": c["case_id"], "candidate": int(c["c"]) / int(c["n"])}
        if b is not None:
            row["baseline"] = int(b["c"]) / int(b["n"])
            k = min(int(c["n"]), int(b["n"]))
            row["k"] = k
            row["candidate_k"] = pass_hat_k(int(c["n"]), int(c["c"]), k)
            row["baseline_k"] = pass_hat_k(int(b["n"]), int(b["c"]), k)
            row["regression"] = row["candidate"] < row["baseline"] - tolerance - 1e-12 or (
                row["candidate_k"] < row["baseline_k"] - tolerance - 1e-12
            )
        else:
            row.update(baseline=None, regression=False)
        cases.append(row)
    comps = []
    for name in sorted(set(cand_components) | set(base_components)):
        cv, bv = cand_components.get(name), base_components.get(name)
        comps.append(
            {
                "component": name,
                "candidate": cv,
                "baseline": bv,
                "delta": None if cv is None or bv is None else cv - bv,
                "regression": cv is not None and bv is not None and cv < bv - tolerance - 1e-12,
            }
        )
    return {"cases": cases, "components": comps}


def case_trials(client: Any, run_id: str, case_id: str) -> list[dict[str, Any]]:
    """The trials of one case of a run, with their verdict and attribution."""
    return _rows(
        client,
        f"""SELECT trajectory_id, trial, seed, success, total, attribution, failed_gates, outcome, task,
                  checks, components
           FROM {FINAL_REWARDS} WHERE run_id = {{r:String}} AND ifNull(scenario_id, '') = {{c:String}}
           ORDER BY trial, trajectory_id""",
        r=run_id,
        c=case_id,
    )


def agents(client: Any) -> list[dict[str, Any]]:
    """Every scored agent version: trajectories, success rate, mean reward, last scored."""
    return _rows(
        client,
        f"""SELECT agent_id, agent_version, count() AS trajectories, avg(success) AS success_rate,
                  avg(total) AS mean_reward, max(scored_at) AS last_at
           FROM {FINAL_REWARDS} GROUP BY agent_id, agent_version ORDER BY agent_id, agent_version""",
    )


_NICE_BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400)


def component_series(client: Any, agent_id: str, points: int = 60) -> dict[str, Any]:
    """Each reward component's mean per agent version and time bucket (about `points` buckets
    over the agent's scored history). Returns {bucket_s, rows: [{agent_version, t, component,
    value, n}]}."""
    span = _rows(
        client,
        f"""SELECT toUnixTimestamp(max(scored_at)) - toUnixTimestamp(min(scored_at)) AS s
            FROM {FINAL_REWARDS} WHERE agent_id = {{a:String}}""",
        a=agent_id,
    )
    seconds = int(span[0]["s"] or 0) if span else 0
    bucket = next((b for b in _NICE_BUCKETS if seconds / b <= points), _NICE_BUCKETS[-1])
    rows = _rows(
        client,
        f"""SELECT agent_version, toStartOfInterval(scored_at, toIntervalSecond({{b:UInt32}})) AS t,
                  k AS component, avg(v) AS value, count() AS n
           FROM {FINAL_REWARDS} ARRAY JOIN mapKeys(components) AS k, mapValues(components) AS v
           WHERE agent_id = {{a:String}} GROUP BY agent_version, t, component
           ORDER BY component, agent_version, t""",
        a=agent_id,
        b=bucket,
    )
    return {"bucket_s": bucket, "rows": rows}


def trajectories(
    client: Any,
    *,
    limit: int = 50,
    offset: int = 0,
    outcome: str | None = None,
    agent_id: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Trajectories, newest first, with their final reward: (page, total count)."""
    where = ["1"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if outcome:
        where.append("ifNull(outcome, 'running') = {o:String}")
        params["o"] = outcome
    if agent_id:
        where.append("agent_id = {a:String}")
        params["a"] = agent_id
    cond = " AND ".join(where)
    page = _rows(
        client,
        f"""SELECT t.trajectory_id AS trajectory_id, t.agent_id AS agent_id, t.agent_version AS agent_version,
                  t.task AS task, ifNull(t.outcome, 'running') AS outcome, t.started_at AS started_at,
                  t.end_seq AS end_seq, t.run_id AS run_id, r.total AS reward
           FROM (SELECT * FROM trajectories FINAL WHERE {cond}) AS t
           GLOBAL LEFT JOIN (SELECT trajectory_id, total FROM {FINAL_REWARDS}) AS r
                  ON r.trajectory_id = t.trajectory_id
           ORDER BY t.started_at DESC, t.trajectory_id LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}""",
        **params,
    )
    total = _rows(client, f"SELECT count() AS n FROM trajectories FINAL WHERE {cond}", **params)
    return page, int(total[0]["n"])


def trajectory(client: Any, trajectory_id: str) -> dict[str, Any] | None:
    """Header of one trajectory: identity, task, outcome, event count, latest reward."""
    rows = _rows(
        client,
        """SELECT trajectory_id, tenant, agent_id, agent_version, task, user_id, scenario_id, run_id, trial,
                  started_at, ended_at, outcome, final_answer, error, end_seq, trace_id
           FROM trajectories FINAL WHERE trajectory_id = {t:String}""",
        t=trajectory_id,
    )
    if not rows:
        return None
    head = rows[0]
    n = _rows(
        client, "SELECT count() AS n FROM events FINAL WHERE trajectory_id = {t:String}", t=trajectory_id
    )
    head["events"] = int(n[0]["n"])
    reward = _rows(
        client,
        """SELECT is_final, total, success, components, weights, gates, failed_gates, checks,
                  attribution, flags
           FROM rewards FINAL WHERE trajectory_id = {t:String}""",
        t=trajectory_id,
    )
    head["reward"] = reward[0] if reward else None
    return head


_EVENT_COLUMNS = """seq, record, ts, span_id,
    JSONExtractString(body, 'kind') AS kind,
    substring(JSONExtractString(body, 'content'), 1, 2000) AS content,
    JSONExtractString(body, 'tool') AS tool, JSONExtractString(body, 'server_id') AS server_id,
    JSONExtractString(body, 'call_id') AS call_id,
    substring(JSONExtractString(JSONExtractRaw(body, 'arguments'), 'json'), 1, 2000) AS arguments,
    substring(JSONExtractString(JSONExtractRaw(body, 'result'), 'json'), 1, 2000) AS result,
    JSONExtractBool(body, 'is_error') AS is_error, JSONExtractString(body, 'error') AS error,
    JSONExtractString(body, 'error_kind') AS error_kind, JSONExtractFloat(body, 'latency_ms') AS latency_ms,
    JSONExtractString(body, 'outcome') AS outcome, JSONExtractString(body, 'task') AS task,
    JSONExtractString(body, 'final_answer') AS final_answer"""


def trajectory_events(client: Any, trajectory_id: str, after: int = -1, limit: int = 200) -> dict[str, Any]:
    """One page of a trajectory's timeline: events with seq > `after`, in seq order (keyset
    pagination on the table's sort key, so page 50 of a 10k-step trajectory costs what page 1
    costs). Policy findings are attached to their tool call by call id."""
    events = _rows(
        client,
        f"""SELECT {_EVENT_COLUMNS} FROM events FINAL
            WHERE trajectory_id = {{t:String}} AND seq > {{after:Int64}}
            ORDER BY seq LIMIT {{limit:UInt32}}""",
        t=trajectory_id,
        after=after,
        limit=limit,
    )
    calls = sorted({e["call_id"] for e in events if e["call_id"]})
    findings: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if calls:
        for f in _rows(
            client,
            """SELECT call_id, rule, detail FROM policy_violations FINAL
               WHERE trajectory_id = {t:String} AND call_id IN {c:Array(String)}""",
            t=trajectory_id,
            c=calls,
        ):
            findings[f["call_id"]].append({"rule": f["rule"], "detail": f["detail"]})
    for e in events:
        e["findings"] = findings.get(e["call_id"], []) if e["call_id"] else []
    last = events[-1]["seq"] if events else after
    return {
        "events": events,
        "after": after,
        "next_after": last,
        "limit": limit,
        "more": len(events) == limit,
    }


def trajectory_density(client: Any, trajectory_id: str, buckets: int = 120) -> dict[str, Any]:
    """Events per seq bucket and kind (step / tool call / error), for the timeline overview."""
    n = _rows(
        client, "SELECT max(seq) AS m FROM events FINAL WHERE trajectory_id = {t:String}", t=trajectory_id
    )
    max_seq = int(n[0]["m"] or 0) if n else 0
    width = max(1, -(-(max_seq + 1) // buckets))
    rows = _rows(
        client,
        """SELECT intDiv(seq, {w:UInt32}) * {w:UInt32} AS start,
                  countIf(record = 'AgentStep') AS steps,
                  countIf(record = 'ToolCallRequested') AS tool_calls,
                  countIf(record = 'ToolCallCompleted' AND JSONExtractBool(body, 'is_error')) AS errors
           FROM events FINAL WHERE trajectory_id = {t:String} GROUP BY start ORDER BY start""",
        t=trajectory_id,
        w=width,
    )
    return {"width": width, "rows": rows}
