"""The reward processor: trajectory events in, reward vectors (and dead letters) out.

Pure logic, no Kafka: `RewardProcessor.process()` takes the state of one
trajectory and one raw record, and returns the new state and the records to
emit. `agentlake.streams.engine` adds partitions, checkpoints and offsets on
top; the faust agent in `app.py` is a thin adapter around that.

The log is the truth, the state a cache. A trajectory's state keeps one small
entry per ``seq`` near its frontier (no JSON, no reward bytes) and folds the
settled prefix into a compact summary in seq order (`agentlake.streams.fold`);
every output is computed from the fold and the entries, never from arrival
order: the final reward's timestamp is the ``TrajectoryEnded`` event's, its ids
are derived from the trajectory, float sums are exact until one `math.fsum`
rounds them, lists are ordered by seq. Re-processing the same events therefore
re-emits byte-identical records, however and whenever the prefix was folded.

Numbers no SDK sends (a negative token count, a negative or non-finite cost or
latency: the SDK records those as null) count as 0 in the reward, so they cannot
cancel real spend; the event itself is kept, and the projections store it as sent.
A rule on the value alone, so re-processing stays byte-identical.

Well-formed but wrong events (each a dead letter with a reason):

- ``null_key`` / ``key_mismatch`` / ``wrong_topic`` / ``schema_violation`` /
  ``seq_out_of_range``: decided from the record alone (`check_record`), so the
  sink applies the very same rule and never projects them.
- ``after_end``: a seq past the trajectory's ``TrajectoryEnded`` seq, whether
  it arrives after the end, after the trajectory was scored, or before the end
  (then it is taken out of the fold when the end arrives).
- (no gap rule: the three trajectory topics are consumed at independent rates,
  so an end can legitimately arrive thousands of seqs ahead of its steps; an
  event far ahead waits in the fold until the end makes it ``after_end``, or
  the idle timeout ends the trajectory. Earlier workers dead-lettered such
  events as ``seq_gap``, which wrongly dropped the ends of long trajectories.)
- ``duplicate_seq``: a second event with an existing ``(trajectory_id, seq)``
  and another ``event_id``. The winner is the event with the smallest
  `event_rank` (the event id's first 32 bytes), whichever arrives first; the
  ClickHouse tables hold a row per event until the loser's dead letter retracts
  it (`agentlake.projections.retract`). Once a seq is folded (``fold_lag``
  seqs behind the contiguous prefix) or the trajectory scored, the event folded
  there stays: a competitor arriving later loses whatever its rank. Re-delivery
  vs. another event is decided exactly, by the 8-byte event-id digest of every
  folded seq, kept in the open state and, once scored, in the done marker
  (`agentlake.streams.fold.seq_digests`); the same event id again is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentlake.kafka_io import dead_letter_headers
from agentlake.schemas import Codec, DecodeError, codec
from agentlake.streams.fold import (
    E_FLAG,
    E_ID,
    E_KIND,
    E_POS,
    E_RANK,
    E_TOOL,
    E_TS,
    NO_EVENT,
    Entry,
    Fold,
    digest,
    digest_in,
    fold_entries,
)
from agentlake.streams.rewards import (
    DEFAULT_SPEC,
    REWARD_ERROR_FLAG,
    UNAUTHORIZED,
    RewardSpec,
    TrajectorySummary,
    score,
)
from agentlake.topics import POLICY, REWARDS, TOOL_CALLS, TRAJECTORIES, TRAJECTORY_TOPICS, dlq

_NS = uuid.UUID("6d1a3c52-8f7e-4f0e-9a55-1f3e2b7c9d10")
_EXPECTED_TOPIC = {
    "TrajectoryStarted": TRAJECTORIES,
    "TrajectoryEnded": TRAJECTORIES,
    "AgentStep": "agent.steps",
    "ToolCallRequested": TOOL_CALLS,
    "ToolCallCompleted": TOOL_CALLS,
}
MAX_SEQ = 1_000_000  # a trajectory has fewer events than this; beyond it: seq_out_of_range
FOLD_LAG = 64  # entries this far behind the contiguous prefix are folded (then the duplicate rule is final)


class ToolPolicy(Protocol):
    """What the processor asks of an agent's declared tools (see `agentlake.registry`)."""

    def check(self, server_id: str, tool: str, arguments: Any) -> tuple[str, str] | None:
        """None when allowed, else (rule, detail)."""
        ...


