"""`agentlake demo` as a user runs it: every part of the loop, in its own data dir and topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentlake.settings import Settings


def test_demo_runs_every_part_and_the_gate_blocks_the_candidate(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AGENTLAKE_HOME": str(tmp_path / "home"),
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,  # the session's broker, own topics
        "AGENTLAKE_TOPIC_PREFIX": "demo-",
    }
    try:
        r = subprocess.run(
            [sys.executable, "-m", "agentlake", "demo", "-n", "4", "--trials", "3", "--json"],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout)
    finally:
        subprocess.run([sys.executable, "-m", "agentlake", "down"], env=env, capture_output=True, timeout=120)
    # part 1: both versions scored through the pipeline, with the registry's specs
    versions = {a["agent_version"]: a for a in out["agents"]}
    assert set(versions) == {"1.0", "1.1-beta"}
    assert all(a["trajectories"] == 4 for a in versions.values())
    # the candidate calls search_orders, which the registry never granted it
    assert versions["1.1-beta"]["components"]["in_scope"] < 1.0
    assert versions["1.0"]["components"]["in_scope"] == 1.0
    # part 2: the baseline passes its gate, the candidate is blocked
    assert out["simulation"]["registered"]
    assert out["simulation"]["baseline"]["passed"] is True
    assert out["simulation"]["candidate"]["passed"] is False
    # part 3: the delegated sub-agent is allowed, denied, and denied after revocation
    assert [(st["tool"], st["allowed"]) for st in out["auth"]["steps"]] == [
        ("get_order", True),
        ("refund_order", False),
        ("get_order", False),
    ]
    # the context lake: a hit, a miss on the same task with another order id, a fused plan
    lake = out["lake"]
    assert "error" not in lake, lake
    assert lake["hit"]["hit"] is True
    assert lake["miss"]["hit"] is False
    assert lake["plan"]["task"]
