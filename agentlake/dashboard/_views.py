"""The context lake and delegation graph views, and authorization decisions of a trajectory.

They read the tables the context lake (``lake_lookups``, ``lake_outcomes``,
``lake_freshness``: projected from ``lake.cache`` by the sink) and agent
auth (``auth_blocks``, ``auth_decisions``, ``auth_revocations``: projected by the sink)
write. A table that does not exist yet gives an empty state that says how to fill it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import quote

from agentlake.dashboard import _charts as charts
from agentlake.dashboard._html import chart, e, empty, fmt, link, page, pager, q, table
from agentlake.projections.clickhouse import jsonable, query

PAGE = 50
MAX_NODES = 500


def _rows(client: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    return jsonable(query(client, sql, params))


def missing_tables(client: Any, names: tuple[str, ...]) -> list[str]:
    """The tables of `names` that do not exist in the current database."""
    have = {
        r["name"]
        for r in query(
            client,
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {n:Array(String)}",
            {"n": list(names)},
        )
    }
    return [n for n in names if n not in have]


# -- context lake ---------------------------------------------------------------------------
LAKE_TABLES = ("lake_lookups", "lake_outcomes", "lake_freshness")


def lake_data(client: Any, page_no: int = 0) -> dict[str, Any]:
    """Everything the lake page shows, aggregated in ClickHouse."""
    missing = missing_tables(client, LAKE_TABLES)
    if missing:
        return {"missing": missing}
    from agentlake.lake.analytics import cache_quality

    span = _rows(
        client,
        "SELECT toUnixTimestamp(max(ts)) - toUnixTimestamp(min(ts)) AS s, count() AS n "
        "FROM lake_lookups FINAL",
    )[0]
    bucket = next((b for b in (1, 10, 60, 300, 3600, 86400) if int(span["s"] or 0) / b <= 60), 86400)
    return {
        "missing": [],
        "lookups": int(span["n"]),
        "quality": jsonable(cache_quality(client)),
        "bucket_s": bucket,
        "hit_rate": _rows(
            client,
            """SELECT tenant, toStartOfInterval(ts, toIntervalSecond({b:UInt32})) AS t, count() AS lookups,
                      avg(hit) AS hit_rate
               FROM lake_lookups FINAL GROUP BY tenant, t ORDER BY tenant, t""",
            b=bucket,
        ),
        "reasons": _rows(
            client,
            "SELECT reason, count() AS n FROM lake_lookups FINAL GROUP BY reason ORDER BY n DESC LIMIT 20",
        ),
        "clusters": _rows(
            client,
            """SELECT l.tenant AS tenant, l.cluster_id AS cluster_id, l.lookups AS lookups, l.hits AS hits,
                      l.hit_rate AS hit_rate, l.similarity AS similarity, l.last AS last_lookup,
                      ifNull(o.reported, 0) AS reported, ifNull(o.wrong, 0) AS wrong_hits
               FROM (SELECT tenant, cluster_id, count() AS lookups, sum(hit) AS hits, avg(hit) AS hit_rate,
                            avg(similarity) AS similarity, max(ts) AS last
                     FROM lake_lookups FINAL WHERE cluster_id IS NOT NULL GROUP BY tenant, cluster_id) AS l
               GLOBAL LEFT JOIN (SELECT tenant, cluster_id, count() AS reported, sum(wrong_hit) AS wrong
                                 FROM lake_outcomes FINAL GROUP BY tenant, cluster_id) AS o
                      ON o.tenant = l.tenant AND o.cluster_id = l.cluster_id
               ORDER BY lookups DESC, tenant, cluster_id LIMIT {limit:UInt32} OFFSET {offset:UInt32}""",
            limit=PAGE,
            offset=page_no * PAGE,
        ),
        "n_clusters": int(
            _rows(
                client,
                "SELECT uniqExact(tenant, cluster_id) AS n FROM lake_lookups FINAL "
                "WHERE cluster_id IS NOT NULL",
            )[0]["n"]
        ),
        "freshness": _rows(
            client,
            """SELECT toStartOfInterval(answerable, toIntervalSecond({b:UInt32})) AS t,
                      quantile(0.5)(lag_ms) AS p50, quantile(0.95)(lag_ms) AS p95, max(lag_ms) AS max
               FROM lake_freshness FINAL GROUP BY t ORDER BY t""",
            b=bucket,
        ),
    }


def lake_body(d: dict[str, Any], page_no: int) -> str:
    if d["missing"]:
        return empty(
            "No context-lake analytics in ClickHouse yet (missing: "
            + ", ".join(d["missing"])
            + "). The sink (and this dashboard, when it follows the log) projects the lake.cache "
            "topic (lookups, reuse outcomes, freshness) into them."
        )
    if not d["lookups"]:
        return empty("The context lake has recorded no lookups yet.")
    body = table(
        "lake-quality",
        [
            "tenant",
            "lookups",
            "hits",
            "hit rate",
            "reuses reported",
            "wrong hits",
            "wrong-hit rate",
            "lookup p50 µs",
            "p99 µs",
            "freshness p50 ms",
            "max ms",
        ],
        d["quality"],
        lambda r: [
            e(r["tenant"]),
            e(r["lookups"]),
            e(r["hits"]),
            e(fmt(r["hit_rate"])),
            e(r["reused_reported"]),
            e(r["wrong_hits"]),
            e(fmt(r["wrong_hit_rate"])),
            e(fmt(r["lookup_p50_us"], 0)),
            e(fmt(r["lookup_p99_us"], 0)),
            e(fmt(r["freshness_p50_ms"], 1)),
            e(fmt(r["freshness_max_ms"], 1)),
        ],
    )
    by_tenant: dict[str, tuple[list[Any], list[Any]]] = defaultdict(lambda: ([], []))
    for r in d["hit_rate"]:
        by_tenant[r["tenant"]][0].append(r["t"])
        by_tenant[r["tenant"]][1].append(r["hit_rate"])
    figs = chart(
        charts.simple_lines(dict(by_tenant), f"hit rate per {d['bucket_s']} s", yaxis={"range": [0, 1.05]})
    )
    if d["freshness"]:
        xs = [r["t"] for r in d["freshness"]]
        figs += chart(
            charts.simple_lines(
                {k: (xs, [r[k] for r in d["freshness"]]) for k in ("p50", "p95", "max")},
                "freshness: trajectory produced → answerable from the lake (ms)",
            )
        )
    figs += chart(
        charts.simple_bars(
            [r["reason"] for r in d["reasons"]], [r["n"] for r in d["reasons"]], "lookups by outcome reason"
        )
    )
    clusters = d["clusters"]
    figs += chart(
        charts.simple_bars(
            [f"{r['tenant']}/{r['cluster_id']}" for r in clusters],
            [r["hit_rate"] for r in clusters],
            "hit rate per cluster (busiest first)",
            yaxis={"range": [0, 1.05]},
            xaxis={"type": "category"},
        )
    )
    body += f'<div class="grid">{figs}</div><h2>Clusters</h2>'
    body += table(
        "lake-clusters",
        [
            "tenant",
            "cluster",
            "lookups",
            "hits",
            "hit rate",
            "mean similarity",
            "wrong hits / reported",
            "last lookup",
        ],
        clusters,
        lambda r: [
            e(r["tenant"]),
            e(r["cluster_id"]),
            e(r["lookups"]),
            e(r["hits"]),
            e(fmt(r["hit_rate"])),
            e(fmt(r["similarity"])),
            e(f"{r['wrong_hits']} / {r['reported']}"),
            e(r["last_lookup"]),
        ],
        lambda r: "failing" if r["wrong_hits"] else "",
    )
    return body + pager("/lake", page_no, PAGE, d["n_clusters"])


# -- delegation graph -------------------------------------------------------------------------
AUTH_TABLES = ("auth_blocks", "auth_decisions", "auth_revocations")
_BLOCK_COLS = "revocation_id, parent_revocation_id, token_id, kind, user_id, agent_id, task_id, depth, ts"


def _decision_counts(client: Any, ids: list[str]) -> dict[str, dict[str, int]]:
    """Allowed and denied calls per block. A call belongs to the deepest block of `ids` in its
    chain (as agent auth's `derived` counts them: an approval block is not a graph node)."""
    if not ids:
        return {}
    rows = _rows(
        client,
        """SELECT arrayLast(x -> has({ids:Array(String)}, x), revocation_ids) AS owner,
                  countIf(allowed = 1) AS n_allowed, countIf(allowed = 0) AS n_denied
           FROM auth_decisions FINAL WHERE hasAny(revocation_ids, {ids:Array(String)}) GROUP BY owner""",
        ids=ids,
    )
    return {r["owner"]: {"allowed": int(r["n_allowed"]), "denied": int(r["n_denied"])} for r in rows}


def _revoked(client: Any, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    rows = _rows(
        client,
        "SELECT revocation_id FROM auth_revocations FINAL WHERE revocation_id IN {ids:Array(String)}",
        ids=ids,
    )
    return {r["revocation_id"] for r in rows}


def delegation_graph(client: Any, *, token: str | None = None, task: str | None = None) -> dict[str, Any]:
    """The blocks derived from `token` (a revocation id), or from every block bound to `task`,
    with their ancestors; bounded at `MAX_NODES`. Each node carries its decision counts
    and whether it (or an ancestor) was revoked."""
    nodes: dict[str, dict[str, Any]] = {}
    if token:
        frontier = [token]
    else:
        seeds = _rows(
            client,
            f"SELECT {_BLOCK_COLS} FROM auth_blocks FINAL WHERE task_id = {{t:String}} LIMIT {{cap:UInt32}}",
            t=task or "",
            cap=MAX_NODES,
        )
        nodes.update((r["revocation_id"], r) for r in seeds)
        frontier = list(nodes)
    # descendants, level by level (attenuated blocks need not repeat the task id)
    for _ in range(64):  # depth bound: Biscuit chains are short
        if not frontier or len(nodes) >= MAX_NODES:
            break
        level = _rows(
            client,
            f"""SELECT {_BLOCK_COLS} FROM auth_blocks FINAL
                WHERE revocation_id IN {{f:Array(String)}} OR parent_revocation_id IN {{f:Array(String)}}
                LIMIT {{cap:UInt32}}""",
            f=frontier,
            cap=MAX_NODES,
        )
        new = [r for r in level if r["revocation_id"] not in nodes]
        nodes.update((r["revocation_id"], r) for r in new)
        frontier = [r["revocation_id"] for r in new if r["revocation_id"] != token]
    # ancestors, so the chain up to the human principal is visible
    wanted = {r["parent_revocation_id"] for r in nodes.values() if r["parent_revocation_id"]} - set(nodes)
    for _ in range(64):
        if not wanted or len(nodes) >= MAX_NODES:
            break
        found = _rows(
            client,
            f"SELECT {_BLOCK_COLS} FROM auth_blocks FINAL WHERE revocation_id IN {{w:Array(String)}}",
            w=sorted(wanted),
        )
        for r in found:
            nodes[r["revocation_id"]] = r
        wanted = {r["parent_revocation_id"] for r in found if r["parent_revocation_id"]} - set(nodes)
    ids = list(nodes)
    counts = _decision_counts(client, ids)
    revoked = _revoked(client, ids)
    out = sorted(nodes.values(), key=lambda r: (r["depth"], str(r["ts"])))
    for r in out:
        r.update(counts.get(r["revocation_id"], {"allowed": 0, "denied": 0}))
        r["revoked"] = r["revocation_id"] in revoked
    by_id = {r["revocation_id"]: r for r in out}
    for r in out:  # a revoked ancestor revokes the whole subtree
        p: dict[str, Any] | None = r
        seen = 0
        while p is not None and not r["revoked"] and seen < 64:
            r["revoked"] = p["revoked"]
            p = by_id.get(p["parent_revocation_id"] or "")
            seen += 1
    return {"nodes": out, "truncated": len(nodes) >= MAX_NODES}


def delegation_index(client: Any, page_no: int) -> dict[str, Any]:
    roots = _rows(
        client,
        f"""SELECT {_BLOCK_COLS} FROM auth_blocks FINAL WHERE kind = 'issued'
            ORDER BY ts DESC LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}""",
        limit=PAGE,
        offset=page_no * PAGE,
    )
    n = int(_rows(client, "SELECT count() AS n FROM auth_blocks FINAL WHERE kind = 'issued'")[0]["n"])
    denials = _rows(
        client,
        """SELECT call_id, ts, agent_id, task_id, server_id, tool, reason, failed_check, revocation_ids,
                  trajectory_id
           FROM auth_decisions FINAL WHERE allowed = 0 ORDER BY ts DESC LIMIT 50""",
    )
    return {"roots": roots, "n_roots": n, "denials": denials}


def _node_label(r: dict[str, Any]) -> str:
    who = r["agent_id"] or r["user_id"] or "?"
    return f"{who} (depth {r['depth']})"


def graph_body(g: dict[str, Any], title: str) -> str:
    nodes = g["nodes"]
    if not nodes:
        return empty("no delegation blocks match")
    color = {"issued": "#1f77b4", "attenuated": "#2ca02c"}
    fig_nodes = [
        {
            "id": r["revocation_id"],
            "label": _node_label(r),
            "color": "#d62728" if r["revoked"] else color.get(r["kind"], "#9467bd"),
            "hover": f"{r['kind']} · {r['revocation_id'][:16]}… · task {r['task_id'] or '—'} · "
            f"{r['allowed']} allowed / {r['denied']} denied" + (" · REVOKED" if r["revoked"] else ""),
        }
        for r in nodes
    ]
    edges = [(r["parent_revocation_id"], r["revocation_id"]) for r in nodes if r["parent_revocation_id"]]
    body = chart(charts.graph(fig_nodes, edges, title))
    if g["truncated"]:
        body += empty(f"showing the first {MAX_NODES} blocks")
    body += table(
        "delegation-nodes",
        ["block", "kind", "holder", "user", "task", "depth", "calls allowed", "denied", "revoked", "at"],
        nodes,
        lambda r: [
            link(f"/delegations?token={q(r['revocation_id'])}", r["revocation_id"][:20] + "…"),
            e(r["kind"]),
            e(r["agent_id"] or "—"),
            e(r["user_id"] or "—"),
            link(f"/delegations?task={q(r['task_id'])}", r["task_id"]) if r["task_id"] else "—",
            e(r["depth"]),
            e(r["allowed"]),
            e(r["denied"]),
            '<span class="fail">revoked</span>' if r["revoked"] else "",
            e(r["ts"]),
        ],
        lambda r: "failing" if r["revoked"] else "",
    )
    return body


def trajectory_decisions(client: Any, trajectory_id: str, limit: int = 500) -> list[dict[str, Any]] | None:
    """The gateway's authorization decisions for a trajectory (None without the auth tables)."""
    if missing_tables(client, ("auth_decisions",)):
        return None
    return _rows(
        client,
        """SELECT call_id, ts, server_id, tool, allowed, reason, failed_check, agent_id, depth, revocation_ids
           FROM auth_decisions FINAL WHERE trajectory_id = {t:String} ORDER BY ts LIMIT {limit:UInt32}""",
        t=trajectory_id,
        limit=limit,
    )


def decisions_table(rows: list[dict[str, Any]]) -> str:
    return table(
        "auth-decisions",
        ["at", "tool", "decision", "reason", "failed check", "holder", "depth", "token"],
        rows,
        lambda r: [
            e(r["ts"]),
            e(f"{r['server_id']}/{r['tool']}"),
            '<span class="pass">allowed</span>' if r["allowed"] else '<span class="fail">denied</span>',
            e(r["reason"]),
            e(r["failed_check"] or ""),
            e(r["agent_id"] or "—"),
            e(r["depth"]),
            link(f"/delegations?token={q(r['revocation_ids'][-1])}", "graph") if r["revocation_ids"] else "—",
        ],
        lambda r: "" if r["allowed"] else "failing",
    )


def add_views(app: Any, d: Any) -> None:
    from fastapi import Query
    from fastapi.responses import HTMLResponse

    @app.get("/lake", response_class=HTMLResponse)  # type: ignore[untyped-decorator]
    async def lake_page(page_no: int = Query(0, alias="page", ge=0)) -> HTMLResponse:
        data = await d.run(lambda c: lake_data(c, page_no))
        return HTMLResponse(
            page("Context lake: clusters, hit rate, freshness", lake_body(data, page_no), d.notice)
        )

    @app.get("/delegations", response_class=HTMLResponse)  # type: ignore[untyped-decorator]
    async def delegations_page(
        token: str | None = None, task: str | None = None, page_no: int = Query(0, alias="page", ge=0)
    ) -> HTMLResponse:
        missing = await d.run(lambda c: missing_tables(c, AUTH_TABLES))
        if missing:
            body = empty(
                "No agent-auth data in ClickHouse yet (missing: " + ", ".join(missing) + "). The sink "
                "projects auth.delegations and auth.revocations into them once tokens are issued."
            )
            return HTMLResponse(page("Delegations", body, d.notice))
        if token or task:
            g = await d.run(lambda c: delegation_graph(c, token=token, task=task))
            what = f"token {token[:16]}…" if token else f"task {task}"
            body = f"<p>{link('/delegations', '‹ all tokens')}</p>" + graph_body(
                g, f"delegation graph of {what}"
            )
            return HTMLResponse(page(f"Delegations of {what}", body, d.notice))
        idx = await d.run(lambda c: delegation_index(c, page_no))
        body = "<h2>Issued tokens</h2>" + table(
            "auth-roots",
            ["token", "user", "agent", "task", "at"],
            idx["roots"],
            lambda r: [
                link(
                    f"/delegations?token={q(r['revocation_id'])}", r["revocation_id"][:20] + "…", "token-link"
                ),
                e(r["user_id"] or "—"),
                e(r["agent_id"] or "—"),
                link(f"/delegations?task={q(r['task_id'])}", r["task_id"]) if r["task_id"] else "—",
                e(r["ts"]),
            ],
        )
        body += pager("/delegations", page_no, PAGE, idx["n_roots"])
        body += "<h2>Recent denials</h2>" + table(
            "auth-denials",
            ["at", "tool", "reason", "failed check", "holder", "task", "trajectory"],
            idx["denials"],
            lambda r: [
                e(r["ts"]),
                e(f"{r['server_id']}/{r['tool']}"),
                e(r["reason"]),
                e(r["failed_check"] or ""),
                e(r["agent_id"] or "—"),
                link(f"/delegations?task={q(r['task_id'])}", r["task_id"]) if r["task_id"] else "—",
                link(f"/trajectories/{quote(r['trajectory_id'], safe='')}", r["trajectory_id"])
                if r["trajectory_id"]
                else "—",
            ],
            lambda r: "failing",
        )
        return HTMLResponse(page("Delegations", body, d.notice))
