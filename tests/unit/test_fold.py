"""The fold of a trajectory's settled prefix: same reward bytes however and whenever it folds."""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentlake.schemas import codec
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.streams import state
from agentlake.streams.fold import exact_add, seq_digests
from agentlake.streams.processor import Output, RewardProcessor, TrajState
from tests.unit.test_processor import SETTINGS, _with, finals

Rec = tuple[str, bytes, bytes]
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
tiny = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e-300, max_value=1e-300)


@given(st.lists(st.one_of(finite, tiny, st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 2.0**-60]))), st.data())
def test_exact_partials_give_fsum_of_all_values(values: list[float], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(values)))
    parts: list[float] = []
    for x in values[:split]:
        exact_add(parts, x)
    assert len(parts) <= 45
    rest = values[split:]
    assert math.fsum([*parts, *rest]).hex() == math.fsum(values).hex()


def test_exact_partials_keep_non_finite_values_once() -> None:
    parts: list[float] = []
    for x in [1.0, math.inf, math.inf, 2.0, math.nan, math.nan]:
        exact_add(parts, x)
    assert sorted(p for p in parts if math.isfinite(p)) == [3.0]
    assert sum(1 for p in parts if p == math.inf) == 1 and sum(1 for p in parts if p != p) == 1


def long_trajectory(rounds: int, costs: list[float], errors: set[int], tools: int = 3) -> list[Rec]:
    """start, then per round a step (with a cost) and a tool call (some repeated, some failing), end."""
    em = MemoryEmitter()
    tracer = Tracer("bot", "1.0", tenant="acme", emitter=em, settings=SETTINGS)
    with tracer.trajectory("a long one", expected_tool_calls=2, run_id="r1") as t:
        for i in range(rounds):
            t.step("thought", f"step {i}", tokens_in=i, tokens_out=1, cost_usd=costs[i % len(costs)])
            with t.tool_call("shop", f"tool_{i % tools}", {"order": i % 4}) as call:
                if i in errors:
                    call.error("boom", kind="invalid_arguments")
                else:
                    call.result({"ok": i}, cost_usd=costs[(i + 1) % len(costs)])
        t.end("success", final_answer="done", cost_usd=0.1)
    return em.records


