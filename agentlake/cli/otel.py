"""`agentlake otel`: the OTLP/HTTP ingest endpoint, and rewards exported as OTel evaluation events."""

from __future__ import annotations

import asyncio

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

otel_app = typer.Typer(
    help="OpenTelemetry interop: ingest GenAI spans over OTLP/HTTP, export rewards as evaluation events.",
    no_args_is_help=True,
)
app.add_typer(otel_app, name="otel")


@otel_app.command("serve")
def serve(
    host: str = typer.Option(None, help="bind address [default: AGENTLAKE_OTEL_HOST, 127.0.0.1]"),
    port: int = typer.Option(None, min=0, max=65535, help="port [default: AGENTLAKE_OTEL_PORT, 4318]"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="allow binding beyond loopback (the endpoint has no authentication)"
    ),
) -> None:
    """Serve OTLP/HTTP traces (POST /v1/traces, protobuf or JSON) until interrupted.

    Spans following the GenAI semantic conventions (invoke_agent, execute_tool, chat, ...)
    become AgentLake events on Kafka, one trajectory per trace. Accepted spans are logged
    to a spool (AGENTLAKE_OTEL_SPOOL_DIR) and replayed after a crash. Exit code 0 on Ctrl-C,
    2 when the port is taken, the address is not loopback (without --allow-remote), the
    spool is in use by another endpoint, or a setting is bad.
    """
    import uvicorn

    from agentlake.otel import OtlpIngest, SpoolLocked, create_app

    s = _settings()
    h, p = host or s.otel_host, s.otel_port if port is None else port
    from agentlake.cli._bind import check_bind

    check_bind(h, p, what="the OTLP endpoint", allow_remote=allow_remote)
    try:  # before uvicorn: a spool in use by another endpoint is one line, not a lifespan traceback
        ingest = OtlpIngest(s)
    except (SpoolLocked, OSError) as e:
        raise UserError(f"cannot serve on {h}:{p}: {e}") from e
    console.print(
        f"OTLP/HTTP endpoint on http://{h}:{p}/v1/traces (Kafka {s.bootstrap_servers}, "
        f"spool {ingest.spool.folder})",
        markup=False,
    )
    try:
        uvicorn.run(create_app(s, ingest), host=h, port=p, log_level=log_level)
    except OSError as e:
        raise UserError(f"cannot serve on {h}:{p}: {e}") from e
    except SystemExit as e:  # uvicorn exits 1 when the bind fails
        if e.code:
            raise UserError(f"cannot serve on {h}:{p} (port in use?)") from e


@otel_app.command("export-rewards")
def export_rewards(
    endpoint: str = typer.Option(
        ..., help="OTLP/HTTP base URL of a collector, e.g. http://127.0.0.1:4318 (/v1/logs is appended)"
    ),
    run_id: str | None = typer.Option(None, help="only the trials of this simulation run"),
    limit: int = typer.Option(10_000, min=1, help="at most this many trajectories (newest first)"),
    catch_up: bool = typer.Option(True, help="project what the log holds before reading"),
    timeout: float = typer.Option(30.0, min=0.1, help="HTTP timeout in seconds"),
    as_json: bool = JSON_OPT,
) -> None:
    """Send final reward scores as `gen_ai.evaluation.result` events (OTLP logs, protobuf).

    One event per reward component plus the total, in the trajectory's trace. Exit code 2
    when the collector refuses the request or cannot be reached.
    """
    import httpx

    from agentlake.otel import evaluation_request, read_final_rewards

    rows = asyncio.run(
        _with_projections(lambda ch: read_final_rewards(ch, run_id=run_id, limit=limit), catch_up)
    )
    req = evaluation_request(rows)
    n = sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    url = endpoint.rstrip("/") + ("" if endpoint.rstrip("/").endswith("/v1/logs") else "/v1/logs")
    try:
        r = httpx.post(
            url,
            content=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=timeout,
        )
    except httpx.HTTPError as e:
        raise UserError(f"cannot reach {url}: {e}") from e
    if r.status_code >= 300:
        raise UserError(f"{url} answered {r.status_code}: {r.text[:200]}")
    result = {"endpoint": url, "trajectories": len(rows), "events": n, "status": r.status_code}
    if as_json:
        _print_json(result)
    else:
        out.print(
            f"sent {n} gen_ai.evaluation.result events for {len(rows)} trajectories to {url}",
            markup=False,
        )
