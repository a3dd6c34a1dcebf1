"""Partitions of open trajectories, their checkpoints, and which offsets are safe to commit.

No Kafka here: the faust adapter (`app.py`) feeds `Engine.process()` with
records, sends every `Output` it returns with ``acks=all`` and awaits them, and
only then commits `Engine.committable()`. That order is the whole commit
discipline:

- An event's effects are its outputs (final reward, policy findings, dead
  letters: sent in the same flush) and its trajectory's state. The state is
  durable once a checkpoint that includes the event is acknowledged, or once
  the trajectory is finished (its final reward and done marker acknowledged).
- Per source partition, the committable offset is the *low watermark*: the
  lowest offset applied to an open trajectory since that trajectory's last
  checkpoint, or, when there is none, the offset after the last processed
  record. Checkpoints of changed open trajectories are written every
  ``checkpoint_every_s``, so commits trail processing by about that much and
  no open trajectory holds the watermark back for longer.
- Records may arrive out of offset order around a rebalance (faust hands
  over records prefetched before it, then re-fetches from the committed
  offset). The fold does not mind; the watermark only advances over the
  contiguous run of processed offsets, so a record faust never delivered is
  never committed past (it is re-read after the next restart or rebalance).

Restart cost is bounded by what the compacted checkpoint topic holds: open
trajectories and done markers younger than ``done_retention_s`` (older ones are
tombstoned), plus the records after the committed offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agentlake.streams import state as ckpt
from agentlake.streams.fold import DIGEST_BYTES, seq_digests
from agentlake.streams.processor import Output, RewardProcessor, TrajState

log = logging.getLogger("agentlake.streams")

TP = Any  # (topic, partition): faust's TP named tuple, or any tuple in tests
Record = tuple[TP, int, bytes | None, bytes | None]  # tp, offset, key, value


@dataclass
class EngineStats:
    events: int = 0
    finals: int = 0
    timeouts: int = 0
    dead_letters: int = 0
    checkpoints: int = 0
    live: int = 0
    gaps: int = 0


class Engine:
    """Open trajectories by partition, with the rules for checkpoints, timeouts, live scores and commits.

    Args:
        processor: the pure fold.
        checkpoint_topic: physical name of the compacted checkpoint topic (partition = source partition).
        checkpoint_every_s: how often changed open trajectories are checkpointed.
        idle_timeout_s: an open trajectory with no event for this long is scored with outcome ``timeout``.
        live_every_s: at most one live score per trajectory per this interval.
        done_retention_s: how long a done marker is kept (re-delivered events within it are idempotent,
            another event at a scored seq is ``duplicate_seq``).
        max_checkpoint_bytes: a checkpoint larger than this is not written. The settled prefix
            of a trajectory is folded to ~8 bytes per event (its event-id digest) plus 1 byte per
            tool call and 8 per distinct call key (`agentlake.streams.fold`), so only one with
            ~100k events gets there; it then holds its partition's low watermark at its first
            event since its last checkpoint until it finishes, so a restart re-reads those events
            from the source topic instead (correct, only slower to restore). A done marker over
            it keeps the digests of only as many of the last seqs as fit (older seqs of that
            trajectory then count as re-deliveries). None: no limit.
        clock: monotonic seconds; wall_ms: wall clock in ms (both injectable for tests).
    """

    def __init__(
        self,
        processor: RewardProcessor,
        checkpoint_topic: str,
        *,
        checkpoint_every_s: float = 1.0,
        idle_timeout_s: float = 600.0,
        live_every_s: float = 1.0,
        done_retention_s: float = 600.0,
        max_checkpoint_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.proc = processor
        self.checkpoint_topic = checkpoint_topic
        self.checkpoint_every_s = checkpoint_every_s
        self.idle_timeout_s = idle_timeout_s
        self.live_every_s = live_every_s
        self.done_retention_s = done_retention_s
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self.oversized: set[str] = set()  # open trajectories too large to checkpoint (logged once)
        self.clock = clock
        self.wall_ms = wall_ms
        self.open: dict[str, TrajState] = {}
        # tid -> (end seq, scored at (clock), partition, scored event-id digests as in `ckpt.encode_done`)
        self.done: dict[str, tuple[int, float, int, bytes]] = {}
        self.restored: set[int] = set()
        self.next_offset: dict[TP, int] = {}  # end of the contiguous run of processed offsets
        self.ahead: dict[TP, set[int]] = {}  # processed offsets past a gap
        self.committed: dict[TP, int] = {}
        self.dirty: set[str] = set()
        self.live_due: set[str] = set()
        self.stats = EngineStats()
        self._last_checkpoint = clock()
        self._last_scan = clock()

    # -- partitions ---------------------------------------------------------
    def load(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Restore `partition` from its checkpoint records (in log order); returns open trajectories."""
        now, wall = self.clock(), self.wall_ms()
        for key, value in records:
            tid = key.decode("utf-8", "replace")
            if value is None:
                self.open.pop(tid, None)
                self.done.pop(tid, None)
                continue
            st, done, at_ms = ckpt.read(value)
            if st is not None:
                st.partition, st.touched = partition, now
                self.open[tid] = st
                self.done.pop(tid, None)
            else:
                assert done is not None
                self.open.pop(tid, None)
                self.done[tid] = (done[0], now - max(0.0, (wall - at_ms) / 1000), partition, done[1])
        self.restored.add(partition)
        return sum(1 for st in self.open.values() if st.partition == partition)

    def drop(self, partitions: set[int]) -> None:
        """Forget partitions (revoked): their state is re-read from the checkpoint topic if they come back."""
        for tid in [t for t, st in self.open.items() if st.partition in partitions]:
            del self.open[tid]
            self.dirty.discard(tid)
            self.live_due.discard(tid)
        for tid in [t for t, d in self.done.items() if d[2] in partitions]:
            del self.done[tid]
        self.restored -= partitions
        for d in (self.next_offset, self.ahead, self.committed):
            for tp in [tp for tp in d if tp[1] in partitions]:
                del d[tp]

    def expect(self, tp: TP, committed: int | None) -> None:
        """The committed offset of `tp` at assignment: processing must start there."""
        if committed is not None and committed >= 0:
            self.next_offset[tp] = committed
            self.committed[tp] = committed

    # -- records ------------------------------------------------------------
    def process(self, records: Iterable[Record]) -> list[Output]:
        """Fold records (in offset order per partition); returns what to send before committing."""
        now = self.clock()
        outs: list[Output] = []
        proc, open_, done = self.proc, self.open, self.done
        for tp, offset, key, value in records:
            topic, partition = tp[0], tp[1]
            expected = self.next_offset.get(tp)
            if expected is None or offset == expected:
                nxt, ahead = offset + 1, self.ahead.get(tp)
                while ahead and nxt in ahead:
                    ahead.discard(nxt)
                    nxt += 1
                self.next_offset[tp] = nxt
            elif offset < expected or offset in self.ahead.get(tp, ()):
                continue  # processed already in this assignment
            else:
                if not self.ahead.get(tp):
                    self.stats.gaps += 1
                    log.info(
                        "%s[%d]: offset %d before %d; commits wait for the gap",
                        topic,
                        partition,
                        offset,
                        expected,
                    )
                self.ahead.setdefault(tp, set()).add(offset)
            self.stats.events += 1
            tid = key.decode("utf-8", "replace") if key is not None else ""
            st = open_.get(tid)
            d = done.get(tid) if st is None else None
            res = proc.process(
                st,
                topic,
                key,
                value,
                f"{partition}:{offset}",
                done_end_seq=d[0] if d else None,
                done_ids=d[3] if d else b"",
                now=now,
            )
            if res.outputs:
                outs.extend(res.outputs)
                self.stats.dead_letters += sum(1 for o in res.outputs if o.topic.endswith(".dlq"))
            if res.finished:
                assert res.state is not None
                self._finish(res.state, partition, now, outs)
            elif res.changed and res.state is not None:
                st = res.state
                if st.partition is None:
                    st.partition = partition
                    open_[tid] = st
                if tp not in st.dirty:
                    st.dirty[tp] = offset
                self.dirty.add(tid)
                if st.live_due:
                    self.live_due.add(tid)
        return outs

    def _finish(self, st: TrajState, partition: int, now: float, outs: list[Output]) -> None:
        tid = st.tid
        self.open.pop(tid, None)
        self.dirty.discard(tid)
        self.oversized.discard(tid)
        self.live_due.discard(tid)
        end = st.end_seq if st.end_seq is not None else st.max_seq
        wall, ids = self.wall_ms(), seq_digests(st.fold, st.entries, end)
        marker = ckpt.encode_done(tid, end, wall, ids)
        limit = self.max_checkpoint_bytes
        if limit is not None and len(marker) > limit:
            # keep the digests of the last seqs that fit (16: the length prefix, with room to spare)
            room = max(0, limit - len(ckpt.encode_done(tid, end, wall)) - 16) // DIGEST_BYTES
            log.warning(
                "trajectory %s: done marker of %d bytes is over %d; it keeps the digests of its "
                "last %d of %d seqs (another event at an older one will count as a re-delivery)",
                tid,
                len(marker),
                limit,
                room,
                len(ids) // DIGEST_BYTES,
            )
            ids = ids[max(0, len(ids) - room * DIGEST_BYTES) :]
            marker = ckpt.encode_done(tid, end, wall, ids)
        self.done[tid] = (end, now, partition, ids)
        outs.append(Output(self.checkpoint_topic, tid.encode(), marker, partition=partition))
        self.stats.finals += 1

    # -- time ---------------------------------------------------------------
    def tick(self, force_checkpoint: bool = False) -> list[Output]:
        """Live scores that are due, idle timeouts, checkpoints and done-marker expiry."""
        now = self.clock()
        outs: list[Output] = []
        if self.live_due:
            for tid in list(self.live_due):
                st = self.open.get(tid)
                if st is None:
                    self.live_due.discard(tid)
                elif now - st.live_at >= self.live_every_s:
                    self.live_due.discard(tid)
                    st.live_at = now
                    out = self.proc.live(st)
                    if out is not None:
                        outs.append(out)
                        self.stats.live += 1
        if now - self._last_scan >= min(1.0, self.idle_timeout_s / 4):
            self._last_scan = now
            for st in [s for s in self.open.values() if now - s.touched >= self.idle_timeout_s]:
                log.info(
                    "trajectory %s idle for %.0fs: scored with outcome timeout", st.tid, now - st.touched
                )
                outs.append(self.proc.final(st, outcome="timeout"))
                self._finish(st, st.partition or 0, now, outs)
                self.stats.timeouts += 1
            while self.done:
                tid, (_, at, partition, _) = next(iter(self.done.items()))
                if now - at < self.done_retention_s:
                    break
                del self.done[tid]
                outs.append(Output(self.checkpoint_topic, tid.encode(), None, partition=partition))
        if self.dirty and (force_checkpoint or now - self._last_checkpoint >= self.checkpoint_every_s):
            wall = self.wall_ms()
            held: set[str] = set()
            for tid in self.dirty:
                st = self.open[tid]
                value = ckpt.encode_open(st, wall)
                if self.max_checkpoint_bytes is not None and len(value) > self.max_checkpoint_bytes:
                    held.add(tid)  # stays dirty: its first un-checkpointed offset holds the watermark
                    if tid not in self.oversized:
                        self.oversized.add(tid)
                        log.warning(
                            "trajectory %s: checkpoint of %d bytes is over %d; its events stay uncommitted "
                            "until it ends (a restart re-reads them)",
                            tid,
                            len(value),
                            self.max_checkpoint_bytes,
                        )
                    continue
                outs.append(Output(self.checkpoint_topic, tid.encode(), value, partition=st.partition))
                st.dirty.clear()
            self.stats.checkpoints += len(self.dirty) - len(held)
            self.dirty = held
        if force_checkpoint or now - self._last_checkpoint >= self.checkpoint_every_s:
            self._last_checkpoint = now
        return outs

    def committable(self) -> dict[TP, int]:
        """Offsets safe to commit *once every output returned so far is acknowledged*; only the ones
        that moved. Call `committed_to()` after the commit succeeded."""
        low = dict(self.next_offset)
        for tid in self.dirty:
            for tp, off in self.open[tid].dirty.items():
                if off < low.get(tp, off + 1):
                    low[tp] = off
        return {tp: off for tp, off in low.items() if off > self.committed.get(tp, -1)}

    def committed_to(self, offsets: dict[TP, int]) -> None:
        self.committed.update(offsets)

    def open_in(self, partition: int) -> int:
        return sum(1 for st in self.open.values() if st.partition == partition)
