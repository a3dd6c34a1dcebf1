"""The worker's dead letters read as retractions, straight from the processor's outputs."""

from __future__ import annotations

from pathlib import Path

from agentlake.projections.retract import RETRACTED_REASONS, Retraction, retraction_of
from agentlake.schemas import codec
from agentlake.streams.processor import RewardProcessor
from tests.unit._child import last_json_line
from tests.unit.test_processor import record_trajectory, run

ROOT = Path(__file__).resolve().parents[2]


def _with(value: bytes, **changes: object) -> bytes:
    c = codec()
    return c.encode(c.decode(value).model_copy(update=changes))


def dead_letters(records: list[tuple[str, bytes, bytes]]) -> list[Retraction | None]:
    _, outputs = run(RewardProcessor(live_scores=False), records)
    c = codec()
    return [retraction_of(o.key, o.value, o.headers, c) for o in outputs if o.topic.endswith(".dlq")]


def test_a_step_past_the_end_is_retracted_with_its_source_position() -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    late = (topic, key, _with(value, seq=40, event_id="a" * 32))
    [r] = dead_letters([*recs, late])
    assert r == Retraction(key.decode(), "a" * 32, "after_end", topic, 0, len(recs))


def test_a_displaced_event_is_retracted_by_its_event_id_header() -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    early = (topic, key, _with(value, seq=len(recs) + 3, event_id="e" * 32))
    [r] = dead_letters([early, *recs])  # accepted first, taken out when the end arrives
    assert r is not None
    assert (r.event_id, r.reason, r.trajectory_id) == ("e" * 32, "after_end", key.decode())
    assert (r.source_topic, r.source_partition, r.source_offset) == (topic, 0, 0)


def test_the_loser_of_a_duplicate_seq_is_retracted_whichever_arrives_first() -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    loser = (topic, key, _with(value, event_id="f" * 32, content="other"))
    for order in ([recs[1], loser], [loser, recs[1]]):
        [r] = dead_letters([recs[0], *order, *recs[2:]])
        assert r is not None and (r.event_id, r.reason) == ("f" * 32, "duplicate_seq")


def test_dead_letters_of_records_never_projected_retract_nothing() -> None:
    recs = record_trajectory()
    topic, key, value = recs[1]
    bad = [
        (topic, key, b"not avro"),  # bad_magic
        (topic, b"another-trajectory", value),  # key_mismatch: the sink never projects it
    ]
    assert dead_letters([recs[0], *bad, *recs[1:]]) == [None, None]
    assert {"after_end", "seq_gap", "duplicate_seq"} == RETRACTED_REASONS


def test_headers_without_a_position_still_retract() -> None:
    c = codec()
    _, key, value = record_trajectory()[1]
    r = retraction_of(key, value, [("reason", b"seq_gap")], c)
    assert r is not None and (r.source_topic, r.source_partition, r.source_offset) == ("", -1, -1)
    assert retraction_of(b"t", b"", [("reason", b"after_end")], c) is None  # no event id at all


def test_a_verdict_whose_key_is_not_its_events_trajectory_retracts_nothing() -> None:
    """Only the worker writes these topics, and it keeps the event's own key: a record that
    names another trajectory is not a verdict (it could otherwise take out any event)."""
    c = codec()
    value = record_trajectory()[1][2]
    headers = [("reason", b"after_end"), ("source_position", b"0:1")]
    assert retraction_of(b"someone-else", value, headers, c) is None
    assert retraction_of(None, value, headers, c) is None
    own = c.decode(value).trajectory_id.encode()
    assert retraction_of(own, value, headers, c) is not None


_MERGED_AWAY = """
import json, sys
from agentlake.projections.clickhouse import ClickHouseWriter, connect, query
from agentlake.projections.retract import Retraction, retract
from agentlake.schemas import codec
from agentlake.settings import Settings
from tests.unit.test_processor import record_trajectory

c = codec()
recs = [c.decode(v) for _, _, v in record_trajectory()]
folded = recs[1].model_copy(update={"event_id": "9" * 32})  # the worker folded this one
late = recs[1].model_copy(update={"event_id": "0" * 32, "content": "late"})  # smaller id, arrives late
client = connect(Settings(home=sys.argv[1]))
w = ClickHouseWriter(client)
w.write([(e, e.topic, 0, i) for i, e in enumerate([recs[0], folded, *recs[2:]])], "first")
w.write([(late, late.topic, 0, 99)], "late")
for table in ("events", "steps"):  # the merge that used to leave only the smaller id
    client.command(f"OPTIMIZE TABLE {table} FINAL")
before = query(client, "SELECT event_id FROM events FINAL WHERE seq = 1")
retract(client, [Retraction(late.trajectory_id, late.event_id, "duplicate_seq")])
out = {
    t: [r["event_id"] for r in query(client, f"SELECT event_id FROM {t} FINAL WHERE seq = 1")]
    for t in ("events", "steps")
}
out["before"] = sorted(r["event_id"] for r in before)
out["seqs"] = [r["seq"] for r in query(client, "SELECT seq FROM events FINAL ORDER BY seq")]
out["n"] = len(recs)
print(json.dumps(out))
"""


def test_the_folded_event_keeps_its_rows_when_a_late_smaller_duplicate_is_retracted(tmp_path: Path) -> None:
    """A duplicate with the smaller event id, losing only because its seq was folded (or scored):
    both rows stay until the verdict, whatever ClickHouse merges, so retracting it leaves the
    folded event's rows (chdb: one data dir per process, hence the subprocess)."""
    got = last_json_line(_MERGED_AWAY, str(tmp_path))
    assert got["before"] == ["0" * 32, "9" * 32]  # a merge keeps both until the verdict
    assert got["events"] == ["9" * 32] and got["steps"] == ["9" * 32]
    assert got["seqs"] == list(range(got["n"]))  # one row per seq again
