"""What a user sees when something is wrong: exactly one line, the right exit code,
nothing reported done that was not (no broker: Kafka is a closed port)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentlake.cli._app import UserError, _settings, quiet_logs, user_sql_error
from agentlake.settings import Settings
from tests.unit._child import last_json_line

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "agentlake" / "examples"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens once the socket is closed


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`agentlake ARGS` in a child process (the real entry point, `main()`)."""
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AGENTLAKE_", "KAFKA_", "CLICKHOUSE_"))},
        "PYTHONPATH": str(ROOT),
        "AGENTLAKE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "agentlake", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=home,
        timeout=180,
    )


# Runs `main()` once per call in ONE child process (a process start per call would cost
# ~2 s each); stdout and stderr are captured at the file-descriptor level, so log lines
# from libraries and the C extensions are seen exactly as a user would see them.
_DRIVER = """
import json, os, sys, tempfile
from agentlake.cli import main
results = []
for argv, env in json.load(sys.stdin):
    saved_env = dict(os.environ)
    os.environ.update(env)
    files = [tempfile.TemporaryFile(mode="w+") for _ in range(2)]
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(files[0].fileno(), 1); os.dup2(files[1].fileno(), 2)
    code = 0
    try:
        sys.argv = ["agentlake", *argv]
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        os.environ.clear(); os.environ.update(saved_env)
    text = []
    for f in files:
        f.seek(0); text.append(f.read())
    results.append([code, text[0], text[1]])
print("RESULTS " + json.dumps(results))
"""


def cli_many(
    home: Path, calls: list[tuple[str, ...]], env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """`agentlake ARGS` for each call, through `main()`, in one child process."""
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AGENTLAKE_", "KAFKA_", "CLICKHOUSE_"))},
        "PYTHONPATH": str(ROOT),
        "AGENTLAKE_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
    }
    r = subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps([[list(c), env or {}] for c in calls]),
        capture_output=True,
        text=True,
        env=full,
        cwd=home,
        timeout=300,
    )
    assert r.returncode == 0 and "RESULTS " in r.stdout, r.stderr[-2000:]
    results = json.loads(r.stdout.split("RESULTS ", 1)[1])
    return [
        subprocess.CompletedProcess(list(c), code, o, e)
        for c, (code, o, e) in zip(calls, results, strict=True)
    ]


def one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("home")
    return h


