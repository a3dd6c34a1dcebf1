"""The dashboard's web app: read-only pages over the ClickHouse projections.

Data access goes through `DashboardData`, which serializes every ClickHouse call
(chdb's in-process engine is one client per process) and, with the embedded
ClickHouse, keeps projecting the log in the same process so the pages stay live.
Run manifests (suite, tag, baseline, gate checks) come from the compacted
``sim.runs`` topic, refreshed in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from agentlake.dashboard import _charts as charts
from agentlake.dashboard import _queries as dq
from agentlake.dashboard._html import (
    chart,
    e,
    empty,
    fmt,
    kv,
    link,
    page,
    pager,
    q,
    table,
    verdict,
)
from agentlake.dashboard._views import add_views, decisions_table, trajectory_decisions
from agentlake.projections.clickhouse import query
from agentlake.settings import Settings

log = logging.getLogger("agentlake.dashboard")
T = TypeVar("T")
STATIC = Path(__file__).parent / "static"
COOKIE = "agentlake_dashboard"
PAGE = 50


class DashboardData:
    """The ClickHouse client, the lock around it, and the run manifests.

    Args:
        settings: where ClickHouse and Kafka are.
        client: an existing clickhouse-connect client (e.g. a sink's, in tests); else one
            is opened at startup.
        follow: keep projecting the log into the embedded ClickHouse (ignored with a
            server: its own sink feeds it).
    """

    def __init__(self, settings: Settings, client: Any = None, *, follow: bool = True) -> None:
        self.settings = settings
        self.client = client
        self.follow = follow and client is None and settings.clickhouse_url is None
        self.lock = asyncio.Lock()
        self.manifests: dict[str, Any] = {}
        self.notice: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._projector: Any = None

    async def run(self, fn: Callable[[Any], T]) -> T:
        async with self.lock:
            return await asyncio.to_thread(fn, self.client)

    async def start(self) -> None:
        """Open ClickHouse now; with `follow`, start the sink in the background (loading the
        embedder and Milvus can take a while) and report progress in `notice`."""
        if self.client is None:
            from agentlake.consumers.sink import ensure_raw_tables
            from agentlake.projections.clickhouse import connect

            self.client = await asyncio.to_thread(connect, self.settings)  # the sink shares it
            # the auth and lake tables exist from the start: an empty store shows empty pages
            await asyncio.to_thread(ensure_raw_tables, self.client)
        if self.follow:
            self.notice = "starting to follow the log…"
            self._tasks.append(asyncio.create_task(self._follow()))
        self._tasks.append(asyncio.create_task(self._manifests()))

    @property
    def following(self) -> bool:
        return self._projector is not None

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._projector is not None:
            await self._projector.stop()

    async def _follow(self) -> None:
        from agentlake.consumers import Projector

        while self._projector is None:
            p = Projector(self.settings)
            try:
                await p.start()
                self._projector, self.notice = p, None
            except Exception as ex:
                with contextlib.suppress(Exception):
                    await p.stop()
                self.notice = f"not following the log ({type(ex).__name__}: {ex}); retrying"
                await asyncio.sleep(10)
        pause = max(0.05, self.settings.dashboard_follow_s)
        while True:
            try:
                async with self.lock:
                    n = await self._projector.step(timeout_ms=20)
            except Exception:
                log.exception("projecting the log failed; retrying")
                n = 0
            if not n:
                await asyncio.sleep(pause)

    async def _manifests(self) -> None:
        from agentlake.sim.gate import read_runs

        while True:
            try:
                runs = await read_runs(self.settings, timeout=5)
                self.manifests = {r.run_id: r for r in runs}
            except Exception as ex:
                log.info("run manifests unavailable: %s", ex)
            await asyncio.sleep(10)

    async def refresh_manifests(self) -> None:
        from agentlake.sim.gate import read_runs

        with contextlib.suppress(Exception):
            self.manifests = {r.run_id: r for r in await read_runs(self.settings, timeout=5)}


def create_app(settings: Settings, data: DashboardData | None = None, token: str | None = None) -> Any:
    """The FastAPI app. With `token`, every request needs it (``Authorization: Bearer``,
    the ``agentlake_dashboard`` cookie, or ``?token=`` once, which sets the cookie).
    Only GET and HEAD are served: the dashboard is read-only."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    d = data or DashboardData(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await d.start()
        try:
            yield
        finally:
            await d.stop()

    app = FastAPI(
        title="AgentLake dashboard", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.data = d

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if request.method not in ("GET", "HEAD"):
            return Response("the dashboard is read-only", status_code=405, headers={"Allow": "GET, HEAD"})
        set_cookie = False
        if token:
            given = (
                request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                or request.cookies.get(COOKIE, "")
                or request.query_params.get("token", "")
            )
            if not secrets.compare_digest(given.encode(), token.encode()):
                return Response("a token is required (Authorization: Bearer, or ?token=)", status_code=401)
            set_cookie = "token" in request.query_params
        resp = await call_next(request)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self' 'unsafe-eval'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:"
        )
        if set_cookie and token:
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return resp

    def html(body: str) -> HTMLResponse:
        return HTMLResponse(body)

    # -- static assets: everything is served from the installed packages ----------------
    @app.get("/static/plotly.min.js")
    def plotly_js() -> FileResponse:
        import plotly

        return FileResponse(
            Path(plotly.__file__).parent / "package_data" / "plotly.min.js", media_type="text/javascript"
        )

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        path = STATIC / name
        if name not in {"dashboard.js", "dashboard.css"} or not path.is_file():
            raise HTTPException(404)
        return FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        n = await d.run(lambda c: query(c, "SELECT count() AS n FROM trajectories FINAL")[0]["n"])
        return JSONResponse(
            {"status": "ok", "trajectories": int(n), "following": d.following, "notice": d.notice}
        )

    # -- runs -------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def home(page_no: int = Query(0, alias="page", ge=0)) -> HTMLResponse:
        runs, total = await d.run(lambda c: dq.runs(c, limit=PAGE, offset=page_no * PAGE))
        agents = await d.run(dq.agents)

        def run_row(r: dict[str, Any]) -> list[str]:
            m = d.manifests.get(r["run_id"])
            return [
                link(f"/runs/{q(r['run_id'])}", r["run_id"], "run-link"),
                e(m.suite_id if m else "—"),
                e(", ".join(r["agents"])),
                e(m.tag if m and m.tag else ""),
                e(r["cases"]),
                e(r["trials"]),
                e(fmt(int(r["successes"]) / max(1, int(r["trials"])))),
                e(fmt(r["mean_reward"])),
                verdict(m.passed if m else None),
                e(r["last_at"]),
            ]

        def failing(r: dict[str, Any]) -> str:
            m = d.manifests.get(r["run_id"])
            return "failing" if (m is not None and m.passed is False) else ""

        body = "<h2>Simulation runs</h2>" + table(
            "runs-table",
            ["run", "suite", "agents", "tag", "cases", "trials", "pass^1", "reward", "gate", "last scored"],
            runs,
            run_row,
            failing,
        )
        body += pager("/", page_no, PAGE, total)
        body += "<h2>Agent versions</h2>" + table(
            "agents-table",
            ["agent", "version", "trajectories", "success", "reward", "last scored"],
            agents,
            lambda a: [
                link(f"/rewards?agent={q(a['agent_id'])}", a["agent_id"]),
                link(f"/trajectories?agent={q(a['agent_id'])}", a["agent_version"]),
                e(a["trajectories"]),
                e(fmt(a["success_rate"])),
                e(fmt(a["mean_reward"])),
                e(a["last_at"]),
            ],
        )
        return html(page("Runs and suites", body, d.notice))

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(
        run_id: str, baseline: str | None = None, tolerance: float = Query(0.0, ge=0, le=1)
    ) -> HTMLResponse:
        cases = await d.run(lambda c: dq.run_cases(c, run_id))
        if not cases:
            raise HTTPException(404, f"no scored trials for run {run_id}")
        comps = await d.run(lambda c: dq.run_components(c, run_id))
        m = d.manifests.get(run_id)
        if m is None:
            await d.refresh_manifests()
            m = d.manifests.get(run_id)
        base_id = baseline or (m.baseline_run_id if m else None)
        curves = {f"{run_id} (this run)": dq.pass_curve(cases)}
        body = kv(
            [
                ("suite", e(m.suite_id if m else "—")),
                ("agent", e(f"{m.agent_id}@{m.agent_version}" if m else "—")),
                ("tag", e(m.tag if m and m.tag else "—")),
                ("gate", verdict(m.passed if m else None)),
                ("baseline", link(f"/runs/{q(base_id)}", base_id) if base_id else "—"),
            ]
        )
        comparison = ""
        if base_id:
            base_cases = await d.run(lambda c: dq.run_cases(c, base_id))
            base_comps = await d.run(lambda c: dq.run_components(c, base_id))
            if base_cases:
                curves[f"{base_id} (baseline)"] = dq.pass_curve(base_cases)
                cmp = dq.compare_runs(cases, base_cases, comps, base_comps, tolerance)
                n_reg = sum(r["regression"] for r in cmp["cases"]) + sum(
                    r["regression"] for r in cmp["components"]
                )
                comparison = f"<h2>Against baseline {e(base_id)}: {n_reg} regression(s)</h2>"
                comparison += (
                    '<div class="grid">'
                    + chart(charts.comparison_bars(cmp["components"], "component", "reward components"))
                    + chart(charts.comparison_bars(cmp["cases"], "case_id", "pass^1 per case"))
                    + "</div>"
                )
                comparison += table(
                    "regressions-components",
                    ["component", "baseline", "candidate", "delta"],
                    cmp["components"],
                    lambda r: [
                        e(r["component"]),
                        e(fmt(r["baseline"])),
                        e(fmt(r["candidate"])),
                        e(fmt(r["delta"])),
                    ],
                    lambda r: "regression" if r["regression"] else "",
                )
                comparison += table(
                    "regressions-cases",
                    [
                        "case",
                        "baseline pass^1",
                        "candidate pass^1",
                        "k",
                        "baseline pass^k",
                        "candidate pass^k",
                    ],
                    cmp["cases"],
                    lambda r: [
                        link(f"/runs/{q(run_id)}/cases/{q(r['case_id'])}", r["case_id"]),
                        e(fmt(r.get("baseline"))),
                        e(fmt(r["candidate"])),
                        e(r.get("k", "—")),
                        e(fmt(r.get("baseline_k"))),
                        e(fmt(r.get("candidate_k"))),
                    ],
                    lambda r: "regression" if r["regression"] else "",
                )
            else:
                comparison = empty(f"baseline {base_id} has no scored trials in ClickHouse")
        body += '<div class="grid">' + chart(charts.pass_curves(curves))
        body += chart(charts.case_bars(cases, f"/runs/{q(run_id)}/cases/")) + "</div>"
        if m and m.report.get("gate"):
            body += "<h2>Gate</h2>" + table(
                "gate-table",
                ["check", "bound", "value", "baseline", "threshold", "verdict", "detail"],
                m.report["gate"],
                lambda c: [
                    e(c["name"]),
                    e(c["kind"]),
                    e(fmt(c["value"])),
                    e(fmt(c["baseline"])),
                    e(fmt(c["threshold"])),
                    verdict(c["passed"]),
                    e(c["detail"]),
                ],
                lambda c: "" if c["passed"] else "failing",
            )
        body += comparison
        body += "<h2>Cases</h2>" + table(
            "cases-table",
            ["case", "trials", "successes", "pass^1", "reward", "failing trials"],
            cases,
            lambda c: [
                link(f"/runs/{q(run_id)}/cases/{q(c['case_id'])}", c["case_id"], "case-link"),
                e(c["n"]),
                e(c["c"]),
                e(fmt(int(c["c"]) / int(c["n"]))),
                e(fmt(c["reward"])),
                " ".join(
                    link(f"/trajectories/{q(f['trajectory_id'])}", f"trial {f['trial']}", "trajectory-link")
                    for f in c["failing"]
                ),
            ],
            lambda c: "failing" if c["failing"] else "",
        )
        body += "<h2>Reward components (mean)</h2>" + kv((k, e(fmt(v))) for k, v in comps.items())
        return html(page(f"Run {run_id}", body, d.notice))

    @app.get("/runs/{run_id}/cases/{case_id}", response_class=HTMLResponse)
    async def case_page(run_id: str, case_id: str) -> HTMLResponse:
        trials = await d.run(lambda c: dq.case_trials(c, run_id, case_id))
        if not trials:
            raise HTTPException(404, f"no trials of case {case_id} in run {run_id}")
        body = f"<p>{link(f'/runs/{q(run_id)}', '‹ run ' + run_id)}</p>"
        body += "<p>" + e(trials[0]["task"]) + "</p>"
        body += table(
            "trials-table",
            [
                "trial",
                "verdict",
                "reward",
                "attribution",
                "failed gates",
                "failed checks",
                "outcome",
                "trajectory",
            ],
            trials,
            lambda t: [
                e(t["trial"]),
                verdict(bool(t["success"])),
                e(fmt(t["total"])),
                e(t["attribution"] or ""),
                e(", ".join(t["failed_gates"])),
                e(", ".join(k for k, v in (t["checks"] or {}).items() if not v)),
                e(t["outcome"]),
                link(f"/trajectories/{q(t['trajectory_id'])}", t["trajectory_id"], "trajectory-link"),
            ],
            lambda t: "" if t["success"] else "failing",
        )
        return html(page(f"Case {case_id}", body, d.notice))

    # -- trajectories ---------------------------------------------------------------------
    @app.get("/trajectories", response_class=HTMLResponse)
    async def trajectories_page(
        page_no: int = Query(0, alias="page", ge=0), outcome: str | None = None, agent: str | None = None
    ) -> HTMLResponse:
        rows, total = await d.run(
            lambda c: dq.trajectories(c, limit=PAGE, offset=page_no * PAGE, outcome=outcome, agent_id=agent)
        )
        filters = " · ".join(
            link(f"/trajectories?outcome={o}" + (f"&agent={q(agent)}" if agent else ""), o)
            for o in ("success", "failure", "error", "timeout", "aborted", "running")
        )
        body = f"<p>outcome: {filters} · {link('/trajectories', 'all')}</p>"
        body += table(
            "trajectories-table",
            ["trajectory", "agent", "task", "outcome", "events", "reward", "run", "started"],
            rows,
            lambda t: [
                link(f"/trajectories/{q(t['trajectory_id'])}", t["trajectory_id"], "trajectory-link"),
                e(f"{t['agent_id']}@{t['agent_version']}"),
                e((t["task"] or "")[:120]),
                e(t["outcome"]),
                e("—" if t["end_seq"] is None else int(t["end_seq"]) + 1),
                e(fmt(t["reward"])),
                link(f"/runs/{q(t['run_id'])}", t["run_id"]) if t["run_id"] else "",
                e(t["started_at"]),
            ],
            lambda t: "failing" if t["outcome"] not in ("success", "running") else "",
        )
        body += pager("/trajectories", page_no, PAGE, total, {"outcome": outcome, "agent": agent})
        return html(page("Trajectories", body, d.notice))

    @app.get("/trajectories/{trajectory_id}", response_class=HTMLResponse)
    async def trajectory_page(trajectory_id: str) -> HTMLResponse:
        head = await d.run(lambda c: dq.trajectory(c, trajectory_id))
        if head is None:
            raise HTTPException(404, f"no trajectory {trajectory_id}")
        dens = await d.run(lambda c: dq.trajectory_density(c, trajectory_id))
        reward = head["reward"]
        run_link = (
            link(
                f"/runs/{q(head['run_id'])}/cases/{q(head['scenario_id'] or '')}",
                f"{head['run_id']} · {head['scenario_id']}",
            )
            if head["run_id"]
            else "—"
        )
        body = kv(
            [
                ("agent", e(f"{head['agent_id']}@{head['agent_version']} (tenant {head['tenant']})")),
                ("task", e(head["task"])),
                ("outcome", e(head["outcome"] or "running")),
                ("error", e(head["error"] or "—")),
                ("final answer", e(head["final_answer"] or "—")),
                ("run · case · trial", f"{run_link} · {e(head['trial'])}"),
                ("trace id", e(head["trace_id"])),
                ("events", e(head["events"])),
                (
                    "reward",
                    "—"
                    if reward is None
                    else f"{e(fmt(reward['total']))} {verdict(bool(reward['success']))}"
                    + ("" if reward["is_final"] else ' <span class="muted">(live, not final)</span>')
                    + (f" · attribution {e(reward['attribution'])}" if reward.get("attribution") else ""),
                ),
            ]
        )
        grid = ""
        if reward:
            comps = dict(reward["components"])
            failed = set(reward["failed_gates"])
            grid += chart(
                charts.simple_bars(
                    list(comps),
                    list(comps.values()),
                    "reward components" + (f" (failed gates: {', '.join(sorted(failed))})" if failed else ""),
                    yaxis={"range": [0, 1.05]},
                    height=260,
                )
            )
        grid += chart(charts.density(dens), jump=True)
        body += f'<div class="grid">{grid}</div>'
        decisions = await d.run(lambda c: trajectory_decisions(c, trajectory_id))
        if decisions:
            body += "<h2>Authorization decisions (MCP gateway)</h2>" + decisions_table(decisions)
        body += f"""<h2>Timeline</h2>
<div id="viewer" data-tid="{e(trajectory_id)}" data-limit="200" data-total="{e(head["events"])}">
<div class="pager"><button id="prev-page">‹ previous</button> <button id="next-page">next ›</button>
jump to seq <input id="jump" type="number" min="0" style="width:7em">
<span id="viewer-status">loading…</span></div>
<table id="events-table"><thead><tr><th>seq</th><th>time</th><th>event</th><th>detail</th>
<th>errors · authorization</th><th>latency</th></tr></thead><tbody></tbody></table></div>"""
        return html(page(f"Trajectory {trajectory_id}", body, d.notice))

    @app.get("/api/trajectories/{trajectory_id}/events")
    async def trajectory_events(
        trajectory_id: str, after: int = Query(-1, ge=-1), limit: int = Query(200, ge=1, le=1000)
    ) -> JSONResponse:
        return JSONResponse(await d.run(lambda c: dq.trajectory_events(c, trajectory_id, after, limit)))

    # -- rewards over time --------------------------------------------------------------
    @app.get("/rewards", response_class=HTMLResponse)
    async def rewards_page(agent: str | None = None) -> HTMLResponse:
        agents = await d.run(dq.agents)
        ids = sorted({a["agent_id"] for a in agents})
        if not ids:
            return html(page("Reward components over time", empty("no scored trajectories yet"), d.notice))
        chosen = agent if agent is not None and agent in ids else ids[0]
        series = await d.run(lambda c: dq.component_series(c, chosen))
        body = (
            "<p>agent: "
            + " · ".join(
                (f"<b>{e(i)}</b>" if i == chosen else link(f"/rewards?agent={q(i)}", i)) for i in ids
            )
            + f' <span class="muted">(mean per {series["bucket_s"]} s bucket, one line per version)'
            + "</span></p>"
        )
        body += (
            '<div class="grid">'
            + "".join(chart(fig) for _, fig in charts.component_series(series))
            + "</div>"
        )
        return html(page(f"Reward components over time: {chosen}", body, d.notice))

    add_views(app, d)
    return app


def check_bind(host: str, allow_remote: bool, token: str | None) -> str | None:
    """Why binding `host` is refused, or None. Loopback is always allowed; anything else needs
    the explicit flag and a token."""
    from agentlake._net import is_loopback

    if is_loopback(host):
        return None
    if not allow_remote:
        return f"refusing to bind {host}: the dashboard binds to 127.0.0.1 unless --allow-remote is given"
    if not token or len(token) < 16:
        return (
            "binding beyond loopback needs a token of at least 16 characters "
            "(--token or AGENTLAKE_DASHBOARD_TOKEN)"
        )
    return None
