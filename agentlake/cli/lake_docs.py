"""Enterprise documents for the context lake: ``ingest``, ``search-documents``, ``lineage``.

The commands join the ``agentlake lake`` group when `agentlake.cli.lake` defines
``lake_app``; otherwise they form their own ``agentlake docs`` group.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

import typer

from agentlake.cli._app import JSON_OPT, UserError, _print_json, _settings, app, console, out
from agentlake.cli._render import DataTable
from agentlake.settings import Settings


def _group() -> tuple[typer.Typer, str]:
    """The ``lake`` group when `agentlake.cli.lake` defines one, else a new ``docs`` group."""
    try:
        lake_app = getattr(importlib.import_module("agentlake.cli.lake"), "lake_app", None)
    except ImportError:
        lake_app = None
    if isinstance(lake_app, typer.Typer):
        return lake_app, "lake"
    group = typer.Typer(help="Enterprise documents for the context lake.", no_args_is_help=True)
    app.add_typer(group, name="docs")
    return group, "docs"


docs_app, GROUP = _group()
SOURCES = ("files", "parquet", "delta")


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _kafka_error(s: Settings, e: BaseException) -> UserError:
    return UserError(
        f"Kafka is not reachable at {s.bootstrap_servers} ({type(e).__name__}): "
        "run `agentlake up` or set KAFKA_BOOTSTRAP_SERVERS"
    )


@docs_app.command("ingest")
def ingest(
    path: Path = typer.Argument(
        ..., help="a folder or file (files), a Parquet file or folder, a Delta table folder"
    ),
    source: str = typer.Option(..., "--source", help="files | parquet | delta"),
    tenant: str = typer.Option("default", "--tenant", help="tenant of documents that do not name one"),
    access: list[str] = typer.Option(
        ["*"],
        "--access",
        help="access rule for documents without their own (*, user:ID, group:ID); repeatable",
    ),
    prune: bool = typer.Option(True, help="delete documents of this source and tenant that are gone from it"),
    timeout: float = typer.Option(120.0, min=0.1, help="seconds to wait for the documents to be projected"),
    as_json: bool = JSON_OPT,
) -> None:
    """Publish a source's documents as events on lake.documents, then chunk, embed and store them in Milvus.

    Every document is read and validated first: a bad file stops the command with
    one line (exit 2) before anything is published.
    """
    from agentlake.lake.documents import ConnectorError, DocumentError, connector_for

    s = _settings()
    if source not in SOURCES:
        raise UserError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    rules = tuple(dict.fromkeys(a.strip() for a in access if a.strip()))
    from agentlake.lake.documents._domain import valid_rule

    bad = [r for r in rules if not valid_rule(r)]
    if bad or not rules:
        raise UserError(f"bad --access rule {bad[0] if bad else ''!r}: use *, user:<id> or group:<id>")
    try:
        connector = connector_for(source, str(path), tenant=tenant, access=rules)
        docs = _read(connector, s.lake_doc_max_bytes)
    except (ConnectorError, DocumentError) as e:
        raise UserError(str(e)) from e
    report = asyncio.run(_ingest(s, connector.source, tenant, docs, prune, timeout))
    skipped = [str(p) for p in getattr(connector, "skipped", [])]
    report = {
        "source": connector.source,
        "tenant": tenant,
        "documents": len(docs),
        "skipped_files": skipped,
        **report,
    }
    if as_json:
        _print_json(report)
        return
    actions = ", ".join(f"{k} {v}" for k, v in report["actions"].items()) or "none"
    console.print(
        f"{report['documents']} document(s) from {connector.source}: "
        f"{report['unchanged']} unchanged, {report['published']} event(s) published; "
        f"{actions}; {report['chunks']} chunk(s) written"
        + (f"; {len(report['invalidated'])} lake entr(ies) invalidated" if report["invalidated"] else "")
        + (f"; {len(skipped)} file(s) skipped (not .txt/.md/.json)" if skipped else "")
        + (f"; {report['dead_letters']} dead letter(s)" if report["dead_letters"] else ""),
        markup=False,
        highlight=False,
    )


def _read(connector: Any, max_bytes: int) -> list[Any]:
    from agentlake.lake.documents import read_all

    with _progress() as bar:
        task = bar.add_task(f"reading {connector.source}", total=connector.estimate())
        return read_all(connector, max_bytes, progress=lambda: bar.advance(task))


async def _ingest(
    s: Settings, source: str, tenant: str, docs: list[Any], prune: bool, timeout: float
) -> dict[str, Any]:
    from agentlake.lake.documents import DocumentProjector, plan_events, publish_events

    projector = DocumentProjector(s)
    try:
        await projector.start()
    except Exception as e:
        if type(e).__module__.startswith("aiokafka"):
            raise _kafka_error(s, e) from e
        if isinstance(e, RuntimeError):  # the topic does not exist
            raise UserError(str(e)) from e
        raise
    try:
        await projector.catch_up(timeout)  # so pruning compares with what the lake holds now
        assert projector.store is not None
        stored = await asyncio.to_thread(projector.store.stored_versions, tenant, source)
        events = plan_events(docs, stored, tenant=tenant, source=source, prune=prune)
        before = projector.stats.to_json()
        with _progress() as bar:
            task = bar.add_task("publishing to lake.documents", total=len(events))
            published = await publish_events(s, events, progress=lambda n: bar.advance(task, n))
            task2 = bar.add_task("chunking, embedding, storing", total=len(events))
            applied0 = projector.stats.events

            def on_step() -> None:
                bar.update(task2, completed=projector.stats.events - applied0)

            deadline = asyncio.get_running_loop().time() + timeout
            while projector.stats.events - applied0 < len(events):
                if asyncio.get_running_loop().time() > deadline:
                    raise UserError(
                        f"published {published} event(s) but only {projector.stats.events - applied0} "
                        f"were projected within {timeout:.0f}s; they are on the log: re-run to finish"
                    )
                await projector.step(200)
                on_step()
        after = projector.stats.to_json()
    finally:
        await projector.stop()
    actions = {k: v - before["actions"].get(k, 0) for k, v in after["actions"].items()}
    pruned = sum(1 for e in events if getattr(e, "reason", None) == "gone from source")
    return {
        "published": published,
        "unchanged": len(docs) - (len(events) - pruned),
        "pruned": pruned,
        "actions": {k: v for k, v in sorted(actions.items()) if v},
        "chunks": after["chunks"] - before["chunks"],
        "invalidated": sorted(set(after["invalidated"]) - set(before["invalidated"])),
        "dead_letters": after["dead_letters"] - before["dead_letters"],
    }


@docs_app.command("search-documents")
def search_documents_cmd(
    query: str = typer.Argument(..., help="free text"),
    tenant: str = typer.Option("default", "--tenant"),
    k: int = typer.Option(5, "-k", min=1, max=100, help="hits"),
    principal: list[str] = typer.Option(
        [],
        "--as",
        help="access token of the reader (user:ID, group:ID); repeatable; none: public documents only",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Search the stored document chunks of a tenant, as a given reader."""
    from agentlake.lake.documents import search_documents

    hits = search_documents(_settings(), tenant, query, k, principal=principal or None)
    if as_json:
        _print_json([h.to_json() for h in hits])
        return
    if not hits:
        out.print(f"0 hits: no document chunks of {tenant} this reader may see", markup=False)
        return
    t = DataTable(title=f"documents of {tenant} nearest to {query!r}")
    for c in ("score", "doc_id", "version", "chunk", "access", "text"):
        t.add_column(c)
    for h in hits:
        text = h.text if len(h.text) <= 80 else h.text[:77] + "..."
        t.add_row(f"{h.score:.3f}", h.doc_id, str(h.version), str(h.chunk_index), ",".join(h.access), text)
    out.print(t)


@docs_app.command("lineage")
def lineage_cmd(
    doc_id: str = typer.Argument(..., help="document id"),
    tenant: str = typer.Option("default", "--tenant"),
    as_json: bool = JSON_OPT,
) -> None:
    """Lake entries (trajectory ids) that used a document, any version."""
    from agentlake.lake.documents import dependents

    ids = dependents(_settings(), tenant, doc_id)
    if as_json:
        _print_json({"tenant": tenant, "doc_id": doc_id, "dependents": ids})
    else:
        console.print(
            f"{len(ids)} lake entr(ies) used {doc_id}: " + ", ".join(ids),
            highlight=False,
            markup=False,
        )
