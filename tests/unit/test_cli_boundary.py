"""Where the data lives and what a user sees when something is wrong (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlake.cli._app import UserError, clickhouse_message, one_line_error
from agentlake.cli.query import source_topic
from agentlake.settings import Settings


def test_a_relative_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(home="data").data_dir == tmp_path / "data"  # type: ignore[arg-type]


def test_the_nearest_data_dir_up_the_tree_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".agentlake").mkdir()
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    monkeypatch.delenv("AGENTLAKE_HOME", raising=False)
    assert Settings(cache_dir=tmp_path / "cache").data_dir == tmp_path / ".agentlake"  # type: ignore[arg-type]


def test_elsewhere_the_running_stack_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTLAKE_HOME", raising=False)
    home = tmp_path / "project" / ".agentlake"
    home.mkdir(parents=True)
    s = Settings(cache_dir=tmp_path / "cache", kafka_port=23456)  # type: ignore[arg-type]
    s.stack_record.parent.mkdir(parents=True)
    s.stack_record.write_text(json.dumps({"home": str(home), "port": 23456}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert Settings(cache_dir=tmp_path / "cache", kafka_port=23456).data_dir == home  # type: ignore[arg-type]
    # another port has no stack: the working directory's .agentlake
    assert Settings(cache_dir=tmp_path / "cache", kafka_port=23458).data_dir == elsewhere / ".agentlake"  # type: ignore[arg-type]


def test_the_sink_group_is_bound_to_the_store(tmp_path: Path) -> None:
    a = Settings(home=tmp_path / "a")  # type: ignore[arg-type]
    b = Settings(home=tmp_path / "b")  # type: ignore[arg-type]
    assert a.sink_group != b.sink_group
    assert Settings(home=tmp_path / "a").sink_group == a.sink_group  # stable: kept in the store
    assert (tmp_path / "a" / "store-id").read_text() in a.sink_group
    url = "http://u:secret@ch:8123/db"
    s1 = Settings(home=tmp_path / "c", clickhouse_url=url)  # type: ignore[arg-type]
    s2 = Settings(home=tmp_path / "d", clickhouse_url=url.replace("secret", "other"))  # type: ignore[arg-type]
    assert s1.sink_group == s2.sink_group and not (tmp_path / "c").exists()  # one server, one group


def test_clickhouse_errors_become_one_useful_line() -> None:
    syntax = (
        "Code: 62. DB::Exception: Syntax error: failed at position 7 (1) (line 1, col 7): 1\n"
        " SETTINGS readonly = '1'\n FORMAT Native. Expected one of: token, end of query. (SYNTAX_ERROR)"
    )
    assert (
        clickhouse_message(syntax) == "Syntax error: failed at position 7 (1) (line 1, col 7) (SYNTAX_ERROR)"
    )
    ro = "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)"
    assert "only reads" in clickhouse_message(ro) and "\n" not in clickhouse_message(ro)


def test_kafka_and_user_errors_map_to_exit_2_and_bugs_do_not() -> None:
    from aiokafka.errors import KafkaConnectionError

    s = Settings(home="/tmp/x", kafka_port=1234)  # type: ignore[arg-type]
    msg, code = one_line_error(KafkaConnectionError("Unable to bootstrap"), s) or ("", 0)
    assert code == 2 and "127.0.0.1:1234" in msg and "agentlake up" in msg
    assert one_line_error(UserError("x"), s) == ("x", 2)
    assert one_line_error(KeyError("bug"), s) is None


def test_unknown_topics_are_rejected() -> None:
    assert source_topic("agent.steps") == "agent.steps"
    assert source_topic("agent.steps.dlq") == "agent.steps"
    with pytest.raises(UserError, match=r"unknown topic 'agent\.stepz'"):
        source_topic("agent.stepz")
    with pytest.raises(UserError):
        source_topic("registry.agents")  # compacted: no dead letters


def test_a_worker_whose_pid_file_outlived_it_is_reported_as_crashed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from agentlake.stack import Proc, process_state

    proc = Proc("streams", tmp_path / "streams.pid", tmp_path / "streams.log")
    assert process_state(proc) == "stopped"  # never started, or stopped by `down`
    proc.pid_file.write_text(str(os.getpid()))
    assert process_state(proc) == "running"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    proc.pid_file.write_text(gone.stdout.strip())  # that process has exited
    assert process_state(proc) == "crashed"
