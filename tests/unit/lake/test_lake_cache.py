"""The cache's correctness properties, one story each."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentlake.lake.cache import TIE_EPSILON, Lake, LakePolicy, LookupRequest
from agentlake.lake.entries import LakeEntry, toolset_fingerprint
from agentlake.projections.embeddings import Embedder
from agentlake.schemas import codec
from agentlake.sim.reference import SHOP_TOOLS
from tests.unit.lake.conftest import DAY, T0

TASK = "Please refund order 48213, the item arrived broken."
PARAPHRASE = "Refund my order #48213, it came damaged."
FP = toolset_fingerprint(SHOP_TOOLS)

Make = Callable[..., LakeEntry]


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 1

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lake(embedder: Embedder, clock: Clock) -> Lake:
    return Lake(embedder, LakePolicy(), clock=clock)


def ask(lake: Lake, task: str = PARAPHRASE, **kw: object) -> bool:
    scope = {"tenant": "acme", "toolset": FP, **kw}
    return lake.lookup(LookupRequest(task=task, **scope)).hit  # type: ignore[arg-type]


def test_hit_has_provenance(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP)])
    r = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    assert r.hit and r.entry is not None and r.entry.entry_id == "t1"
    d = r.to_dict()
    assert d["result"]["tool_sequence"] == ["get_order", "refund_order"]
    assert d["provenance"][0]["entry_id"] == "t1" and d["provenance"][0]["verdict"] == "hit"
    assert d["provenance"][0]["similarity"] >= d["provenance"][0]["threshold"]


def test_other_order_id_misses(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP)])
    r = lake.lookup(LookupRequest("acme", "Refund my order #48231, it came damaged.", toolset=FP))
    assert not r.hit and r.reason == "signature_mismatch"
    # the refusal names the differing parameter, asked ≠ cached (the demo prints it)
    (mismatch,) = [c for c in r.to_dict()["provenance"] if c["verdict"] == "signature_mismatch"]
    assert "48231 ≠ 48213" in mismatch["detail"]


def test_tenants_are_isolated(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP, tenant="acme")])
    assert ask(lake, tenant="acme")
    r = lake.lookup(LookupRequest("globex", TASK, toolset=FP))  # the very same text
    assert not r.hit and r.candidates == []
    assert lake.search("globex", TASK) == []
    assert lake.suggest_plan(LookupRequest("globex", TASK, toolset=FP)).tool_sequence == []


def test_scoped_key_toolset(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP)])
    changed = [dict(t) for t in SHOP_TOOLS]
    changed[1] = {**changed[1], "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}}}
    other = toolset_fingerprint(changed)
    assert other != FP
    r = lake.lookup(LookupRequest("acme", TASK, toolset=other))
    assert not r.hit and r.candidates[0].verdict == "other_toolset"


def test_tool_schema_change_invalidates(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP), entry("t2", "Cancel order 7.", toolset="another")])
    dropped = lake.invalidate(toolset=FP)
    assert dropped == {"acme": ["t1"]}
    assert not ask(lake)
    assert [e.entry_id for e in lake.hot.partition("acme").entries.values()] == ["t2"]
    # by tool name too: every entry whose trajectory called the changed tool
    lake.add([entry("t3", TASK, toolset=FP)])
    assert lake.invalidate(tool="refund_order") == {"acme": ["t2", "t3"]}


def test_document_change_invalidates_dependents(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP, documents=("policies/refunds.md",))])
    assert ask(lake)
    assert lake.invalidate(document="policies/refunds.md") == {"acme": ["t1"]}
    assert not ask(lake)


def test_scoped_key_user(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP, user_id="alice", user_scoped=True)])
    assert ask(lake, user_id="alice")
    assert not ask(lake, user_id="bob")
    assert not ask(lake)  # anonymous


@pytest.mark.parametrize(
    ("policy", "same_agent_other_version", "other_agent"),
    [("any", True, True), ("same-agent", True, False), ("same-version", False, False)],
)
def test_cross_version_policy(
    embedder: Embedder,
    clock: Clock,
    entry: Make,
    policy: str,
    same_agent_other_version: bool,
    other_agent: bool,
) -> None:
    lake = Lake(embedder, LakePolicy(cross_version=policy), clock=clock)  # type: ignore[arg-type]
    lake.add([entry("t1", TASK, toolset=FP, agent_id="bot", agent_version="1.0")])
    assert ask(lake, agent_id="bot", agent_version="1.0")
    assert ask(lake, agent_id="bot", agent_version="2.0") is same_agent_other_version
    assert ask(lake, agent_id="other-bot", agent_version="1.0") is other_agent


def test_ttl_is_not_extended_by_hits(lake: Lake, entry: Make, clock: Clock) -> None:
    lake.add([entry("t1", TASK, toolset=FP, produced_us=T0, expires_us=T0 + DAY)])
    for hours in (1, 12, 23):
        clock.now = T0 + hours * 3600 * 1_000_000
        assert ask(lake)  # hit after hit...
    clock.now = T0 + DAY + 1
    r = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    assert not r.hit and r.candidates[0].verdict == "expired"  # ...and it still expires on time
    assert lake.expire() == 1


def test_failed_reuse_demotes_and_tightens(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP), entry("t2", "Refund order 48213 now please.", toolset=FP)])
    r = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    assert r.hit and r.entry is not None
    first = r.entry.entry_id
    cluster = r.candidates[[c.entry_id for c in r.candidates].index(first)].cluster_id
    before = lake.threshold("acme", cluster)
    out = lake.report_outcome(r.lookup_id, success=False)
    assert out["wrong_hit"] and out["threshold"] > before
    assert lake.threshold("acme", cluster) == pytest.approx(before + lake.policy.tighten_step)
    again = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    assert again.entry is None or again.entry.entry_id != first
    assert any(c.entry_id == first and c.verdict == "demoted" for c in again.candidates)
    with pytest.raises(KeyError):
        lake.report_outcome("no-such-lookup", success=True)


def test_confirmed_reuse_relaxes_back_toward_base(lake: Lake, entry: Make) -> None:
    lake.add([entry("t1", TASK, toolset=FP), entry("t2", "Refund order 48213 now please.", toolset=FP)])
    r = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    lake.report_outcome(r.lookup_id, success=False)
    r2 = lake.lookup(LookupRequest("acme", TASK, toolset=FP))
    if r2.hit:
        t = lake.report_outcome(r2.lookup_id, success=True)["threshold"]
        assert lake.policy.base_threshold <= t


def test_failed_or_low_reward_entries_never_hit(lake: Lake, entry: Make) -> None:
    lake.add(
        [
            entry("f", TASK, toolset=FP, success=False, outcome="failure"),
            entry("l", TASK, toolset=FP, reward=0.2),
        ]
    )
    r = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    assert not r.hit
    assert {c.verdict for c in r.candidates} == {"failed_trajectory", "low_reward"}


def test_fused_plan_and_lessons(lake: Lake, entry: Make) -> None:
    lake.add(
        [
            entry("a", "Refund order 1, it broke.", toolset=FP, reward=0.95),
            entry("b", "Refund order 2, it broke.", toolset=FP, reward=0.9),
            entry(
                "c",
                "Refund order 3, it broke.",
                toolset=FP,
                reward=0.75,
                tool_sequence=("search_orders", "get_order", "get_order", "refund_order"),
            ),
            entry(
                "d",
                "Refund order 4, it broke.",
                toolset=FP,
                success=False,
                reward=0.1,
                tool_sequence=("search_orders", "cancel_order"),
                lessons=("cancel_order: order 4 is shipped",),
            ),
            entry("x", "Cancel order 9.", toolset=FP, tool_sequence=("cancel_order",)),
        ]
    )
    plan = lake.suggest_plan(LookupRequest("acme", "Refund order 77, it arrived broken.", toolset=FP))
    assert plan.tool_sequence == ["get_order", "refund_order"]
    assert plan.tools[:2] == ["get_order", "refund_order"]
    assert "cancel_order" not in plan.tools  # the cancel task has another intent: not a source
    assert any("cancel_order" in lesson for lesson in plan.lessons)
    assert 0 < plan.support < 1


def test_next_step(lake: Lake, entry: Make) -> None:
    lake.add(
        [
            entry("a", "Refund order 1, it broke.", toolset=FP),
            entry("b", "Refund order 2, it broke.", toolset=FP),
            entry(
                "c",
                "Refund order 3, it broke.",
                toolset=FP,
                success=False,
                tool_sequence=("get_order", "cancel_order"),
            ),
        ]
    )
    nxt = lake.next_tools(LookupRequest("acme", "Refund order 5, broken.", toolset=FP), ["get_order"])
    assert [n["tool"] for n in nxt] == ["refund_order"]  # the failed trajectory's next call is not advice
    done = lake.next_tools(
        LookupRequest("acme", "Refund order 5, broken.", toolset=FP), ["get_order", "refund_order"]
    )
    assert done[0]["tool"] == "<end>"
    assert (
        lake.next_tools(LookupRequest("globex", "Refund order 5, broken.", toolset=FP), ["get_order"]) == []
    )


def test_events_encode_with_the_lake_schemas(lake: Lake, entry: Make) -> None:
    e = entry("t1", TASK, toolset=FP)
    lake.add([e])
    r = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    lake.report_outcome(r.lookup_id, success=True)
    events = [*lake.drain_events(), ("LakeEntry", "k", e.to_record())]
    c = codec()
    records = set()
    for record, _, value in events:
        name, _back = c.decode_dict(c.encode_record(record, value, strict=True))
        records.add(name)
    assert records == {"ClusterMembership", "ClusterCentroid", "LakeLookup", "LakeOutcome", "LakeEntry"}
    assert LakeEntry.from_record(e.to_record()) == e


def test_entry_builder_waits_for_the_start_across_topics() -> None:
    from agentlake.lake.entries import ATTR_TOOLSET, EntryBuilder
    from agentlake.schemas import RewardScored, TrajectoryStarted

    common = {"trajectory_id": "t", "tenant": "acme", "agent_id": "bot", "agent_version": "1", "seq": 0}
    reward = RewardScored(
        **common,
        is_final=True,
        reward_spec="s@1",
        components={"task_success": 1.0},
        weights={},
        metrics={},
        total=1.0,
        task="Refund order 5",
        outcome="success",
        tool_sequence=["get_order", "refund_order"],
    )
    start = TrajectoryStarted(**common, task="Refund order 5", user_id="u1", attributes={ATTR_TOOLSET: FP})
    b = EntryBuilder(ttl_s=60, wait_for_start_s=5)
    assert b.add(reward, now=0.0) is None and b.parked == 1  # the reward topic was read first
    e = b.add(start, now=1.0)
    assert e is not None and e.toolset == FP and e.user_id == "u1" and b.parked == 0
    assert e.signature.action == "refund" and e.expires_us == reward.ts_us + 60_000_000
    b2 = EntryBuilder(ttl_s=60, wait_for_start_s=5)
    b2.add(reward, now=0.0)
    assert b2.flush_parked(now=1.0) == []
    (late,) = b2.flush_parked(now=6.0)  # the start never came: an unscoped entry
    assert late.toolset == "" and late.entry_id == "t"


def test_document_access_rules_travel_with_entries(lake: Lake, entry: Make) -> None:
    from agentlake.lake.entries import principal_tokens

    rules = (("group:finance", "user:carol"), ("*",))  # two documents: a restricted one, a public one
    lake.add([entry("t1", TASK, toolset=FP, documents=("fin/policy.md", "faq.md"), access=rules)])
    anon = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    assert not anon.hit and anon.candidates[0].verdict == "no_access"
    bob = lake.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP, principal=principal_tokens("bob")))
    assert not bob.hit
    fin = lake.lookup(
        LookupRequest("acme", PARAPHRASE, toolset=FP, principal=principal_tokens("bob,group:finance"))
    )
    assert fin.hit and fin.to_dict()["result"]["access"] == [["group:finance", "user:carol"], ["*"]]
    assert lake.search("acme", TASK) == []
    assert lake.search("acme", TASK, principal=principal_tokens("carol"))[0]["entry_id"] == "t1"


def test_a_restarted_lake_replays_demotions_thresholds_and_lookup_ids(
    embedder: Embedder, clock: Clock, entry: Make
) -> None:
    """What a serving process learned from outcomes survives a restart: the recorded
    lake.cache events, replayed in order over the rebuilt entries, give the same state."""
    entries = [entry("t1", TASK, toolset=FP), entry("t2", "Refund order 48213 now please.", toolset=FP)]
    before = Lake(embedder, LakePolicy(), clock=clock)
    before.add(entries)
    wrong = before.lookup(LookupRequest("acme", PARAPHRASE, toolset=FP))
    pending = before.lookup(LookupRequest("acme", TASK, toolset=FP))  # reported after the restart
    assert wrong.hit and pending.hit and wrong.entry is not None
    before.report_outcome(wrong.lookup_id, success=False)
    recorded = [(record, d) for record, _, d in before.events]
    assert [r for r, _ in recorded].count("LakeOutcome") == 1

    after = Lake(embedder, LakePolicy(), clock=clock, record_events=False)
    after.add(entries)
    changed = sum(after.replay(r, d) for r, d in recorded)
    assert changed == 3  # two hits, one outcome (memberships and misses change nothing)
    assert after.demoted == before.demoted == {("acme", wrong.entry.entry_id)}
    cluster = wrong.candidates[0].cluster_id
    assert after.threshold("acme", cluster) == before.threshold("acme", cluster) > LakePolicy().base_threshold
    # a lookup served before the restart can still be reported to the restarted process
    assert after.report_outcome(pending.lookup_id, success=True)["entry_id"] == pending.entry.entry_id  # type: ignore[union-attr]
    # an entry that is gone is skipped
    assert not Lake(embedder, LakePolicy(), clock=clock).replay(*recorded[-1])


def test_ties_go_to_higher_reward_then_fewer_calls_then_entry_id(lake: Lake, entry: Make) -> None:
    """The new user's lookup: a 1.1-beta entry (reward 0.94, four calls) and a 1.0 entry
    (reward 1.00, two calls) of the same task match at the same similarity; 1.0 is the hit,
    whichever the index returns first."""
    task = "Please refund order 15, the item arrived broken."
    beta = entry(
        "a-beta",
        task,
        toolset=FP,
        agent_id="support-bot",
        agent_version="1.1-beta",
        reward=0.94,
        tool_sequence=["search_orders", "get_order", "get_order", "refund_order"],
    )
    stable = entry("z-stable", task, toolset=FP, agent_id="support-bot", agent_version="1.0", reward=1.0)
    for first, second in ((beta, stable), (stable, beta)):
        lake = Lake(lake.embedder, LakePolicy(), clock=lake.clock)
        lake.add([first, second])
        r = lake.lookup(LookupRequest("acme", task, toolset=FP, agent_id="support-bot"))
        assert r.hit and r.entry is not None and r.entry.entry_id == "z-stable"
        verdicts = {c.entry_id: c.verdict for c in r.candidates}
        assert verdicts == {"z-stable": "hit", "a-beta": "outranked"}


def test_equal_reward_ties_go_to_fewer_calls_then_entry_id(lake: Lake, entry: Make) -> None:
    long_plan = ["get_order", "get_order", "refund_order"]
    lake.add(
        [
            entry("b", TASK, toolset=FP, reward=0.9, tool_sequence=long_plan),
            entry("c", TASK, toolset=FP, reward=0.9),
            entry("a", TASK, toolset=FP, reward=0.9, tool_sequence=long_plan),
        ]
    )
    r = lake.lookup(LookupRequest("acme", TASK, toolset=FP))
    assert r.entry is not None and r.entry.entry_id == "c"
    lake.remove("acme", ["c"])
    r = lake.lookup(LookupRequest("acme", TASK, toolset=FP))
    assert r.entry is not None and r.entry.entry_id == "a"


def test_a_clearly_closer_entry_wins_over_a_higher_reward(lake: Lake, entry: Make) -> None:
    """Beyond TIE_EPSILON similarity decides, not reward."""
    lake.add(
        [
            entry("close", TASK, toolset=FP, reward=0.8),
            entry("far", PARAPHRASE, toolset=FP, reward=1.0),
        ]
    )
    far = float(lake.query_vector(TASK) @ lake.query_vector(PARAPHRASE))
    assert far < 1.0 - TIE_EPSILON  # the paraphrase is not a tie of the task itself
    r = lake.lookup(LookupRequest("acme", TASK, toolset=FP))
    assert r.hit and r.entry is not None and r.entry.entry_id == "close"
