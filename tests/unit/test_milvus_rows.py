"""The Milvus projection's rows: every value the SDK allows fits, JSON is never cut, and a row
Milvus refuses is skipped, not fatal (milvus-lite file)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentlake import stack
from agentlake.projections.milvus import (
    REBUILD_HINT,
    TOOL_SEQUENCE_BYTES,
    LakeStore,
    TrajectoryIndex,
    collection_name,
    json_list,
    milvus_client,
    parse_list,
    refused_count,
    upsert_refusing,
    utf8_len,
    vector_index_params,
)
from agentlake.schemas import RewardScored
from agentlake.schemas._bounds import MAX_ID_BYTES, ident
from agentlake.settings import Settings


class TinyEmbedder:
    """Deterministic 4-d vectors (a hash of the text): the index, not the embedding, is tested."""

    name = "tiny"
    dim = 4

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [[(hash(t) >> s) % 97 + 1.0 for s in (0, 8, 16, 24)] for t in texts]
        return np.asarray(rows, dtype=np.float32)


def reward(trajectory_id: str, task: str = "Refund my broken order 12 please", **kw: Any) -> RewardScored:
    fields: dict[str, Any] = {
        "trajectory_id": trajectory_id,
        "tenant": "nu",
        "agent_id": "busy-bot",
        "agent_version": "1",
        "seq": 0,
        "is_final": True,
        "reward_spec": "s@1",
        "components": {},
        "weights": {},
        "metrics": {},
        "total": 1.0,
        "task": task,
        "outcome": "success",
        "tool_sequence": ["get_order", "refund_order"],
    }
    return RewardScored(**(fields | kw))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


def test_json_list_drops_whole_trailing_names_and_stays_valid() -> None:
    calls = ["get_order"] * 1000
    text = json_list(calls, TOOL_SEQUENCE_BYTES)
    assert utf8_len(text) <= TOOL_SEQUENCE_BYTES
    value = json.loads(text)
    kept = value[:-1]
    assert set(kept) == {"get_order"} and value[-1] == f"…(+{1000 - len(kept)} more)"
    assert len(kept) > 600  # as many whole names as fit, not a handful
    assert json_list(["a", "b"], 100) == '["a", "b"]'
    wide = json_list(["é" * 50] * 10, 300)  # bytes, not characters, count
    assert utf8_len(wide) <= 300 and json.loads(wide)[-1].startswith("…(+")


def test_parse_list_treats_an_old_cut_row_as_empty() -> None:
    cut = json.dumps(["get_order"] * 1000)[:8000]  # what older versions stored
    assert parse_list(cut) == [] and parse_list('{"a": 1}') == [] and parse_list(None) == []
    assert parse_list('["get_order", "refund_order"]') == ["get_order", "refund_order"]


def test_ids_up_to_the_sdk_cap_and_1000_calls_round_trip(settings: Settings) -> None:
    """The new user's `longid.py` (129 characters) and `manycalls.py` (1000 tool calls)."""
    index = TrajectoryIndex(settings, TinyEmbedder())
    ids = ["x" * 129, "x" * MAX_ID_BYTES, ident("é" * 400)]  # the last: the SDK's cap of a long one
    assert all(utf8_len(i) <= MAX_ID_BYTES for i in ids)
    many = reward("many", tool_sequence=["get_order"] * 1000, task="界" * 3000)
    assert index.upsert([reward(i) for i in ids] + [many]) == 4
    assert index.refused == 0 and refused_count(settings) == 0
    found = {n.trajectory_id: n for n in index.nearest("Refund my broken order 12 please", k=10)}
    assert set(ids) <= set(found)
    stored = index.client.get(index.collection, ids=["many"], output_fields=["task", "tool_sequence"])[0]
    assert utf8_len(stored["task"]) <= 4096 and stored["task"].endswith("bytes]")
    seq = parse_list(stored["tool_sequence"])
    assert seq[-1].startswith("…(+") and set(seq[:-1]) == {"get_order"}


