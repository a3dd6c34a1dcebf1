"""OTLP ingest without a broker: wire decoding, trace assembly, limits, evaluation events."""

from __future__ import annotations

import gzip
import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentlake.otel import (
    OtlpIngest,
    PayloadError,
    Span,
    TraceAssembler,
    decompress,
    evaluation_request,
    message_text,
    parse_traces,
)
from agentlake.schemas import codec
from agentlake.sdk import MemoryEmitter
from agentlake.settings import Settings

TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(
    sid: str,
    name: str,
    parent: str | None,
    start: int,
    end: int,
    trace: str = TRACE,
    error: bool = False,
    **attrs: object,
) -> Span:
    return Span(
        trace,
        sid,
        parent,
        name,
        start,
        end,
        dict(attrs),
        {"service.name": "svc"},
        error,
        "boom" if error else "",
    )


def agent_trace() -> list[Span]:
    root = "a" * 16
    return [
        span(
            root,
            "invoke_agent shop-bot",
            None,
            1_000,
            9_000,
            **{
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "shop-bot",
                "gen_ai.agent.version": "2.0",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "refund order 42"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "refunded"}]}]
                ),
                "agentlake.tenant": "acme",
            },
        ),
        span(
            "b" * 16,
            "chat gpt-x",
            root,
            1_500,
            2_000,
            **{
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 7,
            },
        ),
        span(
            "c" * 16,
            "execute_tool get_order",
            root,
            2_500,
            3_000,
            **{
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_order",
                "gen_ai.tool.call.id": "call-1",
                "gen_ai.tool.call.arguments": '{"order_id": 42}',
                "gen_ai.tool.call.result": '{"status": "delivered"}',
            },
        ),
        span(
            "d" * 16,
            "execute_tool refund",
            root,
            4_000,
            5_000,
            error=True,
            **{
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "refund",
                "gen_ai.tool.call.id": "call-2",
                "error.type": "invalid_arguments",
            },
        ),
        span("e" * 16, "GET /orders", "c" * 16, 2_600, 2_900),  # not gen_ai: ignored
    ]


def test_out_of_order_spans_in_several_batches_make_one_trajectory_in_seq_order() -> None:
    spans = agent_trace()
    asm = TraceAssembler(end_grace_s=1, idle_timeout_s=10)
    # children first, the root in a later request, a duplicate re-sent
    r1 = asm.add([spans[3], spans[4]], now_us=0)
    assert (r1.accepted, r1.ignored) == (1, 1)
    asm.add([spans[2], spans[1]], now_us=100)
    assert asm.due(200) == []  # no root yet
    asm.add([spans[0], spans[2]], now_us=300)
    assert asm.due(300 + 999_999) == []  # root arrived, grace not over
    (done,) = asm.due(300 + 1_000_000)
    assert done.reason == "root_ended" and done.trajectory_id == TRACE
    names = [(r, d.get("tool") or d.get("kind")) for r, _, d in done.events]
    assert names == [
        ("TrajectoryStarted", None),
        ("AgentStep", "message"),
        ("ToolCallRequested", "get_order"),
        ("ToolCallCompleted", "get_order"),
        ("ToolCallRequested", "refund"),
        ("ToolCallCompleted", "refund"),
        ("TrajectoryEnded", None),
    ]
    assert [d["seq"] for _, _, d in done.events] == list(range(7))
    start, end = done.events[0][2], done.events[-1][2]
    assert start["task"] == "refund order 42" and start["tenant"] == "acme"
    assert (start["agent_id"], start["agent_version"]) == ("shop-bot", "2.0")
    assert end["outcome"] == "success" and end["final_answer"] == "refunded"
    assert end["tokens_in"] == 100 and end["tokens_out"] == 7
    failed = done.events[5][2]
    assert failed["is_error"] and failed["error_kind"] == "invalid_arguments" and failed["error"] == "boom"
    assert json.loads(done.events[2][2]["arguments"]["json"]) == {"order_id": 42}
    assert done.events[2][2]["call_id"] == "call-1"
    # every event encodes with the current schemas
    c = codec()
    for record, _, data in done.events:
        assert c.decode(c.encode_record(record, data, strict=True)).seq == data["seq"]
    # a span arriving after the trajectory ended is rejected, with the reason
    late = asm.add([spans[1]], now_us=5_000_000)
    assert late.rejected == 1 and "already ended" in late.reasons[0]


def test_event_ids_are_deterministic_across_assemblers() -> None:
    ids = []
    for _ in range(2):
        asm = TraceAssembler(end_grace_s=0)
        asm.add(agent_trace(), now_us=0)
        ids.append([d["event_id"] for _, _, d in asm.due(1)[0].events])
    assert ids[0] == ids[1] and len(set(ids[0])) == len(ids[0])


def test_nested_invoke_agent_is_a_step_and_the_outer_one_is_the_root() -> None:
    outer, inner = "1" * 16, "2" * 16
    asm = TraceAssembler(end_grace_s=0)
    asm.add([span(inner, "invoke_agent helper", outer, 10, 20, **{"gen_ai.agent.name": "helper"})], 0)
    asm.add([span(outer, "invoke_agent boss", None, 0, 30, **{"gen_ai.agent.name": "boss"})], 0)
    (done,) = asm.due(1)
    assert done.events[0][2]["agent_id"] == "boss"
    assert [r for r, _, _ in done.events] == ["TrajectoryStarted", "AgentStep", "TrajectoryEnded"]
    assert done.events[1][2]["kind"] == "plan"


def test_trace_without_root_ends_as_timeout_after_idle() -> None:
    asm = TraceAssembler(end_grace_s=0, idle_timeout_s=2)
    asm.add([agent_trace()[2]], now_us=0)
    assert asm.due(1_999_999) == []
    (done,) = asm.due(2_000_000)
    assert done.reason == "idle_timeout"
    assert done.events[-1][2]["outcome"] == "timeout"
    assert "not received" in done.events[-1][2]["error"]


