"""What the CLI prints is the data: no Rich markup or emoji codes read into values, ids
whole on narrow terminals, big results cut at --limit; and the checks on SQL text a user
gives (``replay --where``, ``sql``)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agentlake.cli import demo as demo_cli
from agentlake.cli import ops as ops_cli
from agentlake.cli import sim as sim_cli
from agentlake.cli._app import clickhouse_message, user_sql_error
from agentlake.cli._render import render_rows
from agentlake.cli._sql import SqlTextError, check_filter, reads_server_files
from agentlake.cli.query import redrive_choice
from tests.unit.test_ci_gate import report, row
from tests.unit.test_cli_user_errors import cli_many, one_line

# values a user or the data can hold, which Rich would read as markup or emoji codes
MARKUP = ["[/]", "a:x:b", "[bold]hi[/bold]", "x:smile:y", "[link=http://evil]click[/link]"]
EMOJI = re.compile("[\u2600-\u27bf\U0001f300-\U0001faff]")


def buffer_console(width: int = 200) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, color_system=None), buf  # emoji codes on: the cells must not be


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("render-home")


def test_sql_prints_values_as_they_are_and_cuts_at_limit(home: Path) -> None:
    select = "SELECT " + ", ".join(f"'{v}' AS c{i}" for i, v in enumerate(MARKUP[1:]))
    calls: list[tuple[str, ...]] = [
        ("sql", "--no-catch-up", "SELECT '[/]'"),
        ("sql", "--no-catch-up", select),
        ("sql", "--no-catch-up", "--limit", "5", "SELECT number FROM system.numbers LIMIT 100000000"),
        ("sql", "--no-catch-up", "--limit", "3", "--json", "SELECT number FROM numbers(10)"),
        ("sql", "--no-catch-up", "--limit", "5", "SELECT number FROM numbers(5)"),
        ("sql", "--no-catch-up", "SELECT * FROM file('/etc/passwd','LineAsString')"),
        ("sql", "--no-catch-up", "SELECT file('/etc/passwd')"),
        ("sql", "--no-catch-up", "SELECT 'file(x)' AS f FROM numbers(1)"),
    ]
    calls += [
        ("sql", "--no-catch-up", "SELECT 1; SELECT 2"),  # merged into one table before
        ("sql", "--no-catch-up", "SELECT 1 AS a; SELECT 'x' AS b"),
        ("sql", "--no-catch-up", "SELECT 'a;b' AS s;"),  # in a literal, and a trailing ';'
    ]
    slash, values, cut, as_json, whole, table_fn, file_fn, literal, two, two_shapes, semi = cli_many(
        home, calls
    )
    for r in (two, two_shapes):
        assert r.returncode == 2 and "one statement at a time" in one_line(r), r.stderr
    assert semi.returncode == 0 and "a;b" in semi.stdout, semi.stderr
    assert slash.returncode == 0 and "│ [/]" in slash.stdout, slash.stderr
    assert values.returncode == 0, values.stderr
    for v in MARKUP[1:]:
        assert v in values.stdout, (v, values.stdout)
    assert not EMOJI.search(values.stdout) and "click │" not in values.stdout
    # --limit: ClickHouse stops (no OOM on 10^8 rows), the cut is said
    assert cut.returncode == 0, cut.stderr
    assert [int(n) for n in re.findall(r"│ (\d+)", cut.stdout)] == [0, 1, 2, 3, 4]
    assert "5 rows (first 5 rows; --limit to change)" in cut.stdout
    assert [r["number"] for r in json.loads(as_json.stdout)] == [0, 1, 2]
    assert "first 3 rows; --limit to change" in as_json.stderr
    assert whole.stdout.splitlines()[-1].strip() == "5 rows"  # exactly at the limit: nothing cut
    # reading the server's files: refused, with the right reason
    line = one_line(table_fn)
    assert table_fn.returncode == 2 and "table function file()" in line and "write" not in line
    line = one_line(file_fn)
    assert file_fn.returncode == 2 and "file() reads the server's files" in line
    assert literal.returncode == 0 and "file(x)" in literal.stdout  # in a literal: just text


def test_the_report_tables_print_an_agent_version_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    console, buf = buffer_console()
    monkeypatch.setattr(demo_cli, "out", console)
    rows = [
        {
            "agent_id": "bot",
            "agent_version": v,
            "trajectories": 1,
            "success_rate": 1.0,
            "mean_total": 0.5,
            "tool_calls_per_task": 2.0,
            "components": {"task_success": 1.0},
        }
        for v in MARKUP
    ]
    demo_cli.render_summary(rows, "agents [/] :x:")
    text = buf.getvalue()
    assert "agents [/] :x:" in text
    for v in MARKUP:
        assert text.count(f"bot@{v}") == 2, v  # headline table and components header
    assert not EMOJI.search(text)


def test_the_sim_results_table_prints_case_ids_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    console, buf = buffer_console(width=300)
    monkeypatch.setattr(sim_cli, "out", console)
    sim_cli.render_sim_report(report([row(v, 0, True) for v in MARKUP]))
    text = buf.getvalue()
    for v in MARKUP:
        assert re.search(rf"│ {re.escape(v)} +│", text), v
    assert not EMOJI.search(text)


def test_ids_are_never_cut_on_a_narrow_terminal() -> None:
    console, buf = buffer_console(width=80)
    ids = [f"support-bot@1.{i}.0-candidate-{i}" for i in range(3)]  # 28 characters
    render_rows(
        console,
        [
            {
                "kind": "agent",
                "id@version": i,
                "owner": "team-a",
                "tools": "get_order, refund_order",
                "objective / description": "resolve the customer's order issue " * 3,
            }
            for i in ids
        ],
        wrap=("tools", "objective / description"),
    )
    text = buf.getvalue()
    assert "id@version" in text and "row 1" not in text  # a table: the prose columns wrap
    assert all(i in text for i in ids) and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    runs = [f"shop-support-{i}-2026-12-01T03:12:32-7f3a9c1e" for i in range(2)]
    rows = [{"run_id": r, "agent": "support-bot@1.0", "tag": "", "trials": 8} for r in runs]
    console, buf = buffer_console(width=80)
    render_rows(console, rows)
    assert all(f"│ {r} │" in buf.getvalue() for r in runs)  # fits: a table, ids whole
    console, buf = buffer_console(width=60)
    render_rows(console, rows)
    text = buf.getvalue()
    assert all(f"run_id: {r}" in text for r in runs) and "…" not in text  # one record per block


REFUSED_FILTERS = [
    ("1=1) OR (1=1", "unbalanced parentheses"),
    ("(outcome = 'x'", "1 '(' not closed"),
    ("outcome = 'x'; DROP TABLE events", "leave out ';'"),
    ("outcome = 'x' -- and the rest", "comments"),
    ("outcome = 'x' /* c */", "comments"),
    ("outcome = 'x' SETTINGS readonly = 0", "SETTINGS is refused"),
    ("outcome = 'x' FORMAT JSON", "FORMAT is refused"),
    ("1 UNION ALL SELECT trial_id FROM events", "SELECT is refused"),
    ("outcome = 'x", "unterminated string literal"),
    ("  ", "empty filter"),
    # a new user read /etc/passwd through the error text, and fetched a URL, from a subquery
    (
        "trajectory_id IN (SELECT line FROM file('/etc/passwd','LineAsString') WHERE toInt32(line)=1)",
        "table function file() reads the server's files",
    ),
    (
        "trajectory_id IN (SELECT line FROM url('http://127.0.0.1:1/k','LineAsString'))",
        "table function url()",
    ),
    ("file('/etc/passwd') != ''", "file() reads the server's files"),
]


@pytest.mark.parametrize(("where", "why"), REFUSED_FILTERS)
def test_a_filter_that_is_not_one_expression_is_refused(where: str, why: str) -> None:
    with pytest.raises(SqlTextError) as e:
        check_filter(where)
    assert why in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "where",
    [
        "outcome != 'success' AND sleepEachRow(3)=0",
        "task = 'a) OR (b; -- c'",  # all inside a literal
        "trajectory_id IN (SELECT trajectory_id FROM rewards WHERE total < 0.5)",
        "toDate(started_at) = '2026-12-01' AND (agent_version = '1.0' OR agent_version = '1.1')",
        "\"outcome\" = 'it''s'",
    ],
)
def test_one_boolean_expression_is_accepted(where: str) -> None:
    check_filter(where)


def test_a_runtime_error_of_a_filter_quotes_no_rewritten_query() -> None:
    # the engine's error for --where "outcome != 'success' AND sleepEachRow(3)=0"
    text = (
        "Code: 160. DB::Exception: The maximum sleep time is 3000000 microseconds. Requested: 27000000 "
        "microseconds per block (of size 9): while executing 'FUNCTION and(notEquals(__table1.outcome, "
        "'success'_String) :: 2, equals(sleepEachRow(3_UInt8), 0_UInt8) :: 0) -> and(notEquals("
        "__table1.outcome, 'success'_String), equals(sleepEachRow(3_UInt8), 0_UInt8)) UInt8 : 1'. (TOO_SLOW)"
    )
    where = "outcome != 'success' AND sleepEachRow(3)=0"
    assert user_sql_error(text, where, 200, "filter") == (
        "The maximum sleep time is 3000000 microseconds. Requested: 27000000 microseconds per block "
        "(of size 9) (TOO_SLOW)"
    )
    assert "__table1" not in clickhouse_message(text)


def test_server_file_readers_are_found_outside_literals_only() -> None:
    assert reads_server_files("SELECT * FROM file('/etc/passwd','LineAsString')") == "table function file()"
    assert reads_server_files("SELECT * FROM url('http://x', 'CSV')") == "table function url()"
    assert reads_server_files("SELECT file('/etc/passwd')") == "file()"
    assert reads_server_files("SELECT * FROM numbers(3)") is None
    assert reads_server_files("SELECT 'FROM file(x)', `file(`") is None


def test_dead_letters_the_workers_state_decided_are_never_re_driven(home: Path) -> None:
    from agentlake.kafka_io import NOT_REDRIVABLE

    # decided by the worker's state or a size limit, or bytes that never decode (sent again,
    # each is dead-lettered again: a new user's `--all` grew a DLQ from 4 to 11 letters)
    assert {"after_end", "duplicate_seq", "seq_gap", "too_large", "empty", "too_short", "bad_magic"} == (
        NOT_REDRIVABLE
    )
    for reason in NOT_REDRIVABLE:
        assert redrive_choice(reason, None) == "skip"  # --all: skipped and counted
        assert redrive_choice(reason, {reason}) == "ignore"
    assert redrive_choice("unknown_fingerprint", None) == "send"
    assert redrive_choice("unknown_fingerprint", {"unknown_fingerprint"}) == "send"
    assert redrive_choice("bad_magic", {"unknown_fingerprint"}) == "ignore"
    assert redrive_choice("schema_violation", None) == "send"
    after_end, dup, with_all = cli_many(
        home,
        [
            ("dlq", "redrive", "--topic", "agent.steps", "--reason", "after_end"),
            ("dlq", "redrive", "--reason", "unknown_fingerprint", "--reason", "duplicate_seq", "--dry-run"),
            ("dlq", "redrive", "--topic", "agent.steps", "--reason", "after_end", "--all"),
        ],
    )
    assert with_all.returncode == 2 and "after_end are not re-driven" in one_line(with_all)
    line = one_line(after_end)
    assert after_end.returncode == 2 and "after_end are not re-driven" in line and "again" in line
    assert dup.returncode == 2 and "duplicate_seq are not re-driven" in one_line(dup)


def test_an_unknown_worker_name_is_exit_2_for_stop_and_restart(home: Path) -> None:
    stop, restart = cli_many(home, [("worker", "stop", "nope"), ("worker", "restart", "nope")])
    for r in (stop, restart):
        line = one_line(r)
        assert r.returncode == 2 and "'nope' is not a stream worker name" in line, r.stderr


def test_up_says_a_restarted_worker_once(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from agentlake import stack

    def fake_up(s: Any, *, workers: bool = True, progress: Any = None) -> dict[str, Any]:
        progress("the stream worker had died (its log: /x/streams.log); starting it again")
        return {"home": "/x", "bootstrap_servers": "127.0.0.1:1", "streams_crashed_log": "/x/streams.log"}

    monkeypatch.setattr(stack, "up", fake_up)
    console, buf = buffer_console()
    monkeypatch.setattr(ops_cli, "console", console)
    ops_cli.up(workers=True, as_json=False)
    assert buf.getvalue().count("/x/streams.log") == 1, buf.getvalue()


def test_the_cli_consoles_read_no_emoji_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lake query`, `sim run`, ... print through these: ":x:" in a value stays ":x:"."""
    from agentlake.cli import _app

    for console in (_app.out, _app.console):
        buf = io.StringIO()
        monkeypatch.setattr(console, "_file", buf)  # restored after the test
        console.print("a:x:b :smile:")
        assert buf.getvalue().strip() == "a:x:b :smile:"