@dataclass(frozen=True)
class AgentRules:
    spec: RewardSpec = DEFAULT_SPEC
    policy: ToolPolicy | None = None


RulesLookup = Callable[[str, str], AgentRules]


def default_rules(agent_id: str, version: str) -> AgentRules:
    return AgentRules()


@dataclass
class Output:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int | None = None


def event_rank(event_id: str) -> bytes:
    """The duplicate-seq rule: of two events with one (trajectory_id, seq), the smaller rank wins.

    The rank is the event id's first 32 bytes, compared as bytes (the lexicographically
    smallest id wins). The ClickHouse tables keep a row per event until the worker's
    verdict retracts the loser (`agentlake.projections.retract`).
    """
    return event_id.encode()[:32]


def derived_span_id(event_id: str) -> str:
    """A span id derived from an output's event id (16 hex chars), so re-emission is byte-identical."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def _count(value: int | None) -> int | None:
    """A token count as the reward sees it: a negative one (another producer's bug: the SDK
    records those as null) counts as 0, so it cannot cancel real spend."""
    return None if value is None else max(0, value)


def _amount(value: float | None) -> float | None:
    """A cost (USD) or duration (ms) as the reward sees it: negative or non-finite counts as 0."""
    return None if value is None else (value if math.isfinite(value) and value > 0 else 0.0)


def check_record(
    logical_topic: str, key: bytes | None, record: str, trajectory_id: str, seq: int
) -> tuple[str, str] | None:
    """The rules decided from one record alone: (reason, detail), or None when it is acceptable.

    The stream worker dead-letters what fails here; the sink applies the same
    function and does not project it.
    """
    expected = _EXPECTED_TOPIC.get(record)
    if expected is None or (logical_topic in TRAJECTORY_TOPICS and expected != logical_topic):
        return "wrong_topic", f"{record} does not belong on {logical_topic}"
    if key is None:
        return "null_key", f"record has no key; it must be the trajectory_id {trajectory_id}"
    if key != trajectory_id.encode():
        return "key_mismatch", f"key {key[:100]!r} != trajectory_id {trajectory_id[:100]}"
    if seq < 0:
        return "schema_violation", f"negative seq {seq}"
    if seq >= MAX_SEQ:
        return "seq_out_of_range", f"seq {seq} >= {MAX_SEQ}"
    return None


class TrajState:
    """One open trajectory: its fold and remaining entries by seq, what its start and end said, and
    engine bookkeeping. Invariant: ``fold.upto <= contiguous`` and every entry's seq is ``>= fold.upto``."""

    __slots__ = (
        "contiguous",
        "dirty",
        "end",
        "end_seq",
        "entries",
        "fold",
        "ident",
        "live_at",
        "live_due",
        "partition",
        "started",
        "tid",
        "touched",
    )

    def __init__(self, tid: str) -> None:
        self.tid = tid
        self.entries: dict[int, Entry] = {}
        self.fold = Fold()
        self.started: dict[str, Any] | None = None
        self.ident: tuple[str, str, str, str] | None = None  # tenant, agent_id, agent_version, trace_id
        self.end: dict[str, Any] | None = None
        self.end_seq: int | None = None
        self.contiguous = 0  # the lowest seq not seen
        self.dirty: dict[Any, int] = {}  # tp -> lowest offset applied since the last checkpoint
        self.touched = 0.0
        self.live_due = False
        self.live_at = 0.0
        self.partition: int | None = None

    @property
    def max_seq(self) -> int:
        return max(self.entries) if self.entries else self.fold.upto - 1

    @property
    def last_ts(self) -> int | None:
        """The largest event ``ts_us`` of the trajectory, folded or not."""
        ts = max((e[E_TS] for e in self.entries.values()), default=None)
        f = self.fold.last_ts
        return f if ts is None else ts if f is None else max(f, ts)

    def is_complete(self) -> bool:
        return self.end_seq is not None and self.contiguous > self.end_seq

    def _advance(self) -> None:
        c, entries = self.contiguous, self.entries
        while c in entries:
            c += 1
        self.contiguous = c


def is_complete(state: TrajState) -> bool:
    return state.is_complete()


@dataclass
class Result:
    state: TrajState | None
    outputs: list[Output]
    changed: bool
    finished: bool = False  # the trajectory got its final reward (the state can be dropped)