def test_root_error_status_gives_error_outcome() -> None:
    asm = TraceAssembler(end_grace_s=0)
    asm.add([span("f" * 16, "invoke_agent x", None, 0, 5, error=True)], 0)
    (done,) = asm.due(1)
    assert done.events[-1][2]["outcome"] == "error" and done.events[-1][2]["error"] == "boom"


def test_span_cap_and_trace_cap() -> None:
    from agentlake.otel import Overloaded

    asm = TraceAssembler(max_spans_per_trace=2, max_traces=1)
    r = asm.add(agent_trace()[:4], 0)
    assert (r.accepted, r.rejected) == (2, 2)
    with pytest.raises(Overloaded):
        asm.add([span("1" * 16, "invoke_agent y", None, 0, 1, trace="1" * 32)], 0)


def test_message_text_forms() -> None:
    assert message_text('[{"role":"user","content":"hi"}]', "user") == "hi"
    assert message_text("plain", "user") == "plain"
    assert message_text([{"role": "assistant", "parts": [{"type": "text", "content": "a"}]}], "user") is None
    assert message_text(None) is None


def _request_proto() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id = bytes.fromhex(TRACE)
    sp.span_id = bytes.fromhex("a" * 16)
    sp.name = "invoke_agent bot"
    sp.start_time_unix_nano, sp.end_time_unix_nano = 1_000_000, 2_000_000
    kv = sp.attributes.add()
    kv.key, kv.value.string_value = "gen_ai.agent.name", "bot"
    return req


def test_parse_protobuf_and_otlp_json_agree() -> None:
    req = _request_proto()
    a = parse_traces(req.SerializeToString(), "application/x-protobuf")
    doc = json_format.MessageToDict(req)
    s = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s["traceId"], s["spanId"] = TRACE, "a" * 16  # OTLP/JSON: hex ids
    b = parse_traces(json.dumps(doc).encode(), "application/json; charset=utf-8")
    assert a == b and a[0].trace_id == TRACE and a[0].attributes == {"gen_ai.agent.name": "bot"}
    assert a[0].start_us == 1_000


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [
        (b"\xff\xff\xff", "application/x-protobuf", 400, "protobuf"),
        (b"{not json", "application/json", 400, "not JSON"),
        (b"[]", "application/json", 400, "object"),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
            "application/json",
            400,
            "hex",
        ),
        (b"x", "text/plain", 415, "Content-Type"),
    ],
)
def test_malformed_payloads_are_refused_with_the_reason(
    body: bytes, ctype: str, status: int, words: str
) -> None:
    with pytest.raises(PayloadError) as e:
        parse_traces(body, ctype)
    assert e.value.status == status and words in str(e.value)


def test_decompress_limits_zip_bombs() -> None:
    assert decompress(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    with pytest.raises(PayloadError) as e:
        decompress(gzip.compress(b"0" * 10_000), "gzip", 100)
    assert e.value.status == 413
    with pytest.raises(PayloadError) as e:
        decompress(b"not gzip", "gzip", 100)
    assert e.value.status == 400
    with pytest.raises(PayloadError) as e:
        decompress(b"x", "br", 100)
    assert e.value.status == 415


def test_ingest_keeps_serving_after_bad_requests_and_emits_events(tmp_path: object) -> None:
    s = Settings(home=str(tmp_path), otel_end_grace_s=0)  # type: ignore[arg-type]
    em = MemoryEmitter()
    ing = OtlpIngest(s, emitter=em)
    assert ing.accept(b"\x00garbage", "application/x-protobuf", None)[0] == 400
    assert ing.accept(b"x" * 10, "application/x-protobuf", "zstd")[0] == 415
    status, _body, _ = ing.accept(_request_proto().SerializeToString(), "application/x-protobuf", None)
    assert status == 200
    assert ing.tick(now_us=10**18) == 1
    topics = [t for t, _, _ in em.records]
    assert topics == ["agent.trajectories", "agent.trajectories"]
    assert all(k == TRACE.encode() for _, k, _ in em.records)
    h = ing.health()
    assert h["errors"] == {"400": 1, "415": 1} and h["trajectories"] == 1


def test_evaluation_request_carries_semconv_attributes() -> None:
    req = evaluation_request(
        [
            {
                "trace_id": TRACE,
                "span_id": "a" * 16,
                "trajectory_id": "t1",
                "total": 0.5,
                "success": 0,
                "components": {"task_success": 0.0, "latency": 1.0},
                "gates": ["task_success"],
                "failed_gates": ["task_success"],
                "scored_at_ns": 5,
            }
        ]
    )
    recs = req.resource_logs[0].scope_logs[0].log_records
    assert len(recs) == 3
    attrs = [{kv.key: kv.value for kv in r.attributes} for r in recs]
    assert all(r.event_name == "gen_ai.evaluation.result" for r in recs)
    assert recs[0].trace_id.hex() == TRACE and recs[0].span_id.hex() == "a" * 16
    total = attrs[0]
    assert total["gen_ai.evaluation.name"].string_value == "agentlake.reward.total"
    assert total["gen_ai.evaluation.score.value"].double_value == 0.5
    assert total["gen_ai.evaluation.score.label"].string_value == "fail"
    assert "task_success" in total["gen_ai.evaluation.explanation"].string_value
    by_name = {a["gen_ai.evaluation.name"].string_value: a for a in attrs}
    assert by_name["agentlake.reward.task_success"]["gen_ai.evaluation.score.label"].string_value == "fail"
    assert "gen_ai.evaluation.score.label" not in by_name["agentlake.reward.latency"]
