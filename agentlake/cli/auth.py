"""`agentlake auth`: the delegation graph, authorization replay, and the MCP gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import (
    JSON_OPT,
    UserError,
    _print_json,
    _settings,
    _with_projections,
    app,
    console,
    out,
)
from agentlake.cli._render import DataTable

auth_app = typer.Typer(
    help="Agent auth: delegation graph queries, policy replay, the MCP gateway.", no_args_is_help=True
)
app.add_typer(auth_app, name="auth")
gateway_app = typer.Typer(help="The Biscuit-enforcing MCP gateway.", no_args_is_help=True)
auth_app.add_typer(gateway_app, name="gateway")

CATCH_UP = typer.Option(True, "--catch-up/--no-catch-up", help="project what the log holds before reading")


def _jsonable(rows: Any) -> Any:
    from agentlake.projections.clickhouse import jsonable

    return jsonable(rows if isinstance(rows, list) else [rows])


@auth_app.command("chain")
def auth_chain(
    call_id: str = typer.Argument(..., help="call id of a recorded tool call"),
    catch_up: bool = CATCH_UP,
    as_json: bool = JSON_OPT,
) -> None:
    """The delegation chain behind a tool call, back to the human principal."""
    from agentlake.projections.auth import chain

    result = asyncio.run(_with_projections(lambda c: chain(c, call_id), catch_up))
    if result is None:
        raise UserError(f"no recorded tool call {call_id!r}")
    if as_json:
        _print_json(_jsonable(result)[0])
        return
    call = result["call"]
    verdict = "allowed" if call["allowed"] else f"denied ({call['failed_check']})"
    console.print(
        f"call {call_id}: {call['server_id']}/{call['tool']} at {call['ts']} → {verdict}",
        highlight=False,
        markup=False,
    )
    for h in result["hops"]:
        console.print(
            f"  {h['kind']:<10} {h['principal']!s:<24} {h['revocation_id'][:16]}…",
            highlight=False,
            markup=False,
        )


@auth_app.command("who-could")
def auth_who_could(
    server: str = typer.Option(..., help="MCP server id"),
    tool: str = typer.Option(..., help="tool name"),
    at: str = typer.Option("", help="ISO time (UTC); default now"),
    resource: str = typer.Option(
        "", help="the call's resource (e.g. orders/42); default any, and the patterns are shown"
    ),
    catch_up: bool = CATCH_UP,
    as_json: bool = JSON_OPT,
) -> None:
    """Who could call TOOL on SERVER at time AT: token holders, narrowed along their chains, minus
    expired, revoked, unapproved and out-of-budget tokens."""
    from agentlake.projections.auth import who_could

    try:
        when = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError as e:
        raise UserError(f"bad --at {at!r}: expected an ISO time like 2026-11-30T15:00:00") from e
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    rows = asyncio.run(
        _with_projections(lambda c: who_could(c, server, tool, when, resource or None), catch_up)
    )
    if as_json:
        _print_json(_jsonable(rows))
        return
    if not rows:
        out.print(f"0 rows: no token could call {server}/{tool} at {when.isoformat()}", markup=False)
        return
    t = DataTable(title=f"who could call {server}/{tool} at {when.isoformat()}")
    cols = ("holder", "for user", "depth", "task", "operations", "resources", "budget", "approved by")
    for col in (*cols, "expires", "block"):
        t.add_column(col)
    for r in rows:
        budget = f"{r['calls_used'] or 0}/{r['budget']}" if r["budget"] is not None else "-"
        t.add_row(
            r["holder"] or "?",
            r["user_id"] or "?",
            str(r["depth"]),
            r["task_id"] or "any",
            ",".join(r["operations"]),
            " and ".join("|".join(p) for p in r["resources"]) or "any",
            budget if r["task_id"] else (f"{r['budget']} per task" if r["budget"] is not None else "-"),
            r["approved_by"] or "-",
            str(r["expires_at"]),
            f"{r['kind']} {r['revocation_id'][:16]}…",
        )
    out.print(t)


@auth_app.command("derived")
def auth_derived(
    token: str = typer.Argument(..., help="a token, '-', @FILE, or a revocation id"),
    catch_up: bool = CATCH_UP,
    as_json: bool = JSON_OPT,
) -> None:
    """Everything attenuated from a token, with the calls made with each block."""
    from agentlake.cli.token import read_token
    from agentlake.projections.auth import derived

    raw = read_token(token)
    rid = raw.lower()
    if not (len(rid) == 128 and all(c in "0123456789abcdef" for c in rid)):
        from agentlake.auth.tokens import TokenError, parse_unverified

        try:
            rid = parse_unverified(raw).revocation_ids[-1]
        except TokenError as e:
            raise UserError(str(e)) from e
    rows = asyncio.run(_with_projections(lambda c: derived(c, rid), catch_up))
    if as_json:
        _print_json(_jsonable(rows))
        return
    if not rows:
        raise UserError(f"no recorded token block {rid[:16]}…")
    for r in rows:
        console.print(
            f"{'  ' * r['depth']}{r['kind']:<10} {r['agent_id']!s:<20} {r['revocation_id'][:16]}…  "
            f"calls allowed {r['calls_allowed']}, denied {r['calls_denied']}"
            + (f"  (approved by {r['approved_by']})" if r.get("approved_by") else ""),
            highlight=False,
            markup=False,
        )


@auth_app.command("replay")
def auth_replay(
    policy: Path = typer.Option(..., help="authorizer Datalog: checks, allow/deny policies"),
    since: str = typer.Option("7d", help="how far back: 7d, 12h, 30m"),
    catch_up: bool = CATCH_UP,
    as_json: bool = JSON_OPT,
) -> None:
    """Which recorded tool calls a new policy would have denied (or allowed), per agent and tool."""
    from agentlake.auth.replay import PolicyFileError, RecordedCall, load_policy, parse_since, replay
    from agentlake.projections.auth import recorded_decisions

    try:
        window = parse_since(since)
    except ValueError as e:
        raise UserError(f"--since: {e}") from e
    try:
        text = policy.read_text()
        load_policy(text)
    except OSError as e:
        raise UserError(f"cannot read {policy}: {e.strerror}") from e
    except (ValueError, PolicyFileError) as e:
        raise UserError(f"{policy}: {e}") from e
    start = datetime.now(UTC) - window
    rows = asyncio.run(_with_projections(lambda c: recorded_decisions(c, start), catch_up))
    report = replay(text, [RecordedCall.from_event(r) for r in rows])
    if as_json:
        _print_json(report.to_json())
        return
    t = DataTable(
        title=f"replay of {policy} over {report.calls} recorded calls since {start:%Y-%m-%d %H:%M} UTC"
    )
    for col in ("agent", "tool", "calls", "would deny", "would allow"):
        t.add_column(col)
    for (agent, tool), c in sorted(report.by_agent_tool.items()):
        t.add_row(agent, tool, str(c["calls"]), str(c["would_deny"]), str(c["would_allow"]))
    out.print(t)
    if report.skipped:
        console.print(
            f"  {report.skipped} refusal(s) without a valid token (no token, invalid, revoked) not replayed",
            highlight=False,
        )
    for call, why in report.newly_denied[:20]:
        console.print(
            f"  would deny {call.call_id[:12]} {call.agent}/{call.tool}: {why}",
            highlight=False,
            markup=False,
        )


def _pairs(values: list[str], what: str) -> dict[str, str]:
    outd = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k or not val:
            raise UserError(f"bad --{what} {v!r}: expected TOOL=VALUE")
        outd[k] = val
    return outd


@gateway_app.command("serve")
def gateway_serve(
    server_id: str = typer.Option(..., help="the audience tokens must grant (server id)"),
    upstream: str | None = typer.Option(None, help="streamable HTTP URL of the MCP server to front"),
    staging: Path | None = typer.Option(None, help="front a staging server built from this spec file"),
    port: int = typer.Option(0, min=0, max=65535, help="HTTP port (0: any free port)"),
    stdio: bool = typer.Option(False, help="serve over stdio (a local proxy using AGENTLAKE_AUTH_TOKEN)"),
    op: list[str] = typer.Option([], help="TOOL=read|write; repeat (default: the tool's readOnlyHint)"),
    resource: list[str] = typer.Option(
        [], help="TOOL=TEMPLATE over the arguments, e.g. get_order=orders/{order_id}"
    ),
    offline: bool = typer.Option(False, help="no Kafka: no events, no live revocations"),
) -> None:
    """Run the gateway in front of an MCP server until interrupted."""
    if (upstream is None) == (staging is None):
        raise UserError("give exactly one of --upstream URL or --staging FILE")
    if not stdio:  # the gateway listens on 127.0.0.1 only
        from agentlake.cli._bind import check_bind

        check_bind("127.0.0.1", port, what="the gateway", allow_remote=False)
    asyncio.run(
        _serve(
            server_id, upstream, staging, port, stdio, _pairs(op, "op"), _pairs(resource, "resource"), offline
        )
    )


async def _serve(
    server_id: str,
    upstream: str | None,
    staging: Path | None,
    port: int,
    stdio: bool,
    ops: dict[str, str],
    resources: dict[str, str],
    offline: bool,
) -> None:
    from mcp import Client

    from agentlake.auth.authority import Authority
    from agentlake.auth.events import AuthEvents
    from agentlake.auth.follow import AuthFollower
    from agentlake.auth.gateway import Gateway, GatewayConfig, serve_stdio
    from agentlake.auth.gateway_http import serve
    from agentlake.auth.keys import keyring_for
    from agentlake.auth.verify import Limits, TaskBudgets

    s = _settings()
    target: Any = upstream
    if staging is not None:
        from agentlake.sim.staging import StagingServer

        try:
            target = StagingServer.from_spec(staging).server
        except Exception as e:
            raise UserError(f"{staging}: {e}") from e
    emitter = follower = None
    if not offline:
        from agentlake.sdk import KafkaEmitter

        emitter = KafkaEmitter(s.bootstrap_servers, s.spill_dir, client_id="agentlake-gateway")
    budgets = TaskBudgets()
    auth = Authority(
        keyring_for(s),
        AuthEvents(emitter, topic=s.topic),
        budgets=budgets,
        limits=Limits(max_time_ms=s.auth_max_time_ms),
    )
    if not offline:
        follower = AuthFollower(s, auth.revocations, budgets).start()
    config = GatewayConfig(server_id, operations=ops, resources=resources)
    if s.auth_gateway_id:
        config.gateway_id = s.auth_gateway_id
    try:
        async with Client(target) as client:
            gw = Gateway(client, config, auth.verifier, auth.events)
            if stdio:
                gw.default_token = s.auth_token.get_secret_value() if s.auth_token else None
                gw.default_task = s.auth_task
                await serve_stdio(gw)
                return
            try:
                served = await serve(gw, port=port)
            except OSError as e:  # taken between the check and now
                from agentlake.cli._bind import bind_error

                raise UserError(bind_error("127.0.0.1", port, e)) from None
            console.print(
                f"gateway for {server_id!r} at {served.url} (metadata: "
                f"{served.base_url}/.well-known/oauth-protected-resource/mcp); Ctrl-C to stop",
                markup=False,
            )
            try:
                await asyncio.Event().wait()
            finally:
                await served.close()
    finally:
        if follower is not None:
            follower.stop()
        if emitter is not None:
            emitter.close(timeout=10)
