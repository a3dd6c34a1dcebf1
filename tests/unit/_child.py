"""Run Python code in a child process (chdb allows one data dir per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def last_json_line(code: str, *args: str, timeout: float = 180) -> Any:
    """Run ``python -c code args…`` with this checkout on ``PYTHONPATH`` and return the JSON of
    the last line it printed.

    Raises:
        AssertionError: the child exited non-zero (its stderr is the message).
    """
    r = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])