def shuffle_within(recs: list[Rec], window: int, rng: random.Random) -> list[Rec]:
    """Each record moves at most about `window` places; some are delivered twice."""
    keyed = sorted(range(len(recs)), key=lambda i: i + rng.uniform(0, window))
    out = [recs[i] for i in keyed]
    for _ in range(len(recs) // 5):
        i = rng.randrange(len(out))
        out.insert(min(len(out), i + rng.randrange(0, 3 * window + 1)), out[i])
    return out


def fold_run(
    proc: RewardProcessor, recs: list[Rec], checkpoint_every: int = 0
) -> tuple[list[bytes], list[Any]]:
    """Final reward bytes and dead letters; with `checkpoint_every`, the state goes through a checkpoint
    round trip that often (as a restart would)."""
    s: TrajState | None = None
    outs: list[Any] = []
    for i, (t, k, v) in enumerate(recs):
        res = proc.process(s, t, k, v, f"0:{i}")
        s = res.state
        outs.extend(res.outputs)
        if res.finished:
            break
        if checkpoint_every and s is not None and i % checkpoint_every == 0:
            s, _, _ = state.decode(state.encode_open(s, 0))
    return [o.value for o in outs if o.topic == "rewards.scored"], [
        o for o in outs if o.topic.endswith(".dlq")
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds=st.integers(1, 40),
    costs=st.lists(st.one_of(finite, st.sampled_from([0.1, 0.2, 1e-9, 3.3e-7])), min_size=1, max_size=5),
    errors=st.sets(st.integers(0, 40), max_size=5),
    seed=st.integers(0, 2**32),
    window=st.integers(0, 8),
)
def test_final_reward_bytes_do_not_depend_on_folding_or_arrival_order(
    rounds: int, costs: list[float], errors: set[int], seed: int, window: int
) -> None:
    recs = long_trajectory(rounds, costs, errors)
    rng = random.Random(seed)
    delivered = shuffle_within(recs, window, rng)
    never, _ = fold_run(RewardProcessor(live_scores=False, fold_lag=None), recs)
    assert len(never) == 1
    # the exactly rounded sum of every reported cost and latency, in any order
    evs = [codec().decode(v) for _, _, v in recs]
    spent = [c for e in evs if (c := getattr(e, "cost_usd", None)) is not None]
    [final] = finals([Output("rewards.scored", None, never[0])])
    assert final.metrics["cost_usd"] == math.fsum(reversed(spent))
    lat = [float(e.latency_ms) for e in evs if e.record == "ToolCallCompleted"]
    assert final.metrics["tool_latency_ms"] == math.fsum(lat)
    for lag in (None, 0, 1, 5):
        for every in (0, 3):
            proc = RewardProcessor(
                live_scores=False,
                fold_lag=lag,
            )
            rewards, dead = fold_run(proc, delivered, checkpoint_every=every)
            assert rewards == never, (lag, every)
            assert dead == []


def competitor(rec: Rec, event_id: str) -> Rec:
    """Another event at `rec`'s seq: a new event id and, where the record has one, other content."""
    t, k, v = rec
    ev = codec().decode(v)
    update: dict[str, Any] = {"event_id": event_id}
    for name, other in (("tokens_in", 1000), ("latency_ms", 777.0), ("outcome", "failure")):
        if hasattr(ev, name):
            update[name] = other
    return t, k, _with(v, **update)


def seq_and_id(value: bytes) -> tuple[int, str]:
    ev = codec().decode(value)
    return ev.seq, ev.event_id


Verdict = tuple[int, str, str]  # (delivery index, event id, reason)


def run_all(
    proc: RewardProcessor, recs: list[Rec], checkpoint_every: int = 0
) -> tuple[list[bytes], list[Verdict], int]:
    """Deliver every record: to the open state until the trajectory is scored, then against its done
    marker (through an encode/read round trip, as a restart would). Returns the reward bytes, the dead
    letters and the index of the record that finished the trajectory (-1: none)."""
    s: TrajState | None = None
    done: tuple[int, bytes] | None = None
    rewards: list[bytes] = []
    dead: list[Verdict] = []
    finished = -1
    for i, (t, k, v) in enumerate(recs):
        if done is None:
            res = proc.process(s, t, k, v, f"0:{i}")
        else:
            res = proc.process(None, t, k, v, f"0:{i}", done_end_seq=done[0], done_ids=done[1])
        for o in res.outputs:
            if o.topic == "rewards.scored":
                rewards.append(o.value)
            elif o.topic.endswith(".dlq"):
                h = dict(o.headers)
                eid = h["event_id"].decode() if "event_id" in h else seq_and_id(o.value)[1]
                dead.append((i, eid, h["reason"].decode()))
        s = res.state
        if res.finished:
            assert s is not None and s.end_seq is not None and done is None
            finished, end = i, s.end_seq
            marker = state.encode_done(s.tid, end, 0, seq_digests(s.fold, s.entries, end))
            done, s = state.read(marker)[1], None
        elif checkpoint_every and s is not None and i % checkpoint_every == 0:
            s, _, _ = state.decode(state.encode_open(s, 0))
    return rewards, dead, finished


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds=st.integers(1, 25),
    seed=st.integers(0, 2**32),
    window=st.integers(0, 8),
    early=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("0123456789abcdef")), max_size=6),
    late=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("0123456789abcdef")), max_size=6),
)
def test_duplicates_at_any_seq_get_the_same_verdicts_however_they_arrive_and_whenever_the_fold_runs(
    rounds: int,
    seed: int,
    window: int,
    early: list[tuple[int, str]],
    late: list[tuple[int, str]],
) -> None:
    """Competitors (another event id and content at an existing seq) arrive among the events, while
    the trajectory is open, and after it was scored; originals are re-delivered at random.

    - Every seq keeps exactly one event: every other event id delivered there is dead-lettered, and
      the final reward is the fold of the kept events (the same bytes as scoring them alone).
    - Never folded (``fold_lag=None``), the kept event is the smallest id delivered before scoring,
      whatever the order; folded, the first one folded stays.
    - After scoring every verdict is fixed: ``duplicate_seq`` at a scored seq, ``after_end`` past the
      end, nothing for a re-delivery; the same for every order, fold lag and checkpoint round trip.
    """
    recs = long_trajectory(rounds, [0.01, 0.5], {1})
    n, rng = len(recs), random.Random(seed)
    mixed = list(recs)
    for j, (q, first) in enumerate(early):
        mixed.insert(rng.randrange(len(mixed) + 1), competitor(recs[q % n], f"{first}{j:031x}"))
    after = [competitor(recs[q % n], f"{first}{100 + j:031x}") for j, (q, first) in enumerate(late)]
    after += [recs[rng.randrange(n)] for _ in range(3)]  # re-deliveries of scored events
    t, k, v = recs[1]
    after.append((t, k, _with(v, seq=n, event_id="f" * 32)))  # past the end
    rng.shuffle(after)

    # a re-delivered original loses if a competitor won its seq earlier: covered by "one per seq"
    expected = {(f"{c}{100 + j:031x}", "duplicate_seq") for j, (_, c) in enumerate(late)} | {
        ("f" * 32, "after_end")
    }
    fixed = {eid for eid, _ in expected}
    for order in range(2):
        delivered = shuffle_within(mixed, window, random.Random(seed + order)) + after
        by_seq: dict[int, set[str]] = {}
        for _, _, v in delivered:
            q, eid = seq_and_id(v)
            by_seq.setdefault(q, set()).add(eid)
        for lag in (None, 0, 1, 5):
            for every in (0, 3):
                rewards, dead, finished = run_all(
                    RewardProcessor(live_scores=False, fold_lag=lag), delivered, every
                )
                assert finished >= 0 and len(rewards) == 1, (lag, every)
                lost = {eid for _, eid, _ in dead}
                kept = {q: ids - lost for q, ids in by_seq.items() if q < n}
                assert all(len(ids) == 1 for ids in kept.values()), kept
                assert {r for _, _, r in dead} <= {"duplicate_seq", "after_end"}
                winners = {(q, eid) for q, ids in kept.items() for eid in ids}
                alone = sorted(
                    (r for r in delivered if seq_and_id(r[2]) in winners), key=lambda r: seq_and_id(r[2])
                )
                alone = list({seq_and_id(r[2]): r for r in alone}.values())
                assert fold_run(RewardProcessor(live_scores=False, fold_lag=None), alone)[0] == rewards
                if lag is None:
                    before: dict[int, set[str]] = {}
                    for _, _, v in delivered[: finished + 1]:
                        q, eid = seq_and_id(v)
                        before.setdefault(q, set()).add(eid)
                    assert all(kept[q] == {min(ids)} for q, ids in before.items()), (kept, before)
                verdicts = {
                    (eid, r) for i, eid, r in dead if i >= len(delivered) - len(after) and eid in fixed
                }
                assert verdicts == expected, (order, lag, every)


