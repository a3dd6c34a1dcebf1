"""Dashboard logic without ClickHouse: comparisons, pass^k curves, figures, HTML escaping,
the bind rules, the token and the read-only guard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from agentlake.dashboard import DashboardData, check_bind, create_app
from agentlake.dashboard import _charts as charts
from agentlake.dashboard import _queries as dq
from agentlake.dashboard._html import chart, page, table
from agentlake.settings import Settings
from agentlake.sim.metrics import pass_hat_k

CAND = [{"case_id": "a", "n": 3, "c": 1}, {"case_id": "b", "n": 3, "c": 3}]
BASE = [{"case_id": "a", "n": 3, "c": 3}, {"case_id": "b", "n": 3, "c": 3}]


def test_compare_runs_flags_regressions_beyond_tolerance() -> None:
    cmp = dq.compare_runs(CAND, BASE, {"latency": 0.9, "cost": 0.5}, {"latency": 0.92, "cost": 0.5})
    cases = {r["case_id"]: r for r in cmp["cases"]}
    assert cases["a"]["regression"] and not cases["b"]["regression"]
    assert cases["a"]["k"] == 3 and cases["a"]["candidate_k"] == 0.0 and cases["a"]["baseline_k"] == 1.0
    comps = {r["component"]: r for r in cmp["components"]}
    assert comps["latency"]["regression"] and not comps["cost"]["regression"]
    assert comps["latency"]["delta"] == pytest.approx(-0.02)
    loose = dq.compare_runs(CAND, BASE, {"latency": 0.9}, {"latency": 0.92}, tolerance=0.05)
    assert not loose["components"][0]["regression"]


def test_pass_curve_matches_the_gate_definition() -> None:
    curve = dq.pass_curve(CAND)
    assert curve["k"] == [1, 2, 3]
    for k, v in zip(curve["k"], curve["pass_hat"], strict=True):
        assert v == pytest.approx((pass_hat_k(3, 1, k) + pass_hat_k(3, 3, k)) / 2)
    assert all(
        lo <= v + 1e-9 and v <= hi + 1e-9
        for lo, v, hi in zip(curve["low"], curve["pass_hat"], curve["high"], strict=True)
    )
    assert dq.pass_curve([])["k"] == []


def test_figures_are_plotly_json() -> None:
    fig = json.loads(charts.pass_curves({"run": dq.pass_curve(CAND)}))
    assert [t["type"] for t in fig["data"]] == ["scatter", "scatter"]
    # plotly.js 3 draws titles only in their object form
    assert fig["layout"]["title"] == {"text": "pass^k (95% bootstrap interval)"}
    assert fig["layout"]["xaxis"]["title"] == {"text": "k"}
    assert fig["layout"]["template"]["layout"]  # the template travels expanded, not by name
    bars = json.loads(charts.case_bars(CAND, "/runs/r/cases/"))
    assert bars["data"][0]["customdata"] == ["/runs/r/cases/a", "/runs/r/cases/b"]
    g = json.loads(charts.graph([{"id": "a"}, {"id": "b"}, {"id": "c"}], [("a", "b"), ("b", "c")], "chain"))
    assert g["data"][1]["x"] == [0, 1, 2]
    series = {
        "bucket_s": 60,
        "rows": [
            {"component": "latency", "agent_version": "1", "t": "2026-01-01", "value": 0.5, "n": 2},
            {"component": "latency", "agent_version": "2", "t": "2026-01-01", "value": 0.7, "n": 2},
        ],
    }
    ((name, fig_json),) = charts.component_series(series)
    assert name == "latency" and [t["name"] for t in json.loads(fig_json)["data"]] == ["1", "2"]


def test_html_is_escaped_and_figures_cannot_close_their_script() -> None:
    html = table("t", ["x"], ["<script>"], lambda r: [f"{r!s}".replace("<", "&lt;")])
    assert "<script>" not in html
    snippet = chart('{"data": [{"name": "</script><script>alert(1)</script>"}]}')
    assert "</script><script>" not in snippet.split('type="application/json"')[1].split("</script>")[0]
    assert "&lt;b&gt;" in page("<b>", "")


@pytest.mark.parametrize(
    ("host", "allow", "token", "ok"),
    [
        ("127.0.0.1", False, None, True),
        ("localhost", False, None, True),
        ("127.0.0.2", False, None, True),  # all of 127.0.0.0/8, as the other servers' check
        ("[::1]", False, None, True),
        ("127.example.com", False, None, False),  # a name is not resolved: remote
        ("0.0.0.0", False, "x" * 32, False),
        ("0.0.0.0", True, None, False),
        ("0.0.0.0", True, "short", False),
        ("0.0.0.0", True, "x" * 32, True),
    ],
)
def test_bind_rules(host: str, allow: bool, token: str | None, ok: bool) -> None:
    assert (check_bind(host, allow, token) is None) == ok


def test_cli_refuses_remote_bind_without_flag_and_token() -> None:
    from agentlake.cli import app

    r = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "--allow-remote" in str(r.exception)
    r = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0", "--allow-remote"])
    assert r.exit_code != 0 and "token" in str(r.exception)


class _NoDB:
    def query(self, *a: Any, **k: Any) -> Any:
        raise AssertionError("no ClickHouse in unit tests")


def test_token_and_read_only_guard(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    s = Settings(home=str(tmp_path), kafka_port=1)  # type: ignore[arg-type]
    data = DashboardData(s, client=_NoDB(), follow=False)
    app = create_app(s, data, token="t" * 20)
    with TestClient(app) as c:
        assert c.get("/static/dashboard.js").status_code == 401
        assert (
            c.get("/static/dashboard.js", headers={"Authorization": "Bearer " + "t" * 20}).status_code == 200
        )
        r = c.get("/static/dashboard.css?token=" + "t" * 20)
        assert r.status_code == 200 and "agentlake_dashboard" in r.headers["set-cookie"]
        assert c.get("/static/dashboard.js").status_code == 200  # the cookie now
        assert c.post("/static/dashboard.js").status_code == 405
        assert c.get("/static/../settings.py").status_code == 404
        js = c.get("/static/plotly.min.js")
        assert js.status_code == 200 and len(js.content) > 1_000_000


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["/venv/bin/agentlake", "dashboard", "--port", "1"], "agentlake dashboard"),
        (["/src/agentlake/__main__.py", "sql", "SELECT 1"], "agentlake sql"),
        (["/venv/bin/pytest", "-q"], "pytest"),
    ],
)
def test_chdb_lock_names_the_holding_command(
    argv: list[str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The busy-store message says which command holds it (e.g. the dashboard), so users know
    what to stop."""
    import sys

    from agentlake.projections.clickhouse import _command

    monkeypatch.setattr(sys, "argv", argv)
    assert _command() == name
