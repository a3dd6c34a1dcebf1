"""The worker's dead letters read as retractions, straight from the processor's outputs."""

from __future__ import annotations

from agentlake.projections.retract import RETRACTED_REASONS, Retraction, retraction_of
from agentlake.schemas import codec
from agentlake.streams.processor import RewardProcessor
from tests.unit.test_processor import record_trajectory, run


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
