"""A trajectory's entries and the fold of its settled prefix: what keeps worker state small.

An open trajectory keeps one small entry per ``seq`` (`Entry`) only for the
seqs near its frontier. Once a seq is ``fold_lag`` seqs behind the contiguous
prefix (every seq below it has arrived), its entry is added to the trajectory's
`Fold` — counters, exact float sums, min/max timestamps, the tool sequence —
and dropped. Entries are folded strictly in seq order, and every output is
computed by adding the remaining entries to a copy of the fold, again in seq
order, with the very same `Fold.add`. A left fold in seq order is canonical,
so the result depends neither on arrival order nor on when folding happened:

- integers (counts, tokens) add exactly;
- float sums (tool latency, cost) are kept as exact partials (`exact_add`,
  Shewchuk's non-overlapping expansion, the algorithm inside `math.fsum`), and
  read with `math.fsum`, which rounds the exact sum of its inputs once; the
  partials' exact sum equals the folded values' exact sum, so
  ``fsum(partials + rest) == fsum(values + rest)`` bit for bit;
- ``redundant_calls`` needs the set of distinct call keys: kept as 8-byte
  BLAKE2b digests, in the fold and in the entries alike (same arithmetic).

What the fold keeps per seq, for re-delivery: the 8-byte digest of the event
id of every folded seq (`Fold.ids`, indexed by seq; `seq_digests` extends it
through the end for the done marker). A folded seq re-delivered with the same
event id is a no-op; with another event id it is a ``duplicate_seq`` dead
letter (the folded event stays, whatever the ranks). Only a fold restored from
a checkpoint written before digests were kept for every seq (which kept the
last 4,096) lacks the older ones: an event there is taken for a re-delivery.

State size: O(``fold_lag``) plus 8 bytes per folded seq (its event-id digest),
per folded tool call its index in the tool sequence (1–2 bytes; the reward
carries the sequence), and 8 bytes per *distinct* call key.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

# An entry per seq: what the reward needs of that event, nothing else.
# (event_id, rank, ts_us, kind, tool, call_key digest, tokens_in, tokens_out, cost_usd, latency_ms,
#  is_error, invalid, flag, source_position)
E_ID, E_RANK, E_TS, E_KIND, E_TOOL, E_KEY, E_TIN, E_TOUT, E_COST, E_LAT, E_ERR, E_INV, E_FLAG, E_POS = range(
    14
)
Entry = tuple[Any, ...]
DIGEST_BYTES = 8


def digest(text: str) -> bytes:
    """8-byte BLAKE2b digest of `text` (call keys, event ids in the fold)."""
    return hashlib.blake2b(text.encode(), digest_size=DIGEST_BYTES).digest()


def exact_add(parts: list[float], x: float) -> None:
    """Add `x` to the exact sum that `parts` represents (in place).

    `parts` stays a short list of non-overlapping floats whose exact sum is the
    exact sum of everything added, so ``math.fsum(parts + more)`` equals
    ``math.fsum(values + more)``. Non-finite values are kept once each (fsum's
    result then only depends on which of them occur); a finite sum that would
    overflow keeps `x` apart (fsum raises on it as it would on the values).
    """
    if not math.isfinite(x):
        if not any(p == x or (p != p and x != x) for p in parts):
            parts.append(x)
        return
    out: list[float] = []
    specials: list[float] = []
    y0 = x
    for y in parts:
        if not math.isfinite(y):
            specials.append(y)
            continue
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        if not math.isfinite(hi):
            parts.append(y0)
            return
        lo = y - (hi - x)
        if lo:
            out.append(lo)
        x = hi
    out.append(x)
    parts[:] = out + specials


class Fold:
    """The summary of a trajectory's entries in seq order (seqs ``< upto`` when it is the state's fold).

    Attributes:
        upto: the seqs below it are folded (0: nothing folded).
        tin / tout: token sums of the steps (None: no step reported any).
        cost: exact partials of the reported costs (None: none reported); lat: of tool latencies (ms).
        first_ts / last_ts: min / max event ``ts_us`` (None: no entry).
        tools: the tool of each request, in seq order; made: requests per tool.
        keys: digests of the distinct call keys; flags: the distinct policy flags (and
            ``unauthorized:<tool>`` of calls an auth gateway denied; `unauthorized` counts them).
        ids: event-id digests of seqs ``[upto - len(ids) / 8, upto)`` (8 bytes each; from seq 0
            unless restored from an older checkpoint).
    """

    __slots__ = (
        "cost",
        "errors",
        "first_ts",
        "flags",
        "ids",
        "invalid",
        "keys",
        "last_ts",
        "lat",
        "made",
        "out_of_scope",
        "steps",
        "tin",
        "tool_calls",
        "tools",
        "tout",
        "unauthorized",
        "upto",
    )

    def __init__(self) -> None:
        self.upto = 0
        self.steps = self.tool_calls = self.errors = self.invalid = self.out_of_scope = 0
        self.unauthorized = 0
        self.tin: int | None = None
        self.tout: int | None = None
        self.cost: list[float] | None = None
        self.lat: list[float] = []
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.tools: list[str] = []
        self.made: dict[str, int] = {}
        self.keys: set[bytes] = set()
        self.flags: set[str] = set()
        self.ids = bytearray()

    def add(self, e: Entry) -> None:
        """Fold one entry in (callers go in seq order: the tool sequence is ordered by it)."""
        k = e[E_KIND]
        if k == "A":
            self.steps += 1
            if e[E_TIN] is not None:
                self.tin = e[E_TIN] if self.tin is None else self.tin + e[E_TIN]
            if e[E_TOUT] is not None:
                self.tout = e[E_TOUT] if self.tout is None else self.tout + e[E_TOUT]
        elif k == "R":
            self.tool_calls += 1
            self.keys.add(e[E_KEY])
            tool = e[E_TOOL]
            self.tools.append(tool)
            self.made[tool] = self.made.get(tool, 0) + 1
            if e[E_FLAG] is not None:
                self.out_of_scope += 1
                self.flags.add(e[E_FLAG])
        elif k == "C":
            exact_add(self.lat, e[E_LAT])
            if e[E_ERR]:
                self.errors += 1
            if e[E_INV]:
                self.invalid += 1
            if e[E_FLAG] is not None:  # a completed call's only flag: denied by an auth gateway
                self.unauthorized += 1
                self.flags.add(e[E_FLAG])
        if e[E_COST] is not None:
            if self.cost is None:
                self.cost = []
            exact_add(self.cost, e[E_COST])
        ts = e[E_TS]
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    def scratch(self) -> Fold:
        """A copy to add more entries to (``ids`` and ``upto`` are not copied)."""
        c = Fold()
        c.steps, c.tool_calls, c.errors, c.invalid = self.steps, self.tool_calls, self.errors, self.invalid
        c.out_of_scope, c.tin, c.tout = self.out_of_scope, self.tin, self.tout
        c.unauthorized = self.unauthorized
        c.cost = None if self.cost is None else list(self.cost)
        c.lat = list(self.lat)
        c.first_ts, c.last_ts = self.first_ts, self.last_ts
        c.tools, c.made = list(self.tools), dict(self.made)
        c.keys, c.flags = set(self.keys), set(self.flags)
        return c

    def digest_at(self, seq: int) -> bytes | None:
        """The event-id digest of folded `seq`, or None when the fold does not know it (see `ids`)."""
        return digest_in(self.ids, self.upto, seq)


NO_EVENT = bytes(DIGEST_BYTES)  # in a done marker's digests: no event had that seq (a timed-out gap)


def digest_in(ids: bytes | bytearray, upto: int, seq: int) -> bytes | None:
    """The digest of `seq` in `ids`, the 8-byte digests of seqs ``[upto - len(ids) / 8, upto)``;
    None when `seq` is outside that range."""
    off = (seq - upto) * DIGEST_BYTES + len(ids)
    return bytes(ids[off : off + DIGEST_BYTES]) if 0 <= off < len(ids) else None


def seq_digests(f: Fold, entries: dict[int, Entry], end: int) -> bytes:
    """The event-id digests of seqs ``[f.upto - len(f.ids) / 8, end]``: the fold's, then the
    entries' (`NO_EVENT` for a seq without one). ``len(...) / 8`` seqs; what a done marker keeps."""
    if end + 1 < f.upto:
        return bytes(f.ids[: max(0, len(f.ids) - (f.upto - end - 1) * DIGEST_BYTES)])
    rest = (digest(entries[q][E_ID]) if q in entries else NO_EVENT for q in range(f.upto, end + 1))
    return bytes(f.ids) + b"".join(rest)


def fold_entries(entries: dict[int, Entry], f: Fold, upto: int) -> None:
    """Move the entries of seqs ``[f.upto, upto)`` (all present) into `f`, in seq order."""
    ids = f.ids
    for q in range(f.upto, upto):
        e = entries.pop(q)
        f.add(e)
        ids += digest(e[E_ID])
    f.upto = max(f.upto, upto)
