"""The OTLP endpoint's spool: a write-ahead log of accepted spans, so that a 200 survives a crash.

The endpoint answers 200 once the spans are in the `TraceAssembler` (memory) *and*
appended here; after a crash (even ``kill -9``) the next endpoint on the same folder
replays the spool into its assembler, with the spans' original arrival times, so
grace periods and idle timeouts carry on where they were.

Layout of the folder: ``LOCK`` (``flock``: one endpoint per spool) and segments
``<seq:012d>.spool``, each the magic ``MAGIC`` followed by records::

    crc32 (u32, of the 4 + n bytes that follow) | n (u32) | kind (1 byte) | body (n - 1 bytes)

kind ``S``: the spans one request added, body JSON
``{"t": arrival µs, "r": [resource attributes], "s": [[trace_id, span_id, parent, name,
start_us, end_us, attributes, resource index, status_error, status_message, events]]}``.
kind ``F``: trajectories emitted (their events acknowledged by Kafka), body JSON
``{"t": µs, "ids": [trace ids]}``.

A torn record (crash mid-write) fails its CRC and is where reading that segment stops;
each process writes a new segment, so only the last segment of a crashed process can
be torn. Segments rotate at ``segment_bytes``. The oldest segment is deleted once every
trace with spans in it is finished, and only the oldest: a segment's ``F`` records are
what cancels the spans of older segments on replay, so they go after those spans.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentlake.otel._wire import Span

log = logging.getLogger("agentlake.otel")

MAGIC = b"ALSPOOL1"
_HEAD = struct.Struct(">II")  # crc32, length
_SPANS, _FINISHED = b"S", b"F"
_SUFFIX = ".spool"


class SpoolLocked(RuntimeError):
    """Another process holds the spool (one endpoint per spool folder)."""


class Spool:
    """Append-only segments of accepted spans and finished markers, under `folder`.

    Opening takes the folder's lock, reads what a previous process left (see
    `take_recovered`) and starts a new segment. Not thread-safe: call from one thread.

    Args:
        folder: created if missing.
        fsync: ``os.fsync`` every append (survives power loss); False flushes to the OS
            only (survives the process being killed, not the machine).
        segment_bytes: a segment is closed and a new one started beyond this size.

    Raises:
        SpoolLocked: another process has the folder open.
        OSError: the folder cannot be created or read.
    """

    def __init__(self, folder: Path, *, fsync: bool = False, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.folder = folder
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(folder / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(
                f"the OTLP spool {folder} is in use by another process: run one endpoint per spool, "
                "or give this one its own AGENTLAKE_OTEL_SPOOL_DIR"
            ) from None
        # segment -> traces with spans in it not finished yet; trace -> those segments
        self._open: dict[int, set[str]] = {}
        self._where: dict[str, set[int]] = {}
        self._sizes: dict[int, int] = {}
        self._fd = -1
        try:
            existing = sorted(
                int(p.name.removesuffix(_SUFFIX)) for p in folder.glob(f"*{_SUFFIX}") if _seq_ok(p)
            )
            self._recovered, self._recovered_done = self._recover(existing)
            self._seq = (existing[-1] if existing else 0) + 1
            self._start_segment()
            self._drop_finished_segments()
        except BaseException:
            self.close()
            raise

    # -- recovery ----------------------------------------------------------------
    def _recover(self, seqs: list[int]) -> tuple[list[tuple[int, list[Span]]], list[str]]:
        """Spans of traces not finished (in arrival order) and the traces finished."""
        finished_at: dict[str, int] = {}  # trace -> position of its last F record
        pos = 0
        for seq in seqs:
            self._open[seq] = set()
            self._sizes[seq] = self._path(seq).stat().st_size
            for kind, body in read_segment(self._path(seq)):
                if kind == _FINISHED:
                    for tid in json.loads(body)["ids"]:
                        finished_at[tid] = pos
                pos += 1
        batches: list[tuple[int, list[Span]]] = []
        pos = 0
        for seq in seqs:
            for kind, body in read_segment(self._path(seq), warn=False):
                if kind == _SPANS:
                    arrival, spans = decode_spans(body)
                    live = [s for s in spans if finished_at.get(s.trace_id, -1) < pos]
                    if live:
                        batches.append((arrival, live))
                        self._track(seq, live)
                pos += 1
        return batches, [tid for tid in finished_at if tid not in self._where]

    def take_recovered(self) -> tuple[list[tuple[int, list[Span]]], list[str]]:
        """What the previous process left, once: ``([(arrival µs, spans)], finished trace ids)``.

        The batches, in arrival order, hold only spans of traces not finished; the finished
        ids are those whose marker is still in the spool (their late spans can be refused).
        """
        out = self._recovered, self._recovered_done
        self._recovered, self._recovered_done = [], []
        return out

    # -- writing -------------------------------------------------------------------
    def append(self, spans: list[Span], arrival_us: int) -> None:
        """Log spans accepted at `arrival_us`; returns once they are with the OS (or on disk).

        Raises:
            OSError: the write failed (the segment is left as it was before the call).
        """
        if not spans:
            return
        self._write(_SPANS, encode_spans(spans, arrival_us))
        self._track(self._seq, spans)
        self._rotate_if_full()

    def finish(self, trace_ids: list[str], now_us: int) -> None:
        """Log that these traces were emitted; segments left with nothing open are deleted.

        Raises:
            OSError: the write failed (the traces then replay after a restart, and re-emit
                the same events).
        """
        if not trace_ids:
            return
        self._write(_FINISHED, json.dumps({"t": now_us, "ids": trace_ids}, separators=(",", ":")).encode())
        for tid in trace_ids:
            for seq in self._where.pop(tid, ()):
                self._open[seq].discard(tid)
        self._rotate_if_full()
        self._drop_finished_segments()

    def close(self) -> None:
        """Close the segment and release the lock (idempotent)."""
        if self._fd >= 0:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def stats(self) -> dict[str, int]:
        """``segments``, ``bytes`` on disk, ``open_traces`` (traces with spans not finished)."""
        return {
            "segments": len(self._sizes),
            "bytes": sum(self._sizes.values()),
            "open_traces": len(self._where),
        }

    def _track(self, seq: int, spans: list[Span]) -> None:
        for s in spans:
            self._open[seq].add(s.trace_id)
            self._where.setdefault(s.trace_id, set()).add(seq)

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:012d}{_SUFFIX}"

    def _write(self, kind: bytes, body: bytes) -> None:
        payload = kind + body
        head = struct.pack(">I", len(payload))
        frame = struct.pack(">I", zlib.crc32(head + payload)) + head + payload
        size = self._sizes[self._seq]
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            try:  # leave no torn record behind: later records of the segment must stay readable
                os.ftruncate(self._fd, size)
            except OSError:
                self._seq_broken()
            raise
        self._sizes[self._seq] = size + len(frame)

    def _seq_broken(self) -> None:
        """The segment could not be repaired: go on in a new one (the reader stops at the tear)."""
        try:
            self._seq += 1
            self._start_segment()
        except OSError:
            log.exception("cannot start a new spool segment in %s", self.folder)

    def _start_segment(self) -> None:
        if self._fd >= 0:
            if self.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        path = self._path(self._seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            os.write(fd, MAGIC)
            if self.fsync:
                os.fsync(fd)
                _fsync_dir(self.folder)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._open[self._seq] = set()
        self._sizes[self._seq] = len(MAGIC)

    def _rotate_if_full(self) -> None:
        if self._sizes[self._seq] >= self.segment_bytes:
            self._seq += 1
            self._start_segment()

    def _drop_finished_segments(self) -> None:
        for seq in sorted(self._open):
            if seq == self._seq or self._open[seq]:
                break
            self._path(seq).unlink(missing_ok=True)
            del self._open[seq], self._sizes[seq]


def _seq_ok(p: Path) -> bool:
    return p.name.removesuffix(_SUFFIX).isdigit()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(path: Path, *, warn: bool = True) -> Iterator[tuple[bytes, bytes]]:
    """The (kind, body) records of a segment, up to the first torn or corrupt one (logged
    when `warn`)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if data and warn:
            log.warning("spool segment %s is not a spool segment (bad magic): skipped", path)
        return
    off = len(MAGIC)
    while off < len(data):
        if off + _HEAD.size > len(data):
            break
        crc, n = _HEAD.unpack_from(data, off)
        end = off + _HEAD.size + n
        if n == 0 or end > len(data) or zlib.crc32(data[off + 4 : end]) != crc:
            break
        yield data[off + _HEAD.size : off + _HEAD.size + 1], data[off + _HEAD.size + 1 : end]
        off = end
    if off < len(data) and warn:
        log.warning(
            "spool segment %s: %d bytes at offset %d are torn or corrupt (a crash mid-write): skipped",
            path,
            len(data) - off,
            off,
        )


