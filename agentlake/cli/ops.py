"""Local stack commands: up, down, status, fetch, and the long-running workers."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import typer
from rich.table import Table

from agentlake.cli._app import JSON_OPT, _print_json, _settings, app, console, out, worker_app


@app.command()
def up(
    workers: bool = typer.Option(True, help="also start the stream worker (rewards)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the local stack: Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS), topics, stream worker."""
    from agentlake import stack

    s = _settings()
    info = stack.up(s, workers=workers, progress=lambda m: console.log(m))
    if as_json:
        _print_json(info)
    else:
        console.print(f"[green]up[/]: kafka {info['bootstrap_servers']}, data in {info['home']}")


@app.command()
def fetch(as_json: bool = JSON_OPT) -> None:
    """Fetch what the local stack needs once (Apache Kafka jars from Maven Central, cached)."""
    from agentlake import stack

    s = _settings()
    libs = stack.kafka_libs(s, progress=lambda m: console.log(m)) if s.embedded_kafka else None
    if as_json:
        _print_json({"kafka_libs": str(libs) if libs else None})
    else:
        console.print(f"kafka jars: {libs}" if libs else "KAFKA_BOOTSTRAP_SERVERS is set: nothing to fetch")


@app.command()
def down(as_json: bool = JSON_OPT) -> None:
    """Stop the workers and the local broker (data is kept)."""
    from agentlake import stack

    res = stack.down(_settings())
    if as_json:
        _print_json(res)
    else:
        console.print("stopped: " + (", ".join(k for k, v in res.items() if v) or "nothing was running"))


@app.command()
def status(as_json: bool = JSON_OPT) -> None:
    """Show what runs where."""
    from agentlake import stack

    info = stack.status(_settings())
    if as_json:
        _print_json(info)
        return
    t = Table(show_header=False)
    for k, v in info.items():
        t.add_row(k, str(v))
    out.print(t)


@worker_app.command("streams")
def worker_streams(loglevel: str = typer.Option("info")) -> None:
    """Run the faust stream processor (rewards, policy findings, dead letters)."""
    from agentlake.streams.app import run_worker

    sys.argv = [sys.argv[0]]  # faust's Worker parses argv; ours are consumed already
    run_worker(_settings(), _rules(), loglevel=loglevel)


def _rules() -> Any:
    from agentlake.registry import rules_lookup

    return rules_lookup(_settings())


@worker_app.command("sink")
def worker_sink(milvus: bool = typer.Option(True, help="also maintain the Milvus vector index")) -> None:
    """Project the log into ClickHouse (and Milvus) until interrupted."""
    from agentlake.consumers import run_sink

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_sink(_settings(), milvus=milvus))
