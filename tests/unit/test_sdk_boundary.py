"""Bad input at the SDK boundary: any text, any size, any number is recorded without
raising into the agent, as valid JSON, within the configured limits."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentlake._logging import RateLimitFilter
from agentlake.schemas import Payload, codec
from agentlake.schemas._bounds import MAX_ID_BYTES, bounded, capped_text, ident, to_json
from agentlake.sdk import KafkaEmitter, MemoryEmitter, SpillBuffer, Tracer
from agentlake.sdk._emitter import record_size
from agentlake.sdk._spill import SegmentClaim, count_quarantined, read_segment
from agentlake.settings import Settings

LIMIT = 512
SETTINGS = Settings(home="/tmp/agentlake-unit", max_payload_bytes=LIMIT)  # type: ignore[arg-type]

# every code point, lone surrogates included
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=3000)
json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | any_text
)
json_like = st.recursive(
    json_leaves,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(any_text, kids, max_size=5),
    max_leaves=20,
)


def strict_json(text: str) -> Any:
    """Parse like a strict (RFC 8259) parser: NaN / Infinity tokens are errors."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def record_everything(tracer: Tracer, text: str, value: Any) -> None:
    with tracer.trajectory(
        text, attributes={text: text, "n": 1, "f": float("nan")}, scenario_id=text, user_id=text
    ) as t:
        t.step("thought", text, cost_usd=float("inf"), tokens_in=2**70)
        with t.tool_call(text, text, value) as call:
            call.result(value, cost_usd=float("nan"))
        with t.tool_call("s", "t", {"x": math.nan, "y": math.inf}) as call:
            call.error(text, value, kind=text)
        t.end("success", final_answer=text, error=text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, value=json_like)
def test_any_text_and_value_is_recorded_as_valid_json_within_limits(text: str, value: Any) -> None:
    em = MemoryEmitter()
    tracer = Tracer("a", "1", emitter=em, settings=SETTINGS)
    record_everything(tracer, text, value)  # never raises
    assert tracer.unrecordable == 0
    evs = [codec().decode(v) for _, _, v in em.records]
    assert len(evs) == 7
    for ev in evs:
        for name, field in ev:
            if isinstance(field, str):
                assert utf8_ok(field), name
                limit = MAX_ID_BYTES if name not in ("task", "content", "final_answer", "error") else LIMIT
                assert len(field.encode()) <= limit, (name, len(field.encode()))
            if isinstance(field, float):
                assert math.isfinite(field), name
            if isinstance(field, Payload):
                assert len(field.json_.encode()) <= LIMIT
                if not field.truncated and not isinstance(field.value(), str):
                    strict_json(field.json_)
        body = json.dumps(ev.model_dump(mode="json"), allow_nan=False)  # what the sink stores
        strict_json(body)


def test_the_examples_from_the_issue_do_not_raise() -> None:
    em = MemoryEmitter()
    tracer = Tracer("a", "1", emitter=em, settings=SETTINGS)
    with tracer.trajectory("t") as t:
        with t.tool_call("s", "tool", {}) as call:
            call.result("ok \ud83d")
        t.step("message", "lone \udc00 surrogate")
        with t.tool_call("s", "tool", {}) as call:
            call.result({"x": float("nan"), "y": float("inf")})
    evs: list[Any] = [codec().decode(v) for _, _, v in em.records]
    assert evs[2].result.json_ == "ok \ufffd"
    assert evs[3].content == "lone \ufffd surrogate"
    assert strict_json(evs[5].result.json_) == {"x": None, "y": None}


def test_every_free_text_field_is_capped_and_marked() -> None:
    em = MemoryEmitter()
    tracer = Tracer("a", "1", emitter=em, settings=SETTINGS)
    big = "x" * 5_000_000
    with tracer.trajectory(big, attributes={f"k{i}": big for i in range(100)}) as t:
        t.step("thought", big)
        with t.tool_call("s", "tool", big) as call:
            call.error(big, big)
        t.end("failure", final_answer=big, error=big)
    evs: list[Any] = [codec().decode(v) for _, _, v in em.records]
    started, step, req, done, ended = evs
    assert len(started.task.encode()) <= LIMIT
    kept = len(started.task.removesuffix(" bytes]").rsplit("…[+", 1)[0])
    assert started.task.endswith(f"…[+{5_000_000 - kept} bytes]")
    assert sum(len(k) + len(str(v)) for k, v in started.attributes.items()) <= LIMIT + 30
    assert started.attributes["k0"].startswith("xxx") and started.attributes["agentlake.dropped"] == "99"
    assert step.content_truncated and len(step.content) == LIMIT
    assert req.arguments.truncated and req.arguments.size == 5_000_000
    assert len(done.error.encode()) <= LIMIT and done.result.truncated
    assert len(ended.final_answer.encode()) <= LIMIT and len(ended.error.encode()) <= LIMIT
    assert max(len(v) for _, _, v in em.records) < SETTINGS.max_event_bytes


def test_long_identifiers_stay_distinct() -> None:
    a, b = ident("id" * 1000 + "a"), ident("id" * 1000 + "b")
    assert a != b and len(a.encode()) <= MAX_ID_BYTES and len(b.encode()) <= MAX_ID_BYTES
    assert ident("short") == "short"


