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


def test_every_miss_reason_the_cache_can_give_is_explained() -> None:
    import re

    from agentlake.cli.lake import MISS_REASONS

    src = (Path(__file__).resolve().parents[3] / "agentlake" / "lake" / "cache.py").read_text()
    given = set(re.findall(r'(?:return|reason =|verdict =) "([a-z_]+)"', src)) - {"hit"}
    assert given and given <= set(MISS_REASONS), given - set(MISS_REASONS)


def test_demo_lake_part_renders_unmeasured_freshness_and_the_differing_parameter() -> None:
    from agentlake.cli._app import out
    from agentlake.cli.lake import render_lake_demo

    def lookup(hit: bool, reason: str, detail: str = "") -> dict[str, object]:
        cand = {
            "entry_id": "e" * 16,
            "similarity": 0.9,
            "threshold": 0.45,
            "reward": 0.9,
            "agent": "support-bot@1.0",
            "signature": "refund[num=24]",
            "verdict": reason,
            "detail": detail,
        }
        task = "Refund order 24" if hit else "Refund order 25"
        return {
            "hit": hit,
            "reason": reason,
            "task": task,
            "signature": "refund[num=25]",
            "latency_us": 80.0,
            "result": None,
            "provenance": [cand],
        }

    lake = {
        "entries": 48,
        "freshness_ms": {"p50": None, "max": None},
        "hit": lookup(True, "hit"),
        "miss": lookup(False, "signature_mismatch", "num 25 ≠ 24"),
        "plan": {
            "task": "Refund order 25",
            "signature": "refund[num=25]",
            "tool_sequence": [],
            "support": 0.0,
            "tools": [],
            "lessons": [],
        },
        "reproduce": "agentlake lake query 'Refund order 24' --tenant demo --toolset abc --agent support-bot",
    }
    with out.capture() as cap:
        render_lake_demo(lake)
    text = cap.get()
    assert "p50 n/a, max n/a" in text and "None" not in text and "{" not in text
    assert "MISS (signature_mismatch: num 25 ≠ 24)" in text
    assert "--tenant demo --toolset abc" in text
