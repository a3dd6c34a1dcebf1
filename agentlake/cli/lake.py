"""`agentlake lake ...`: serve the context lake, query it, measure its hit quality."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from agentlake.cli._app import JSON_OPT, UserError, _print_json, _settings, app, console, out
from agentlake.cli._render import DataTable

lake_app = typer.Typer(
    help="Context lake: trajectory memory, semantic cache with fused plans, served over HTTP and MCP.",
    no_args_is_help=True,
)
app.add_typer(lake_app, name="lake")


def _service(kafka: bool = True) -> Any:
    from agentlake.lake.service import LakeService, policy_from

    s = _settings()
    try:
        policy_from(s)
    except ValueError as e:
        raise UserError(str(e)) from None
    return LakeService(s, kafka=kafka)


@lake_app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="bind address (default AGENTLAKE_LAKE_HOST)"),
    port: int | None = typer.Option(
        None, min=0, max=65535, help="port (default AGENTLAKE_LAKE_PORT; 0 = any free port)"
    ),
    mcp: bool = typer.Option(True, help="also serve the MCP tools at /mcp (streamable HTTP)"),
    kafka: bool = typer.Option(True, help="follow the log (off: serve what Milvus holds)"),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="allow binding beyond loopback (the lake has no authentication)"
    ),
) -> None:
    """Serve the lake: rebuild the hot tier from Milvus, follow the log, answer over HTTP (+ MCP).

    Binds to loopback unless --allow-remote. Exit code 2 on a refused address, a port in
    use, or a bad setting."""
    import uvicorn

    from agentlake.cli._bind import check_bind
    from agentlake.lake.http_api import create_app, uvicorn_impl

    s = _settings()
    bind_host, bind_port = host or s.lake_host, s.lake_port if port is None else port
    check_bind(bind_host, bind_port, what="the lake", allow_remote=allow_remote)
    svc = _service(kafka)
    web = create_app(svc, freeze_gc=True)
    if mcp:
        from agentlake.lake.mcp_server import build_mcp

        mcp_app = build_mcp(svc).streamable_http_app()
        web.mount("/mcp", mcp_app)
    console.log(f"context lake on http://{bind_host}:{bind_port} (OpenAPI at /docs; MCP at /mcp: {mcp})")
    http, loop = uvicorn_impl()
    try:
        uvicorn.run(
            web, host=bind_host, port=bind_port, log_level="warning", access_log=False, http=http, loop=loop
        )
    except SystemExit as e:  # uvicorn exits 1 when the bind fails, 3 when startup fails
        if e.code:
            raise UserError(
                f"the lake did not start on {bind_host}:{bind_port} (uvicorn exit {e.code}); "
                "the line above says why, or rerun with --debug"
            ) from e


async def _in_process(fn: Any, catch_up: bool) -> Any:
    svc = _service(kafka=catch_up)
    try:
        await svc.start()
    except Exception as e:
        raise UserError(
            f"cannot open the lake here ({type(e).__name__}: {str(e)[:200]}); "
            "if `agentlake lake serve` is running, pass --url"
        ) from None
    try:
        if catch_up:
            await svc.catch_up(timeout=120)
        return fn(svc)
    finally:
        await svc.stop()


@lake_app.command("query")
def query(
    task: str = typer.Argument(..., help="the task text"),
    tenant: str = typer.Option("default", help="tenant"),
    toolset: str = typer.Option(
        "",
        help="tool-set fingerprint of the caller (entries of another tool set never hit; "
        "the demo prints its own)",
    ),
    user: str | None = typer.Option(None, "--user", help="user id (for user-scoped entries)"),
    agent: str | None = typer.Option(None, help="agent id (for the cross-version policy)"),
    agent_version: str | None = typer.Option(None, help="agent version"),
    url: str | None = typer.Option(None, help="a running lake server (default AGENTLAKE_LAKE_URL)"),
    catch_up: bool = typer.Option(True, help="in-process only: ingest what the log holds first"),
    as_json: bool = JSON_OPT,
) -> None:
    """Look TASK up in the cache and fuse a plan from similar trajectories."""
    from agentlake.lake import api

    if not task.strip():
        raise UserError("the task is empty")
    q = api.SearchQuery(
        tenant=tenant, task=task, toolset=toolset, user_id=user, agent_id=agent, agent_version=agent_version
    )
    target = url or _settings().lake_url
    if target:
        from agentlake.lake.client import LakeClient, LakeError

        scope = {"toolset": toolset, "user_id": user, "agent_id": agent, "agent_version": agent_version}
        try:
            client = LakeClient(target)
        except LakeError as e:
            raise UserError(f"{e}{'' if url else ' (from AGENTLAKE_LAKE_URL)'}") from None
        try:
            with client as c:
                result = {
                    "lookup": c.lookup(tenant, task, **scope),
                    "plan": c.suggest_plan(tenant, task, **scope),
                }
        except LakeError as e:
            raise UserError(str(e)) from None
    else:
        result = asyncio.run(
            _in_process(
                lambda svc: {
                    "lookup": api.cache_lookup(svc.lake, q),
                    "plan": api.suggest_plan(svc.lake, q),
                },
                catch_up,
            )
        )
    if as_json:
        lk = result["lookup"]
        _print_json({"hit": lk["hit"], "reason": lk["reason"], "detail": miss_detail(lk), **result})
        return
    render_lookup(result["lookup"])
    render_plan(result["plan"])


# why a lookup missed (LookupResult.reason; also each candidate's verdict)
MISS_REASONS = {
    "empty_tenant": "the tenant holds no entries (is --tenant right? the demo's is `demo`)",
    "no_candidates": "no entry is near enough in the vector index",
    "other_toolset": "entries were recorded under another tool-set fingerprint (pass --toolset)",
    "other_user": "user-scoped entries of another user (pass --user)",
    "other_agent": "entries of another agent, and AGENTLAKE_LAKE_CROSS_VERSION forbids it (--agent)",
    "other_agent_version": "entries of another agent version under cross_version=same-version",
    "expired": "older than AGENTLAKE_LAKE_TTL_S from production (hits never extend it)",
    "demoted": "a reuse of it was reported as failed",
    "not_cacheable": "the trajectory asked not to be cached",
    "no_access": "a document it used is not readable by this principal",
    "failed_trajectory": "the nearest trajectories failed",
    "low_reward": "reward below AGENTLAKE_LAKE_MIN_REWARD",
    "below_threshold": "cosine similarity below the cluster's threshold",
    "signature_mismatch": "similar words, but another action or parameter (e.g. another order id)",
}


def miss_detail(r: dict[str, Any]) -> str:
    """The differing part of the refusal behind `r`'s reason (e.g. ``num 25 ≠ 24``), or ""."""
    for c in r.get("provenance") or []:
        if c["verdict"] == r["reason"] and c.get("detail"):
            return str(c["detail"])
    return ""