SCALARS = ("agent_id", "agent_version", "tenant", "outcome", "run_id", "scenario_id")


def _old_collection(settings: Settings, id_length: int) -> str:
    """A trajectories collection as older versions created it (trajectory_id max_length=`id_length`)."""
    from pymilvus import DataType

    client, name = milvus_client(settings), collection_name(settings)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("trajectory_id", DataType.VARCHAR, is_primary=True, max_length=id_length)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=TinyEmbedder.dim)
    schema.add_field("task", DataType.VARCHAR, max_length=4096)
    for field in SCALARS:
        schema.add_field(field, DataType.VARCHAR, max_length=256)
    schema.add_field("success", DataType.BOOL)
    schema.add_field("reward", DataType.DOUBLE)
    schema.add_field("tool_sequence", DataType.VARCHAR, max_length=8192)
    schema.add_field("ended_us", DataType.INT64)
    client.create_collection(name, schema=schema, index_params=vector_index_params(client))
    client.insert(
        name,
        [
            {
                "trajectory_id": "old",
                "vector": [1.0, 2.0, 3.0, 4.0],
                "task": "Refund my broken order 12 please",
                **dict.fromkeys(SCALARS, "x"),
                "success": True,
                "reward": 1.0,
                "tool_sequence": json.dumps(["get_order"] * 1000)[:8000],  # cut JSON, as stored before
                "ended_us": 0,
            }
        ],
    )
    return name


def test_an_old_collection_warns_skips_long_ids_and_reads_old_rows(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _old_collection(settings, 128)
    with caplog.at_level(logging.WARNING, logger="agentlake.milvus"):
        index = TrajectoryIndex(settings, TinyEmbedder())
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "trajectory_id 128 < 256" in warned[0] and REBUILD_HINT in warned[0]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="agentlake.milvus"):
        written = index.upsert([reward("x" * 129), reward("short")])  # no exception: the sink goes on
    assert written == 1 and index.refused == 1 and refused_count(settings) == 1
    assert stack.worker_health(settings)["milvus_refused"] == 1  # what `agentlake status` shows
    assert any("x" * 129 in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    neighbours = {n.trajectory_id: n for n in index.nearest("Refund my broken order 12 please", k=10)}
    assert set(neighbours) == {"old", "short"}
    assert neighbours["old"].tool_sequence == []  # the cut row reads as empty, not a crash


def test_a_row_milvus_refuses_alone_is_skipped_and_the_rest_written(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Limits unknown to the caller: the batch is refused, then each row on its own."""
    name = _old_collection(settings, 128)
    client = milvus_client(settings)
    rows = [
        {**client.get(name, ids=["old"])[0], "trajectory_id": tid, "vector": [1.0, 2.0, 3.0, 4.0]}
        for tid in ("a", "y" * 200, "b")
    ]
    with caplog.at_level(logging.ERROR, logger="agentlake.milvus"):
        written, refused = upsert_refusing(client, name, rows, {}, "trajectory_id")
    assert (written, refused) == (2, ["y" * 200])
    assert {r["trajectory_id"] for r in client.get(name, ids=["a", "b"])} == {"a", "b"}


def test_lake_entries_are_skipped_whole_not_cut(tmp_path: Path) -> None:
    from agentlake.projections.milvus import open_client

    store = LakeStore(open_client(str(tmp_path / "lake.db")), dim=4)
    tenant, entry = "t" * MAX_ID_BYTES, "e" * MAX_ID_BYTES  # the SDK's longest tenant and id
    big = json.dumps({"task": "é" * 40_000})  # 80 kB of UTF-8: over the field, under 65,000 chars
    vec = [1.0, 2.0, 3.0, 4.0]
    written = store.upsert_entries([(tenant, entry, vec, '{"ok": 1}'), ("t", "big", vec, big)])
    assert written == 1 and store.refused == 1
    stored = [json.loads(j) for batch in store.scan_entries() for _, j in batch]
    assert stored == [{"ok": 1}]