def test_a_folded_prefix_keeps_the_checkpoint_small_and_the_reward_unchanged() -> None:
    recs = long_trajectory(700, [0.001, 0.1], {5, 17})
    small = RewardProcessor(live_scores=False)
    big = RewardProcessor(live_scores=False, fold_lag=None)
    s1 = s2 = None
    for i, (t, k, v) in enumerate(recs[:-1]):
        s1 = small.process(s1, t, k, v, f"0:{i}").state
        s2 = big.process(s2, t, k, v, f"0:{i}").state
    assert s1 is not None and s2 is not None
    assert len(s1.entries) <= 2 * 64 + 1 and s1.fold.upto >= len(recs) - 1 - 2 * 64
    c1, c2 = state.encode_open(s1, 0), state.encode_open(s2, 0)
    assert len(c1) * 5 < len(c2)
    t, k, v = recs[-1]
    end1 = small.process(state.decode(c1)[0], t, k, v, "0:end")
    end2 = big.process(s2, t, k, v, "0:end")
    assert end1.finished and end2.finished
    assert [o.value for o in end1.outputs] == [o.value for o in end2.outputs]


def test_redelivery_of_a_folded_seq_is_a_noop_and_another_event_there_is_a_duplicate() -> None:
    recs = long_trajectory(2100, [0.01], set())  # 6,302 events: more than the old 4,096-seq window
    proc = RewardProcessor(live_scores=False, fold_lag=0)
    s = None
    for i, (t, k, v) in enumerate(recs[:-1]):
        s = proc.process(s, t, k, v, f"0:{i}").state
    assert s is not None and not s.entries and s.fold.upto == len(recs) - 1
    s = state.decode(state.encode_open(s, 0))[0]  # a restart in between
    assert s is not None and len(s.fold.ids) == 8 * s.fold.upto
    for q in (len(recs) - 5, 2, 0):  # near the frontier, far behind it, the start
        t, k, v = recs[q]
        assert proc.process(s, t, k, v, "0:again").outputs == []
        res = proc.process(s, t, k, _with(v, event_id="0" * 32), "0:other")
        [dl] = res.outputs
        assert dict(dl.headers)["reason"] == b"duplicate_seq" and not res.changed, q
    t, k, v = recs[-1]
    [final] = finals(proc.process(s, t, k, v, "0:end").outputs)
    assert final.metrics["steps"] == 2100.0 and final.metrics["tool_calls"] == 2100.0


