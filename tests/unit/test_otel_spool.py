"""The OTLP endpoint's spool: accepted spans survive a crash and replay to the same trajectories."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentlake.otel import OtlpIngest, Span, Spool, SpoolLocked, TraceAssembler
from agentlake.otel import _spool as spool_mod
from agentlake.schemas import codec
from agentlake.sdk import MemoryEmitter
from agentlake.settings import Settings

PROTO = "application/x-protobuf"
T1, T2, T3 = "1" * 32, "2" * 32, "3" * 32
ROOT = "a" * 16


def sp(trace: str, sid: str, name: str, parent: str | None, start: int, end: int, **attrs: Any) -> Span:
    op = name.split(" ", 1)[0]
    return Span(trace, sid, parent, name, start, end, {"gen_ai.operation.name": op, **attrs}, {"svc": "x"})


def agent(trace: str) -> list[Span]:
    """A root invoke_agent, a chat and two tool calls; the root is last, as exporters send it."""
    return [
        sp(trace, "b" * 16, "chat m", ROOT, 1_100, 1_200, **{"gen_ai.usage.input_tokens": 7}),
        sp(trace, "c" * 16, "execute_tool get", ROOT, 1_300, 1_400, **{"gen_ai.tool.name": "get"}),
        sp(trace, "d" * 16, "execute_tool put", ROOT, 1_500, 1_600, **{"gen_ai.tool.call.result": "{}"}),
        sp(trace, ROOT, "invoke_agent bot", None, 1_000, 2_000, **{"gen_ai.agent.name": "bot"}),
    ]


def request(spans: list[Span]) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    ss = rs.scope_spans.add()
    for s in spans:
        p = ss.spans.add()
        p.trace_id, p.span_id = bytes.fromhex(s.trace_id), bytes.fromhex(s.span_id)
        if s.parent_span_id:
            p.parent_span_id = bytes.fromhex(s.parent_span_id)
        p.name, p.start_time_unix_nano, p.end_time_unix_nano = s.name, s.start_us * 1000, s.end_us * 1000
        for k, v in s.attributes.items():
            a = p.attributes.add()
            a.key = k
            if isinstance(v, int):
                a.value.int_value = v
            else:
                a.value.string_value = str(v)
    return bytes(req.SerializeToString())


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(home=tmp_path, **{"otel_end_grace_s": 0, **kw})


def crash(ing: OtlpIngest) -> None:
    """What `kill -9` leaves: the spool as written, nothing drained, no markers; the lock freed."""
    ing.spool.close()


def recover(folder: Path) -> tuple[list[tuple[int, list[Span]]], list[str]]:
    s = Spool(folder)
    try:
        return s.take_recovered()
    finally:
        s.close()


def segments(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.spool"))


# -- the spool on its own -----------------------------------------------------------


def test_spans_round_trip_with_their_arrival_time(tmp_path: Path) -> None:
    res = {"service.name": "svc", "host": "h1"}
    odd = Span(
        T1,
        "e" * 16,
        None,
        "chat \u00e9\ud800",  # a lone surrogate (possible from OTLP/JSON) survives
        5,
        9,
        {"f": 0.1, "big": 2**62, "b": True, "n": None, "l": [1, "x", {"k": [2.5]}], "u": "\u2028\u00fc"},
        res,
        True,
        "boom",
        [("exception", 7, {"exception.message": "bad"})],
    )
    other = Span(T1, "f" * 16, "e" * 16, "x", 6, 8, {}, res)
    s = Spool(tmp_path)
    s.append([odd, other], 123_456)
    s.append([sp(T2, ROOT, "invoke_agent b", None, 1, 2)], 123_999)
    s.close()
    (first, second), done = recover(tmp_path)
    assert first == (123_456, [odd, other]) and second[0] == 123_999 and done == []
    assert first[1][0].resource is first[1][1].resource  # a shared resource is stored once


def test_one_endpoint_per_spool(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    with pytest.raises(SpoolLocked, match="AGENTLAKE_OTEL_SPOOL_DIR"):
        Spool(tmp_path)
    s.close()
    Spool(tmp_path).close()


@pytest.mark.parametrize("tear", ["cut", "garbage", "flipped"])
def test_a_torn_last_record_is_skipped_and_what_follows_is_kept(tmp_path: Path, tear: str) -> None:
    s = Spool(tmp_path)
    s.append([sp(T1, ROOT, "invoke_agent a", None, 1, 2)], 10)
    s.append([sp(T2, ROOT, "invoke_agent b", None, 1, 2)], 20)
    s.close()
    (seg,) = list(tmp_path.glob("*.spool"))
    data = seg.read_bytes()
    if tear == "cut":
        seg.write_bytes(data[:-5])
    elif tear == "garbage":
        seg.write_bytes(data + b"\x00\x00\x01\x00\x00\x00\x00\x09{")
    else:
        seg.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    s2 = Spool(tmp_path)
    batches, _ = s2.take_recovered()
    expect = [10] if tear != "garbage" else [10, 20]
    assert [t for t, _ in batches] == expect
    s2.append([sp(T3, ROOT, "invoke_agent c", None, 1, 2)], 30)  # a new segment: the tear stays behind
    s2.close()
    batches, _ = recover(tmp_path)
    assert [t for t, _ in batches] == [*expect, 30]


def test_a_failed_write_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Spool(tmp_path)
    s.append([sp(T1, ROOT, "invoke_agent a", None, 1, 2)], 10)
    real_write = os.write
    calls: list[int] = []

    def half_then_full(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "write", half_then_full)
    with pytest.raises(OSError):
        s.append([sp(T2, ROOT, "invoke_agent b", None, 1, 2)], 20)
    monkeypatch.undo()
    s.append([sp(T3, ROOT, "invoke_agent c", None, 1, 2)], 30)
    s.close()
    batches, _ = recover(tmp_path)
    assert [t for t, _ in batches] == [10, 30]


def test_finished_traces_are_not_replayed_and_their_late_spans_start_afresh(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(agent(T1)[:2], 10)
    s.append(agent(T2), 11)
    s.finish([T1], 12)
    s.append(agent(T1)[2:], 13)  # after the marker: a new incarnation (the assembler forgot T1)
    s.close()
    batches, done = recover(tmp_path)
    assert [(t, [x.trace_id for x in spans]) for t, spans in batches] == [(11, [T2] * 4), (13, [T1] * 2)]
    assert done == []  # T1 has live spans again
    s = Spool(tmp_path)
    s.take_recovered()
    s.finish([T1, T2], 14)
    s.close()
    batches, done = recover(tmp_path)
    assert batches == [] and sorted(done) == [T1, T2]


def test_segments_rotate_and_the_oldest_go_once_their_traces_are_finished(tmp_path: Path) -> None:
    pad = {"gen_ai.output.messages": "x" * 5000}
    s = Spool(tmp_path, segment_bytes=4096)
    s.append([sp(T1, "b" * 16, "chat m", ROOT, 1, 2, **pad)], 1)  # segment 1 (then full)
    s.append([sp(T2, "b" * 16, "chat m", ROOT, 1, 2, **pad)], 2)  # segment 2
    s.append([sp(T3, "b" * 16, "chat m", ROOT, 1, 2, **pad)], 3)  # segment 3
    assert segments(tmp_path) == [f"{i:012d}.spool" for i in (1, 2, 3, 4)]
    s.finish([T2, T3], 4)
    # segment 2 is done but segment 1 (T1 open) is older: 2 and 3 stay, their markers with them
    assert len(segments(tmp_path)) == 4 and s.stats()["open_traces"] == 1
    s.finish([T1], 5)
    assert segments(tmp_path) == [f"{4:012d}.spool"]  # the segment being written stays
    s.close()
    batches, done = recover(tmp_path)
    assert batches == [] and sorted(done) == [T1, T2, T3]
    assert segments(tmp_path) == [f"{5:012d}.spool"]  # a spool with nothing open shrinks at start


def test_deleting_in_order_keeps_the_marker_older_spans_need(tmp_path: Path) -> None:
    pad = {"gen_ai.output.messages": "x" * 2000}
    s = Spool(tmp_path, segment_bytes=4096)
    s.append([sp(T1, "b" * 16, "chat m", ROOT, 1, 2, **pad)], 1)  # segment 1: T1 and T2
    s.append([sp(T2, "b" * 16, "chat m", ROOT, 1, 2, **pad)], 2)
    s.finish([T2], 3)  # segment 2: the marker of T2, and T3
    s.append([sp(T3, "c" * 16, "chat m", ROOT, 1, 2, **pad, more="y" * 3000)], 4)
    s.finish([T3], 5)  # segment 3
    # segment 2 has nothing open, but deleting it would lose the marker that cancels T2 in 1
    assert segments(tmp_path) == [f"{i:012d}.spool" for i in (1, 2, 3)]
    s.close()
    batches, done = recover(tmp_path)
    assert [x.trace_id for _, b in batches for x in b] == [T1] and sorted(done) == [T2, T3]


# -- the endpoint with its spool ----------------------------------------------------


def events_of(em: MemoryEmitter) -> list[tuple[str, bytes, bytes]]:
    return list(em.records)


def test_replay_after_a_crash_gives_the_same_events_as_no_crash(tmp_path: Path) -> None:
    spans = agent(T1)
    reference = TraceAssembler(end_grace_s=0, max_payload=Settings().max_payload_bytes)
    reference.add(spans, 0)
    (done,) = reference.due(1)
    c = codec()
    expected = [(t, T1.encode(), c.encode_record(r, d)) for r, t, d in done.events]

    first = OtlpIngest(settings(tmp_path), emitter=MemoryEmitter())
    assert first.accept(request(spans[:2]), PROTO, None)[0] == 200
    crash(first)
    em = MemoryEmitter()
    second = OtlpIngest(settings(tmp_path), emitter=em)
    assert second.health()["spans_replayed"] == 2 and second.assembler.pending == 1
    assert second.accept(request(spans[2:]), PROTO, None)[0] == 200
    assert second.tick(now_us=10**18) == 1
    assert events_of(em) == expected
    assert second.confirm() == 1
    second.close()
    third = OtlpIngest(settings(tmp_path), emitter=MemoryEmitter())
    assert third.assembler.pending == 0
    # a late span of the finished trace is refused after the restart too
    status, _, _ = third.accept(request([sp(T1, "9" * 16, "chat late", ROOT, 5, 6)]), PROTO, None)
    assert status == 200 and third.health()["spans_rejected"] == 1
    third.close()


def test_emitted_but_not_marked_is_emitted_again_identically(tmp_path: Path) -> None:
    em1 = MemoryEmitter()
    first = OtlpIngest(settings(tmp_path), emitter=em1)
    first.accept(request(agent(T1)), PROTO, None)
    assert first.tick(now_us=10**18) == 1
    crash(first)  # before the marker
    em2 = MemoryEmitter()
    second = OtlpIngest(settings(tmp_path), emitter=em2)
    assert second.tick(now_us=10**18) == 1
    assert events_of(em2) == events_of(em1)  # same event ids: absorbed downstream
    second.close()


def test_idle_timeout_counts_from_the_original_arrival(tmp_path: Path) -> None:
    s = settings(tmp_path, otel_idle_timeout_s=100)
    first = OtlpIngest(s, emitter=MemoryEmitter())
    t0 = time.time_ns() // 1000  # the arrival time is taken inside accept, between t0 and t1
    first.accept(request(agent(T1)[:2]), PROTO, None)  # no root: ends by idle timeout
    t1 = time.time_ns() // 1000
    crash(first)
    em = MemoryEmitter()
    second = OtlpIngest(s, emitter=em)
    assert second.tick(now_us=t0 + 100_000_000 - 1) == 0
    assert second.tick(now_us=t1 + 100_000_000) == 1
    record, ended = codec().decode_dict(em.records[-1][2])
    assert record == "TrajectoryEnded" and ended["outcome"] == "timeout"
    second.close()


def test_shutdown_emits_rooted_traces_and_keeps_rootless_ones_for_the_next_start(tmp_path: Path) -> None:
    s = settings(tmp_path, otel_end_grace_s=60)
    em = MemoryEmitter()
    first = OtlpIngest(s, emitter=em)
    first.accept(request(agent(T1)), PROTO, None)  # complete, within its grace period
    first.accept(request(agent(T2)[:2]), PROTO, None)  # still running
    first.close()
    assert {k for _, k, _ in em.records} == {T1.encode()}
    second = OtlpIngest(s, emitter=MemoryEmitter())
    assert second.assembler.pending == 1 and second.health()["spans_replayed"] == 2
    second.accept(request(agent(T2)[2:]), PROTO, None)
    (f,) = second.assembler.due(10**18)
    assert f.trajectory_id == T2 and [r for r, _, _ in f.events][-1] == "TrajectoryEnded"
    assert len(f.events) == 2 + 1 + 2 * 2  # start, chat, two tool calls, end
    second.close()


def test_a_spool_that_cannot_be_written_answers_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = OtlpIngest(settings(tmp_path), emitter=MemoryEmitter())

    def full(spans: list[Span], arrival_us: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ing.spool, "append", full)
    status, body, _ = ing.accept(request(agent(T1)), PROTO, None)
    assert status == 503 and b"cannot write the spool" in body and ing.health()["errors"] == {"503": 1}
    ing.close()


def test_the_spool_folder_is_a_setting(tmp_path: Path) -> None:
    s = settings(tmp_path / "home", otel_spool_dir=tmp_path / "elsewhere")
    ing = OtlpIngest(s, emitter=MemoryEmitter())
    ing.accept(request(agent(T1)[:1]), PROTO, None)
    ing.close()
    assert segments(tmp_path / "elsewhere") and not (tmp_path / "home" / "otel").exists()
    assert Settings(home=tmp_path).otel_spool_path == tmp_path / "otel" / "spool"
    doc = json.loads(json.dumps(ing.health()))
    assert doc["spool"]["open_traces"] == 1 and doc["spool"]["unmarked"] == 0


class _BrokerAway(MemoryEmitter):
    """An emitter whose flush fails until `back` is set (the broker is away)."""

    back = False

    def flush(self, timeout: float = 30.0) -> bool:
        return self.back


def test_a_trajectory_is_marked_finished_only_after_the_emitter_flushed(tmp_path: Path) -> None:
    em = _BrokerAway()
    ing = OtlpIngest(settings(tmp_path), emitter=em)
    ing.accept(request(agent(T1)), PROTO, None)
    assert ing.tick(now_us=10**18) == 1
    assert ing.confirm(0) == 0 and ing.health()["spool"]["unmarked"] == 1
    crash(ing)
    again = OtlpIngest(settings(tmp_path), emitter=em)  # not marked: replayed, emitted again
    assert again.tick(now_us=10**18) == 1 and em.records[:7] == em.records[7:]
    em.back = True
    assert again.confirm(0) == 1
    spool = again.health()["spool"]
    # the first process's segment went with the marker; the one being written stays
    assert (spool["segments"], spool["open_traces"], spool["unmarked"]) == (1, 0, 0)
    again.close()
    batches, done = recover(tmp_path / "otel" / "spool")
    assert batches == [] and done == [T1]


def test_the_app_marks_emitted_trajectories_finished_in_the_background(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from agentlake.otel import create_app

    s = settings(tmp_path)
    ing = OtlpIngest(s, emitter=MemoryEmitter())
    with TestClient(create_app(s, ing, tick_s=0.01)) as c:
        r = c.post("/v1/traces", content=request(agent(T1)), headers={"Content-Type": PROTO})
        assert r.status_code == 200
        for _ in range(500):
            health = c.get("/healthz").json()
            if health["spool"]["open_traces"] == 0:
                break
            time.sleep(0.01)
        assert health["trajectories"] == 1 and health["spool"]["unmarked"] == 0
        assert health["spool"]["open_traces"] == 0
    assert recover(s.otel_spool_path) == ([], [T1])  # closed with the app
