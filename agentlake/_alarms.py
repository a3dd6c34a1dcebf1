"""Alarm counts kept under the data dir, for `agentlake status` to read from any process.

A count is a small JSON file ``{"<name>": total, "last": [ids…], "at": unix seconds}``
replaced atomically on each update. The reconciler's count (trajectories the stream worker
did not score) and Milvus's refused rows are two of them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_to_count(path: Path, name: str, ids: list[str], keep: int = 20) -> None:
    """Add ``len(ids)`` to the count `name` in `path`, remembering the last `keep` ids.

    Raises:
        OSError: the file cannot be written (the caller decides whether that matters).
    """
    if not ids:
        return
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {name: 0, "last": []}
    data[name] = int(data.get(name, 0)) + len(ids)
    data["last"] = [*data.get("last", []), *ids][-keep:]
    data["at"] = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_count(path: Path, name: str) -> int:
    """The count `name` in `path` (0 when the file or the count is missing or unreadable)."""
    try:
        return int(json.loads(path.read_text()).get(name, 0))
    except (OSError, ValueError):
        return 0
