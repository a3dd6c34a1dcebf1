"""OTLP ingest and dashboard benchmark. Not a test: it measures and prints a table.

    .venv/bin/python bench/otel_dashboard.py [--traces 2000] [--steps 10000] [--json]

No broker needed: events go to a null emitter, and ClickHouse is chdb in a temporary data dir.
1. OTLP ingest in-process: protobuf and JSON request bodies of 512 spans (from the
   opentelemetry-sdk's own encoder) -> decode -> assemble -> Avro events; side by side with
   recording the same trajectories with AgentLake's SDK directly.
2. OTLP over HTTP: the same protobuf bodies posted to the endpoint (uvicorn, one client).
3. Dashboard on a trajectory of --steps steps: one page of the timeline (keyset, 200 rows)
   at the start and at the end, the density aggregate, and the whole page handler; side by
   side with fetching every event of the trajectory (what a viewer without pagination does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings

console = Console()


class NullEmitter(MemoryEmitter):
    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        pass


def make_spans(n_traces: int) -> list[Any]:
    """n traces of 5 spans each (invoke_agent, chat, 3 x execute_tool), as SDK ReadableSpans."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("bench")
    for i in range(n_traces):
        with tracer.start_as_current_span("invoke_agent bench") as root:
            root.set_attribute("gen_ai.operation.name", "invoke_agent")
            root.set_attribute("gen_ai.agent.name", "bench-bot")
            root.set_attribute("agentlake.task", f"refund order {i}")
            with tracer.start_as_current_span("chat m") as c:
                c.set_attribute("gen_ai.operation.name", "chat")
                c.set_attribute("gen_ai.usage.input_tokens", 100)
            for j in range(3):
                with tracer.start_as_current_span("execute_tool get_order") as t:
                    t.set_attribute("gen_ai.operation.name", "execute_tool")
                    t.set_attribute("gen_ai.tool.name", "get_order")
                    t.set_attribute("gen_ai.tool.call.id", f"c{j}")
                    t.set_attribute("gen_ai.tool.call.arguments", json.dumps({"order_id": i}))
                    t.set_attribute("gen_ai.tool.call.result", json.dumps({"status": "delivered"}))
    return list(mem.get_finished_spans())


def bodies(spans: list[Any], size: int = 512) -> tuple[list[bytes], list[bytes]]:
    import base64

    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    proto, js = [], []
    for i in range(0, len(spans), size):
        req = encode_spans(spans[i : i + size])
        proto.append(req.SerializeToString())
        doc = json_format.MessageToDict(req)
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    for k in ("traceId", "spanId", "parentSpanId"):
                        if k in sp:
                            sp[k] = base64.b64decode(sp[k]).hex()
        js.append(json.dumps(doc).encode())
    return proto, js


def ingest_rate(s: Settings, reqs: list[bytes], ctype: str, n_spans: int) -> tuple[float, int]:
    from agentlake.otel import OtlpIngest

    ing = OtlpIngest(s.model_copy(update={"otel_spool_dir": _fresh_spool()}), emitter=NullEmitter())
    t0 = time.perf_counter()
    for b in reqs:
        status, _, _ = ing.accept(b, ctype, None)
        assert status == 200
    ing.tick(now_us=10**18)
    dt = time.perf_counter() - t0
    ing.close()
    return n_spans / dt, ing.stats.events


def _fresh_spool() -> Path:
    """Each measurement starts from an empty OTLP spool (the spool's appends are measured)."""
    return Path(tempfile.mkdtemp(prefix="agentlake-bench-spool-"))


def sdk_rate(n_traces: int) -> float:
    tracer = Tracer("bench-bot", "1", emitter=NullEmitter())
    t0 = time.perf_counter()
    n = 0
    for i in range(n_traces):
        with tracer.trajectory(f"refund order {i}") as t:
            t.step("message", "m", tokens_in=100)
            for j in range(3):
                with t.tool_call("otel", "get_order", {"order_id": i, "j": j}) as c:
                    c.result({"status": "delivered"})
            n += 9
    return n / (time.perf_counter() - t0)


def http_rate(s: Settings, reqs: list[bytes], n_spans: int) -> float:
    import httpx

    from agentlake.otel import OtlpIngest, create_app
    from tests.integration.otel_helpers import ServerThread

    s = s.model_copy(update={"otel_spool_dir": _fresh_spool()})
    with ServerThread(create_app(s, OtlpIngest(s, emitter=NullEmitter()))) as srv, httpx.Client() as c:
        t0 = time.perf_counter()
        for b in reqs:
            r = c.post(f"{srv.url}/v1/traces", content=b, headers={"Content-Type": "application/x-protobuf"})
            assert r.status_code == 200
        return n_spans / (time.perf_counter() - t0)


