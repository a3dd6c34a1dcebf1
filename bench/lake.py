"""Context lake benchmark. Not a test: it measures and prints a table (and --json).

    .venv/bin/python bench/lake.py [--sizes 100000] [--dims 256,384] [--full] [--http-seconds 10]
                                   [--milvus-rows 20000] [--queries 2000] [--nprobe 16]

For every (size, dim), in one run, side by side:
1. the lake's hot tier in process: full cache lookups (scope rules + signature + per-cluster
   threshold; the query vector given; every task text distinct, so each signature is extracted)
   and the bare faiss search under them: p50/p99 µs, QPS, CPU per lookup; the CPU of a lookup
   whose 32 candidates are all refused;
2. brute force: an exact numpy scan of the same vectors (p50/p99, QPS);
3. recall@10 of the hot tier's search against that exact scan;
4. memory per entry (process RSS growth / entries) and the time to build (add + k-means + IVF).
Then, at the first size and dimension 256:
5. HTTP: `POST /v1/lookup` on a uvicorn server (its own process, the default embedder
   embeds each task) under concurrent kept-alive clients: p50/p99 ms, lookups/s, server and
   client CPU per lookup; every text new, then 100 texts repeated (an agent's steps);
6. Milvus directly (milvus-lite 3.2.2, embedded, pure Python) at --milvus-rows entries,
   with the hot tier at the same size for comparison; it is the durable store, not the hot path.
7. ingest -> answerable in process (embed + add a batch of 100 entries);
8. freshness through the real stack (its own broker and stream worker in a temp dir):
   trajectory ended -> answerable, and final reward produced -> answerable.
--full adds 1,000,000 entries. Vectors are synthetic (clusters of unit vectors around
topic centres, like many phrasings of fewer tasks); queries are held-out noisy copies.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentlake._net import free_port, free_port_pair
from agentlake.cli import quiet_logs
from agentlake.lake.cache import Lake, LakePolicy, LookupRequest
from agentlake.lake.entries import LakeEntry
from agentlake.lake.http_api import uvicorn_impl
from agentlake.lake.signature import task_signature

console = Console(stderr=True)


class FixedDim:
    """An embedder stand-in of any dimension (the benchmark hands vectors in)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.name = f"synthetic-{dim}"

    def embed(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
        v = rng.normal(size=(len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synthetic(n: int, dim: int, seed: int = 0, noise: float = 0.6) -> np.ndarray:
    """`n` unit vectors around n/50 random centres (50 phrasings of each task on average); the
    noise vector's norm is about `noise`."""
    topics = max(20, n // 50)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for i in range(0, n, step):
        m = min(step, n - i)
        x = centres[rng.integers(0, topics, m)] + rng.normal(
            scale=noise / np.sqrt(dim), size=(m, dim)
        ).astype(np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def entries(n: int, tenant: str = "bench") -> list[LakeEntry]:
    sig = task_signature("Refund order 48213")
    now = time.time_ns() // 1000
    seq = ("get_order", "refund_order")
    comps = {"task_success": 1.0}
    return [
        LakeEntry(
            entry_id=f"e{i}",
            tenant=tenant,
            agent_id="bot",
            agent_version="1",
            task="Refund order 48213",
            signature=sig,
            success=True,
            reward=0.9,
            components=comps,
            tool_sequence=seq,
            plan="",
            final_answer="",
            outcome="success",
            produced_us=now,
            expires_us=now + 10**12,
        )
        for i in range(n)
    ]


def hit_tasks(n: int) -> list[str]:
    """`n` distinct task texts whose signature is the entries' (``refund[num=48213]``): each
    lookup extracts its signature anew (the lake remembers the last 4,096 texts' signatures)."""
    want = task_signature("Refund order 48213")
    out: list[str] = []
    i = 0
    while len(out) < n:
        word, j = "", i
        while True:  # i in base 26, as a lowercase word the signature ignores
            word, j = chr(97 + j % 26) + word, j // 26 - 1
            if j < 0:
                break
        text = f"Refund order 48213, it arrived {word}."
        if task_signature(text) == want:
            out.append(text)
        i += 1
    return out


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


def build_lake(n: int, dim: int, vecs: np.ndarray, nprobe: int = 16) -> tuple[Lake, float, float]:
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    lake = Lake(FixedDim(dim), LakePolicy(nprobe=nprobe), record_events=False)
    es = entries(n)
    step = 200_000
    for i in range(0, n, step):
        lake.add(es[i : i + step], vecs[i : i + step])
    del es
    built = time.perf_counter() - t0
    gc.collect()
    return lake, built, (rss_bytes() - before) / n


def stage_in_process(n: int, dim: int, queries: int, nprobe: int = 16) -> dict[str, Any]:
    console.log(f"{n:,} entries × {dim}-d: generating")
    data = synthetic(n + queries, dim, seed=dim)
    vecs, qs = data[:n], data[n:]
    lake, built, per_entry = build_lake(n, dim, vecs, nprobe)
    part = lake.hot.partition("bench")
    console.log(f"  built in {built:.1f}s ({part.clusters.k} clusters, ivf={part.is_ivf})")
    reqs = [LookupRequest("bench", task) for task in hit_tasks(len(qs))]
    lat, raw, hits = [], [], 0
    cpu0 = time.process_time()
    for req, q in zip(reqs, qs, strict=True):
        t = time.perf_counter()
        hits += lake.lookup(req, vector=q).hit
        lat.append((time.perf_counter() - t) * 1e6)
    cpu_lookup = (time.process_time() - cpu0) / len(qs) * 1e6
    # the same vectors asking for another order: every candidate is refused by its signature (32
    # checked, 10 reported), the most work a lookup does (one text: its signature is remembered)
    miss = LookupRequest("bench", "Refund order 48214")
    cpu0 = time.process_time()
    for q in qs:
        lake.lookup(miss, vector=q)
    cpu_miss = (time.process_time() - cpu0) / len(qs) * 1e6
    for q in qs:
        t = time.perf_counter()
        part.search(q, 10, lake.policy.nprobe)
        raw.append((time.perf_counter() - t) * 1e6)
    # exact scan (what a user without an ANN index would run) and recall@10 against it
    brute, recall = [], []
    for q in qs[: min(queries, 300)]:
        t = time.perf_counter()
        sims = vecs @ q
        top = np.argpartition(-sims, 10)[:10]
        brute.append((time.perf_counter() - t) * 1e6)
        exact = {f"e{i}" for i in top}
        got = {e.entry_id for e, _, _ in part.search(q, 10, lake.policy.nprobe)}
        recall.append(len(exact & got) / 10)
    out = {
        "entries": n,
        "dim": dim,
        "clusters": part.clusters.k,
        "index": "IVFFlat" if part.is_ivf else "Flat",
        "nprobe": lake.policy.nprobe,
        "build_s": round(built, 1),
        "bytes_per_entry": round(per_entry),
        "lookup_p50_us": round(pct(lat, 50), 1),
        "lookup_p99_us": round(pct(lat, 99), 1),
        "lookup_qps_1_thread": round(len(lat) / (sum(lat) / 1e6)),
        # CPU time is what the machine's load does not inflate: lookups/s one free core sustains
        "lookup_cpu_us": round(cpu_lookup, 1),
        "lookups_per_cpu_s": round(1e6 / cpu_lookup) if cpu_lookup else None,
        "lookup_hit_rate": round(hits / len(qs), 4),
        "miss_lookup_cpu_us": round(cpu_miss, 1),
        "search_p50_us": round(pct(raw, 50), 1),
        "search_p99_us": round(pct(raw, 99), 1),
        "numpy_exact_p50_us": round(pct(brute, 50), 1),
        "numpy_exact_p99_us": round(pct(brute, 99), 1),
        "numpy_exact_qps": round(len(brute) / (sum(brute) / 1e6)),
        "recall_at_10": round(float(np.mean(recall)), 4),
    }
    del lake, part, data, vecs
    gc.collect()
    return out


# -- HTTP --------------------------------------------------------------------------
def _serve(n: int, port: int, ready: Any, batch: bool = True, h11: bool = False) -> None:
    import uvicorn

    from agentlake.lake.http_api import create_app
    from agentlake.lake.service import LakeService
    from agentlake.settings import Settings

    quiet_logs()
    svc = LakeService(Settings(home=Path(tempfile.mkdtemp())), kafka=False, milvus=False)
    vecs = synthetic(n, svc.embedder.dim, seed=7)
    es = entries(n)
    for i in range(0, n, 200_000):
        svc.lake.add(es[i : i + 200_000], vecs[i : i + 200_000])
    svc.lake.record_events = False
    ready.set()
    uvicorn.run(
        create_app(svc, manage=False, batch=batch, freeze_gc=True),
        host="127.0.0.1",
        port=port,
        log_level="error",
        access_log=False,
        http="h11" if h11 else uvicorn_impl()[0],
        loop="asyncio" if h11 else uvicorn_impl()[1],
    )


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: bytes, body: bytes
) -> tuple[int, bytes]:
    """One ``POST`` on a kept-alive HTTP/1.1 connection: (status, response body). The server
    answers with a Content-Length (uvicorn does for a complete response)."""
    writer.write(
        b"POST %s HTTP/1.1\r\nhost: lake\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (path, len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        raise RuntimeError(f"no content-length in {head!r}")
    length = int(head[i + 17 : head.index(b"\r\n", i + 2)])
    return status, await reader.readexactly(length)


async def _load(
    host: str, port: int, seconds: float, concurrency: int, start: int = 0, cycle: int = 0
) -> tuple[list[float], int]:
    """`concurrency` clients, each on one kept-alive connection, post lookups back to back for
    `seconds`. With `cycle` 0 every task text is new (``Refund order <n>, it arrived broken.``,
    n counting from `start`): the server's remembered signatures and embeddings never help; with
    `cycle` c the texts repeat every c requests, as an agent's steps repeat its task. The client
    is a few lines over asyncio streams, so its CPU per request stays small next to the server's."""
    lat: list[float] = []
    errors = 0
    counter = start
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors, counter
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                counter += 1
                n = start + counter % cycle if cycle else counter
                body = json.dumps({"tenant": "bench", "task": f"Refund order {n}, it arrived broken."})
                t = time.perf_counter()
                status, _ = await _post(reader, writer, b"/v1/lookup", body.encode())
                lat.append((time.perf_counter() - t) * 1000)
                errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return lat, errors


def stage_http(
    n: int, seconds: float, concurrencies: list[int], batch: bool = True, h11: bool = False
) -> list[dict[str, Any]]:
    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_serve, args=(n, port, ready, batch, h11), daemon=True)
    proc.start()
    try:
        if not ready.wait(600):
            raise RuntimeError("the lake server did not come up")
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        asyncio.run(_load("127.0.0.1", port, 1.0, 4, start=10**9))  # warm up
        rows = []
        runs = [(conc, 0) for conc in concurrencies] + [(concurrencies[0], 100)]
        for r, (conc, cycle) in enumerate(runs):
            server_cpu0, client_cpu0 = _cpu_seconds(proc.pid), time.process_time()
            lat, errors = asyncio.run(
                _load("127.0.0.1", port, seconds, conc, start=(r + 2) * 10**9, cycle=cycle)
            )
            server_cpu = (_cpu_seconds(proc.pid) - server_cpu0) / max(1, len(lat)) * 1e6
            client_cpu = (time.process_time() - client_cpu0) / max(1, len(lat)) * 1e6
            rows.append(
                {
                    "entries": n,
                    "server": "+".join(("h11", "asyncio") if h11 else uvicorn_impl())
                    + (", batched" if batch else ""),
                    "concurrency": conc,
                    "task_texts": f"{cycle} repeated" if cycle else "all new",
                    "requests": len(lat),
                    "errors": errors,
                    "lookups_per_s": round(len(lat) / seconds),
                    "p50_ms": round(pct(lat, 50), 2),
                    "p99_ms": round(pct(lat, 99), 2),
                    "server_cpu_us_per_lookup": round(server_cpu),
                    "client_cpu_us_per_lookup": round(client_cpu),
                    "lookups_per_server_cpu_s": round(1e6 / server_cpu) if server_cpu else None,
                }
            )
            console.log(f"  HTTP c={conc}, {rows[-1]['task_texts']}: {rows[-1]}")
        return rows
    finally:
        proc.terminate()
        proc.join(10)


# -- Milvus directly ---------------------------------------------------------------
def stage_milvus(rows: int, queries: int = 20) -> dict[str, Any]:
    from pymilvus import MilvusClient

    from agentlake.projections.milvus import LakeStore

    dim = 256
    data = synthetic(rows + queries, dim, seed=3)
    vecs, qs = data[:rows], data[rows:]
    home = Path(tempfile.mkdtemp())
    store = LakeStore(MilvusClient(str(home / "bench-milvus.db")), dim)
    t0 = time.perf_counter()
    for i in range(0, rows, 2000):
        store.upsert_entries(
            [("bench", f"e{j}", vecs[j].tolist(), "{}") for j in range(i, min(rows, i + 2000))]
        )
    insert_s = time.perf_counter() - t0
    lat = []
    for q in qs:
        t = time.perf_counter()
        store.search("bench", q.tolist(), 10)
        lat.append((time.perf_counter() - t) * 1000)
    store.client.close()
    lake, _, _ = build_lake(rows, dim, vecs)
    part = lake.hot.partition("bench")
    hot = []
    for q in qs:
        t = time.perf_counter()
        part.search(q, 10, lake.policy.nprobe)
        hot.append((time.perf_counter() - t) * 1000)
    return {
        "rows": rows,
        "milvus_insert_rows_per_s": round(rows / insert_s),
        "milvus_search_p50_ms": round(pct(lat, 50), 2),
        "milvus_search_p99_ms": round(pct(lat, 99), 2),
        "hot_tier_search_p50_ms": round(pct(hot, 50), 4),
        "hot_tier_search_p99_ms": round(pct(hot, 99), 4),
    }


def stage_freshness(n: int, rate: float) -> dict[str, Any]:
    """Through the real stack: trajectory ended (SDK) -> scored by the stream worker -> ingested
    by the lake -> answerable, at `rate` trajectories/s."""
    from agentlake import stack
    from agentlake.lake.demo import toolset_attributes
    from agentlake.lake.service import LakeService
    from agentlake.sdk import KafkaEmitter, Tracer
    from agentlake.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="agentlake-lake-bench-"))
    os.environ["AGENTLAKE_HOME"] = str(home)
    os.environ["AGENTLAKE_KAFKA_PORT"] = str(free_port_pair())
    os.environ["AGENTLAKE_LIVE_SCORES"] = "false"
    settings = Settings()
    stack.up(settings, workers=True)
    attrs = toolset_attributes([{"name": "get_order"}, {"name": "refund_order"}])

    async def run() -> dict[str, Any]:
        ended: dict[str, float] = {}
        answerable: dict[str, float] = {}
        async with LakeService(settings) as svc:
            emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir)
            tracer = Tracer("bench-bot", "1.0", tenant="fresh", emitter=emitter, settings=settings)

            async def produce() -> None:
                for i in range(n):
                    async with tracer.trajectory(
                        f"Refund order {i}, it arrived broken.", attributes=attrs
                    ) as t:
                        t.step("plan", "get_order then refund_order")
                        t.end("success", final_answer="done")
                    ended[t.trajectory_id] = time.time()
                    await asyncio.sleep(1 / rate)

            # warm-up: the consumer groups join, and the stream worker restores each partition's
            # checkpoints on that partition's first record (≈ 0.5 s each), before the clock
            # starts: start-up, not freshness. 32 trajectories reach every partition.
            warm = []
            for i in range(32):
                async with tracer.trajectory(f"Refund order w{i}, it arrived broken.", attributes=attrs) as w:
                    w.step("plan", "get_order then refund_order")
                    w.end("success", final_answer="done")
                warm.append(w.trajectory_id)
            warm_until = time.monotonic() + 120
            while time.monotonic() < warm_until:
                await svc.step(20)
                part = svc.lake.hot.tenant("fresh")
                if part is not None and all(t in part.ids for t in warm):
                    break
            svc.stats.freshness_ms.clear()
            producer = asyncio.create_task(produce())
            deadline = time.monotonic() + 120 + n / rate
            while time.monotonic() < deadline and (not producer.done() or len(answerable) < n):
                await svc.step(20)
                part = svc.lake.hot.tenant("fresh")
                now = time.time()
                for tid in ended.keys() - answerable.keys():
                    if part is not None and tid in part.ids:
                        answerable[tid] = now
            await producer
            await asyncio.to_thread(emitter.close, 10)
            lags = [(answerable[t] - ended[t]) * 1000 for t in answerable]
            reward_lags = svc.stats.freshness_ms
        return {
            "trajectories": n,
            "rate_per_s": rate,
            "answerable": len(answerable),
            "ended_to_answerable_p50_ms": round(pct(lags, 50), 1),
            "ended_to_answerable_p99_ms": round(pct(lags, 99), 1),
            "reward_to_answerable_p50_ms": round(pct(reward_lags, 50), 1),
            "reward_to_answerable_p99_ms": round(pct(reward_lags, 99), 1),
        }

    try:
        return asyncio.run(run())
    finally:
        stack.down(settings)


def stage_ingest() -> dict[str, Any]:
    from agentlake.projections.embeddings import get_embedder
    from agentlake.settings import Settings

    emb = get_embedder(Settings())
    lake = Lake(emb, record_events=False)
    lake.add(entries(10_000), synthetic(10_000, emb.dim, seed=5))
    lat = []
    for r in range(20):
        batch = [replace(e, entry_id=f"new-{r}-{i}") for i, e in enumerate(entries(100))]
        t = time.perf_counter()
        lake.add(batch)  # embeds the 100 tasks, indexes, clusters
        lat.append((time.perf_counter() - t) * 1000)
    return {
        "batch": 100,
        "ingest_to_answerable_p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--dims", default="256,384")
    ap.add_argument("--full", action="store_true", help="also 1,000,000 entries")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--nprobe", type=int, default=16, help="IVF lists probed in process")
    ap.add_argument("--http-seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", default="8,32")
    ap.add_argument("--no-batch", action="store_true", help="HTTP: one lookup at a time (no micro-batching)")
    ap.add_argument("--h11", action="store_true", help="HTTP: uvicorn's pure-Python h11 and asyncio")
    ap.add_argument("--milvus-rows", type=int, default=20_000)
    ap.add_argument("--freshness", type=int, default=200, help="trajectories through Kafka (0: skip)")
    ap.add_argument("--freshness-rate", type=float, default=20.0, help="trajectories/s in that stage")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    quiet_logs()
    import faiss
    import sklearn.cluster  # noqa: F401  (imported before memory is measured)

    faiss.omp_set_num_threads(1)  # one query at a time: OpenMP threads only contend on 2 cores
    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1_000_000] if args.full else [])
    dims = [int(d) for d in args.dims.split(",")]
    result: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "in_process": [],
        "http": [],
        "milvus": None,
    }
    for n in sizes:
        for d in dims:
            result["in_process"].append(stage_in_process(n, d, args.queries, args.nprobe))
            console.log(result["in_process"][-1])
    if args.http_seconds > 0 and sizes:
        console.log("HTTP stage")
        result["http"] = stage_http(
            sizes[0],
            args.http_seconds,
            [int(c) for c in args.concurrency.split(",")],
            batch=not args.no_batch,
            h11=args.h11,
        )
    if args.milvus_rows > 0:
        console.log(f"Milvus stage ({args.milvus_rows:,} rows)")
        result["milvus"] = stage_milvus(args.milvus_rows)
    result["ingest"] = stage_ingest()
    if args.freshness > 0:
        console.log(f"freshness through Kafka ({args.freshness} trajectories)")
        result["freshness"] = stage_freshness(args.freshness, args.freshness_rate)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    out = Console()
    t = Table(title="context lake: lookups in process (1 thread)")
    cols = [
        "entries", "dim", "index", "clusters", "build_s", "bytes_per_entry", "lookup_p50_us", "lookup_p99_us",
        "lookup_qps_1_thread", "lookup_cpu_us", "lookups_per_cpu_s", "miss_lookup_cpu_us", "search_p50_us",
        "search_p99_us", "recall_at_10",
        "numpy_exact_p50_us", "numpy_exact_p99_us",
    ]  # fmt: skip
    for c in cols:
        t.add_column(c, justify="right")
    for r in result["in_process"]:
        t.add_row(*[str(r[c]) for c in cols])
    out.print(t)
    if result["http"]:
        h = Table(title="HTTP POST /v1/lookup (uvicorn, 1 process; task embedded by the server)")
        for c in result["http"][0]:
            h.add_column(c, justify="right")
        for r in result["http"]:
            h.add_row(*[str(v) for v in r.values()])
        out.print(h)
    if result["milvus"]:
        out.print(f"Milvus directly vs hot tier: {result['milvus']}")
    out.print(f"ingest -> answerable in process: {result['ingest']}")
    if "freshness" in result:
        out.print(f"freshness through Kafka: {result['freshness']}")
    out.print(f"{result['cpus']} CPUs; load average at start {result['load_average_at_start']}")


if __name__ == "__main__":
    main()
