"""The OTLP endpoint with the real opentelemetry-sdk exporter (HTTP/protobuf and HTTP/JSON):
spans out of order, one trace split across requests and processes, bad payloads refused,
the trajectories scored by the stream worker and projected into ClickHouse, and an
endpoint killed mid-trace that loses no accepted span."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from agentlake.consumers import Projector
from agentlake.otel import create_app, evaluation_request, read_final_rewards
from agentlake.settings import Settings
from tests.integration.helpers import sql
from tests.integration.otel_helpers import OtlpJsonSpanExporter, ServerThread, run_agent

CHILD = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import propagate
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1])))
    ctx = propagate.extract({"traceparent": sys.argv[2]})
    with provider.get_tracer("child").start_as_current_span("execute_tool remote_lookup", context=ctx) as s:
        s.set_attribute("gen_ai.operation.name", "execute_tool")
        s.set_attribute("gen_ai.tool.name", "remote_lookup")
        s.set_attribute("gen_ai.tool.call.id", "remote-1")
        s.set_attribute("gen_ai.tool.call.result", json.dumps({"found": True}))
    provider.shutdown()
    """
)


async def test_otel_sdk_exporters_become_scored_trajectories(
    settings: Settings, projector: Projector
) -> None:
    s = settings.model_copy(update={"otel_end_grace_s": 1.0, "otel_max_body_bytes": 256 * 1024})
    with ServerThread(create_app(s)) as srv:
        endpoint = f"{srv.url}/v1/traces"
        res = Resource.create({"service.name": "otel-it"})

        # 1. HTTP/protobuf, one request per span (children end, and arrive, before the root)
        proto = TracerProvider(resource=res)
        proto.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        tracer = proto.get_tracer("it")
        ok_trace = run_agent(
            tracer,
            "refund order 7",
            [("get_order", {"id": 7}, {"status": "delivered"}, False), ("refund", {"id": 7}, None, True)],
            **{"agentlake.run_id": "otel-it"},
        )

        # 2. one trace split across two processes: the child process adds a tool span
        from opentelemetry import propagate, trace

        with tracer.start_as_current_span("invoke_agent split-bot") as root:
            root.set_attribute("gen_ai.operation.name", "invoke_agent")
            root.set_attribute("gen_ai.agent.name", "otel-bot")
            root.set_attribute("gen_ai.agent.version", "1.0")
            root.set_attribute("agentlake.task", "look it up remotely")
            root.set_attribute("agentlake.run_id", "otel-it")
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            child = subprocess.run(
                [sys.executable, "-c", CHILD, endpoint, carrier["traceparent"]],
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(os.environ),
            )
            assert child.returncode == 0, child.stderr
            split_trace = format(trace.get_current_span().get_span_context().trace_id, "032x")
        proto.shutdown()

        # 3. HTTP/JSON through the SDK's batch processor
        js = TracerProvider(resource=res)
        json_exporter = OtlpJsonSpanExporter(endpoint)
        js.add_span_processor(BatchSpanProcessor(json_exporter))
        json_trace = run_agent(
            js.get_tracer("it"),
            "cancel order 9",
            [("cancel", {"id": 9}, {"ok": True}, False)],
            **{"agentlake.run_id": "otel-it", "version": "1.1"},
        )
        js.shutdown()
        assert json_exporter.statuses and set(json_exporter.statuses) == {200}

        # 4. bad requests get a 4xx with the reason; the endpoint keeps serving
        async with httpx.AsyncClient() as c:
            bad = await c.post(
                endpoint, content=b"\x08\xff garbage", headers={"Content-Type": "application/x-protobuf"}
            )
            assert bad.status_code == 400
            from google.rpc.status_pb2 import Status

            assert "protobuf" in Status.FromString(bad.content).message
            big = await c.post(
                endpoint, content=b"{" * (300 * 1024), headers={"Content-Type": "application/json"}
            )
            assert big.status_code == 413 and "AGENTLAKE_OTEL_MAX_BODY_BYTES" in big.json()["message"]
            wrong = await c.post(endpoint, content=b"{}", headers={"Content-Type": "text/csv"})
            assert wrong.status_code == 415
            health = (await c.get(f"{srv.url}/healthz")).json()
            assert health["errors"] == {"400": 1, "413": 1, "415": 1}

            # the trajectories are emitted once their root has ended and the grace period passed
            for _ in range(200):
                health = (await c.get(f"{srv.url}/healthz")).json()
                if health["trajectories"] >= 3:
                    break
                await asyncio.sleep(0.1)
            assert health["trajectories"] == 3 and health["pending_traces"] == 0

    ids = [ok_trace, split_trace, json_trace]

    async def projected() -> bool:
        rows = await asyncio.to_thread(
            sql,
            projector,
            "SELECT count() AS n FROM rewards FINAL "
            "WHERE is_final = 1 AND trajectory_id IN {ids:Array(String)}",
            ids=ids,
        )
        return int(rows[0]["n"]) == 3

    await projector.run_until(projected, timeout=90)
    assert await projected()

    traj = {
        r["trajectory_id"]: r
        for r in sql(
            projector,
            "SELECT trajectory_id, agent_id, agent_version, task, outcome, final_answer, end_seq, trace_id "
            "FROM trajectories FINAL WHERE trajectory_id IN {ids:Array(String)}",
            ids=ids,
        )
    }
    assert traj[ok_trace]["task"] == "refund order 7" and traj[ok_trace]["outcome"] == "success"
    assert traj[ok_trace]["final_answer"] == "done" and traj[ok_trace]["trace_id"] == ok_trace
    assert traj[json_trace]["agent_version"] == "1.1" and traj[json_trace]["task"] == "cancel order 9"
    assert traj[split_trace]["task"] == "look it up remotely"

    calls = sql(
        projector,
        "SELECT trajectory_id, tool, is_error, result, request_seq, complete_seq FROM tool_calls FINAL "
        "WHERE trajectory_id IN {ids:Array(String)} ORDER BY trajectory_id, request_seq",
        ids=ids,
    )
    by = {(c["trajectory_id"], c["tool"]): c for c in calls}
    assert by[(ok_trace, "get_order")]["is_error"] == 0
    assert json.loads(by[(ok_trace, "get_order")]["result"]) == {"status": "delivered"}
    assert by[(ok_trace, "refund")]["is_error"] == 1
    assert json.loads(by[(split_trace, "remote_lookup")]["result"]) == {
        "found": True
    }  # from the other process
    assert by[(json_trace, "cancel")]["is_error"] == 0
    # seq follows the spans' start times: steps before tools, request before completion
    seqs = sql(
        projector,
        "SELECT record, seq FROM events FINAL WHERE trajectory_id = {t:String} ORDER BY seq",
        t=ok_trace,
    )
    assert [r["record"] for r in seqs] == [
        "TrajectoryStarted",
        "AgentStep",
        "ToolCallRequested",
        "ToolCallCompleted",
        "ToolCallRequested",
        "ToolCallCompleted",
        "TrajectoryEnded",
    ]
    assert [r["seq"] for r in seqs] == list(range(7))

    rewards = {
        r["trajectory_id"]: r
        for r in sql(
            projector,
            "SELECT trajectory_id, components FROM rewards FINAL "
            "WHERE is_final = 1 AND trajectory_id IN {ids:Array(String)}",
            ids=ids,
        )
    }
    assert rewards[ok_trace]["components"]["tool_reliability"] == 0.5  # one of two calls failed
    assert rewards[json_trace]["components"]["tool_reliability"] == 1.0

    # export: the rewards go back out as gen_ai.evaluation.result events in the same traces
    finals = [r for r in read_final_rewards(projector.clickhouse) if r["trajectory_id"] in ids]
    req = evaluation_request(finals)
    recs = req.resource_logs[0].scope_logs[0].log_records
    assert {r.trace_id.hex() for r in recs} == set(ids)
    assert all(r.event_name == "gen_ai.evaluation.result" for r in recs)