def test_after_scoring_a_redelivery_is_a_noop_and_another_event_at_any_seq_is_a_duplicate() -> None:
    from agentlake.streams.fold import seq_digests

    recs = long_trajectory(30, [0.01], set())
    proc = RewardProcessor(live_scores=False, fold_lag=2)
    s: TrajState | None = None
    for i, (t, k, v) in enumerate(recs):
        res = proc.process(s, t, k, v, f"0:{i}")
        s = res.state
    assert res.finished and s is not None
    end = len(recs) - 1
    marker = state.encode_done(s.tid, end, 5, seq_digests(s.fold, s.entries, end))
    assert len(marker) < 100 + 8 * len(recs)  # 8 bytes per scored seq
    _, done, at_ms = state.read(marker)
    assert done is not None and done[0] == end and len(done[1]) == 8 * len(recs) and at_ms == 5
    assert state.decode(marker)[1] == end  # what workers before the digests read of it
    verdicts = []
    for q in range(len(recs)):
        t, k, v = recs[q]
        again = proc.process(None, t, k, v, "0:again", done_end_seq=end, done_ids=done[1])
        other = proc.process(
            None, t, k, _with(v, event_id=f"{q:032x}"), "0:x", done_end_seq=end, done_ids=done[1]
        )
        assert again.outputs == [] and not other.changed
        verdicts.append(dict(other.outputs[0].headers)["reason"])
    assert set(verdicts) == {b"duplicate_seq"}
    t, k, v = recs[3]
    [late] = proc.process(
        None, t, k, _with(v, seq=end + 1), "0:y", done_end_seq=end, done_ids=done[1]
    ).outputs
    assert dict(late.headers)["reason"] == b"after_end"
    # a marker written before the digests: every scored seq counts as a re-delivery, as it did
    _, old, _ = state.read(state.encode_done(s.tid, end, 5))
    assert old == (end, b"")
    res = proc.process(None, t, k, _with(v, event_id="0" * 32), "0:z", done_end_seq=end, done_ids=old[1])
    assert res.outputs == []


