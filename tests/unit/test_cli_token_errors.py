"""Token, lake-client and server-bind mistakes a new user made: each is one line, exit 2
(through the real entry point, in a child process), never a traceback or exit 70."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentlake.auth.policy import MAX_BUDGET
from tests.unit.test_cli_user_errors import cli_many, closed_port, one_line

MINT = ("token", "mint", "--user", "ann", "--agent", "bot", "--grant", "shop:get_order", "--offline")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def parent(home: Path) -> Path:
    """A token granting shop:get_order (read) only, in a file."""
    (r,) = cli_many(home, [(*MINT, "--json")])
    assert r.returncode == 0, r.stderr
    path = home / "parent.txt"
    path.write_text(json.loads(r.stdout)["token"])
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on for the duration of the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def errors(results: list[subprocess.CompletedProcess[str]]) -> list[str]:
    """The one error line of each result, which must have exited 2."""
    lines = []
    for r in results:
        assert r.returncode == 2, (r.args, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        lines.append(one_line(r))
    return lines


def test_a_budget_beyond_datalog_integers_is_a_usage_error_and_the_largest_mints(home: Path) -> None:
    big, largest = cli_many(
        home, [(*MINT, "--budget", "99999999999999999999"), (*MINT, "--budget", str(MAX_BUDGET), "--json")]
    )
    (line,) = errors([big])
    assert "budget 99999999999999999999 out of range" in line and str(MAX_BUDGET) in line
    assert "datalog" not in line.lower()  # no parser error: the value never reaches Datalog text
    assert largest.returncode == 0, largest.stderr
    assert f"$n < {MAX_BUDGET};" in json.loads(largest.stdout)["blocks"][0]["datalog"]


def test_ttls_are_bounded_to_a_year(home: Path, parent: Path) -> None:
    bad = cli_many(
        home,
        [
            (*MINT, "--ttl", "99999999d"),
            (*MINT, "--ttl", "1000000000000000000000s"),
            (*MINT, "--ttl", "366d"),
            ("token", "attenuate", f"@{parent}", "--ttl", "99999999d", "--offline"),
        ],
    )
    for line in errors(bad):
        assert "--ttl: duration" in line and "is too long: at most 365d" in line, line
    short, garbled, setting = cli_many(
        home,
        [(*MINT, "--ttl", "0s"), (*MINT, "--ttl", "-7d"), MINT],
        env={"AGENTLAKE_AUTH_TOKEN_TTL_S": "99999999999"},
    )
    lines = errors([short, garbled, setting])
    assert "too short: at least 1s" in lines[0]
    assert "--ttl: bad duration '-7d'" in lines[1]
    assert "AGENTLAKE_AUTH_TOKEN_TTL_S=99999999999" in lines[2] and "365d" in lines[2]
    (year,) = cli_many(home, [(*MINT, "--ttl", "365d")])
    assert year.returncode == 0, year.stderr


def test_an_unknown_operation_is_a_usage_error_in_mint_and_verify(home: Path, parent: Path) -> None:
    verify, mint = cli_many(
        home,
        [
            (
                "token",
                "verify",
                f"@{parent}",
                "--server",
                "shop",
                "--tool",
                "get_order",
                "--operation",
                "delete",
                "--offline",
            ),
            ("token", "mint", "--user", "u", "--agent", "a", "--grant", "shop:get_order:delete", "--offline"),
        ],
    )
    v, m = errors([verify, mint])
    assert v == "error: bad --operation 'delete': expected read or write"
    assert "bad operation 'delete'" in m


def test_an_attenuation_naming_what_the_parent_lacks_is_refused(home: Path, parent: Path) -> None:
    att = ("token", "attenuate", f"@{parent}", "--offline")
    tool, server, op, ok, shown, inspect = cli_many(
        home,
        [
            (*att, "--tool", "shop:refund_order"),
            (*att, "--server", "crm"),
            (*att, "--operation", "write"),
            (*att, "--tool", "shop:get_order", "--json"),
            (*att, "--tool", "shop:get_order"),
            ("token", "inspect", f"@{parent}", "--json"),
        ],
    )
    lines = errors([tool, server, op])
    assert "does not grant shop:refund_order (it grants shop:get_order:read)" in lines[0]
    assert "does not grant server crm" in lines[1]
    assert "does not grant operation write" in lines[2]
    assert ok.returncode == 0, ok.stderr
    # the narrowed token names the same root key id as `inspect` of its parent
    assert json.loads(ok.stdout)["root_key_id"] == json.loads(inspect.stdout)["root_key_id"] == 1
    assert "root key id 1 " in shown.stderr.splitlines()[0], shown.stderr


def test_inspect_of_an_altered_token_says_the_signature_is_bad(home: Path, parent: Path) -> None:
    token = parent.read_text().strip()
    i = len(token) - 20  # inside the proof: the blocks still parse, the signature no longer holds
    altered = home / "altered.txt"
    altered.write_text(token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :])
    text, as_json = cli_many(
        home, [("token", "inspect", f"@{altered}"), ("token", "inspect", f"@{altered}", "--json")]
    )
    assert text.returncode == 0, text.stderr
    head = text.stderr.splitlines()[0]
    assert "root key id 1" in head and "NOT verified: bad signature for root key 1" in head, head
    data = json.loads(as_json.stdout)
    assert data["verified"] is False and "bad signature" in data["not_verified_because"]


def test_a_bad_since_names_the_option_not_the_policy_file(home: Path) -> None:
    policy = home / "policy.dl"
    policy.write_text("allow if true;\n")
    (r,) = cli_many(home, [("auth", "replay", "--policy", str(policy), "--since", "-7d")])
    (line,) = errors([r])
    assert line.startswith("error: --since: bad duration '-7d'") and str(policy) not in line


def test_lake_query_against_no_lake_or_a_bad_url_is_one_line(home: Path) -> None:
    port = closed_port()
    refused, notaurl, ftp = cli_many(
        home,
        [
            ("lake", "query", "x", "--url", f"http://127.0.0.1:{port}"),
            ("lake", "query", "x", "--url", "notaurl"),
            ("lake", "query", "x", "--url", "ftp://127.0.0.1/"),
        ],
    )
    lines = errors([refused, notaurl, ftp])
    assert lines[0].startswith(f"error: cannot reach the lake at http://127.0.0.1:{port}: ")
    assert lines[0].endswith("is `agentlake lake serve` running?")
    assert "bad lake URL 'notaurl'" in lines[1] and "bad lake URL 'ftp://127.0.0.1/'" in lines[2]


def test_servers_check_the_bind_before_starting(home: Path, busy_port: int, tmp_path: Path) -> None:
    spec = tmp_path / "never-read.yaml"  # the bind is refused before the spec is loaded
    results = cli_many(
        home,
        [
            ("lake", "serve", "--port", str(busy_port), "--no-kafka"),
            (
                "auth",
                "gateway",
                "serve",
                "--server-id",
                "shop",
                "--staging",
                str(spec),
                "--port",
                str(busy_port),
            ),
            ("otel", "serve", "--port", str(busy_port)),
            ("dashboard", "--port", str(busy_port), "--no-follow"),
            ("lake", "serve", "--host", "8.8.8.8", "--no-kafka"),
            ("lake", "serve", "--host", "0.0.0.0", "--no-kafka"),
            ("otel", "serve", "--host", "0.0.0.0"),
            ("lake", "serve", "--host", "8.8.8.8", "--allow-remote", "--no-kafka"),
        ],
    )
    lines = errors(results)
    for line in lines[:4]:
        assert f"port {busy_port} on 127.0.0.1 is in use" in line, line
    for line, host in zip(lines[4:7], ("8.8.8.8", "0.0.0.0", "0.0.0.0"), strict=True):
        assert f"refusing to bind {host}" in line and "--allow-remote" in line, line
    assert "8.8.8.8: it is not an address of this machine" in lines[7]
