"""Local stack commands: up, down, status, fetch, and the long-running workers."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import typer
from rich.markup import escape
from rich.text import Text

from agentlake.cli._app import JSON_OPT, UserError, _print_json, _settings, app, console, out, worker_app
from agentlake.cli._render import DataTable


@app.command()
def up(
    workers: bool = typer.Option(True, help="also start the stream worker (rewards)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the local stack: Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS), topics, stream worker."""
    from agentlake import stack

    s = _settings()
    info = stack.up(s, workers=workers, progress=lambda m: console.log(m, markup=False))
    if as_json:
        _print_json(info)
    else:
        # a restarted stream worker was said by `stack.up`'s progress line (with its log): once
        console.print(
            f"[green]up[/]: kafka {escape(info['bootstrap_servers'])}, data in {escape(str(info['home']))}"
        )


@app.command()
def fetch(as_json: bool = JSON_OPT) -> None:
    """Fetch what the local stack needs once (Apache Kafka jars from Maven Central, cached)."""
    from agentlake import stack

    s = _settings()
    libs = stack.kafka_libs(s, progress=lambda m: console.log(m, markup=False)) if s.embedded_kafka else None
    if as_json:
        _print_json({"kafka_libs": str(libs) if libs else None})
    else:
        console.print(
            f"kafka jars: {libs}" if libs else "KAFKA_BOOTSTRAP_SERVERS is set: nothing to fetch",
            markup=False,
        )


@app.command()
def down(as_json: bool = JSON_OPT) -> None:
    """Stop the workers and the local broker (data is kept)."""
    from agentlake import stack

    res = stack.down(_settings())
    if as_json:
        _print_json(res)
    else:
        console.print(
            "stopped: " + (", ".join(k for k, v in res.items() if v) or "nothing was running"),
            markup=False,
        )


@app.command()
def status(as_json: bool = JSON_OPT) -> None:
    """Show what runs where."""
    from agentlake import stack

    info = stack.status(_settings())
    if as_json:
        _print_json(info)
        return
    t = DataTable(show_header=False)
    for k, v in info.items():
        t.add_row(k, str(v))
    out.print(t)


@worker_app.command("streams")
def worker_streams(
    loglevel: str = typer.Option("info"),
    name: str = typer.Option(
        "streams", help="this worker's name (its data dir under AGENTLAKE_HOME/streams)"
    ),
) -> None:
    """Run the faust stream processor (rewards, policy findings, dead letters) in the foreground."""
    from agentlake.streams.app import run_worker

    sys.argv = [sys.argv[0]]  # faust's Worker parses argv; ours are consumed already
    run_worker(_settings(), _rules(), loglevel=loglevel, name=name)


@worker_app.command("start")
def worker_start(
    count: int = typer.Option(1, "--count", "-n", min=1, max=64, help="stream workers in the group"),
    as_json: bool = JSON_OPT,
) -> None:
    """Start stream workers 1..N as daemons in one consumer group (running ones are left alone)."""
    from agentlake import stack

    started = stack.start_stream_workers(_settings(), count)
    if as_json:
        _print_json({"stream_workers": started})
    else:
        console.print(
            "stream workers: " + ", ".join(f"{n} (pid {p})" for n, p in started.items()),
            markup=False,
        )


def worker_name(name: str) -> str:
    """`name` when it is a stream worker's name (``streams``, ``streams-2``, ...).

    Raises:
        UserError: it is not (exit 2, like every user error).
    """
    from agentlake import stack

    if name != stack.STREAM_WORKER and not name.removeprefix(f"{stack.STREAM_WORKER}-").isdigit():
        raise UserError(
            f"{name!r} is not a stream worker name: streams, streams-2, ... (agentlake worker list)"
        )
    return name


@worker_app.command("restart")
def worker_restart(
    name: str = typer.Argument(..., help="a stream worker's name, e.g. streams or streams-2"),
    as_json: bool = JSON_OPT,
) -> None:
    """Restart one stream worker (e.g. after it was killed) while the others keep running."""
    from agentlake import stack

    pid = stack.restart_stream_worker(_settings(), worker_name(name))
    if as_json:
        _print_json({"name": name, "pid": pid})
    else:
        console.print(f"{name} restarted (pid {pid})", markup=False)


@worker_app.command("stop")
def worker_stop(
    names: list[str] = typer.Argument(None, help="stream workers to stop (default: all)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Stop stream workers (all by default)."""
    from agentlake import stack

    stopped = stack.stop_stream_workers(_settings(), [worker_name(n) for n in names] if names else None)
    if as_json:
        _print_json({"stopped": stopped})
    else:
        console.print("stopped: " + (", ".join(stopped) or "nothing was running"), markup=False)


@worker_app.command("list")
def worker_list(as_json: bool = JSON_OPT) -> None:
    """Stream workers with a pid file under the data dir, and whether they run."""
    from agentlake import stack

    health = stack.worker_health(_settings())
    if as_json:
        _print_json(health)
        return
    t = DataTable("worker", "pid")
    for n, p in health["stream_workers"].items():
        t.add_row(n, str(p) if p else Text("not running", style="red"))
    out.print(t)
    out.print(f"reconciled by the sink (should be 0): {health['reconciled']}", markup=False)


def _rules() -> Any:
    from agentlake.registry import rules_lookup

    return rules_lookup(_settings())


@worker_app.command("sink")
def worker_sink(milvus: bool = typer.Option(True, help="also maintain the Milvus vector index")) -> None:
    """Project the log into ClickHouse (and Milvus) until interrupted."""
    from agentlake.consumers import run_sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_sink(_settings(), milvus=milvus))