def render_lookup(r: dict[str, Any]) -> None:
    detail = miss_detail(r)
    why = f": {detail}" if detail else ""
    head = "[green]HIT[/]" if r["hit"] else f"[yellow]MISS[/] ({escape(r['reason'])}{escape(why)})"
    out.print(
        f"{head} {escape(repr(r['task']))}  signature {escape(r['signature'])}  ({r['latency_us']:.0f} µs)"
    )
    if not r["hit"] and r["reason"] in MISS_REASONS:
        out.print(escape(f"  {r['reason']}: {MISS_REASONS[r['reason']]}"), style="dim")
    if r["result"]:
        res = r["result"]
        out.print(
            escape(
                f"  cached: {res['task']!r} by {res['agent']} reward {res['reward']:.2f}: "
                f"{' → '.join(res['tool_sequence'])}"
            )
        )
    t = Table(title="provenance")
    for col in ("entry", "similarity", "threshold", "reward", "agent", "signature", "verdict"):
        t.add_column(col, overflow="fold")
    for c in r["provenance"][:5]:
        t.add_row(
            c["entry_id"][:12],
            f"{c['similarity']:.3f}",
            f"{c['threshold']:.2f}",
            f"{c['reward']:.2f}",
            escape(c["agent"]),
            escape(c["signature"]),
            escape(c["verdict"] + (f": {c['detail']}" if c.get("detail") else "")),
        )
    out.print(t)


def render_plan(p: dict[str, Any]) -> None:
    seq = " → ".join(p["tool_sequence"]) or "(none)"
    out.print(
        escape(f"fused plan: {seq}  (support {p['support']:.0%}; tools: {', '.join(p['tools']) or '-'})")
    )
    for lesson in p["lessons"]:
        out.print(escape(f"  lesson: {lesson}"))


