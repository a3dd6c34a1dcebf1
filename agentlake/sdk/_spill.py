"""A durable local buffer for events the broker could not take.

Segments are append-only files of framed records::

    crc32(u32) | topic_len(u16) | key_len(u32) | value_len(u32) | topic | key | value

Each spill is flushed and fsync'ed before `append` returns, so an event handed
to the SDK survives a crash of the agent process. A torn record at the end of a
segment (crash mid-write) fails its CRC and is where reading stops. Segments are
claimed with `flock` while drained, so several processes may share one folder.
Draining is at-least-once: a crash between send and delete re-sends a segment,
which the projections absorb (they are keyed by event id).

Records the broker will never accept (too large, invalid) are moved to
``quarantine/`` in the same framing, one file per reason, so that they are kept
for inspection (`agentlake status` counts them) but never block what follows.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

Record = tuple[str, bytes, bytes]  # topic, key, value
_HEAD = struct.Struct(">IHII")


class SpillBuffer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active: IO[bytes] | None = None
        self._active_path: Path | None = None
        self._counter = 0

    def append(self, records: Iterable[Record]) -> int:
        """Write records durably; returns how many were written."""
        frames = [_frame(r) for r in records]
        if not frames:
            return 0
        with self._lock:
            f = self._open_active()
            f.write(b"".join(frames))
            f.flush()
            os.fsync(f.fileno())
        return len(frames)

    def _open_active(self) -> IO[bytes]:
        if self._active is None:
            self._counter += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter}.seg"
            self._active_path = self.folder / (name + ".open")
            self._active = open(self._active_path, "ab")  # noqa: SIM115 - kept open across appends
            fcntl.flock(self._active.fileno(), fcntl.LOCK_EX)
        return self._active

    def seal(self) -> None:
        """Close the segment being written so that it can be drained."""
        with self._lock:
            if self._active is not None and self._active_path is not None:
                self._active.close()
                self._active_path.rename(self._active_path.with_suffix(""))
                self._active = None
                self._active_path = None

    def pending(self) -> list[Path]:
        """Sealed segments, oldest first (also those left by crashed processes)."""
        segs = sorted(self.folder.glob("*.seg"))
        # An `.open` segment whose writer died (no lock held) is sealed by whoever finds it.
        for p in self.folder.glob("*.seg.open"):
            if p == self._active_path:
                continue
            try:
                with open(p, "rb") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    p.rename(p.with_suffix(""))
                    segs.append(p.with_suffix(""))
            except (BlockingIOError, FileNotFoundError):
                continue
        return sorted(set(segs))

    @property
    def quarantine_dir(self) -> Path:
        return self.folder / "quarantine"

    def quarantine(self, records: Iterable[Record], reason: str) -> int:
        """Set records aside for good (durably, like `append`); returns how many."""
        frames = [_frame(r) for r in records]
        if not frames:
            return 0
        safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in reason)[:60] or "unknown"
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = self.quarantine_dir / f"{time.time_ns():020d}-{os.getpid()}-{safe}.seg"
        with self._lock, open(path, "ab") as f:
            f.write(b"".join(frames))
            f.flush()
            os.fsync(f.fileno())
        return len(frames)

    def quarantined(self) -> dict[str, int]:
        """Quarantined records on disk, per reason."""
        return count_quarantined(self.folder)

    def has_pending(self) -> bool:
        return bool(self.pending()) or self._active is not None

    def count(self) -> int:
        """Records currently buffered on disk (sealed and active)."""
        total = 0
        paths = [*self.folder.glob("*.seg"), *self.folder.glob("*.seg.open")]
        for p in paths:
            try:
                total += sum(1 for _ in read_segment(p))
            except FileNotFoundError:
                continue
        return total


def _frame(record: Record) -> bytes:
    topic, key, value = record
    t = topic.encode()
    body = t + key + value
    head = struct.pack(">HII", len(t), len(key), len(value))
    return struct.pack(">I", zlib.crc32(head + body)) + head + body


def count_quarantined(spill_dir: Path) -> dict[str, int]:
    """Quarantined records under `spill_dir`, per reason (no buffer needed: for `status`)."""
    out: dict[str, int] = {}
    for p in sorted((spill_dir / "quarantine").glob("*.seg")):
        reason = p.stem.split("-", 2)[-1]
        try:
            out[reason] = out.get(reason, 0) + sum(1 for _ in read_segment(p))
        except FileNotFoundError:
            continue
    return out


def read_segment(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + _HEAD.size <= len(data):
        crc, tl, kl, vl = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        end = start + tl + kl + vl
        if end > len(data) or zlib.crc32(data[pos + 4 : end]) != crc:
            return  # torn tail: the writer crashed mid-record
        t = data[start : start + tl].decode()
        k = data[start + tl : start + tl + kl]
        v = data[start + tl + kl : end]
        yield t, k, v
        pos = end


class SegmentClaim:
    """An exclusive claim on one sealed segment while it is re-sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[bytes] | None = None

    def __enter__(self) -> SegmentClaim | None:
        try:
            self._f = open(self.path, "rb")
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, FileNotFoundError):
            if self._f:
                self._f.close()
            return None
        return self

    def records(self) -> list[Record]:
        return list(read_segment(self.path))

    def done(self) -> None:
        self.path.unlink(missing_ok=True)

    def keep_only(self, records: list[Record]) -> None:
        """Replace the segment by `records` (those still to send), keeping its place in
        the oldest-first order; with none left, remove it."""
        if not records:
            self.done()
            return
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(_frame(r) for r in records))
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self.path)

    def __exit__(self, *exc: object) -> None:
        if self._f:
            self._f.close()
