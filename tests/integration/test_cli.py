"""The `agentlake` command as users run it (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agentlake.settings import Settings


def agentlake(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentlake", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_help_everywhere() -> None:
    for cmd in (
        [],
        ["up"],
        ["down"],
        ["status"],
        ["demo"],
        ["report"],
        ["sql"],
        ["dlq"],
        ["worker"],
        ["worker", "sink"],
    ):
        r = agentlake(*cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Usage" in r.stdout


def test_status_json_reports_the_running_stack(settings: Settings) -> None:
    r = agentlake("status", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kafka_reachable"] is True
    assert info["bootstrap_servers"] == settings.bootstrap_servers
    assert info["streams_pid"] is not None


def test_bad_settings_give_one_line() -> None:
    r = agentlake("status", env={"AGENTLAKE_KAFKA_PORT": "not-a-port"})
    assert r.returncode == 2
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "AGENTLAKE_KAFKA_PORT" in lines[0] and "integer" in lines[0], r.stderr


def test_embedded_clickhouse_in_use_is_a_clear_error(settings: Settings, projector: object) -> None:
    # this test process owns the embedded ClickHouse; a second process must be told so
    r = agentlake("sql", "SELECT 1")
    assert r.returncode == 2
    assert "in use by pid" in r.stderr and "CLICKHOUSE_URL" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_a_revocation_reported_done_is_on_the_log(settings: Settings) -> None:
    minted = agentlake("token", "mint", "--user", "ann", "--agent", "bot", "--grant", "crm:lookup", "--json")
    assert minted.returncode == 0, minted.stderr
    token = json.loads(minted.stdout)["token"]
    call = ("--server", "crm", "--tool", "lookup")
    assert agentlake("token", "verify", token, *call).returncode == 0
    revoked = agentlake("token", "revoke", token, "--json")
    assert revoked.returncode == 0, revoked.stderr
    rid = json.loads(revoked.stdout)["revoked"]
    # a new process reads the revocation from the compacted topic: the broker had it
    denied = agentlake("token", "verify", token, *call, "--json")
    assert denied.returncode == 1, denied.stderr
    decision = json.loads(denied.stdout)
    assert decision["allowed"] is False and rid in decision["revocation_ids"]