def render_lake_demo(lake: dict[str, Any]) -> None:
    """The demo's lake part: a hit, a miss on another order id, a fused plan."""
    out.rule("context lake: the same question answered from memory (signature + similarity)")
    if "error" in lake:
        out.print(f"[yellow]{escape(str(lake['error']))}[/] ({lake['entries']} entries)")
        return
    fresh = freshness_text(lake["freshness_ms"])
    out.print(f"{lake['entries']} entries; freshness (produced → answerable): {fresh}")
    render_lookup(lake["hit"])
    render_lookup(lake["miss"])
    out.print(escape(f"new task: {lake['plan']['task']!r} ({lake['plan']['signature']})"))
    render_plan(lake["plan"])
    if lake.get("reproduce"):
        out.print(escape(f"reproduce the hit: {lake['reproduce']}"), style="dim", soft_wrap=True)


def freshness_text(f: dict[str, float | None]) -> str:
    """``p50 12.3 ms, max 40.1 ms``; ``n/a`` for a value not measured (no entry was produced
    while the service followed the log, e.g. all were rebuilt from Milvus)."""

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} ms"

    return f"p50 {ms(f.get('p50'))}, max {ms(f.get('max'))}"


@lake_app.command("eval")
def evaluate(
    threshold: float | None = typer.Option(
        None, min=-1.0, max=1.0, help="cosine threshold (default AGENTLAKE_LAKE_THRESHOLD)"
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Hit precision and recall on the shipped labelled task pairs, for the configured embedder."""
    from agentlake.lake.quality import report
    from agentlake.projections.embeddings import get_embedder

    s = _settings()
    try:
        emb = get_embedder(s)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    r = report(emb, s.lake_threshold if threshold is None else threshold)
    if as_json:
        _print_json(r)
        return
    out.print(
        f"{r['embedder']}: {r['pairs']} pairs; mean cosine paraphrases {r['mean_cosine_paraphrase']}, "
        f"hard negatives {r['mean_cosine_hard_negative']}"
    )
    t = Table()
    for col in ("rule", "threshold", "precision", "recall", "wrong hits by kind"):
        t.add_column(col)
    for key in ("at_default", "cosine_only_at_default", "best_with_signature", "best_cosine_only"):
        q = r[key]
        t.add_row(
            q["rule"],
            f"{q['threshold']:.2f}",
            f"{q['precision']:.3f}",
            f"{q['recall']:.3f}",
            json.dumps(q["wrong_hits_by_kind"]),
        )
    out.print(t)


@lake_app.command("stats")
def stats(as_json: bool = JSON_OPT) -> None:
    """Cache quality from ClickHouse: hit rate, wrong hits, lookup latency, freshness per tenant
    (projects ``lake.cache`` first)."""
    from agentlake.lake.analytics import cache_quality, project_topic
    from agentlake.projections.clickhouse import connect, jsonable

    s = _settings()

    async def run() -> list[dict[str, Any]]:
        client = await asyncio.to_thread(connect, s)
        await project_topic(s, client)
        return await asyncio.to_thread(cache_quality, client)

    rows = jsonable(asyncio.run(run()))
    if as_json:
        _print_json(rows)
        return
    t = DataTable(title="context lake: cache quality")  # tenant names are data: no markup
    for col in rows[0].keys() if rows else ["tenant"]:
        t.add_column(col)
    for row in rows:
        t.add_row(*[str(v) for v in row.values()])
    out.print(t)


@lake_app.command("invalidate")
def invalidate(
    tenant: str | None = typer.Option(None, help="only this tenant"),
    toolset: str | None = typer.Option(None, help="entries recorded under this tool-set fingerprint"),
    tool: str | None = typer.Option(None, help="entries whose trajectories called this tool"),
    document: str | None = typer.Option(None, help="entries that used this document id"),
    as_json: bool = JSON_OPT,
) -> None:
    """Drop the entries that depend on a changed tool set, tool or document (in process, from Milvus)."""
    if toolset is None and tool is None and document is None:
        raise UserError("say what changed: --toolset, --tool or --document")
    dropped = asyncio.run(
        _in_process(
            lambda svc: svc.invalidate(tenant=tenant, toolset=toolset, tool=tool, document=document), False
        )
    )
    if as_json:
        _print_json(dropped)
    else:
        out.print(f"dropped {sum(len(v) for v in dropped.values())} entries")