def test_otel_serve_cli_with_gzip_exporter(settings: Settings) -> None:
    import signal
    import time

    from opentelemetry.exporter.otlp.proto.http import Compression

    from tests.integration.otel_helpers import free_port

    port = free_port()
    env = {**os.environ, "AGENTLAKE_OTEL_END_GRACE_S": "0.5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlake", "otel", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        provider = TracerProvider(resource=Resource.create({"service.name": "cli-it"}))
        exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", compression=Compression.Gzip)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        run_agent(provider.get_tracer("it"), "gzip task", [("lookup", {"q": 1}, {"a": 2}, False)])
        provider.shutdown()
        for _ in range(100):
            health = httpx.get(f"{base}/healthz").json()
            if health["trajectories"] == 1:
                break
            time.sleep(0.1)
        assert health["trajectories"] == 1 and health["spans_accepted"] == 3 and health["errors"] == {}
        # a second server on the same port: one line, exit code 2
        clash = subprocess.run(
            [sys.executable, "-m", "agentlake", "otel", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert clash.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in clash.stderr
        assert clash.stderr.count("\n") == 1, clash.stderr  # one line
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


class _Recording:
    """The SDK's OTLP exporter, with each export's result kept (an exporter that got a 200)."""

    def __init__(self, inner: OTLPSpanExporter) -> None:
        self.inner = inner
        self.results: list[object] = []

    def export(self, spans: object) -> object:
        r = self.inner.export(spans)  # type: ignore[arg-type]
        self.results.append(r)
        return r

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_otel_endpoint_killed_mid_trace_loses_no_accepted_span(settings: Settings, tmp_path: Path) -> None:
    """kill -9 between two halves of a trace: the restarted endpoint replays its spool, the
    trajectory is complete and emitted once."""
    import signal
    import time

    from opentelemetry.sdk.trace.export import SpanExportResult

    from agentlake.kafka_io import read_to_end
    from agentlake.schemas import codec
    from tests.integration.otel_helpers import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AGENTLAKE_OTEL_END_GRACE_S": "0.5",
        "AGENTLAKE_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
    }

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentlake", "otel", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError(f"endpoint did not start: {proc.communicate()[1][-2000:]}")

    proc = start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "kill-it"}))
        exporter = _Recording(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
        tracer = provider.get_tracer("it")
        with tracer.start_as_current_span("invoke_agent crash-bot") as root:
            root.set_attribute("gen_ai.operation.name", "invoke_agent")
            root.set_attribute("gen_ai.agent.name", "crash-bot")
            root.set_attribute("agentlake.task", "survive a kill")
            with tracer.start_as_current_span("chat small-model") as chat:
                chat.set_attribute("gen_ai.operation.name", "chat")
            with tracer.start_as_current_span("execute_tool before_kill") as t:
                t.set_attribute("gen_ai.operation.name", "execute_tool")
                t.set_attribute("gen_ai.tool.name", "before_kill")
            health = httpx.get(f"{base}/healthz").json()
            assert health["spans_accepted"] == 2 and health["pending_traces"] == 1

            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            proc = start()
            health = httpx.get(f"{base}/healthz").json()
            assert health["spans_replayed"] == 2 and health["pending_traces"] == 1, health

            with tracer.start_as_current_span("execute_tool after_kill") as t:
                t.set_attribute("gen_ai.operation.name", "execute_tool")
                t.set_attribute("gen_ai.tool.name", "after_kill")
            trace_id = format(root.get_span_context().trace_id, "032x")
        provider.shutdown()
        assert exporter.results == [SpanExportResult.SUCCESS] * 4
        for _ in range(100):
            health = httpx.get(f"{base}/healthz").json()
            if health["trajectories"] >= 1:
                break
            time.sleep(0.1)
        assert health["trajectories"] == 1 and health["ended_by"] == {"root_ended": 1}, health
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]

    topics = [settings.topic(t) for t in ("agent.trajectories", "agent.steps", "agent.tool_calls")]
    records = asyncio.run(read_to_end(settings, topics))
    c = codec()
    events = [c.decode_dict(r.value) for r in records if r.key == trace_id.encode()]
    ids = [data["event_id"] for _, data in events]
    assert len(ids) == len(set(ids))  # emitted once
    by_seq = sorted(events, key=lambda e: e[1]["seq"])
    assert [data["seq"] for _, data in by_seq] == list(range(len(events)))
    assert [r for r, _ in by_seq] == [
        "TrajectoryStarted",
        "AgentStep",
        "ToolCallRequested",
        "ToolCallCompleted",
        "ToolCallRequested",
        "ToolCallCompleted",
        "TrajectoryEnded",
    ]
    tools = [data["tool"] for r, data in by_seq if r == "ToolCallRequested"]
    assert tools == ["before_kill", "after_kill"] and by_seq[-1][1]["outcome"] == "success"