def encode_spans(spans: list[Span], arrival_us: int) -> bytes:
    """The body of an ``S`` record; spans sharing a resource dict store it once."""
    resources: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    rows = []
    for s in spans:
        ri = index.get(id(s.resource))
        if ri is None:
            ri = index[id(s.resource)] = len(resources)
            resources.append(s.resource)
        rows.append(
            [
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.name,
                s.start_us,
                s.end_us,
                s.attributes,
                ri,
                s.status_error,
                s.status_message,
                s.events,
            ]
        )
    doc = {"t": arrival_us, "r": resources, "s": rows}
    # surrogatepass: a lone surrogate from OTLP/JSON text round-trips instead of failing the write
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def decode_spans(body: bytes) -> tuple[int, list[Span]]:
    """``(arrival µs, spans)`` of an ``S`` record body (inverse of `encode_spans`)."""
    doc = json.loads(body.decode("utf-8", "surrogatepass"))
    resources = doc["r"]
    spans = [
        Span(
            trace_id=tid,
            span_id=sid,
            parent_span_id=parent,
            name=name,
            start_us=start,
            end_us=end,
            attributes=attrs,
            resource=resources[ri],
            status_error=bool(err),
            status_message=msg,
            events=[(str(n), int(ts), dict(a)) for n, ts, a in events],
        )
        for tid, sid, parent, name, start, end, attrs, ri, err, msg, events in doc["s"]
    ]
    return int(doc["t"]), spans
