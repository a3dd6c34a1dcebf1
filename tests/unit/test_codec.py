"""The wire contract: single-object encoding, schema evolution, bounded payloads."""

from __future__ import annotations

import io
import json
from importlib import resources

import fastavro
import pytest

from agentlake.schemas import (
    EVENT_TYPES,
    AgentStep,
    DecodeError,
    Payload,
    ToolCallCompleted,
    TrajectoryStarted,
    codec,
)
from agentlake.schemas._codec import MAGIC

BASE = {"trajectory_id": "t1", "tenant": "acme", "agent_id": "bot", "agent_version": "1.0", "seq": 3}


def _value(t, named: dict, prims: dict):
    """A value for Avro type `t`, following named types defined earlier in the schema."""
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        return _value(non_null[0], named, prims) if non_null else None
    if isinstance(t, dict):
        if t["type"] == "record":
            named[t["name"]] = t
            return {f["name"]: _value(f["type"], named, prims) for f in t["fields"]}
        if t["type"] == "array":
            return [_value(t["items"], named, prims)]
        if t["type"] == "map":
            return {"k": _value(t["values"], named, prims)}
        if t["type"] == "enum":
            named[t["name"]] = t
            return t["symbols"][0]
        return _value(t["type"], named, prims)
    if t in named:
        return _value(named[t], named, prims)
    return prims[t]


PRIMS_A = {"string": "x", "long": 7, "int": 5, "double": 1.5, "float": 0.5, "boolean": True, "bytes": b"b"}
PRIMS_B = {"string": "s", "long": 11, "int": 2, "double": 2.5, "float": 0.25, "boolean": True, "bytes": b"b"}


def _sample(record: str) -> dict:
    """A value for every field of the newest schema of `record`, built from the schema itself."""
    return _value(codec().latest[record].raw, {}, PRIMS_A)


@pytest.mark.parametrize("record", sorted(EVENT_TYPES))
def test_every_event_round_trips_through_its_pydantic_mirror(record: str) -> None:
    c = codec()
    data = _sample(record)
    raw = c.encode_record(record, data, strict=True)
    assert raw[:2] == MAGIC
    assert raw[2:10] == c.latest[record].fingerprint
    ev = c.decode(raw)
    assert type(ev).__name__ == record
    # pydantic -> avro -> bytes -> pydantic is the identity
    assert c.decode(c.encode(ev)) == ev


def test_fast_and_strict_paths_produce_identical_bytes() -> None:
    c = codec()
    for record in EVENT_TYPES:
        data = _sample(record)
        assert c.encode_record(record, data) == c.encode_record(record, data, strict=True)


def test_fingerprint_is_the_crc64_of_the_canonical_form_little_endian() -> None:
    c = codec()
    v = c.latest["AgentStep"]
    canonical = fastavro.schema.to_parsing_canonical_form(v.parsed)
    # Avro spec's CRC-64-AVRO, computed here independently of fastavro
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in canonical.encode():
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    assert v.fingerprint == fp.to_bytes(8, "little")


def _committed_versions() -> list[tuple[str, int]]:
    folder = resources.files("agentlake.schemas") / "avro"
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".avsc"):
            record, _, rest = entry.name.partition(".v")
            out.append((record, int(rest.removesuffix(".avsc"))))
    return sorted(out)


def test_there_are_old_versions_to_evolve_from() -> None:
    versions = _committed_versions()
    assert ("TrajectoryStarted", 1) in versions and ("ToolCallCompleted", 1) in versions
    assert {r for r, _ in versions} >= set(EVENT_TYPES)


@pytest.mark.parametrize(("record", "version"), _committed_versions())
def test_every_committed_version_is_read_by_the_newest_schema(record: str, version: int) -> None:
    c = codec()
    old = c._version(record, version)

    data = _value(old.raw, {}, PRIMS_B)
    raw = c.encode_record(record, data, version=version, strict=True)
    name, decoded = c.decode_dict(raw)
    assert name == record
    newest_fields = {f["name"]: f for f in c.latest[record].raw["fields"]}
    for field_name, field in newest_fields.items():
        if field_name in data:
            assert decoded[field_name] == data[field_name], field_name
        else:  # added later: must have a default, which the reader fills in
            assert "default" in field, f"{record}.{field_name} was added without a default"
            assert decoded[field_name] == field["default"]
    # and the pydantic mirror accepts what an old writer wrote
    if record in EVENT_TYPES:
        assert type(c.decode(raw)).__name__ == record


def test_v1_tool_call_completed_decodes_with_v2_defaults() -> None:
    c = codec()
    data = _sample("ToolCallCompleted")
    v1_fields = {f["name"] for f in c._version("ToolCallCompleted", 1).raw["fields"]}
    raw = c.encode_record("ToolCallCompleted", {k: v for k, v in data.items() if k in v1_fields}, version=1)
    ev = c.decode(raw)
    assert isinstance(ev, ToolCallCompleted)
    assert ev.cost_usd is None and ev.error_kind is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\xc3", "too_short"),
        (b"\x00\x01" + b"\x00" * 12, "bad_magic"),
        (MAGIC + b"\xde\xad\xbe\xef\x00\x00\x00\x00" + b"\x02", "unknown_fingerprint"),
    ],
)
def test_malformed_bytes_give_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        codec().decode(raw)
    assert e.value.reason == reason


