"""`agentlake lake`: bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentlake", "lake", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("query", "   "), {}, "the task is empty"),
        (("invalidate",), {}, "say what changed"),
        (
            ("query", "Refund order 1", "--no-catch-up"),
            {"AGENTLAKE_LAKE_CROSS_VERSION": "bogus"},
            "CROSS_VERSION",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: tuple[str, ...], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    r = run(*args, AGENTLAKE_HOME=str(tmp_path), **env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1


def test_help_lists_the_commands() -> None:
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("serve", "query", "eval", "stats", "invalidate"):
        assert cmd in r.stdout
