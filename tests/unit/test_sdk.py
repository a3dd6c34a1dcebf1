"""The SDK without a broker: event shapes, MCP recording, the durable spill buffer."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mcp import Client

from agentlake.schemas import (
    AgentStep,
    ToolCallCompleted,
    ToolCallRequested,
    TrajectoryEnded,
    TrajectoryStarted,
    codec,
)
from agentlake.sdk import KafkaEmitter, MemoryEmitter, SpillBuffer, TracedSession, Tracer
from agentlake.sdk._spill import SegmentClaim, read_segment
from agentlake.settings import Settings
from agentlake.sim.reference import shop_server, shop_state

SETTINGS = Settings(home="/tmp/agentlake-unit", max_payload_bytes=256)  # type: ignore[arg-type]


def decoded(em: MemoryEmitter) -> list:
    return [codec().decode(v) for _, _, v in em.records]


def test_sync_trajectory_records_every_event_in_order() -> None:
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", tenant="acme", emitter=em, settings=SETTINGS)
    with tracer.trajectory("refund 5", user_id="u-1") as t:
        t.step("thought", "check first")
        with t.tool_call("shop", "get_order", {"order_id": 5}) as call:
            call.result({"status": "delivered", "blob": "x" * 10_000})
        t.end("success", final_answer="ok")
    evs = decoded(em)
    assert [type(e) for e in evs] == [
        TrajectoryStarted,
        AgentStep,
        ToolCallRequested,
        ToolCallCompleted,
        TrajectoryEnded,
    ]
    assert [e.seq for e in evs] == [0, 1, 2, 3, 4]
    assert len({e.trajectory_id for e in evs}) == 1 and all(
        k == evs[0].trajectory_id.encode() for _, k, _ in em.records
    )
    assert len({e.trace_id for e in evs}) == 1 and len(evs[0].trace_id) == 32
    assert evs[2].span_id == evs[3].span_id and evs[2].parent_span_id == evs[0].span_id
    assert evs[3].result.truncated and evs[3].result.size > 10_000  # bounded payload
    assert evs[0].user_id == "u-1" and evs[4].outcome == "success"
    assert [t for t, _, _ in em.records] == [
        "agent.trajectories",
        "agent.steps",
        "agent.tool_calls",
        "agent.tool_calls",
        "agent.trajectories",
    ]


def test_an_exception_ends_the_trajectory_with_error() -> None:
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    with pytest.raises(RuntimeError), tracer.trajectory("x") as t, t.tool_call("s", "t", {}):
        raise RuntimeError("agent crashed")
    evs = decoded(em)
    assert isinstance(evs[-2], ToolCallCompleted) and evs[-2].is_error
    assert (
        isinstance(evs[-1], TrajectoryEnded)
        and evs[-1].outcome == "error"
        and "agent crashed" in (evs[-1].error or "")
    )


async def test_async_api_and_mcp_wrapper_record_real_tools_calls() -> None:
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    state = shop_state(seed=1, ensure={5: "delivered"})
    async with Client(shop_server(state)) as client, tracer.trajectory("refund 5") as t:
        shop = TracedSession(client, t, "shop")
        ok = await shop.call_tool("refund_order", {"order_id": 5})
        bad = await shop.call_tool("refund_order", {"order_id": "five"})
        missing = await shop.call_tool("get_order", {"order_id": 9999})
        t.end("success")
    assert not ok.is_error and bad.is_error and missing.is_error
    assert state["orders"]["5"]["status"] == "refunded"
    done = [e for e in decoded(em) if isinstance(e, ToolCallCompleted)]
    assert [(d.is_error, d.error_kind) for d in done] == [
        (False, None),
        (True, "invalid_arguments"),
        (True, "tool_error"),
    ]
    reqs = [e for e in decoded(em) if isinstance(e, ToolCallRequested)]
    assert reqs[1].arguments.value() == {"order_id": "five"}


def test_spill_buffer_is_durable_and_stops_at_a_torn_tail(tmp_path: Path) -> None:
    buf = SpillBuffer(tmp_path)
    recs = [("t", f"k{i}".encode(), bytes([i]) * i) for i in range(50)]
    assert buf.append(recs) == 50
    assert buf.count() == 50
    buf.seal()
    [seg] = buf.pending()
    assert list(read_segment(seg)) == recs
    with open(seg, "ab") as f:  # a crash mid-write leaves half a record
        f.write(b"\x00\x01\x02")
    assert list(read_segment(seg)) == recs
    with SegmentClaim(seg) as claim:
        assert claim is not None
        with SegmentClaim(seg) as other:
            assert other is None  # someone else is draining it
        claim.done()
    assert buf.pending() == [] and buf.count() == 0


def test_a_crashed_writers_open_segment_is_recovered(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001-999-1.seg.open").write_bytes(b"")
    buf = SpillBuffer(tmp_path)
    other = SpillBuffer(tmp_path)
    other.append([("t", b"k", b"v")])
    pending = buf.pending()
    # the dead writer's segment is sealed; the live writer's (locked) one is not
    assert [p.name for p in pending] == ["00000000000000000001-999-1.seg"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_with_no_broker_events_are_spilled_to_disk_not_lost(tmp_path: Path) -> None:
    em = KafkaEmitter(f"127.0.0.1:{_closed_port()}", tmp_path, request_timeout_ms=1000)
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    for i in range(20):
        with tracer.trajectory(f"task {i}") as t:
            t.end("success")
    assert em.flush(timeout=1.5) is False  # nothing can be acknowledged
    em.close(timeout=0.5)
    assert em.stats.emitted == 40
    assert SpillBuffer(tmp_path).count() == 40
    assert em.stats.acked == 0


def test_close_does_not_wait_out_its_timeout_once_everything_is_on_disk_and_kafka_is_down(
    tmp_path: Path,
) -> None:
    """A script whose broker is down used to hang in `close()` for its whole timeout (30 s)."""
    import threading

    em = KafkaEmitter(f"127.0.0.1:{_closed_port()}", tmp_path, request_timeout_ms=1000)
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    for i in range(3):
        with tracer.trajectory(f"task {i}") as t:
            t.end("success")
    closer = threading.Thread(target=em.close, kwargs={"timeout": 600}, daemon=True)
    closer.start()
    closer.join(120)  # waiting out the 600 s timeout would leave it alive here
    assert not closer.is_alive()
    assert SpillBuffer(tmp_path).count() == 6 and em.stats.acked == 0  # nothing lost


def test_negative_counts_and_costs_are_recorded_as_null_and_counted_never_raised() -> None:
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", emitter=em, settings=SETTINGS)
    with tracer.trajectory("refund 5", expected_tool_calls=-1) as t:
        t.step("thought", "a", tokens_in=100000)
        t.step("thought", "b", tokens_out=-100000, cost_usd=-5.0)
        t.step("thought", "c", tokens_in=0, cost_usd=0.0)  # zero is a real value
        t.step("thought", "d", tokens_in=float("nan"), cost_usd=float("nan"))
        with t.tool_call("shop", "get_order", {"order_id": 5}) as call:
            call.result({}, cost_usd=-0.5)
        t.end("success", tokens_in=-1, tokens_out=7, cost_usd=-1e-9)
    started, a, b, c, d, _, done, end = decoded(em)
    assert started.expected_tool_calls is None
    assert a.tokens_in == 100000
    assert b.tokens_out is None and b.cost_usd is None
    assert c.tokens_in == 0 and c.cost_usd == 0.0
    assert d.tokens_in is None and d.cost_usd is None
    assert done.cost_usd is None and done.latency_ms >= 0
    assert end.tokens_in is None and end.tokens_out == 7 and end.cost_usd is None
    assert tracer.invalid_values == 8 and tracer.unrecordable == 0


@pytest.mark.parametrize(
    ("args", "name"),
    [(("", "", ""), "agent_id"), (("bot", " ", "acme"), "agent_version"), (("bot", "1.0", ""), "tenant")],
)
def test_an_empty_agent_identity_is_refused_at_construction(args: tuple[str, str, str], name: str) -> None:
    with pytest.raises(ValueError, match=f"^Tracer: {name} must be a non-empty string"):
        Tracer(*args, emitter=MemoryEmitter(), settings=SETTINGS)