def summarize(st: TrajState, outcome: str | None = None) -> TrajectorySummary:
    """The fold of the trajectory (its folded prefix, then its entries in seq order), independent of
    arrival order and of when the prefix was folded."""
    started = st.started or {}
    end = st.end or {}
    acc = st.fold.scratch()
    entries = st.entries
    for q in sorted(entries):
        acc.add(entries[q])
    tin: int | None = end.get("tokens_in")
    tout: int | None = end.get("tokens_out")
    if acc.tin is not None:
        tin = acc.tin if tin is None else tin + acc.tin
    if acc.tout is not None:
        tout = acc.tout if tout is None else tout + acc.tout
    costs = acc.cost
    if end.get("cost_usd") is not None:
        costs = [*(costs or ()), end["cost_usd"]]
    first, last = acc.first_ts, acc.last_ts
    return TrajectorySummary(
        outcome=outcome or end.get("outcome"),
        steps=acc.steps,
        tool_calls=acc.tool_calls,
        tool_errors=acc.errors,
        redundant_calls=acc.tool_calls - len(acc.keys),
        invalid_calls=acc.invalid,
        out_of_scope_calls=acc.out_of_scope,
        unauthorized_calls=acc.unauthorized,
        expected_tool_calls=started.get("expected_tool_calls"),
        duration_ms=((last - first) / 1000.0) if first is not None and last is not None else 0.0,
        tool_latency_ms=math.fsum(acc.lat),
        tokens_in=tin,
        tokens_out=tout,
        cost_usd=math.fsum(costs) if costs is not None else None,
        tool_sequence=acc.tools,
        final_answer=end.get("final_answer"),
        attributes=started.get("attributes") or {},
        checks=dict(end.get("checks") or {}),
    )


def flags_of(st: TrajState) -> list[str]:
    return sorted(st.fold.flags.union(e[E_FLAG] for e in st.entries.values() if e[E_FLAG] is not None))


def reward_record(
    st: TrajState, rules: AgentRules, final: bool, outcome: str | None = None
) -> dict[str, Any]:
    """The RewardScored record (Avro dict) for `st`: final through the end seq, or live through the
    contiguous prefix. A pure function of the entries: same entries, same bytes."""
    s = summarize(st, outcome)
    started = st.started or {}
    # a component that raises fails a simulation trial's gate, but only flags production traffic
    vec = score(s, rules.spec, errors_fail=started.get("run_id") is not None)
    tenant, agent_id, agent_version, trace_id = st.ident or ("default", "", "", "0" * 32)
    if final:
        through = st.end_seq if st.end_seq is not None else st.max_seq
        ts = st.end["ts_us"] if st.end is not None else (st.last_ts or 0)
    else:
        through = st.contiguous - 1
        tss = [st.entries[q][E_TS] for q in range(st.fold.upto, st.contiguous)]
        if st.fold.last_ts is not None:
            tss.append(st.fold.last_ts)
        ts = max(tss)
    metrics = {
        "steps": float(s.steps),
        "tool_calls": float(s.tool_calls),
        "tool_errors": float(s.tool_errors),
        "redundant_calls": float(s.redundant_calls),
        "invalid_calls": float(s.invalid_calls),
        "out_of_scope_calls": float(s.out_of_scope_calls),
        "duration_ms": s.duration_ms,
        "tool_latency_ms": s.tool_latency_ms,
    }
    if s.through_gateway:
        metrics["unauthorized_calls"] = float(s.unauthorized_calls)
    if s.expected_tool_calls is not None:
        metrics["expected_tool_calls"] = float(s.expected_tool_calls)
    if s.tokens is not None:
        metrics["tokens"] = float(s.tokens)
    if s.cost_usd is not None:
        metrics["cost_usd"] = s.cost_usd
    event_id = str(uuid.uuid5(_NS, f"{st.tid}:{through}:{'final' if final else 'live'}"))
    end = st.end or {}
    return {
        "event_id": event_id,
        "trajectory_id": st.tid,
        "tenant": tenant,
        "agent_id": agent_id,
        "agent_version": agent_version,
        "seq": through,
        "ts_us": ts,
        "trace_id": trace_id,
        "span_id": derived_span_id(event_id),
        "parent_span_id": None,
        "is_final": final,
        "reward_spec": rules.spec.ref,
        "components": vec.components,
        "weights": vec.weights,
        "metrics": metrics,
        "total": vec.total,
        "gates": vec.gates,
        "failed_gates": vec.failed_gates,
        "task": started.get("task") or "",
        "outcome": s.outcome,
        "tool_sequence": s.tool_sequence,
        "scenario_id": started.get("scenario_id"),
        "run_id": started.get("run_id"),
        "trial": started.get("trial"),
        "seed": started.get("seed"),
        "flags": sorted([*flags_of(st), *(REWARD_ERROR_FLAG + n for n in vec.errors)]),
        "checks": dict(end.get("checks") or {}) if final else {},
        "attribution": end.get("attribution") if final else None,
    }


