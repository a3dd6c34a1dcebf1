"""Every command of the `agentlake` tree answers `--help` (walked from the Typer app, so
commands added later are covered without touching this test)."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from agentlake.cli import app


def command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        out.append(path)
        # a group (Typer vendors its own click in recent versions: duck-type it)
        if isinstance(getattr(cmd, "commands", None), dict):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])

    walk(root, [])
    return out


def test_the_tree_is_walked() -> None:
    paths = {" ".join(p) for p in command_paths()}
    assert {"", "up", "sim run", "otel serve", "otel export-rewards", "dashboard"} <= paths


def test_every_command_has_help() -> None:
    runner = CliRunner()
    failures = []
    for path in command_paths():
        r = runner.invoke(app, [*path, "--help"])
        if r.exit_code != 0 or "Usage" not in r.output:
            failures.append((" ".join(path), r.exit_code, r.output[-300:]))
    assert failures == []