def test_a_checkpoint_that_kept_only_the_last_digests_still_restores() -> None:
    """Workers before exact digests kept the event ids of the last 4,096 folded seqs (same schema)."""
    recs = long_trajectory(20, [0.01], set())
    proc = RewardProcessor(live_scores=False, fold_lag=0)
    s = None
    for i, (t, k, v) in enumerate(recs[:-1]):
        s = proc.process(s, t, k, v, f"0:{i}").state
    assert s is not None
    del s.fold.ids[: -8 * 10]  # what such a worker wrote: the last 10 seqs' digests
    s = state.decode(state.encode_open(s, 0))[0]
    assert s is not None
    t, k, v = recs[-5]
    [dl] = proc.process(s, t, k, _with(v, event_id="0" * 32), "0:other").outputs
    assert dict(dl.headers)["reason"] == b"duplicate_seq"
    t, k, v = recs[2]  # older than what it kept: taken for a re-delivery, as before
    assert proc.process(s, t, k, _with(v, event_id="0" * 32), "0:old").outputs == []
    t, k, v = recs[-1]
    assert proc.process(s, t, k, v, "0:end").finished


def test_a_checkpoint_of_the_first_version_still_restores() -> None:
    import io

    import fastavro

    recs = long_trajectory(3, [0.5], set())
    proc = RewardProcessor(live_scores=False, fold_lag=None)
    s = None
    for i, (t, k, v) in enumerate(recs[:-1]):
        s = proc.process(s, t, k, v, f"0:{i}").state
    assert s is not None
    v2 = state.decode(state.encode_open(s, 7))[0]
    assert v2 is not None
    rec = {
        "tid": s.tid, "done": False, "end_seq": None, "at_ms": 7, "ident": list(s.ident or ()),
        "started": s.started, "end": None,
        "entries": [
            {"seq": q, "event_id": e[0], "ts_us": e[2], "kind": e[3], "tool": e[4],
             "call_key": None if e[5] is None else f"key-{q}", "tokens_in": e[6], "tokens_out": e[7],
             "cost": e[8], "latency": e[9], "is_error": e[10], "invalid": e[11], "flag": e[12], "pos": e[13]}
            for q, e in s.entries.items()
        ],
    }  # fmt: skip
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(state.SCHEMA_V1), rec)
    v1, end_seq, at_ms = state.decode(buf.getvalue())
    assert v1 is not None and end_seq is None and at_ms == 7
    assert v1.contiguous == len(recs) - 1 and sorted(v1.entries) == sorted(s.entries)
    assert all(len(e[5]) == 8 for e in v1.entries.values() if e[3] == "R")


def test_live_scores_do_not_depend_on_folding() -> None:
    recs = long_trajectory(30, [0.003], {4})
    rng = random.Random(5)
    delivered = shuffle_within(recs[:-1], 4, rng)
    lives = []
    for lag in (None, 0, 2):
        proc = RewardProcessor(fold_lag=lag)
        s = None
        out = []
        for i, (t, k, v) in enumerate(delivered):
            s = proc.process(s, t, k, v, f"0:{i}").state
            assert s is not None
            if i % 7 == 0:
                live = proc.live(s)
                out.append(live.value if live is not None else None)
        lives.append(out)
    assert lives[0] == lives[1] == lives[2] and any(lives[0])


def test_a_done_marker_is_the_avro_record_of_its_schema() -> None:
    """A done marker is exactly the Avro record of the checkpoint schema, digests in its fold."""
    import io

    import fastavro

    for end, ids in ((0, b"\x01" * 8), (9, bytes(range(80))), (70_000, b"\xff" * 8 * 70_001), (3, b"")):
        rec = {
            "tid": "t-1", "done": True, "end_seq": end, "at_ms": 1_700_000_000_000, "ident": [],
            "started": None, "end": None, "entries": [],
            "fold": None if not ids else {
                "upto": end + 1, "steps": 0, "tool_calls": 0, "errors": 0, "invalid": 0,
                "out_of_scope": 0, "unauthorized": 0, "tokens_in": None, "tokens_out": None, "cost": None,
                "latency": [], "first_ts": None, "last_ts": None, "tool_names": [], "tool_seq": [],
                "keys": b"", "flags": [], "ids": ids,
            },
        }  # fmt: skip
        buf = io.BytesIO()
        buf.write(state.MAGIC)
        fastavro.schemaless_writer(buf, fastavro.parse_schema(state.SCHEMA), rec)
        assert state.encode_done("t-1", end, 1_700_000_000_000, ids) == buf.getvalue()
        assert state.read(buf.getvalue())[1] == (end, ids)