class RewardProcessor:
    """Scores trajectories from their events.

    Args:
        rules: returns the reward spec and tool policy of an agent version.
        live_scores: `live()` may emit running (``is_final=false``) scores; `process()` marks them due.
        topic: maps a logical topic name to the physical one (prefixing).
        fold_lag: entries this many seqs behind the contiguous prefix are folded (0: at once;
            None: never, the state then grows with the trajectory). Outputs do not depend on it,
            nor do verdicts on a competitor that arrives after its seq settled or was scored.
    """

    def __init__(
        self,
        rules: RulesLookup = default_rules,
        *,
        live_scores: bool = True,
        topic: Callable[[str], str] = lambda t: t,
        the_codec: Codec | None = None,
        fold_lag: int | None = FOLD_LAG,
    ) -> None:
        self.rules = rules
        self.live_scores = live_scores
        self.topic = topic
        self.codec = the_codec or codec()
        self.fold_lag = fold_lag
        self._logical = {topic(t): t for t in TRAJECTORY_TOPICS}
        self._rewards = topic(REWARDS)
        self._policy = topic(POLICY)

    def dead_letter(
        self,
        source_topic: str,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        position: str = "",
        extra: list[tuple[str, bytes]] | None = None,
    ) -> Output:
        return Output(
            self.topic(dlq(self._logical.get(source_topic, source_topic))),
            key,
            value or b"",
            [*dead_letter_headers(reason, detail, source_topic, position), *(extra or [])],
        )

    def decode(
        self, topic: str, key: bytes | None, value: bytes | None, position: str = ""
    ) -> tuple[str, dict[str, Any]] | Output:
        """(record name, Avro dict), or the dead letter that explains why it is not an acceptable event."""
        if value is None:
            return self.dead_letter(topic, key, value, "empty", "record has no value", position)
        try:
            record, ev = self.codec.decode_dict(value)
        except DecodeError as e:
            return self.dead_letter(topic, key, value, e.reason, e.detail, position)
        try:
            bad = check_record(self._logical.get(topic, topic), key, record, ev["trajectory_id"], ev["seq"])
        except (KeyError, TypeError) as e:
            bad = ("schema_violation", f"{record}: {e!r}")
        if bad is not None:
            return self.dead_letter(topic, key, value, bad[0], bad[1], position)
        return record, ev

    def process(
        self,
        state: TrajState | None,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        position: str = "",
        *,
        done_end_seq: int | None = None,
        done_ids: bytes = b"",
        now: float = 0.0,
    ) -> Result:
        """Fold one record into its trajectory's state.

        Args:
            state: the open trajectory's state, or None when there is none.
            done_end_seq: when the trajectory was already scored, its last seq
                (a re-delivered event then changes nothing; a later seq is ``after_end``).
            done_ids: the scored event-id digests of seqs ``[done_end_seq + 1 - len / 8,
                done_end_seq]`` (`seq_digests`): another event at one of them is ``duplicate_seq``.
            now: monotonic time, recorded as the trajectory's last activity.
        """
        decoded = self.decode(topic, key, value, position)
        if isinstance(decoded, Output):
            return Result(state, [decoded], changed=False)
        record, ev = decoded
        seq: int = ev["seq"]
        if done_end_seq is not None:
            if seq > done_end_seq:
                dl = self.dead_letter(
                    topic, key, value, "after_end", f"seq {seq} > end seq {done_end_seq} (scored)", position
                )
                return Result(state, [dl], changed=False)
            scored = digest_in(done_ids, done_end_seq + 1, seq)
            if scored is None or scored == NO_EVENT or scored == digest(ev["event_id"]):
                return Result(state, [], changed=False)  # a re-delivery of a scored trajectory
            detail = (
                f"seq {seq} of {ev['trajectory_id']} was scored with another event; {ev['event_id']} loses"
            )
            dl = self.dead_letter(topic, key, value, "duplicate_seq", detail, position)
            return Result(state, [dl], changed=False)
        st = state if state is not None else TrajState(ev["trajectory_id"])
        outputs: list[Output] = []
        if seq < st.fold.upto:
            folded = st.fold.digest_at(seq)
            if folded is None or folded == digest(ev["event_id"]):
                return Result(
                    state, [], changed=False
                )  # a re-delivery (or older than an old checkpoint knew)
            detail = f"seq {seq} of {st.tid} is folded already; {ev['event_id']} loses"
            dl = self.dead_letter(topic, key, value, "duplicate_seq", detail, position)
            return Result(state, [dl], changed=False)
        old = st.entries.get(seq)
        if old is not None:
            if old[E_ID] == ev["event_id"]:
                return Result(state, [], changed=False)  # duplicate delivery
            rank = event_rank(ev["event_id"])
            detail = f"seq {seq} of {st.tid} has event {old[E_ID]} and {ev['event_id']}"
            if rank >= old[E_RANK]:
                dl = self.dead_letter(
                    topic, key, value, "duplicate_seq", detail + " (this one loses)", position
                )
                return Result(state, [dl], changed=False)
            # the newcomer wins: the old entry leaves the fold (its record is named by position)
            outputs.append(self._displaced(st, old, "duplicate_seq", detail + " (the other one wins)"))
            del st.entries[seq]
            if old[E_KIND] == "S":
                st.started = None
            elif old[E_KIND] == "E":
                st.end, st.end_seq = None, None
        if st.end_seq is not None and seq > st.end_seq:
            dl = self.dead_letter(
                topic, key, value, "after_end", f"seq {seq} > end seq {st.end_seq}", position
            )
            return Result(st, [*outputs, dl], changed=bool(outputs))
        rules = self.rules(ev["agent_id"], ev["agent_version"])
        outputs.extend(self._apply(st, record, ev, rules, f"{topic}@{position}"))
        st.touched = now
        if st.is_complete():
            outputs.append(self.final(st, rules))
            return Result(st, outputs, changed=True, finished=True)
        if self.live_scores and record == "AgentStep":
            st.live_due = True
        return Result(st, outputs, changed=True)

    def _displaced(self, st: TrajState, entry: Entry, reason: str, detail: str) -> Output:
        """A dead letter for an entry already in the fold (its bytes are in the log at its position)."""
        topic, _, pos = str(entry[E_POS]).rpartition("@")
        return self.dead_letter(
            topic or self.topic(TRAJECTORIES),
            st.tid.encode(),
            b"",
            reason,
            detail,
            pos,
            [("event_id", str(entry[E_ID]).encode())],
        )

    def _apply(
        self, st: TrajState, record: str, ev: dict[str, Any], rules: AgentRules, position: str
    ) -> list[Output]:
        seq = ev["seq"]
        if st.ident is None or record == "TrajectoryStarted":
            st.ident = (ev["tenant"], ev["agent_id"], ev["agent_version"], ev["trace_id"])
        tool = key = flag = tin = tout = cost = None
        lat = 0.0
        err = inv = False
        out: list[Output] = []
        kind = record[0] if record != "ToolCallCompleted" else "C"
        if record == "TrajectoryStarted":
            kind = "S"
            st.started = {
                "task": ev["task"],
                "scenario_id": ev.get("scenario_id"),
                "run_id": ev.get("run_id"),
                "trial": ev.get("trial"),
                "seed": ev.get("seed"),
                "expected_tool_calls": ev.get("expected_tool_calls"),
                "attributes": dict(ev.get("attributes") or {}),
            }
        elif record == "AgentStep":
            tin, tout = _count(ev.get("tokens_in")), _count(ev.get("tokens_out"))
            cost = _amount(ev.get("cost_usd"))
        elif record == "ToolCallRequested":
            kind = "R"
            tool = ev["tool"]
            key = digest(f"{ev['server_id']}/{tool}/{ev['arguments']['sha256']}")
            if rules.policy is not None:
                verdict = self._policy_verdict(st, ev, rules.policy)
                if verdict is not None:
                    rule, detail = verdict
                    flag = f"{rule}:{tool}"
                    out.append(self._finding(ev, rule, detail))
        elif record == "ToolCallCompleted":
            lat, cost = _amount(float(ev["latency_ms"])) or 0.0, _amount(ev.get("cost_usd"))
            err = bool(ev["is_error"])
            inv = err and ev.get("error_kind") == "invalid_arguments"
            if err and ev.get("error_kind") == UNAUTHORIZED:  # denied by an auth gateway
                flag = f"{UNAUTHORIZED}:{ev['tool']}"
        elif record == "TrajectoryEnded":
            kind = "E"
            st.end_seq = seq
            st.end = {
                "ts_us": ev["ts_us"],
                "outcome": ev["outcome"],
                "final_answer": ev.get("final_answer"),
                "tokens_in": _count(ev.get("tokens_in")),
                "tokens_out": _count(ev.get("tokens_out")),
                "cost_usd": _amount(ev.get("cost_usd")),
                "checks": dict(ev.get("checks") or {}),
                "attribution": ev.get("attribution"),
            }
            # events already folded past the end are not part of the trajectory
            for late in [q for q in st.entries if q > seq]:
                out.append(
                    self._displaced(st, st.entries.pop(late), "after_end", f"seq {late} > end seq {seq}")
                )
        st.entries[seq] = (
            ev["event_id"], event_rank(ev["event_id"]), ev["ts_us"], kind, tool, key, tin, tout,
            None if record == "TrajectoryEnded" else cost, lat, err, inv, flag, position,
        )  # fmt: skip
        if seq == st.contiguous:
            st._advance()
            lag = self.fold_lag
            if lag is not None and st.contiguous - st.fold.upto > 2 * lag:
                fold_entries(st.entries, st.fold, st.contiguous - lag)
        return out

    def _policy_verdict(
        self, st: TrajState, ev: dict[str, Any], policy: ToolPolicy
    ) -> tuple[str, str] | None:
        args = ev["arguments"]
        value: Any = args["json"]
        if not args["truncated"]:
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        verdict = policy.check(ev["server_id"], ev["tool"], value)
        limit = getattr(policy, "max_calls", None)
        if verdict is None and callable(limit):
            cap = limit(ev["server_id"], ev["tool"])
            made = (
                1
                + st.fold.made.get(ev["tool"], 0)
                + sum(
                    1
                    for q, e in st.entries.items()
                    if e[E_KIND] == "R" and e[E_TOOL] == ev["tool"] and q < ev["seq"]
                )
            )
            if cap is not None and made > cap:
                verdict = (
                    "max_calls",
                    f"{ev['server_id']}.{ev['tool']}: call {made} exceeds max_calls {cap}",
                )
        return verdict

    def _finding(self, ev: dict[str, Any], rule: str, detail: str) -> Output:
        rec = {
            "event_id": str(uuid.uuid5(_NS, f"{ev['trajectory_id']}:{ev['seq']}:policy")),
            "trajectory_id": ev["trajectory_id"],
            "tenant": ev["tenant"],
            "agent_id": ev["agent_id"],
            "agent_version": ev["agent_version"],
            "seq": ev["seq"],
            "ts_us": ev["ts_us"],
            "trace_id": ev["trace_id"],
            "span_id": ev["span_id"],
            "parent_span_id": None,
            "call_id": ev["call_id"],
            "server_id": ev["server_id"],
            "tool": ev["tool"],
            "rule": rule,
            "detail": detail,
        }
        return Output(
            self._policy, ev["trajectory_id"].encode(), self.codec.encode_record("PolicyViolation", rec)
        )

    def final(self, st: TrajState, rules: AgentRules | None = None, outcome: str | None = None) -> Output:
        """The final reward of `st` (``outcome`` overrides the end's, e.g. ``timeout``)."""
        if rules is None:
            _tenant, agent_id, version, _ = st.ident or ("", "", "", "")
            rules = self.rules(agent_id, version)
        rec = reward_record(st, rules, final=True, outcome=outcome)
        return Output(self._rewards, st.tid.encode(), self.codec.encode_record("RewardScored", rec))

    def live(self, st: TrajState) -> Output | None:
        """A running score through the contiguous prefix, or None when nothing is contiguous yet."""
        st.live_due = False
        if st.contiguous == 0:
            return None
        _, agent_id, version, _ = st.ident or ("", "", "", "")
        rec = reward_record(st, self.rules(agent_id, version), final=False)
        return Output(self._rewards, st.tid.encode(), self.codec.encode_record("RewardScored", rec))
