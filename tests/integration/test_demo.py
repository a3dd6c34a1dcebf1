"""`agentlake demo` as a user runs it: every part of the loop, in its own data dir and topics."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        # the demo projected its lake and auth parts itself (the dashboard's /lake, /delegations)
        assert out["auth"]["projected"] is True
        counts = cli(
            env,
            "sql",
            "--no-catch-up",
            "--json",
            "SELECT (SELECT count() FROM lake_lookups FINAL WHERE tenant = 'demo') AS lookups, "
            "(SELECT count() FROM auth_blocks FINAL) AS blocks",
        )
        assert counts[0]["lookups"] >= 2 and counts[0]["blocks"] >= 2, counts
        # the printed command reproduces the demo's hit from the CLI, and --json says why
        repro = cli(env, *shlex.split(out["lake"]["reproduce"])[1:], "--json")
        assert repro["hit"] is True and repro["reason"] == "hit", repro
        other = cli(env, *shlex.split(out["lake"]["reproduce"])[1:4], "--json")  # default tenant
        assert other["hit"] is False and other["reason"] == "empty_tenant", other
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


def cli(env: dict[str, str], *args: str) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "agentlake", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0, (args, r.stderr[-2000:])
    return json.loads(r.stdout)