def timed(fn: Any, repeat: int = 7) -> float:
    """Median wall time in ms."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)


def dashboard_figures(s: Settings, steps: int) -> list[tuple[str, str, str]]:
    from fastapi.testclient import TestClient

    from agentlake.dashboard import DashboardData, create_app
    from agentlake.dashboard import _queries as dq
    from agentlake.projections.clickhouse import ClickHouseWriter, connect, query
    from agentlake.schemas import codec

    mem = MemoryEmitter()
    tracer = Tracer("long-bot", "1", emitter=mem, settings=s)
    with tracer.trajectory("a long task") as t:
        for i in range(steps // 2):
            t.step("thought", f"step {i}")
            with t.tool_call("shop", "noop", {"i": i}) as call:
                call.result({"ok": i})
    tid = t.trajectory_id
    client = connect(s)
    writer = ClickHouseWriter(client)
    located = [(codec().decode(v), topic, 0, n) for n, (topic, _, v) in enumerate(mem.records)]
    for i in range(0, len(located), 5000):
        writer.write(located[i : i + 5000], token=f"bench-{i}")
    n_events = len(located)
    last = n_events - 201
    rows = [
        (
            "timeline page, first 200 events (ms)",
            f"{timed(lambda: dq.trajectory_events(client, tid)):.1f}",
            "",
        ),
        (
            "timeline page, last 200 events (ms)",
            f"{timed(lambda: dq.trajectory_events(client, tid, last)):.1f}",
            "",
        ),
        (
            "density aggregate, 120 buckets (ms)",
            f"{timed(lambda: dq.trajectory_density(client, tid)):.1f}",
            "",
        ),
        (
            "every event of the trajectory, no pagination (ms)",
            "",
            f"{timed(lambda: query(client, 'SELECT * FROM events FINAL WHERE trajectory_id = {t:String} ORDER BY seq', {'t': tid}), 3):.1f}",  # noqa: E501
        ),
    ]
    app = create_app(s, DashboardData(s, client=client, follow=False))
    with TestClient(app) as c:
        page_ms = timed(lambda: c.get(f"/trajectories/{tid}").raise_for_status())
        api_ms = timed(lambda: c.get(f"/api/trajectories/{tid}/events?after=-1&limit=200").raise_for_status())
    rows.append(("trajectory page handler, HTML with both charts (ms)", f"{page_ms:.1f}", ""))
    rows.append(("timeline API, one page as JSON (ms)", f"{api_ms:.1f}", ""))
    rows.insert(0, (f"trajectory size (events, {steps} steps)", str(n_events), ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="agentlake-bench-")
    os.environ["AGENTLAKE_HOME"] = home
    s = Settings(otel_max_traces=10**6)

    spans = make_spans(a.traces)
    proto, js = bodies(spans)
    ingest_rate(s, proto[:1], "application/x-protobuf", 1)  # warm-up: imports, schema parsing
    ingest_rate(s, js[:1], "application/json", 1)
    sdk_rate(10)
    p_rate, events = ingest_rate(s, proto, "application/x-protobuf", len(spans))
    j_rate, _ = ingest_rate(s, js, "application/json", len(spans))
    sdk = sdk_rate(a.traces)
    h_rate = http_rate(s, proto, len(spans))
    rows: list[tuple[str, str, str]] = [
        (
            "OTLP/protobuf in-process: spans/s (events/s)",
            f"{p_rate:,.0f} ({p_rate * events / len(spans):,.0f})",
            "",
        ),
        ("OTLP/JSON in-process: spans/s", f"{j_rate:,.0f}", ""),
        ("OTLP/protobuf over HTTP, one client: spans/s", f"{h_rate:,.0f}", ""),
        ("same trajectories through AgentLake's SDK: events/s", "", f"{sdk:,.0f}"),
    ]
    rows += dashboard_figures(s, a.steps)
    if a.json:
        print(json.dumps([{"measure": m, "agentlake": v, "alternative": alt} for m, v, alt in rows]))
        return
    t = Table(title=f"OTLP ingest and dashboard ({len(spans)} spans in {len(proto)} requests)")
    t.add_column("measure")
    t.add_column("AgentLake", justify="right")
    t.add_column("alternative", justify="right")
    for r in rows:
        t.add_row(*r)
    console.print(t)


if __name__ == "__main__":
    main()