def test_a_truncated_body_is_a_schema_violation() -> None:
    c = codec()
    raw = c.encode(AgentStep(**BASE, kind="thought", content="hello world"))
    with pytest.raises(DecodeError) as e:
        c.decode(raw[:-5])
    assert e.value.reason == "schema_violation"
    with pytest.raises(DecodeError) as e:
        c.decode(raw + b"\x00\x00")
    assert e.value.reason == "schema_violation"


def test_strict_encoding_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="TrajectoryStarted"):
        codec().encode_record("TrajectoryStarted", {"trajectory_id": 5}, strict=True)


def test_payloads_are_bounded_with_size_and_hash_of_the_original() -> None:
    big = {"rows": ["é" * 100] * 1000}
    full = json.dumps(big, separators=(",", ":")).encode()
    p = Payload.of(big, 1000)
    assert p.truncated and len(p.json_.encode()) <= 1000
    assert p.size == len(full)
    import hashlib

    assert p.sha256 == hashlib.sha256(full).hexdigest()
    assert isinstance(p.value(), str)  # truncated: raw text, never half-parsed JSON
    small = Payload.of({"a": 1}, 1000)
    assert not small.truncated and small.value() == {"a": 1}


def test_a_giant_payload_travels_as_a_small_event() -> None:
    c = codec()
    ev = ToolCallCompleted(
        **BASE,
        call_id="c1",
        server_id="s",
        tool="t",
        is_error=False,
        latency_ms=1.0,
        result=Payload.of("x" * 5_000_000, 64 * 1024),
    )
    raw = c.encode(ev)
    assert len(raw) < 70 * 1024
    back = c.decode(raw)
    assert isinstance(back, ToolCallCompleted) and back.result is not None and back.result.truncated


def test_new_started_event_has_user_id() -> None:
    ev = TrajectoryStarted(**BASE, task="do it", user_id="u1")
    assert codec().decode(codec().encode(ev)) == ev


# -- forward compatibility: an older reader learns a newer writer's schema -----------


def _pairs() -> list[tuple[str, int, int]]:
    """(record, older reader version, newer writer version) for every committed pair."""
    by: dict[str, list[int]] = {}
    for r, v in _committed_versions():
        by.setdefault(r, []).append(v)
    return [(r, old, new) for r, vs in sorted(by.items()) for old in vs for new in vs if new > old]


def _registry() -> dict[bytes, bytes]:
    return {bytes.fromhex(k.decode()): v for k, v in codec().publishable()}


@pytest.mark.parametrize(("record", "old", "new"), _pairs())
def test_an_older_reader_decodes_every_newer_committed_version(record: str, old: int, new: int) -> None:
    from agentlake.schemas import Codec

    writer = codec()
    data = _value(writer._version(record, new).raw, {}, PRIMS_B)
    raw = writer.encode_record(record, data, version=new, strict=True)
    stale = Codec(max_versions={record: old})
    with pytest.raises(DecodeError) as e:
        stale.decode_dict(raw)
    assert e.value.reason == "unknown_fingerprint"  # what an older worker dead-letters today
    learning = Codec(max_versions={record: old}, lookup=_registry().get)
    name, decoded = learning.decode_dict(raw)
    assert name == record
    for f in learning.latest[record].raw["fields"]:
        assert decoded[f["name"]] == data[f["name"]], f["name"]
    assert set(decoded) == {f["name"] for f in learning.latest[record].raw["fields"]}
    if record in EVENT_TYPES:
        assert type(learning.decode(raw)).__name__ == record


def _future(record: str) -> dict:
    """The newest schema of `record` plus a field a future SDK might add (with a default)."""
    raw = json.loads(json.dumps(codec().latest[record].raw))
    raw["fields"].append({"name": "added_in_future", "type": ["null", "string"], "default": None})
    raw["fields"].append({"name": "future_count", "type": "long", "default": 0})
    return raw


@pytest.mark.parametrize("record", sorted(EVENT_TYPES))
def test_todays_reader_decodes_a_future_writer_through_the_schema_topic(record: str) -> None:
    from agentlake.schemas import Codec
    from agentlake.schemas._codec import parse_schema

    future = parse_schema(_future(record), record, 99)
    data = {**_sample(record), "added_in_future": "hello", "future_count": 3}
    buf = io.BytesIO()
    buf.write(MAGIC + future.fingerprint)
    fastavro.schemaless_writer(buf, future.parsed, data)
    registry = {future.fingerprint: json.dumps(future.raw).encode()}
    c = Codec(lookup=registry.get)
    ev = c.decode(buf.getvalue())
    assert type(ev).__name__ == record and ev.trajectory_id == data["trajectory_id"]
    assert not hasattr(ev, "added_in_future")  # unknown to this reader: skipped
    assert future.fingerprint in c.by_fingerprint  # learned once


def test_a_schema_whose_fingerprint_does_not_match_its_key_is_not_learned() -> None:
    from agentlake.schemas import Codec

    step = codec().latest["AgentStep"]
    data = _sample("AgentStep")
    raw = bytearray(codec().encode_record("AgentStep", data))
    raw[2:10] = b"\x01" * 8  # claims a fingerprint the registry maps to a different schema
    c = Codec(lookup={b"\x01" * 8: json.dumps(step.raw).encode()}.get)
    with pytest.raises(DecodeError) as e:
        c.decode(bytes(raw))
    assert e.value.reason == "unknown_fingerprint"
    with pytest.raises(ValueError, match="known record"):
        c.learn({"type": "record", "name": "Nope", "fields": []})
