"""The engine: what is committed when, checkpoints, restore, timeouts, live scores, done markers."""

from __future__ import annotations

from typing import Any

from agentlake.schemas import RewardScored, codec
from agentlake.streams.engine import Engine
from agentlake.streams.processor import RewardProcessor
from tests.unit.test_processor import _with, record_trajectory


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def engine(clock: Clock, **kw: Any) -> Engine:
    return Engine(RewardProcessor(), "streams.checkpoints", clock=clock, **kw)


def feed(e: Engine, recs: list[tuple[str, bytes, bytes]], start: int = 0) -> list[Any]:
    return e.process([((t, 0), start + i, k, v) for i, (t, k, v) in enumerate(recs)])


def test_offsets_wait_for_the_checkpoint_of_open_trajectories() -> None:
    clock = Clock()
    e = engine(clock)
    recs = record_trajectory()
    e.process([(("agent.trajectories", 0), 0, recs[0][1], recs[0][2])])
    assert e.committable() == {("agent.trajectories", 0): 0}  # open and not checkpointed: hold
    outs = e.tick()
    assert outs == []  # not due yet
    clock.t += 1.5
    outs = e.tick()
    assert [o.topic for o in outs] == ["streams.checkpoints"] and outs[0].partition == 0
    assert e.committable() == {("agent.trajectories", 0): 1}


def test_a_finished_trajectory_leaves_a_done_marker_and_a_restore_makes_redelivery_idempotent() -> None:
    clock = Clock()
    e = engine(clock)
    recs = record_trajectory()
    outs = feed(e, recs)
    markers = [o for o in outs if o.topic == "streams.checkpoints"]
    assert len(markers) == 1 and not e.open
    e2 = engine(clock)
    e2.load(0, [(m.key, m.value) for m in markers])
    assert feed(e2, recs) == []  # re-delivered after a crash: nothing new
    # another event at a scored seq loses to the scored one, in the restored engine too
    for eng in (e, e2):
        [dl] = feed(eng, [(recs[2][0], recs[2][1], _with(recs[2][2], event_id="0" * 32))], start=50)
        assert dict(dl.headers)["reason"] == b"duplicate_seq" and dl.topic.endswith(".dlq")
    clock.t += 601
    tomb = e2.tick()
    assert [(o.topic, o.value) for o in tomb] == [("streams.checkpoints", None)]


def test_an_open_trajectory_is_restored_from_its_checkpoint() -> None:
    clock = Clock()
    e = engine(clock)
    recs = record_trajectory()
    feed(e, recs[:4])
    [ckpt] = [o for o in e.tick(force_checkpoint=True) if o.topic == "streams.checkpoints"]
    e2 = engine(clock)
    assert e2.load(0, [(ckpt.key, ckpt.value)]) == 1
    outs = feed(e2, recs[4:], start=4)
    [final] = [codec().decode(o.value) for o in outs if o.topic == "rewards.scored" and o.value]
    expected = [o for o in feed(engine(clock), recs) if o.topic == "rewards.scored"]
    assert isinstance(final, RewardScored) and final.is_final
    assert [o.value for o in outs if o.topic == "rewards.scored"] == [o.value for o in expected]


def test_idle_trajectories_time_out_and_live_scores_are_rate_limited() -> None:
    clock = Clock()
    e = engine(clock, idle_timeout_s=30, live_every_s=1.0)
    recs = record_trajectory()
    feed(e, recs[:3])  # start, plan step, tool request: never ended
    live = [o for o in e.tick() if o.topic == "rewards.scored"]
    assert len(live) == 1
    feed(e, recs[3:4], start=3)
    assert [o for o in e.tick() if o.topic == "rewards.scored"] == []  # within the interval
    clock.t += 31
    outs = e.tick()
    [final] = [codec().decode(o.value) for o in outs if o.topic == "rewards.scored"]
    assert isinstance(final, RewardScored) and final.is_final and final.outcome == "timeout"
    assert not e.open and e.stats.timeouts == 1


