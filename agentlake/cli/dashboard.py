"""`agentlake dashboard`: the read-only web dashboard over the ClickHouse projections."""

from __future__ import annotations

import typer

from agentlake.cli._app import UserError, _settings, app, console


@app.command()
def dashboard(
    host: str = typer.Option(None, help="bind address [default: AGENTLAKE_DASHBOARD_HOST, 127.0.0.1]"),
    port: int = typer.Option(None, min=0, max=65535, help="port [default: AGENTLAKE_DASHBOARD_PORT, 8050]"),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="allow binding beyond loopback (then a token is required)"
    ),
    token: str | None = typer.Option(
        None,
        help="require this token (Authorization: Bearer, or ?token= once) [env AGENTLAKE_DASHBOARD_TOKEN]",
    ),
    follow: bool = typer.Option(
        True, help="embedded ClickHouse: keep projecting the log in this process so pages stay live"
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Serve the dashboard: runs and suites (pass^k, baselines), rewards over time, trajectories,
    the context lake and delegations. Read-only.

    Binds to 127.0.0.1 unless --allow-remote and a token are given. Exit code 0 on Ctrl-C,
    2 on a refused bind address, a port in use, or a bad setting.
    """
    import uvicorn

    from agentlake.dashboard import DashboardData, check_bind, create_app

    s = _settings()
    h, p = host or s.dashboard_host, s.dashboard_port if port is None else port
    tok = token or s.dashboard_token
    reason = check_bind(h, allow_remote, tok)
    if reason:
        raise UserError(reason)
    from agentlake.cli._bind import check_bind as check_port

    check_port(h, p, what="the dashboard", allow_remote=True)  # a port in use: one line, before any I/O
    suffix = "?token=…" if tok else ""
    console.print(f"dashboard on http://{h}:{p}/{suffix} (read-only)", markup=False)
    try:
        uvicorn.run(
            create_app(s, DashboardData(s, follow=follow), token=tok), host=h, port=p, log_level=log_level
        )
    except SystemExit as e:
        if e.code:
            raise UserError(f"cannot serve on {h}:{p} (port in use?)") from e
