"""Poison and bad input at every boundary, against the real stack (broker, worker, chdb).

Oversized and unencodable data from the SDK, records the broker refuses, every size
limit just under and just over, events from a newer SDK (forward compatibility and
`dlq redrive`), and the CLI's errors. Good trajectories are sent alongside; the last
test checks that the worker is alive, each of them is scored exactly once, and
nothing bad reached the projections.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentlake import stack
from agentlake.cli import read_dead_letters
from agentlake.consumers import Projector
from agentlake.schemas import codec, new_id, new_span_id, new_trace_id, now_us
from agentlake.sdk import KafkaEmitter, MemoryEmitter, SpillBuffer, Tracer
from agentlake.sdk._emitter import record_size
from agentlake.sdk._spill import count_quarantined
from agentlake.settings import Settings
from tests.integration.helpers import project_until_final, sql

# every good trajectory sent by this module, and markers of what must never be projected
GOOD: dict[str, list[str]] = {}
BAD_KEYS: list[str] = []


def strict_json(text: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentlake", *args],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **(env or {})},
        cwd=cwd,
    )


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envelope(trajectory_id: str, seq: int) -> dict[str, Any]:
    return {
        "event_id": new_id(),
        "trajectory_id": trajectory_id,
        "tenant": "default",
        "agent_id": "bad-input",
        "agent_version": "1",
        "seq": seq,
        "ts_us": now_us(),
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "parent_span_id": None,
    }


def three_events(trajectory_id: str, run_id: str, step: bytes | None = None) -> list[tuple[str, bytes]]:
    """(topic, value) of a started / step / ended trajectory written with today's codec;
    `step` replaces the middle event."""
    c = codec()
    started = c.encode_record(
        "TrajectoryStarted",
        {
            **envelope(trajectory_id, 0),
            "task": "three events",
            "user_id": None,
            "scenario_id": None,
            "run_id": run_id,
            "trial": None,
            "seed": None,
            "expected_tool_calls": None,
            "attributes": {},
        },
    )
    mid = step or c.encode_record("AgentStep", step_fields(trajectory_id, 1, "hello"))
    ended = c.encode_record(
        "TrajectoryEnded",
        {
            **envelope(trajectory_id, 2),
            "outcome": "success",
            "final_answer": "ok",
            "error": None,
            "tokens_in": None,
            "tokens_out": None,
            "cost_usd": None,
            "checks": {},
            "attribution": None,
            "verdict": None,
        },
    )
    return [("agent.trajectories", started), ("agent.steps", mid), ("agent.trajectories", ended)]


def step_fields(trajectory_id: str, seq: int, content: str) -> dict[str, Any]:
    return {
        **envelope(trajectory_id, seq),
        "kind": "thought",
        "content": content,
        "content_truncated": False,
        "tokens_in": None,
        "tokens_out": None,
        "cost_usd": None,
    }


async def produce(s: Settings, records: list[tuple[str, bytes, bytes]], **kw: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all", **kw)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(s.topic(topic), value, key=key)
    finally:
        await producer.stop()


async def dead_letter_with(s: Settings, topic: str, key: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for row in await read_dead_letters(s, f"{topic}.dlq", 100_000, timeout=5):
            if row["key"] == key:
                return row
        await asyncio.sleep(0.5)
    raise AssertionError(f"no dead letter with key {key} on {topic}.dlq")


# -- oversized and unencodable data through the whole chain ---------------------------

any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=2000)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text, kids, max_size=4),
    max_leaves=12,
)


async def test_oversized_and_unencodable_data_is_recorded_capped_and_valid(
    settings: Settings, projector: Projector
) -> None:
    run_id = f"bad-data-{uuid.uuid4().hex[:8]}"
    tracer = Tracer("bad-input", "1", settings=settings)
    ids: list[str] = []
    big = "x" * 5_000_000
    noise = os.urandom(750_000).hex()  # incompressible, 1.5 MB
    for task in (big, noise):
        with tracer.trajectory(task, run_id=run_id, attributes={"a": big, "b": noise}) as t:
            t.step("thought", noise)
            with t.tool_call("s", "t", {"blob": noise}) as call:
                call.result(big)
            t.end("failure", final_answer=noise, error=big)
        ids.append(t.trajectory_id)
    with tracer.trajectory("unencodable", run_id=run_id) as t:  # the examples
        with t.tool_call("s", "t", {}) as call:
            call.result("ok \ud83d")
        t.step("message", "lone \udc00 surrogate", cost_usd=float("nan"))
        with t.tool_call("s", "t", {}) as call:
            call.result({"x": float("nan"), "y": float("inf")})
    ids.append(t.trajectory_id)

    @hsettings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=any_text, value=json_like)
    def record(text: str, value: Any) -> None:
        with tracer.trajectory(text, run_id=run_id, attributes={text: text}) as tr:
            tr.step("thought", text)
            with tr.tool_call(text, text, value) as c:
                c.result(value)
            tr.end("success", final_answer=text)
        ids.append(tr.trajectory_id)

    record()  # never raises into the agent
    assert tracer.unrecordable == 0
    assert await asyncio.to_thread(tracer.flush, 60)
    tracer.close(5)
    emitter = tracer.emitter
    assert isinstance(emitter, KafkaEmitter) and emitter.stats.quarantined == 0
    GOOD[run_id] = ids
    assert await project_until_final(projector, run_id, len(ids)) == len(ids)
    rows = sql(projector, "SELECT body FROM events FINAL WHERE trajectory_id IN {ids:Array(String)}", ids=ids)
    assert len(rows) >= 4 * len(ids)
    for r in rows:
        body = strict_json(r["body"])  # valid JSON, no NaN / Infinity
        assert len(r["body"]) < settings.max_event_bytes
        for key in ("result", "arguments"):
            payload = body.get(key)
            if payload and not payload["truncated"]:
                try:
                    json.loads(payload["json"])
                except ValueError:
                    continue  # a text result is stored as the text itself
                strict_json(payload["json"])
    [step] = sql(
        projector,
        "SELECT content FROM steps FINAL WHERE trajectory_id = {t:String} AND kind = 'message'",
        t=ids[2],
    )
    assert step["content"] == "lone \ufffd surrogate"


# -- records the broker refuses ---------------------------------------------------------


async def test_a_record_the_broker_refuses_is_quarantined_and_blocks_nothing_behind_it(
    settings: Settings, projector: Projector, tmp_path: Path
) -> None:
    """A spill dir shared by processes holds an incompressible record larger than the
    topic takes, then good events: the next process to drain it quarantines the one
    and delivers the others."""
    run_id = f"poison-{uuid.uuid4().hex[:8]}"
    spill = tmp_path / "shared-spill"
    mem = MemoryEmitter()
    tracer = Tracer("bad-input", "1", emitter=mem, settings=settings)
    ids = []
    for i in range(3):
        with tracer.trajectory(f"behind the poison {i}", run_id=run_id) as t:
            t.step("thought", "x")
            t.step("message", "y")
            t.step("final", "z")
        ids.append(t.trajectory_id)
    GOOD[run_id] = ids
    poison_key = f"poison-{uuid.uuid4().hex[:6]}"
    BAD_KEYS.append(poison_key)
    writer = SpillBuffer(spill)  # as written by an agent process, before the broker was reachable
    writer.append(
        [(settings.topic("agent.steps"), poison_key.encode(), os.urandom(settings.max_message_bytes))]
    )
    writer.append(mem.records[:7])
    writer.seal()
    SpillBuffer(spill).append(mem.records[7:])  # a second process, its segment behind the first
    # a producer configured to let it through: the broker must be the one to refuse it
    drain = KafkaEmitter(
        settings.bootstrap_servers, spill, max_record_bytes=4 << 20, max_request_size=4 << 20
    )
    try:
        assert await asyncio.to_thread(drain.flush, 60), drain.stats
    finally:
        drain.close(5)
    assert drain.stats.quarantined == 1 and drain.stats.acked == len(mem.records)
    [(reason, n)] = count_quarantined(spill).items()
    assert n == 1 and "TooLarge" in reason
    assert SpillBuffer(spill).count() == 0
    assert await project_until_final(projector, run_id, 3) == 3


# -- every limit, just under and just over ----------------------------------------------


async def test_every_size_limit_just_under_and_just_over(settings: Settings, projector: Projector) -> None:
    run_id = f"limits-{uuid.uuid4().hex[:8]}"
    # SDK: a well-formed event just under the SDK's limit is delivered and scored
    tid = uuid.uuid4().hex
    c = codec()
    room = settings.max_event_bytes
    base = record_size(("agent.steps", tid.encode(), c.encode_record("AgentStep", step_fields(tid, 1, ""))))
    content = os.urandom(room).hex()[: (room - base - 64) * 255 // 256]
    step = c.encode_record("AgentStep", step_fields(tid, 1, content))
    assert record_size(("agent.steps", tid.encode(), step)) <= room
    over = c.encode_record("AgentStep", step_fields(tid, 1, content + "x" * (room - base)))
    emitter = KafkaEmitter(
        settings.bootstrap_servers,
        settings.spill_dir / "limits",
        max_record_bytes=settings.max_event_bytes,
        max_request_size=settings.max_message_bytes,
    )
    try:
        for topic, value in three_events(tid, run_id, step):
            emitter.emit(settings.topic(topic), tid.encode(), value)
        emitter.emit(settings.topic("agent.steps"), tid.encode(), over)  # just over: set aside
        assert await asyncio.to_thread(emitter.flush, 60)
    finally:
        emitter.close(5)
    assert emitter.stats.quarantined == 1 and emitter.stats.acked == 3
    GOOD[run_id] = [tid]

    # broker: a trajectory topic takes a batch of exactly max_event_bytes, not one byte more
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    key = f"garbage-{uuid.uuid4().hex[:6]}"
    BAD_KEYS.append(key)
    limit = settings.max_event_bytes
    n = limit - 200
    while DefaultRecordBatchBuilder.estimate_size_in_bytes(key.encode(), b"g" * (n + 1), []) <= limit:
        n += 1
    await produce(settings, [("agent.steps", key.encode(), b"g" * n)], max_request_size=4 << 20)
    with pytest.raises(KafkaError) as refused:
        await produce(settings, [("agent.steps", key.encode(), b"g" * (limit + 1))], max_request_size=4 << 20)
    assert "TooLarge" in type(refused.value).__name__
    # the worker dead-letters the largest accepted record whole: its dead letter fits
    row = await dead_letter_with(settings, "agent.steps", key)
    assert row["reason"] == "bad_magic" and row["bytes"] == n
    # other topics take the broker's message.max.bytes
    big_key = f"big-{uuid.uuid4().hex[:6]}"
    await produce(
        settings, [("agent.steps.dlq", big_key.encode(), b"d" * (limit + 1))], max_request_size=4 << 20
    )
    with pytest.raises(KafkaError):
        await produce(
            settings,
            [("agent.steps.dlq", big_key.encode(), b"d" * (settings.max_message_bytes + 1))],
            max_request_size=4 << 20,
        )
    assert await project_until_final(projector, run_id, 1) == 1


# -- schema evolution: events from a newer SDK ------------------------------------------


def future_step_schema() -> Any:
    from agentlake.schemas._codec import parse_schema

    raw = json.loads(json.dumps(codec().latest["AgentStep"].raw))
    raw["fields"].append({"name": "mood", "type": "string", "default": "calm"})
    return parse_schema(raw, "AgentStep", 99)


def encode_future(schema: Any, data: dict[str, Any]) -> bytes:
    import io

    import fastavro

    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + schema.fingerprint)
    fastavro.schemaless_writer(buf, schema.parsed, data)
    return buf.getvalue()


# -- well-formed but wrong: the worker's stateful rules, followed by the sink ---------------


async def test_well_formed_but_wrong_events_are_dead_lettered_and_never_stay_projected(
    settings: Settings, projector: Projector
) -> None:
    """after_end (after the score, far ahead, and before the end) and duplicate_seq (sent before
    the winner, after the score, and more than 4,096 seqs behind): the worker dead-letters each,
    and what the sink had projected of them is retracted, aggregated tables included
    (tool_calls, trajectories), while the event the reward was computed from keeps its rows."""
    run_id = f"wrong-{uuid.uuid4().hex[:8]}"
    c = codec()

    def trajectory(thoughts: int = 0) -> list[Any]:
        em = MemoryEmitter()
        tracer = Tracer("bad-input", "1", emitter=em, settings=settings)
        with tracer.trajectory("wrong but well-formed", run_id=run_id, expected_tool_calls=1) as t:
            t.step("plan", "go")
            with t.tool_call("shop", "get_order", {"order_id": 7}) as call:
                call.result({"order_id": 7})
            for i in range(thoughts):
                t.step("thought", f"thinking {i}")
            t.step("final", "done")
            t.end("success")
        return [c.decode(v) for _, _, v in em.records]

    def records(events: list[Any]) -> list[tuple[str, bytes, bytes]]:
        return [(e.topic, e.trajectory_id.encode(), c.encode(e)) for e in events]

    late, gap, dup, early = trajectory(), trajectory(), trajectory(), trajectory()
    # verdicts that can never come due (no such partition, no event) must not hold the real ones
    bogus = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await bogus.start()
    try:
        for value, position in ((c.encode(late[1]), b"99:5"), (b"garbage", b"0:1"), (b"", b"x")):
            await bogus.send_and_wait(
                settings.topic("agent.steps.dlq"),
                value,
                key=b"no-such-trajectory",
                headers=[
                    ("reason", b"after_end"),
                    ("source_topic", settings.topic("agent.steps").encode()),
                    ("source_position", position),
                ],
            )
    finally:
        await bogus.stop()
    assert [e.record for e in late][2] == "ToolCallRequested" and late[-1].seq == 5
    # late: a tool call far past the end of an already scored trajectory
    await produce(settings, records(late))
    assert await project_until_final(projector, run_id, 1) >= 1
    late_call = late[2].model_copy(update={"event_id": new_id(), "seq": 40, "call_id": "late-call"})
    # scored: another step at seq 1 of that scored trajectory, with a smaller event id than the
    # scored one (the tables would prefer it): the scored one wins
    scored_dup = late[1].model_copy(update={"event_id": "0" * 31 + "1", "content": "rewritten"})
    # gap: a step far ahead of the contiguous prefix of an open trajectory (after_end once it ends)
    far = gap[1].model_copy(update={"event_id": new_id(), "seq": 50_000})
    # dup: a second request at seq 2 that loses (largest event id), sent before the original
    loser = dup[2].model_copy(update={"event_id": "f" * 32, "call_id": "dup-call"})
    # early: a step past the end seq that arrives before the end
    past = early[1].model_copy(update={"event_id": new_id(), "seq": 9})
    await produce(
        settings,
        records([late_call, scored_dup])
        + records([gap[0], far, *gap[1:]])
        + records([dup[0], dup[1], loser, *dup[2:]])
        + records([early[0], past, *early[1:]]),
    )
    tids = [x[0].trajectory_id for x in (late, gap, dup, early)]
    expected = [
        ("agent.tool_calls", "after_end"),
        ("agent.steps", "after_end"),  # held in the fold until the end at 5 arrives
        ("agent.tool_calls", "duplicate_seq"),
        ("agent.steps", "after_end"),
    ]
    for tid, (topic, reason) in zip(tids, expected, strict=True):
        assert (await dead_letter_with(settings, topic, tid))["reason"] == reason
    assert (await dead_letter_with(settings, "agent.steps", tids[0]))["reason"] == "duplicate_seq"
    # far behind: another step at seq 1 of a trajectory once 4,200 later seqs have arrived
    long = trajectory(thoughts=4200)
    far_dup = long[1].model_copy(update={"event_id": "0" * 31 + "2", "content": "rewritten"})
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(settings.topic(topic), value, key=key)
            for topic, key, value in records([*long[:-1], far_dup, long[-1]])
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    long_tid = long[0].trajectory_id
    GOOD[run_id] = [*tids, long_tid]
    assert (await dead_letter_with(settings, "agent.steps", long_tid))["reason"] == "duplicate_seq"
    wrong_ids = [late_call.event_id, far.event_id, loser.event_id, past.event_id, scored_dup.event_id]
    wrong_ids.append(far_dup.event_id)
    kept = {tids[0]: late[1].event_id, long_tid: long[1].event_id}  # the scored events at seq 1

    async def clean() -> bool:
        rows = await asyncio.to_thread(
            sql,
            projector,
            "SELECT (SELECT count() FROM events WHERE event_id IN {w:Array(String)}) AS events, "
            "(SELECT count() FROM steps WHERE event_id IN {w:Array(String)}) AS steps, "
            "(SELECT count() FROM tool_calls WHERE call_id IN ('late-call', 'dup-call') "
            "  AND trajectory_id IN {t:Array(String)}) AS calls, "
            "(SELECT count() FROM rewards FINAL WHERE is_final = 1 AND run_id = {r:String}) AS finals, "
            "(SELECT count() FROM events FINAL WHERE trajectory_id IN {t:Array(String)}) AS projected",
            w=wrong_ids,
            t=[*tids, long_tid],
            r=run_id,
        )
        seen.update(rows[0])
        return rows[0] == {"events": 0, "steps": 0, "calls": 0, "finals": 5, "projected": 4 * 6 + len(long)}

    seen: dict[str, int] = {}

    if not await projector.run_until(clean, timeout=180):
        left = sql(
            projector,
            "SELECT trajectory_id, seq, event_id FROM events WHERE event_id IN {w:Array(String)}",
            w=wrong_ids,
        )
        raise AssertionError(
            f"not clean: {seen}; wrong events left {left}; retracted {projector.stats.retracted}"
        )
    assert projector.stats.retracted >= 1
    # another sink replaying the topics from the start into the same store (as a sink that
    # crashed before committing does) does not bring a retracted event back
    other = Projector(settings, milvus=False, group_id=f"replay-{run_id}")
    await other.start()
    try:
        await other.catch_up(timeout=120)
    finally:
        await other.stop()
    assert await clean(), seen
    # what remains is each trajectory's own six events, and the aggregates agree with them
    per = sql(
        projector,
        "SELECT trajectory_id, groupArray(seq) AS seqs FROM events FINAL "
        "WHERE trajectory_id IN {t:Array(String)} GROUP BY trajectory_id",
        t=tids,
    )
    assert {r["trajectory_id"]: sorted(r["seqs"]) for r in per} == {t: [0, 1, 2, 3, 4, 5] for t in tids}
    for table in ("events", "steps"):  # the scored event at seq 1, not the later one with a smaller id
        rows = sql(
            projector,
            f"SELECT trajectory_id, event_id FROM {table} FINAL "
            "WHERE trajectory_id IN {t:Array(String)} AND seq = 1",
            t=list(kept),
        )
        assert {r["trajectory_id"]: r["event_id"] for r in rows} == kept, table
    assert len(
        sql(projector, "SELECT seq FROM events FINAL WHERE trajectory_id = {t:String}", t=long_tid)
    ) == len(long)
    calls = sql(
        projector,
        "SELECT trajectory_id, count() AS n, any(request_seq) AS rq, any(complete_seq) AS cq "
        "FROM tool_calls FINAL WHERE trajectory_id IN {t:Array(String)} GROUP BY trajectory_id",
        t=tids,
    )
    assert sorted((r["n"], r["rq"], r["cq"]) for r in calls) == [(1, 2, 3)] * 4
    ends = sql(
        projector,
        "SELECT end_seq, outcome FROM trajectories FINAL WHERE trajectory_id IN {t:Array(String)}",
        t=tids,
    )
    assert [(r["end_seq"], r["outcome"]) for r in ends] == [(5, "success")] * 4


async def test_an_older_worker_does_not_lose_a_newer_sdks_events(
    settings: Settings, projector: Projector
) -> None:
    from agentlake.schema_registry import install, uninstall

    install(lambda: settings)  # this process's sink, like every `agentlake` process
    try:
        await _newer_sdk_events(settings, projector)
    finally:
        uninstall()


async def _newer_sdk_events(settings: Settings, projector: Projector) -> None:
    run_id = f"evolve-{uuid.uuid4().hex[:8]}"
    future = future_step_schema()
    # 1. the newer SDK's event arrives before its schema was announced: dead-lettered
    early = uuid.uuid4().hex
    step = encode_future(future, {**step_fields(early, 1, "from the future"), "mood": "bold"})
    await produce(settings, [(t, early.encode(), v) for t, v in three_events(early, run_id, step)])
    row = await dead_letter_with(settings, "agent.steps", early)
    assert row["reason"] == "unknown_fingerprint"
    # 2. the newer SDK announces its schema (as KafkaEmitter does when it connects)
    await produce(
        settings,
        [("registry.schemas", future.fingerprint.hex().encode(), json.dumps(future.raw).encode())],
    )
    # 3. events written after the announcement are read directly
    late = uuid.uuid4().hex
    step = encode_future(future, {**step_fields(late, 1, "announced"), "mood": "bold"})
    await produce(settings, [(t, late.encode(), v) for t, v in three_events(late, run_id, step)])
    # 4. and the dead-lettered one is re-driven
    r = await asyncio.to_thread(cli, "dlq", "redrive", "--topic", "agent.steps", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["redriven"] >= 1 and res["by_reason"].get("unknown_fingerprint", 0) >= 1
    again = await asyncio.to_thread(cli, "dlq", "redrive", "--topic", "agent.steps", "--json")
    assert json.loads(again.stdout)["redriven"] == 0  # each dead letter is re-driven once
    GOOD[run_id] = [early, late]
    assert await project_until_final(projector, run_id, 2) == 2
    rows = sql(
        projector,
        "SELECT trajectory_id, content FROM steps FINAL WHERE trajectory_id IN {ids:Array(String)}",
        ids=[early, late],
    )
    assert sorted(r["content"] for r in rows) == ["announced", "from the future"]


# -- operations and CLI -----------------------------------------------------------------


def test_cli_user_errors_are_one_line_with_exit_2(settings: Settings, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def store(name: str) -> dict[str, str]:  # chdb: one process per data dir, so one each
        (tmp_path / name).mkdir()
        return {"AGENTLAKE_HOME": str(tmp_path / name)}

    down = {"AGENTLAKE_KAFKA_PORT": str(closed_port()), **store("down")}
    absent = tmp_path / "absent"
    # (arguments, environment, what the one line must say): independent, so run side by side
    cases: list[tuple[tuple[str, ...], dict[str, str] | None, tuple[str, ...]]] = [
        (("dlq", "--topic", "agent.stepz"), None, ("unknown topic 'agent.stepz'",)),
        (("dlq", "--topic", "agent.steps"), down, ("Kafka", "agentlake up")),
        (("sql", "SELECT 1"), down, ("Kafka",)),
        (("sql", "SELEC 1", "--no-catch-up"), store("a"), ("syntax error in the query", "position 7")),
        (("sql", "CREATE TABLE t (a Int8) ENGINE=Memory", "--no-catch-up"), store("b"), ("only reads",)),
        (
            ("status",),
            {"AGENTLAKE_MAX_PAYLOAD_BYTES": "1000000"},
            ("AGENTLAKE_MAX_MESSAGE_BYTES", "AGENTLAKE_MAX_PAYLOAD_BYTES"),
        ),
        (("sql", "SELECT 1"), {"AGENTLAKE_HOME": str(absent)}, ("no AgentLake data dir",)),
    ]
    with ThreadPoolExecutor(4) as pool:
        debug = pool.submit(cli, "--debug", "dlq", "--topic", "agent.stepz")
        empty = pool.submit(cli, "sql", "SELECT 1 AS x WHERE 0", "--no-catch-up", env=store("e"))
        runs = list(pool.map(lambda c: cli(*c[0], env=c[1]), cases))
    for (args, _, expected), r in zip(cases, runs, strict=True):
        line = one_line(r)
        assert all(x in line for x in expected), (args, line)
    assert not absent.exists()  # a read command never creates a store
    assert debug.result().returncode != 0 and "Traceback" in debug.result().stderr
    assert empty.result().returncode == 0 and empty.result().stdout.strip() == "0 rows"


async def test_sql_catches_up_in_its_own_store_and_takes_nothing_from_another(
    settings: Settings, projector: Projector, tmp_path: Path
) -> None:
    """A second store (another data dir) projects the log for itself, with its own consumer
    group: it takes nothing away from the store the session's sink writes."""
    tracer = Tracer("bad-input", "1", settings=settings)
    with tracer.trajectory("seen by both stores") as t:
        t.step("thought", "x")
    assert await asyncio.to_thread(tracer.flush, 30)
    tracer.close(5)
    other = tmp_path / "second-store"
    other.mkdir()
    env = {"AGENTLAKE_HOME": str(other)}
    count = f"SELECT count() AS n FROM events WHERE trajectory_id = '{t.trajectory_id}'"
    r = await asyncio.to_thread(cli, "sql", count, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["n"] == 3  # caught up by default
    assert Settings(home=other).sink_group != settings.sink_group  # type: ignore[arg-type]
    assert (other / "store-id").read_text() != (settings.data_dir / "store-id").read_text()
    # the session's store still gets every event of that trajectory
    assert await _project_until_rows(projector, t.trajectory_id, 3) == 3


def test_status_from_another_folder_finds_the_stack(settings: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAKE_HOME"}
    r = subprocess.run(
        [sys.executable, "-m", "agentlake", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["home"] == str(settings.data_dir)
    assert info["broker_pid"] and info["streams_pid"] and info["streams"] == "running"
    assert isinstance(info["streams_lag"], int)
    # this store's sink lag is a count even before a long-running sink commits anything
    assert isinstance(info["sink_lag"], int) and info["sink_lag"] >= 0


async def _project_until_rows(p: Projector, trajectory_id: str, n: int) -> int:
    q = "SELECT count() AS n FROM events FINAL WHERE trajectory_id = {t:String}"

    async def done() -> bool:
        return int(sql(p, q, t=trajectory_id)[0]["n"]) >= n

    await p.run_until(done, timeout=60)
    return int(sql(p, q, t=trajectory_id)[0]["n"])


# -- after the whole suite ---------------------------------------------------------------


async def test_after_the_bad_input_the_worker_is_alive_and_only_good_data_is_projected(
    settings: Settings, projector: Projector
) -> None:
    info = await asyncio.to_thread(stack.status, settings)
    assert info["streams"] == "running", info
    ids = [t for run in GOOD.values() for t in run]
    assert len(GOOD) >= 4 and ids
    for run_id, run in GOOD.items():
        assert await project_until_final(projector, run_id, len(run)) == len(run)
    finals = sql(
        projector,
        "SELECT trajectory_id, count() AS n, uniqExact(event_id) AS ids FROM rewards "
        "WHERE is_final = 1 AND trajectory_id IN {ids:Array(String)} GROUP BY trajectory_id",
        ids=ids,
    )
    assert {r["trajectory_id"] for r in finals} == set(ids)
    assert all(r["ids"] == 1 for r in finals), [r for r in finals if r["ids"] != 1][:5]  # scored once
    bad = sql(
        projector,
        "SELECT count() AS n FROM events WHERE trajectory_id IN {k:Array(String)}",
        k=BAD_KEYS,
    )
    assert bad[0]["n"] == 0
    bodies = sql(
        projector, "SELECT body FROM events FINAL WHERE trajectory_id IN {ids:Array(String)}", ids=ids
    )
    for r in bodies:
        strict_json(r["body"])