def test_out_of_order_offsets_never_commit_past_a_gap() -> None:
    clock = Clock()
    e = engine(clock, checkpoint_every_s=0)
    recs = record_trajectory()
    tp = ("agent.steps", 0)
    e.expect(tp, 10)
    e.process([(tp, 12, recs[1][1], recs[1][2])])  # prefetched before a rebalance
    e.tick()
    assert e.committable() == {}
    e.process([(tp, 10, recs[2][1], recs[2][2]), (tp, 11, recs[3][1], recs[3][2])])
    e.tick()
    assert e.committable() == {tp: 13}


def test_a_checkpoint_over_the_size_limit_is_not_sent_and_holds_the_watermark() -> None:
    """A very long open trajectory (its checkpoint grows with its steps) must never stall the worker
    on a record the broker refuses: it stays un-checkpointed and its events uncommitted until it ends."""
    clock = Clock()
    e = engine(clock, max_checkpoint_bytes=64)
    recs = record_trajectory()
    feed(e, recs[:4])
    outs = e.tick(force_checkpoint=True)
    assert [o for o in outs if o.topic == "streams.checkpoints"] == []
    held = e.committable()
    assert held[("agent.trajectories", 0)] == 0  # held at the trajectory's first event
    assert e.oversized
    outs = feed(e, recs[4:], start=4)  # it ends: final reward and done marker, watermark moves on
    assert any(o.topic == "streams.checkpoints" and o.value for o in outs)
    moved = e.committable()
    assert moved[("agent.trajectories", 0)] > 0
    assert all(moved[tp] >= off for tp, off in held.items() if tp in moved)
    assert not e.oversized


def test_a_done_marker_over_the_size_limit_keeps_the_digests_of_its_last_seqs() -> None:
    from tests.unit.test_fold import long_trajectory

    clock = Clock()
    recs = long_trajectory(100, [0.01], set())  # 302 events: 2.4 KB of digests
    e = engine(clock, max_checkpoint_bytes=1024)
    [marker] = [o for o in feed(e, recs) if o.topic == "streams.checkpoints"]
    assert marker.value is not None and len(marker.value) <= 1024
    e2 = engine(clock)
    e2.load(0, [(marker.key, marker.value)])
    kept = len(e2.done[marker.key.decode()][3]) // 8
    assert 50 < kept < len(recs)
    late, early = recs[len(recs) - kept], recs[len(recs) - kept - 1]
    [dl] = feed(e2, [(late[0], late[1], _with(late[2], event_id="0" * 32))], start=400)
    assert dict(dl.headers)["reason"] == b"duplicate_seq"
    assert feed(e2, [(early[0], early[1], _with(early[2], event_id="0" * 32))], start=401) == []


def test_a_long_open_trajectory_stays_under_the_checkpoint_limit_and_restores_to_the_same_reward() -> None:
    """12k events: the settled prefix is folded (to ~8 bytes per event: its event-id digest), so every
    checkpoint is written and commits follow."""
    from tests.unit.test_fold import long_trajectory

    clock = Clock()
    recs = long_trajectory(4000, [0.001, 0.25], {7, 1234})
    e = engine(clock, max_checkpoint_bytes=128 * 1024, checkpoint_every_s=0)
    last: Any = None
    for start in range(0, len(recs) - 1, 1000):
        feed(e, recs[start : min(start + 1000, len(recs) - 1)], start=start)
        clock.t += 1
        ckpts = [o for o in e.tick() if o.topic == "streams.checkpoints"]
        assert len(ckpts) == 1 and len(ckpts[0].value) < 9 * (start + 1000) + 16 * 1024
        last = ckpts[0]
        assert not e.oversized and not e.dirty
    assert e.committable()  # nothing holds the watermark
    e2 = engine(clock)
    assert e2.load(0, [(last.key, last.value)]) == 1
    outs = feed(e2, recs[-1:], start=len(recs) - 1)
    restored = [o.value for o in outs if o.topic == "rewards.scored"]
    uninterrupted = [o.value for o in feed(engine(clock), recs) if o.topic == "rewards.scored"]
    assert len(restored) == 1 and restored == uninterrupted