@pytest.fixture(scope="module")
def token(home: Path) -> str:
    r = cli(
        home,
        "token",
        "mint",
        "--user",
        "ann",
        "--agent",
        "bot",
        "--grant",
        "crm:lookup",
        "--offline",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    value: str = json.loads(r.stdout)["token"]
    return value


# -- 1. a revocation is acknowledged by the brokers or not reported --------------
def test_revoke_without_kafka_fails_in_one_line_and_spills_nothing(home: Path, token: str) -> None:
    spill = home / "spill"
    before = sorted(spill.iterdir()) if spill.is_dir() else []
    call = ("--server", "crm", "--tool", "lookup", "--offline")
    revoke, keys, verify = cli_many(
        home, [("token", "revoke", token), ("token", "keys", "--publish"), ("token", "verify", token, *call)]
    )
    assert revoke.returncode == 2 and "revocation NOT recorded" in one_line(revoke)
    assert "revoked" not in revoke.stdout
    assert (sorted(spill.iterdir()) if spill.is_dir() else []) == before  # nothing left for later
    assert keys.returncode == 2 and "key publication NOT recorded" in one_line(keys)
    assert verify.returncode == 0, verify.stderr  # the token was never reported revoked


# -- 3. Kafka down: one line, no library log lines -------------------------------
KAFKA_DOWN = [
    ("registry", "list"),
    ("registry", "apply", str(EXAMPLES / "registry.yaml")),
    ("dlq",),
    ("dlq", "redrive", "--all"),
    ("sql", "--catch-up", "SELECT 1"),
    ("report",),
    ("sim", "runs"),
    ("sim", "run", str(EXAMPLES / "suite.yaml"), "--agent", "support-bot@1.0"),
    ("demo", "-n", "1", "--no-simulate"),
    ("token", "verify", "@tok", "--server", "crm", "--tool", "lookup"),
    ("auth", "who-could", "--server", "crm", "--tool", "lookup"),
]


def test_kafka_down_is_one_line_exit_2(home: Path, token: str) -> None:
    (home / "tok").write_text(token)
    for r in cli_many(home, KAFKA_DOWN):
        assert r.returncode == 2, (r.args, r.returncode, r.stderr)
        assert "aiokafka" not in r.stderr and "WARNING" not in r.stderr, (r.args, r.stderr)
        assert any(w in one_line(r) for w in ("did not answer", "does not answer", "from Kafka")), r.args


def test_status_a_bad_file_and_bad_tokens(home: Path, token: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents:\n  - id: x\n    nope: [\n")
    call = ("--server", "crm", "--tool", "lookup", "--offline")
    unparseable = [token[: len(token) // 2], "garbage"]
    results = cli_many(
        home,
        [
            ("status", "--json"),
            ("registry", "apply", str(bad)),
            ("registry", "apply", str(EXAMPLES / "bad-registry.yaml")),
            ("token", "verify", token, "--server", "crm", "--tool", "delete", "--offline"),
            *[(cmd, *rest) for b in unparseable for cmd, *rest in _token_calls(b, call)],
        ],
    )
    status, bad_yaml, bad_registry, denied, *invalid = results
    # 3. Kafka down: status says so in its output, no library lines
    assert status.returncode == 0 and json.loads(status.stdout)["kafka_reachable"] is False
    assert status.stderr.strip() == "", status.stderr
    # 4. the file is checked before Kafka is contacted
    line = one_line(bad_yaml)
    assert bad_yaml.returncode == 2 and str(bad) in line and "Kafka" not in line
    line = one_line(bad_registry)
    assert bad_registry.returncode == 2 and "bad-registry.yaml" in line and "Kafka" not in line
    # 5. a token that parses but is denied: exit 1; one that does not parse: exit 2, one line
    assert denied.returncode == 1 and "denied" in denied.stderr
    assert len(invalid) == 6
    for r in invalid:
        assert r.returncode == 2 and "invalid token" in one_line(r), (r.args, r.stderr)


def _token_calls(bad: str, call: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [("token", "verify", bad, *call), ("token", "inspect", bad), ("token", "revoke", bad)]


# -- 6. SQL errors quote the user's SQL only --------------------------------------
BAD_SQL = [
    ("", "empty query"),
    ("  ; ", "empty query"),
    ("SELECT 1 FORMAT JSON", "leave out FORMAT"),
    ("SELECT 1 WHERE 1 = ", "the query ends too early"),
    ("selec 1", "syntax error in the query at position 7, near '1'"),
]


def test_sql_errors_do_not_leak_our_query_and_empty_results_say_so(home: Path) -> None:
    calls: list[tuple[str, ...]] = [("sql", "--no-catch-up", q) for q, _ in BAD_SQL]
    calls += [("report", "--run-id", "nosuch", "--no-catch-up"), ("sql", "--no-catch-up", "SELECT 1 WHERE 0")]
    *bad, report, empty = cli_many(home, calls)
    for r, (_, expected) in zip(bad, BAD_SQL, strict=True):
        line = one_line(r)
        assert r.returncode == 2 and expected in line, (r.args, line)
        for ours in ("readonly", "FORMAT Native", "SETTINGS"):
            assert ours not in line
    # 7. an empty result is a message, not a bare table
    assert report.returncode == 0 and report.stdout.strip() == "0 rows: no scored trajectories for run nosuch"
    assert empty.returncode == 0 and empty.stdout.strip() == "0 rows"


def test_a_replay_filter_error_names_the_filter_not_our_wrapper(tmp_path: Path) -> None:
    # the real engine's error about the query `trials_of_run` sends (chdb: one path per process)
    code = (
        "import sys, json\n"
        "from agentlake.settings import Settings\n"
        "from agentlake.projections.clickhouse import connect\n"
        "from agentlake.sim.replay import FILTER_OFFSET, trials_of_run\n"
        "from agentlake.cli._app import user_sql_error\n"
        "c = connect(Settings(home=sys.argv[1]))\n"
        "out = {}\n"
        "for w in sys.argv[2:]:\n"
        "    try:\n"
        "        out[w] = trials_of_run(c, 'run-1', w)\n"
        "    except Exception as e:\n"
        "        out[w] = user_sql_error(str(e), w, FILTER_OFFSET, 'filter')\n"
        "print(json.dumps(out))\n"
    )
    sneaky = "trajectory_id IN (SELECT line FROM `file`('/etc/passwd', 'LineAsString'))"
    filters = ["outcome = ", "outcome == == 'x'", "outcome = 'success'", sneaky]
    got = last_json_line(code, str(tmp_path), *filters)
    # past the text check (a quoted name): the query itself is read-only, which refuses it
    assert "READONLY" in got[sneaky] and "root:" not in got[sneaky]
    assert got["outcome = "] == "syntax error: the filter ends too early (an incomplete expression or clause)"
    assert got["outcome == == 'x'"] == "syntax error in the filter at position 12, near \"== 'x'\""
    assert got["outcome = 'success'"] == []


def test_user_sql_error_maps_positions_into_the_users_text() -> None:
    text = (
        "Code: 62. DB::Exception: Syntax error: failed at position 31 (x) (line 1, col 31): x. (SYNTAX_ERROR)"
    )
    assert user_sql_error(text, "a = = x", offset=24) == "syntax error in the query at position 7, near 'x'"
    assert "ends too early" in user_sql_error(text, "a =", offset=24)
    assert "does not stand on its own" in user_sql_error(text, "a) OR (b", offset=40, what="filter")
    other = "Code: 47. DB::Exception: Unknown expression identifier `nosuch` In scope SELECT 1. "
    other += "(UNKNOWN_IDENTIFIER)"
    assert (
        user_sql_error(other, "nosuch = 1") == "Unknown expression identifier `nosuch` (UNKNOWN_IDENTIFIER)"
    )


# -- 7. option ranges and empty results -------------------------------------------
OUT_OF_RANGE = [
    (("dlq", "--limit", "-3"), "--limit"),
    (("export", "--min-reward", "2"), "--min-reward"),
    (("sim", "run", "x.yaml", "--agent", "a", "--concurrency", "0"), "--concurrency"),
    (("sim", "run", "x.yaml", "--agent", "a", "--fault-rate", "1.5"), "--fault-rate"),
    (("token", "mint", "--user", "u", "--agent", "a", "--grant", "s:t", "--max-depth", "-1"), "--max-depth"),
    (("lake", "eval", "--threshold", "3"), "--threshold"),
    (("demo", "-n", "0"), "--trajectories"),
]


def test_out_of_range_options_and_usage_errors_are_one_line_exit_2(home: Path) -> None:
    calls = [args for args, _ in OUT_OF_RANGE] + [("sqll",), ("token", "verify"), ("sql", "--help")]
    results = cli_many(home, calls)
    for r, (_, option) in zip(results, OUT_OF_RANGE, strict=False):
        line = one_line(r)
        assert r.returncode == 2 and option in line and "--help" in line, (r.args, line)
    unknown, missing, helped = results[len(OUT_OF_RANGE) :]
    assert unknown.returncode == 2 and "No such command 'sqll'" in one_line(unknown)
    assert missing.returncode == 2 and "Missing argument" in one_line(missing)
    assert helped.returncode == 0 and "Usage" in helped.stdout


# -- 2. settings are bounded ------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kafka_port", -5),
        ("kafka_port", 70000),
        ("topic_partitions", 0),
        ("auth_token_ttl_s", -1),
        ("auth_token_ttl_s", 0),
        ("lake_ttl_s", 0),
        ("lake_nprobe", 0),
        ("lake_min_reward", 1.5),
        ("lake_cross_version", "everyone"),
        ("sink_batch_size", 0),
        ("sdk_queue_size", 0),
        ("sdk_linger_ms", -1),
        ("reconcile_every_s", -1),
        ("worker_session_timeout_s", 0),
        ("stream_idle_timeout_s", 0),
        ("otel_port", 65536),
        ("otel_max_traces", 0),
        ("dashboard_follow_s", -2),
        ("auth_max_time_ms", 0),
        ("lake_chunk_chars", 0),
        ("kafka_heap", "lots"),
        ("embedder", "wordllama:512"),  # only the 256-d weights ship with wordllama
        ("embedder", "wordllama:x"),
        ("embedder", "bert"),
    ],
)
def test_nonsense_settings_are_refused(name: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(home="/tmp/x", **{name: value})  # type: ignore[arg-type]


def test_a_bad_embedder_names_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLAKE_EMBEDDER", "wordllama:1024")
    with pytest.raises(UserError, match=r"^bad setting AGENTLAKE_EMBEDDER='wordllama:1024': wordllama ships"):
        _settings()
    assert Settings(home="/tmp/x", embedder="wordllama:64").embedder == "wordllama:64"  # type: ignore[arg-type]


def test_documented_off_values_are_kept() -> None:
    s = Settings(
        home=Path("/tmp/x"),
        reconcile_every_s=0,
        dashboard_follow_s=0,
        otel_end_grace_s=0,
        lake_port=0,
        sdk_linger_ms=0,
    )
    assert s.reconcile_every_s == 0 and s.dashboard_follow_s == 0 and s.lake_port == 0


def test_chunk_overlap_must_be_below_the_chunk_size() -> None:
    with pytest.raises(ValidationError, match="AGENTLAKE_LAKE_CHUNK_OVERLAP"):
        Settings(home="/tmp/x", lake_chunk_chars=100, lake_chunk_overlap=100)  # type: ignore[arg-type]


def test_a_bad_setting_is_the_one_line_bad_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLAKE_KAFKA_PORT", "-5")
    with pytest.raises(
        UserError, match=r"^bad setting AGENTLAKE_KAFKA_PORT='-5': .*greater than or equal to 1"
    ):
        _settings()
    monkeypatch.setenv("AGENTLAKE_KAFKA_PORT", "19092")
    monkeypatch.setenv("AGENTLAKE_AUTH_TOKEN_TTL_S", "-1")
    with pytest.raises(UserError, match="AGENTLAKE_AUTH_TOKEN_TTL_S"):
        _settings()


def test_bad_setting_through_the_cli_is_one_line(home: Path) -> None:
    r = cli(home, "status", env={"AGENTLAKE_TOPIC_PARTITIONS": "0"})
    assert r.returncode == 2 and "AGENTLAKE_TOPIC_PARTITIONS" in one_line(r)


# -- 8. library warnings only with --debug ----------------------------------------
def test_pymilvus_warnings_are_quiet_unless_debug() -> None:
    import logging

    logger = logging.getLogger("pymilvus.client.iterator.query_iterator")
    try:
        quiet_logs()
        assert not logger.isEnabledFor(logging.WARNING)
        assert not logging.getLogger("aiokafka.client").isEnabledFor(logging.WARNING)
        for name in ("pymilvus", "aiokafka", "milvus_lite", "grpc"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        quiet_logs(debug=True)
        assert logger.isEnabledFor(logging.WARNING)
    finally:
        for name in ("pymilvus", "aiokafka", "milvus_lite", "grpc"):
            logging.getLogger(name).setLevel(logging.NOTSET)


# -- sim run says when it starts the local stack ----------------------------------
def test_sim_run_names_what_of_the_stack_it_will_start(tmp_path: Path) -> None:
    import os as _os

    from agentlake import stack
    from agentlake.cli.sim import stack_down

    s = Settings(home=tmp_path, kafka_port=closed_port())
    assert stack_down(s) == [f"the local Kafka broker (127.0.0.1:{s.kafka_port})", "the stream worker"]
    stack.worker_proc(s, "streams").pid_file.write_text(str(_os.getpid()))  # a live pid: running
    assert stack_down(s) == [f"the local Kafka broker (127.0.0.1:{s.kafka_port})"]
    external = Settings(home=tmp_path, kafka_bootstrap_servers="127.0.0.1:1")
    assert stack_down(external) == []  # an external cluster is never started


def test_a_settings_error_raised_anywhere_is_one_line_exit_2() -> None:
    from agentlake.cli._app import one_line_error

    with pytest.raises(ValidationError) as info:
        Settings(home=Path("/tmp/x"), topic_partitions=0)
    msg, code = one_line_error(info.value) or ("", 0)
    assert code == 2 and msg.startswith("bad setting AGENTLAKE_TOPIC_PARTITIONS=0:")


def test_pymilvus_imported_after_quiet_logs_stays_quiet(tmp_path: Path) -> None:
    """pymilvus configures its loggers when imported (back to WARNING); a lake query then
    printed "failed to get mvccTs" on milvus-lite. Opening a client re-applies our levels."""
    script = f"""
import logging
from agentlake.cli._app import quiet_logs
quiet_logs()
import pymilvus
from agentlake.projections.milvus import open_client
name = "pymilvus.client.iterator.query_iterator"
print("after import", logging.getLogger(name).isEnabledFor(logging.WARNING))
client = open_client({str(tmp_path / "m.db")!r})
print("after open", logging.getLogger(name).isEnabledFor(logging.WARNING))
client.create_collection("c", dimension=4)
client.insert("c", [{{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}}])
it = client.query_iterator("c", batch_size=10, filter="id >= 0", output_fields=["id"])
print("rows", len(it.next()))
it.close()
client.close()
"""
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "after import True" in r.stdout  # what pymilvus does on import
    assert "after open False" in r.stdout and "rows 1" in r.stdout
    assert "mvccTs" not in r.stderr, r.stderr


def test_dlq_redrive_rejects_an_unknown_reason(home: Path) -> None:
    from agentlake.kafka_io import DEAD_LETTER_REASONS

    bogus, ok = cli_many(
        home,
        [
            ("dlq", "redrive", "--reason", "bogus"),
            ("dlq", "redrive", "--reason", "schema_violation", "--dry-run"),
        ],
    )
    line = one_line(bogus)
    assert bogus.returncode == 2 and "unknown reason 'bogus'" in line and "unknown_fingerprint" in line
    assert ok.returncode == 2 and "reason" not in one_line(ok)  # a known reason gets as far as Kafka (down)
    assert "schema_violation" in DEAD_LETTER_REASONS


def test_every_dead_letter_reason_in_the_code_is_documented() -> None:
    """Reasons written by the decoder, the record checks and the processors are all in
    `DEAD_LETTER_REASONS` (which `dlq redrive --reason` accepts)."""
    import re

    from agentlake.kafka_io import DEAD_LETTER_REASONS

    found: set[str] = set()
    for path in (ROOT / "agentlake").rglob("*.py"):
        text = path.read_text()
        found |= set(re.findall(r'DecodeError\(\s*"(\w+)"', text))
        found |= set(re.findall(r'dead_letter\([^)]*?"(\w+)",\s*(?:f?"|detail)', text, re.S))
        found |= set(re.findall(r'_reject\(\w+, "(\w+)"', text))
    found |= set(re.findall(r'return "(\w+)", ', (ROOT / "agentlake/streams/processor.py").read_text()))
    assert {"unknown_fingerprint", "after_end", "duplicate_seq", "key_mismatch", "invalid_document"} <= found
    assert found <= DEAD_LETTER_REASONS.keys(), found - DEAD_LETTER_REASONS.keys()


def test_a_wide_sql_result_is_printed_one_record_per_block_on_a_narrow_terminal(home: Path) -> None:
    wide = "SELECT " + ", ".join(f"'value-{i}-{'x' * 12}' AS column_{i}" for i in range(8))
    narrow = cli(home, "sql", "--no-catch-up", wide, env={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for i in range(8):  # every value whole, on its column's line
        assert f"column_{i}: value-{i}-{'x' * 12}" in narrow.stdout
    assert lines[-1].strip() == "1 row"
    roomy = cli(home, "sql", "--no-catch-up", wide, env={"COLUMNS": "400"})
    assert roomy.returncode == 0 and "── row 1 ──" not in roomy.stdout
    assert all(f"value-{i}-{'x' * 12}" in roomy.stdout for i in range(8))  # a table, cells unwrapped


# -- sim run: a bad file or a report path that cannot be written fails before any trial ------
def test_sim_run_setup_errors_are_one_line_exit_2_before_the_stack_starts(home: Path, tmp_path: Path) -> None:
    suite = (EXAMPLES / "suite.yaml").read_text(encoding="utf-8")
    files = {
        "s_gate_range.yaml": suite.replace("pass_hat_1: {min: 0.8}", "pass_hat_1: {min: 8}", 1),
        "s_norders.yaml": suite.replace("n_orders: 60,", "n_orders: -5,", 1),
        "s_norders_huge.yaml": suite.replace("n_orders: 60,", "n_orders: 1000000000,", 1),
    }
    for name, text in files.items():
        assert text != suite
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "s_binary.yaml").write_bytes(b"\xd2W D\x98\x8a|?")
    (tmp_path / "openapi.bin").write_bytes(b"\xd2W D\x98\x8a|?")
    ok = str(EXAMPLES / "suite.yaml")
    calls = [
        ("sim", "run", str(tmp_path / "s_gate_range.yaml")),
        ("sim", "run", str(tmp_path / "s_norders.yaml")),
        ("sim", "run", str(tmp_path / "s_norders_huge.yaml")),
        ("sim", "run", str(tmp_path / "s_binary.yaml")),
        ("sim", "run", ok, "--junit", "/nonexistent/dir/j.xml"),
        ("sim", "run", ok, "--markdown", "/proc/nope.md"),
        ("sim", "run", ok, "--markdown", str(tmp_path)),
        ("mcp", "generate", "--openapi", str(tmp_path / "openapi.bin")),
    ]
    expected = [
        "s_gate_range.yaml: gate: pass_hat_1.min: must be in [0, 1], pass_hat_1 is a share (got 8)",
        "s_norders.yaml: scenarios[0].initial_state.args.n_orders: Input should be greater than or equal "
        "to 0",
        "s_norders_huge.yaml: scenarios[0].initial_state.args.n_orders: Input should be less than or equal "
        "to 100000",
        "s_binary.yaml: not UTF-8 text: invalid continuation byte at byte 0",
        "/nonexistent/dir/j.xml: cannot write the --junit report: directory '/nonexistent/dir' "
        "does not exist",
        "/proc/nope.md: cannot write the --markdown report:",
        f"{tmp_path}: cannot write the --markdown report: is a directory",
        "openapi.bin: not UTF-8 text: invalid continuation byte at byte 0",
    ]
    for r, want in zip(cli_many(home, calls), expected, strict=True):
        line = one_line(r)
        assert r.returncode == 2 and want in line, (r.args, line)
        assert line.count(want.split(":")[0]) == 1, line  # the file is named once
        assert "started" not in r.stdout + r.stderr  # nothing was started, no trial ran
