"""Enterprise documents in the context lake: ingest and retrieval, measured.

In one run, on synthetic documents spread over tenants with mixed access rules:

- reading: a Delta table written with deltalake, read back through `DeltaConnector`;
- ingest: `DocumentStore.apply_many` over batches of `DocumentUpserted` (chunk,
  embed, upsert into milvus-lite), as the projector applies a polled batch;
  documents/s and chunks/s, and the share spent embedding;
- retrieval with a tenant and a principal, p50/p99 latency including embedding
  the query, side by side in the same run: `search_documents` (the hot tier:
  per-tenant vectors in memory, access as a mask), the same search asked of
  Milvus (``search_milvus``: tenant and access as a filter expression), and what
  a user would write without the store (a numpy scan over every chunk with the
  filter applied in Python); recall@k of each against the exact answer, and a
  check that no hit crosses a tenant or an access rule.

It uses a temporary data dir and no Kafka (the log adds its own cost: see bench/run.py).

    .venv/bin/python bench/lake_documents.py [--docs 2000] [--queries 200] [--k 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agentlake.lake.documents import (
    DeltaConnector,
    Document,
    DocumentStore,
    Principal,
    can_read,
    chunk_text,
    event_of,
    principal_tokens,
    read_all,
)
from agentlake.projections.embeddings import get_embedder
from agentlake.settings import Settings

TOPICS = [
    ("refund", "Damaged goods are refunded within {n} days of delivery when a photo is attached."),
    ("shipping", "Standard shipping takes {n} business days; express ships the next day."),
    ("security", "Passwords rotate every {n} days and access keys are reviewed quarterly."),
    ("expenses", "Expense reports over {n} dollars need the approval of a director."),
    ("travel", "Travel is booked through the portal at least {n} days ahead."),
    ("salaries", "Salary bands are reviewed every {n} months by the compensation team."),
    ("oncall", "The on-call engineer acknowledges pages within {n} minutes."),
    ("privacy", "Customer data is deleted {n} days after an account is closed."),
]
TENANTS = ["acme", "globex", "initech", "umbrella"]
RULES = [("*",), ("*",), ("group:hr",), ("group:support", "user:ceo"), ("group:eng",)]


def documents(n: int, seed: int = 7) -> list[Document]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic, sentence = TOPICS[i % len(TOPICS)]
        paragraphs = [
            f"# {topic.title()} policy {i}",
            *(
                " ".join(sentence.format(n=rng.randint(2, 90)) for _ in range(rng.randint(3, 8)))
                for _ in range(rng.randint(2, 5))
            ),
        ]
        out.append(
            Document(
                doc_id=f"{topic}/{i}.md",
                tenant=TENANTS[i % len(TENANTS)],
                text="\n\n".join(paragraphs),
                version=1,
                source="bench",
                title=f"{topic.title()} policy {i}",
                metadata={"topic": topic},
                access=RULES[rng.randrange(len(RULES))],
            )
        )
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentlake-docs-bench-"))
    settings = Settings(home=home)
    embedder = get_embedder(settings)
    docs = documents(args.docs)
    report: dict[str, Any] = {"docs": len(docs), "embedder": embedder.name, "k": args.k, "batch": args.batch}

    # -- reading a Delta table -------------------------------------------------------
    import pyarrow as pa
    from deltalake import write_deltalake

    table = pa.table(
        {
            "id": [d.doc_id for d in docs],
            "tenant": [d.tenant for d in docs],
            "title": [d.title for d in docs],
            "text": [d.text for d in docs],
            "access": [list(d.access) for d in docs],
        }
    )
    write_deltalake(str(home / "delta"), table)
    t0 = time.perf_counter()
    read = read_all(DeltaConnector(home / "delta"), settings.lake_doc_max_bytes)
    report["delta_read_docs_per_s"] = len(read) / (time.perf_counter() - t0)

    # -- ingest: chunk + embed + upsert ------------------------------------------------
    store = DocumentStore(settings)
    store.search("warm-up", "x", 1)  # loads the (empty) hot tier: later writes keep it current
    chunks = [
        c for d in docs for c in chunk_text(d.text, settings.lake_chunk_chars, settings.lake_chunk_overlap)
    ]
    t0 = time.perf_counter()
    for i in range(0, len(chunks), 256):
        embedder.embed([c.text for c in chunks[i : i + 256]])
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    written = 0
    events = [event_of(d) for d in docs]
    for i in range(0, len(events), args.batch):  # as the projector applies a polled batch
        written += sum(r.chunks for r in store.apply_many(events[i : i + args.batch]))
    ingest_s = time.perf_counter() - t0
    report.update(
        chunks=written,
        ingest_docs_per_s=len(docs) / ingest_s,
        ingest_chunks_per_s=written / ingest_s,
        embed_share=embed_s / ingest_s,
    )

    # -- retrieval: the store vs an exact numpy scan with the same filter ---------------
    rows = store.client.query(
        store.chunks,
        filter='chunk_id != ""',
        output_fields=["chunk_id", "vector", "tenant", "access"],
        limit=16384,
    )
    ids = [r["chunk_id"] for r in rows]
    mat = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    tenants = np.asarray([r["tenant"] for r in rows])
    access = [tuple(r["access"]) for r in rows]
    rng = random.Random(11)
    readers: list[Principal | None] = [None, Principal("ada", ("support",)), Principal("bo", ("hr", "eng"))]
    store_ms: list[float] = []
    milvus_ms: list[float] = []
    scan_ms: list[float] = []
    recalls: list[float] = []
    milvus_recalls: list[float] = []
    leaks = 0
    for _ in range(args.queries):
        topic, sentence = TOPICS[rng.randrange(len(TOPICS))]
        query = f"{topic}: " + sentence.format(n=rng.randint(2, 90)).split(";")[0]
        tenant = TENANTS[rng.randrange(len(TENANTS))]
        reader = readers[rng.randrange(len(readers))]
        t0 = time.perf_counter()
        hits = store.search(tenant, query, args.k, reader)
        store_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        cold = store.search_milvus(tenant, query, args.k, reader)
        milvus_ms.append((time.perf_counter() - t0) * 1000)
        tokens = principal_tokens(reader)
        t0 = time.perf_counter()
        q = embedder.embed([query])[0]
        allowed = (tenants == tenant) & np.fromiter((can_read(a, tokens) for a in access), bool, len(access))
        scores = np.where(allowed, mat @ q, -np.inf)
        top = np.argsort(-scores)[: args.k]
        exact = {ids[i] for i in top if np.isfinite(scores[i])}
        scan_ms.append((time.perf_counter() - t0) * 1000)
        leaks += sum(1 for h in [*hits, *cold] if h.tenant != tenant or not can_read(h.access, tokens))
        got = {_chunk_key(store, h) for h in hits}
        recalls.append(len(got & exact) / len(exact) if exact else 1.0)
        got = {_chunk_key(store, h) for h in cold}
        milvus_recalls.append(len(got & exact) / len(exact) if exact else 1.0)
    report.update(
        search_store_p50_ms=pct(store_ms, 50),
        search_store_p99_ms=pct(store_ms, 99),
        search_milvus_p50_ms=pct(milvus_ms, 50),
        search_milvus_p99_ms=pct(milvus_ms, 99),
        milvus_recall_at_k=statistics.fmean(milvus_recalls),
        search_numpy_p50_ms=pct(scan_ms, 50),
        search_numpy_p99_ms=pct(scan_ms, 99),
        recall_at_k=statistics.fmean(recalls),
        leaks=leaks,
        queries=args.queries,
    )
    return report


def _chunk_key(store: DocumentStore, h: Any) -> str:
    from agentlake.lake.documents.store import _chunk_id

    return _chunk_id(h.tenant, h.doc_id, h.version, h.chunk_index)


def render(r: dict[str, Any]) -> str:
    k = r["k"]
    return "\n".join(
        [
            f"{r['docs']} documents, {r['chunks']} chunks, embedder {r['embedder']}, {r['queries']} queries",
            "",
            "| measure | value |",
            "|---|---|",
            f"| Delta table read (deltalake → Document) | {r['delta_read_docs_per_s']:,.0f} docs/s |",
            f"| ingest: chunk + embed + upsert (milvus-lite), batches of {r['batch']} | "
            f"{r['ingest_docs_per_s']:,.0f} docs/s, "
            f"{r['ingest_chunks_per_s']:,.0f} chunks/s ({r['embed_share'] * 100:.0f}% embedding) |",
            "| search_documents (hot tier: per-tenant numpy, access mask) | "
            f"p50 {r['search_store_p50_ms']:.1f} ms, p99 {r['search_store_p99_ms']:.1f} ms, "
            f"recall@{k} {r['recall_at_k']:.3f} |",
            f"| the same search in milvus-lite (filter expression) | p50 {r['search_milvus_p50_ms']:.1f} ms, "
            f"p99 {r['search_milvus_p99_ms']:.1f} ms, recall@{k} {r['milvus_recall_at_k']:.3f} |",
            "| numpy scan of every chunk, filter in Python (no store) | "
            f"p50 {r['search_numpy_p50_ms']:.1f} ms, p99 {r['search_numpy_p99_ms']:.1f} ms, exact |",
            f"| hits across a tenant or an access rule | {r['leaks']} |",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=2000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batch", type=int, default=100, help="events applied together")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from agentlake.cli import quiet_logs

    quiet_logs()
    r = run(args)
    print(json.dumps(r, indent=2) if args.json else render(r))


if __name__ == "__main__":
    main()