@given(text=any_text, limit=st.integers(min_value=16, max_value=400))
def test_capped_text_respects_the_limit(text: str, limit: int) -> None:
    out = capped_text(text, limit)
    assert utf8_ok(out) and len(out.encode()) <= limit


@given(value=json_like)
def test_to_json_is_strict_json_and_bounded_describes_the_whole(value: Any) -> None:
    text = to_json(value)
    if not isinstance(value, str):
        strict_json(text)
    p = bounded(value, 64)
    assert p["size"] == len(text.encode()) and len(p["json"].encode()) <= 64


def test_unserializable_values_become_their_repr() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert isinstance(strict_json(to_json(loop)), list | str)
    assert strict_json(to_json({(1, 2): {1, 2}})) == {"(1, 2)": [1, 2]}


# -- limits -------------------------------------------------------------------


def test_limits_must_leave_room_for_what_the_worker_derives() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="AGENTLAKE_MAX_MESSAGE_BYTES"):
        Settings(home="/tmp/x", max_payload_bytes=1024 * 1024)  # type: ignore[arg-type]
    s = Settings(home="/tmp/x")  # type: ignore[arg-type]
    assert s.max_event_bytes < s.max_message_bytes
    assert 4 * s.max_payload_bytes < s.max_event_bytes


# -- quarantine -----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_record_over_the_limit_is_quarantined_at_once_and_never_queued(tmp_path: Path) -> None:
    em = KafkaEmitter(
        f"127.0.0.1:{_closed_port()}", tmp_path, max_record_bytes=10_000, request_timeout_ms=300
    )
    fits = max(n for n in range(9000, 10_000) if record_size(("agent.steps", b"k", b"v" * n)) <= 10_000)
    try:
        em.emit("agent.steps", b"k", b"v" * fits)  # just under
        em.emit("agent.steps", b"k", b"v" * (fits + 1))  # just over
    finally:
        em.close(timeout=0.2)
    assert em.stats.quarantined == 1
    assert count_quarantined(tmp_path) == {"too_large": 1}
    assert SpillBuffer(tmp_path).count() == 1  # the other one waits for the broker


def test_keep_only_rewrites_a_segment_in_place(tmp_path: Path) -> None:
    buf = SpillBuffer(tmp_path)
    recs = [("t", b"k", bytes([i])) for i in range(5)]
    buf.append(recs)
    buf.seal()
    [seg] = buf.pending()
    with SegmentClaim(seg) as claim:
        assert claim is not None
        claim.keep_only(recs[3:])
    assert buf.pending() == [seg] and list(read_segment(seg)) == recs[3:]
    assert buf.quarantine(recs[:1], "MessageSizeTooLargeError") == 1
    assert buf.quarantined() == {"MessageSizeTooLargeError": 1}
    assert buf.pending() == [seg]  # quarantined records are not pending


def test_repeated_log_lines_are_rate_limited() -> None:
    f = RateLimitFilter(interval=0.3)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.client", logging.ERROR, __file__, 1, msg, None, None)

    passed = [f.filter(rec(f"Unable connect to node with id {i % 3}")) for i in range(500)]
    assert passed.count(True) == 1
    time.sleep(0.35)
    again = rec("Unable connect to node with id 1")
    assert f.filter(again) and "repeated 499 more times" in str(again.msg)
    assert f.filter(rec("something else"))
    # information is never dropped: e.g. a stream worker's assignments, one rebalance after another
    infos = [
        logging.LogRecord(
            "agentlake.streams", logging.INFO, __file__, 1, f"assigned partitions [{i}]", None, None
        )
        for i in range(3)
    ]
    assert all(f.filter(r) for r in infos)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.integers(min_value=16, max_value=(1024 * 1024 - 128 * 1024) // 4),
    char=st.sampled_from(["x", "é", "€", "😀", "\ud83d"]),
    factor=st.floats(min_value=0.5, max_value=3.0),
)
def test_the_largest_sdk_events_fit_the_limits_the_settings_allow(
    payload: int, char: str, factor: float
) -> None:
    """With any payload limit the settings accept, the largest events the SDK can build
    (every capped field at its cap) stay within the event limit."""
    s = Settings(home="/tmp/agentlake-unit", max_payload_bytes=payload)  # type: ignore[arg-type]
    text = char * int(payload * factor)
    em = MemoryEmitter()
    tracer = Tracer("a" * 999, "v" * 999, tenant="t" * 999, emitter=em, settings=s)
    with tracer.trajectory(text, attributes={f"k{i}": text for i in range(3)}, run_id=text) as t:
        t.step("thought", text)
        with t.tool_call(text, text, {"a": text}) as call:
            call.error(text, {"r": text}, kind=text)
        t.hold_end()
        t.end("failure", final_answer=text, error=text)
        t.release_end(checks={f"c{i}": True for i in range(10_000)}, verdict=text, attribution=text)
    assert len(em.records) == 5
    for _, key, value in em.records:
        assert record_size(("agent.trajectories", key, value)) <= s.max_event_bytes
