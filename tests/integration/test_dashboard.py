"""The dashboard in headless Chromium (Selenium, Debian's chromium + chromium-driver) on data
the pipeline produced: a baseline and a failing candidate simulation run, a trajectory
ingested over OTLP, and a 10k-step trajectory. Screenshots go to tests/artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlake.cli import _sim_run
from agentlake.consumers import Projector
from agentlake.dashboard import DashboardData, create_app
from agentlake.registry import apply_specs, load_registry_file
from agentlake.sdk import KafkaEmitter, Tracer
from agentlake.settings import Settings
from agentlake.sim.suite import expand, load_suite
from tests.conftest import require
from tests.integration.helpers import sql
from tests.integration.otel_helpers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "agentlake" / "examples"
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
LONG_STEPS = 10_000


def browser_paths() -> tuple[str | None, str | None]:
    chrome = next((p for p in ("chromium", "chromium-browser", "google-chrome") if shutil.which(p)), None)
    return (shutil.which(chrome) if chrome else None), shutil.which("chromedriver")


@pytest.fixture(scope="module")
async def dataset(settings: Settings, projector: Projector) -> dict[str, Any]:
    """Two simulation runs (baseline and a regressing candidate) and one 10k-step trajectory."""
    await apply_specs(settings, load_registry_file(EXAMPLES / "registry.yaml"))
    await asyncio.sleep(1.0)
    suite = load_suite(EXAMPLES / "suite.yaml")
    tag = f"dash-{uuid.uuid4().hex[:6]}"
    args = (8, False, [], 0.0, 180.0)
    code, base = await _sim_run(
        settings, suite, expand(suite, 2), "support-bot@1.0", None, tag, *args, projector=projector
    )
    assert code == 0
    code, cand = await _sim_run(
        settings, suite, expand(suite, 2), "support-bot@1.1-beta", tag, None, *args, projector=projector
    )
    assert code == 1  # the candidate regresses: the gate fails

    lake = await lake_data(settings, projector)  # before the long trajectory loads the worker

    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "dash")
    tracer = Tracer("long-bot", "0.1", emitter=emitter, settings=settings)
    with tracer.trajectory("a very long task") as t:
        for i in range(LONG_STEPS // 2):
            t.step("thought", f"step {i}")
            with t.tool_call("shop", "noop", {"i": i}) as call:
                if i % 500 == 0:
                    call.error("simulated failure", kind="tool_error")
                else:
                    call.result({"ok": i})
        long_id = t.trajectory_id
    assert await asyncio.to_thread(emitter.flush, 60)
    emitter.close(5)

    async def long_done() -> bool:
        rows = await asyncio.to_thread(
            sql,
            projector,
            "SELECT count() AS n FROM events FINAL WHERE trajectory_id = {t:String}",
            t=long_id,
        )
        return int(rows[0]["n"]) >= LONG_STEPS * 1.5 + 2

    await projector.run_until(long_done, timeout=120)
    if not await long_done():
        from agentlake.cli import read_dead_letters

        rows = sql(
            projector,
            "SELECT count() AS n, uniqExact(seq) AS seqs, max(seq) AS top FROM events "
            "WHERE trajectory_id = {t:String}",
            t=long_id,
        )
        letters = [
            (d["reason"], d["detail"][:120])
            for topic in ("agent.steps.dlq", "agent.tool_calls.dlq", "agent.trajectories.dlq")
            for d in await read_dead_letters(settings, topic, 100_000, timeout=5)
            if d["key"] == long_id
        ]
        raise AssertionError(f"long trajectory not projected: {rows} {projector.stats} {letters[:20]}")
    auth = await auth_data(settings, projector, long_id)
    return {
        "baseline": base["run_id"],
        "candidate": cand["run_id"],
        "long": long_id,
        "candidate_report": cand,
        "auth": auth,
        "lake": lake,
    }


async def auth_data(settings: Settings, projector: Projector, trajectory_id: str) -> dict[str, Any]:
    """Agent auth's own story (delegation, a denied tool, revocation through the log), plus two
    gateway calls made inside `trajectory_id`, projected by the sink into the auth tables."""
    from datetime import UTC, datetime, timedelta

    from mcp import Client
    from mcp.shared.exceptions import MCPError

    from agentlake.auth.authority import Authority
    from agentlake.auth.demo import auth_demo, demo_shop
    from agentlake.auth.events import AuthEvents
    from agentlake.auth.gateway import Gateway, GatewayConfig
    from agentlake.auth.keys import keyring_for
    from agentlake.auth.policy import Grant, TokenSpec
    from agentlake.auth.verify import Verifier

    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "dash-auth")
    story = await auth_demo(settings, emitter)
    events = AuthEvents(emitter, topic=settings.topic)
    authority = Authority(keyring_for(settings), events)
    token = authority.mint(
        TokenSpec("bob", "long-bot", (Grant("shop", "get_order"),), datetime.now(UTC) + timedelta(minutes=5))
    )
    async with Client(demo_shop()) as shop:
        gw = Gateway(shop, GatewayConfig("shop"), Verifier(authority.root_key), events)
        await gw.call(token, "get_order", {"order_id": 7}, trajectory_id=trajectory_id)
        with pytest.raises(MCPError):
            await gw.call(token, "refund_order", {"order_id": 7}, trajectory_id=trajectory_id)
    assert await asyncio.to_thread(emitter.flush, 30)
    emitter.close(5)

    async def projected() -> bool:
        rows = await asyncio.to_thread(
            sql,
            projector,
            "SELECT count() AS n FROM auth_decisions FINAL "
            "WHERE trajectory_id = {t:String} OR task_id = {k:String}",
            t=trajectory_id,
            k=story["task"],
        )
        return int(rows[0]["n"]) >= 5

    await projector.run_until(projected, timeout=60)
    assert await projected()
    return story


async def lake_data(settings: Settings, projector: Projector) -> dict[str, Any]:
    """The context lake's demo part (a hit, a miss, a fused plan) on trajectories recorded through
    the pipeline; the sink projects its `lake.cache` events into ClickHouse."""
    from agentlake.demo import run_agents, wait_for_rewards
    from agentlake.lake.demo import lake_demo
    from agentlake.lake.entries import toolset_fingerprint
    from agentlake.sim.reference import SHOP_TOOLS

    emitter = KafkaEmitter(settings.bootstrap_servers, settings.spill_dir / "dash-lake")
    run_id = f"dash-lake-{uuid.uuid4().hex[:6]}"
    ids = await run_agents(settings, emitter, run_id, n_per_agent=8)
    assert await asyncio.to_thread(emitter.flush, 60)
    emitter.close(5)
    assert await wait_for_rewards(projector, run_id, len(ids))  # lake entries need the final rewards
    result = await lake_demo(settings, "demo", len(ids), toolset_fingerprint(SHOP_TOOLS))
    assert "error" not in result, result

    async def lake_projected() -> bool:  # the sink projects lake.cache itself, no `lake stats`
        rows = await asyncio.to_thread(
            sql, projector, "SELECT count() AS n FROM lake_lookups FINAL WHERE tenant = 'demo'"
        )
        return int(rows[0]["n"]) >= 2

    assert await projector.run_until(lake_projected, timeout=60)
    return {**result, "run_id": run_id}


@pytest.fixture(scope="module")
def dashboard(settings: Settings, projector: Projector, dataset: dict[str, Any]) -> Iterator[str]:
    data = DashboardData(settings, client=projector.clickhouse, follow=False)
    with ServerThread(create_app(settings, data)) as srv:
        deadline = time.monotonic() + 30
        while not data.manifests and time.monotonic() < deadline:
            time.sleep(0.2)
        yield srv.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chrome, driver_path = browser_paths()
    require(chrome is not None and driver_path is not None, "chromium / chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(300)  # generous: CI machines may be loaded (no timing assertions)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield drv
    finally:
        drv.quit()


def wait(drv: Any, cond: Any, timeout: float = 180) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout).until(cond)


def charts_rendered(drv: Any) -> int:
    """Wait until every chart on the page was drawn by plotly.js; returns how many."""
    n = len(drv.find_elements("css selector", "div.chart"))
    wait(drv, lambda d: len(d.find_elements("css selector", "div.chart[data-rendered='1'] .main-svg")) >= n)
    return n


def console_errors(drv: Any) -> list[dict[str, Any]]:
    return [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def shot(drv: Any, name: str) -> None:
    drv.save_screenshot(str(ARTIFACTS / f"{name}.png"))


# The browser tests run the (blocking) Selenium calls in a thread: the session's event loop
# keeps serving the shared sink's Kafka consumer meanwhile.


async def test_failing_run_to_failing_trial_to_trajectory(
    browser: Any, dashboard: str, dataset: dict[str, Any]
) -> None:
    await asyncio.to_thread(failing_run_flow, browser, dashboard, dataset)


async def test_long_trajectory_pages_and_renders(
    browser: Any, dashboard: str, dataset: dict[str, Any]
) -> None:
    await asyncio.to_thread(long_trajectory_flow, browser, dashboard, dataset)


async def test_other_pages_render_without_console_errors(
    browser: Any, dashboard: str, dataset: dict[str, Any]
) -> None:
    await asyncio.to_thread(other_pages_flow, browser, dashboard, dataset)


def first_seq(drv: Any) -> str | None:
    value: str | None = drv.execute_script(
        "const r = document.querySelector('#events-table tbody tr'); return r ? r.dataset.seq : null"
    )
    return value


def failing_run_flow(drv: Any, dashboard: str, dataset: dict[str, Any]) -> None:
    drv.get(dashboard + "/")
    wait(drv, lambda d: d.find_elements("css selector", "#runs-table a.run-link"))
    shot(drv, "01-runs")
    failing = drv.find_elements("css selector", "#runs-table tr.failing a.run-link")
    assert dataset["candidate"] in [a.text for a in failing]
    next(a for a in failing if a.text == dataset["candidate"]).click()

    wait(drv, lambda d: dataset["candidate"] in d.title)
    assert charts_rendered(drv) >= 4  # pass^k, per-case bars, two baseline comparisons
    shot(drv, "02-run")
    body = drv.find_element("tag name", "body").text
    assert "FAILED" in body and dataset["baseline"] in body
    assert drv.find_elements("css selector", "#regressions-components tr.regression")
    # the pass^k chart has both runs' curves, k = 1..2
    traces = drv.execute_script(
        "const d = document.querySelector('div.chart');return d.data.filter(t => t.mode).map(t => t.x.length)"
    )
    assert traces == [2, 2]

    drv.find_element("css selector", "#cases-table tr.failing a.case-link").click()
    wait(drv, lambda d: d.find_elements("css selector", "#trials-table"))
    shot(drv, "03-case")
    link = drv.find_element("css selector", "#trials-table tr.failing a.trajectory-link")
    trajectory_id = link.text
    link.click()

    wait(drv, lambda d: d.find_elements("css selector", "#viewer[data-loaded='1']"))
    charts_rendered(drv)
    rows = drv.find_elements("css selector", "#events-table tbody tr")
    assert len(rows) >= 3 and rows[0].get_attribute("data-seq") == "0"
    assert trajectory_id in drv.title
    assert "support-bot@1.1-beta" in drv.find_element("tag name", "body").text
    shot(drv, "04-trajectory")
    assert console_errors(drv) == []


def long_trajectory_flow(drv: Any, dashboard: str, dataset: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    drv.get(f"{dashboard}/trajectories/{dataset['long']}")
    wait(drv, lambda d: d.find_elements("css selector", "#viewer[data-loaded='1']"))
    charts_rendered(drv)
    seconds = time.perf_counter() - t0
    rows = drv.find_elements("css selector", "#events-table tbody tr")
    assert len(rows) == 200
    status = drv.find_element("id", "viewer-status").text
    assert f"of {int(LONG_STEPS * 1.5 + 2)} events" in status
    drv.find_element("id", "next-page").click()
    wait(drv, lambda d: first_seq(d) == "200")
    # jump near the end; failed calls are highlighted
    box = drv.find_element("id", "jump")
    box.send_keys("14990\n")
    wait(drv, lambda d: first_seq(d) == "14990")
    drv.find_element("id", "jump").clear()
    drv.find_element("id", "jump").send_keys("1\n")
    wait(drv, lambda d: d.find_elements("css selector", "#events-table tbody tr.failing"))
    shot(drv, "05-long-trajectory")
    nav = drv.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n ? n.duration : null"
    )
    (ARTIFACTS / "long-trajectory.json").write_text(
        json.dumps({"steps": LONG_STEPS, "until_rendered_s": seconds, "navigation_ms": nav})
    )
    print(f"10k-step trajectory: first page and charts rendered in {seconds:.2f} s (navigation {nav} ms)")
    assert console_errors(drv) == []


def other_pages_flow(drv: Any, dashboard: str, dataset: dict[str, Any]) -> None:
    for path, name in (
        ("/rewards?agent=support-bot", "06-rewards"),
        ("/trajectories?outcome=failure", "07-trajectories"),
        ("/lake", "08-lake"),
        ("/delegations", "09-delegations"),
    ):
        drv.get(dashboard + path)
        wait(drv, lambda d: d.find_elements("css selector", "main h1"))
        n = charts_rendered(drv)
        if path.startswith("/rewards"):
            assert n >= 3  # one chart per reward component
            lines = drv.execute_script("return document.querySelector('div.chart').data.map(t => t.name)")
            assert {"1.0", "1.1-beta"} <= set(lines)
        if path == "/lake":
            assert n == 4  # hit rate, freshness, reasons, clusters
            assert drv.find_elements("css selector", "#lake-quality tbody tr")
            assert drv.find_elements("css selector", "#lake-clusters tbody tr")
        shot(drv, name)
        assert console_errors(drv) == [], path

    # the delegation graph of the auth story: from the index to the parent token's graph
    parent = dataset["auth"]["parent_token"]
    link = next(
        a
        for a in drv.find_elements("css selector", "#auth-roots a.token-link")
        if parent.startswith(a.text[:-1])
    )
    link.click()
    wait(drv, lambda d: d.find_elements("css selector", "#delegation-nodes"))
    assert charts_rendered(drv) == 1
    rows = drv.find_elements("css selector", "#delegation-nodes tbody tr")
    assert len(rows) == 2  # alice's token and lookup-bot's attenuated block
    assert all("failing" in (r.get_attribute("class") or "") for r in rows)  # the parent was revoked
    body = drv.find_element("tag name", "body").text
    assert "lookup-bot" in body and "support-bot" in body
    cells = {
        r.find_elements("css selector", "td")[2].text: [c.text for c in r.find_elements("css selector", "td")]
        for r in rows
    }
    # lookup-bot: its lookup allowed, its refund denied, its lookup denied after the revocation
    assert (cells["lookup-bot"][6], cells["lookup-bot"][7]) == ("1", "2")
    assert (cells["support-bot"][6], cells["support-bot"][7]) == ("0", "0")
    shot(drv, "10-delegation-graph")
    # the task's graph is the same story
    drv.get(f"{dashboard}/delegations?task={dataset['auth']['task']}")
    wait(drv, lambda d: d.find_elements("css selector", "#delegation-nodes"))
    assert len(drv.find_elements("css selector", "#delegation-nodes tbody tr")) == 2
    # the long trajectory shows the gateway's decisions made inside it
    drv.get(f"{dashboard}/trajectories/{dataset['long']}")
    wait(drv, lambda d: d.find_elements("css selector", "#auth-decisions"))
    decisions = [r.text for r in drv.find_elements("css selector", "#auth-decisions tbody tr")]
    assert len(decisions) == 2 and "allowed" in decisions[0] and "denied" in decisions[1]
    assert console_errors(drv) == []


def test_read_only_and_assets_served_locally(dashboard: str) -> None:
    with httpx.Client(base_url=dashboard) as c:
        js = c.get("/static/plotly.min.js")
        assert js.status_code == 200 and b"plotly" in js.content[:2000].lower()
        assert c.post("/").status_code == 405
        assert c.get("/api/trajectories/nope/events").json()["events"] == []
        assert c.get("/runs/not-a-run").status_code == 404


def test_browser_is_required_in_ci() -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        chrome, driver = browser_paths()
        assert chrome and driver, (
            "CI=true: chromium and chromium-driver must be installed (.ci/run installs them)"
        )


def grafana_sql(raw: str, agent: str) -> str:
    """The Grafana ClickHouse plugin's macros, expanded the way the plugin does for a 7-day range."""
    import re

    raw = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - INTERVAL 7 DAY", raw)
    raw = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(\1, INTERVAL 60 second)", raw)
    return raw.replace("${agent:singlequote}", f"'{agent}'")


def test_grafana_panels_query_the_real_projections(projector: Projector, dataset: dict[str, Any]) -> None:
    from agentlake.projections.clickhouse import query

    board = json.loads((ROOT / "infra" / "grafana" / "dashboards" / "agentlake.json").read_text())
    var = board["templating"]["list"][0]
    agents = {r["agent_id"] for r in query(projector.clickhouse, var["query"])}
    assert "support-bot" in agents
    counts = {}
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "agentlake-clickhouse"
        (target,) = panel["targets"]
        rows = query(projector.clickhouse, grafana_sql(target["rawSql"], "support-bot"))
        counts[panel["title"]] = len(rows)
    # the two runs fill every panel (1.1-beta's undeclared tool calls fill the policy one)
    assert all(n > 0 for n in counts.values()), counts


async def test_dashboard_cli_follows_the_log_into_its_own_embedded_clickhouse(
    settings: Settings, tmp_path: Path
) -> None:
    """`agentlake dashboard` as users run it, on a data dir of its own (its own chdb, topics under
    its own prefix): a trajectory emitted after it started shows up, since it projects the log."""
    import signal
    import subprocess
    import sys

    from agentlake import stack
    from tests.integration.otel_helpers import free_port

    env = {
        **os.environ,
        "AGENTLAKE_HOME": str(tmp_path / "home"),
        "AGENTLAKE_TOPIC_PREFIX": f"dash{uuid.uuid4().hex[:6]}-",
        "AGENTLAKE_DASHBOARD_FOLLOW_S": "0.2",
    }
    own = Settings(home=tmp_path / "home", topic_prefix=env["AGENTLAKE_TOPIC_PREFIX"])
    await stack.ensure_topics(own)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlake", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as c:
            health: dict[str, Any] = {}
            for _ in range(1200):  # the sink loads the embedder and Milvus before it follows
                try:
                    health = (await c.get("/healthz")).json()
                    if health["following"]:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            assert health["following"] is True and health["notice"] is None

            emitter = KafkaEmitter(own.bootstrap_servers, own.spill_dir)
            tracer = Tracer("cli-bot", "3.0", emitter=emitter, settings=own)
            with tracer.trajectory("followed task") as t:
                with t.tool_call("shop", "ping", {}) as call:
                    call.result("pong")
                t.end("failure", error="wrong answer")
            assert await asyncio.to_thread(emitter.flush, 30)
            emitter.close(5)
            for _ in range(300):
                r = await c.get(f"/trajectories/{t.trajectory_id}")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 200 and "followed task" in r.text and "wrong answer" in r.text
            page = (await c.get("/trajectories?outcome=failure")).text
            assert t.trajectory_id in page
            events = (await c.get(f"/api/trajectories/{t.trajectory_id}/events")).json()["events"]
            assert [e["record"] for e in events] == [
                "TrajectoryStarted",
                "ToolCallRequested",
                "ToolCallCompleted",
                "TrajectoryEnded",
            ]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop, exit code 0
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


def start_dashboard_cli(env: dict[str, str]) -> tuple[Any, str]:
    """`agentlake dashboard` as a user starts it: (process, base url)."""
    import subprocess
    import sys

    from tests.integration.otel_helpers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentlake", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


async def wait_following(c: httpx.AsyncClient) -> dict[str, Any]:
    health: dict[str, Any] = {}
    for _ in range(1200):  # the sink loads the embedder and Milvus before it follows
        try:
            health = (await c.get("/healthz")).json()
            if health["following"]:
                break
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    return health


async def test_dashboard_cli_shows_the_demos_lake_and_auth_parts(
    dataset: dict[str, Any], tmp_path: Path
) -> None:
    """After the demo's lake and auth parts went through the pipeline, `agentlake dashboard` on a
    store of its own (its follow-projection reads the log from the start) shows both: the lake's
    lookups and the delegation tokens, not "no tables"; the demo's run lists both agent versions."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "AGENTLAKE_HOME": str(tmp_path / "home"), "AGENTLAKE_DASHBOARD_FOLLOW_S": "0.2"}
    proc, base = start_dashboard_cli(env)
    parent = dataset["auth"]["parent_token"]
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            health = await wait_following(c)
            assert health.get("following") is True, health
            lake = deleg = home = ""
            for _ in range(600):
                lake = (await c.get("/lake")).text
                deleg = (await c.get("/delegations")).text
                home = (await c.get("/")).text
                if "lake-quality" in lake and parent[:20] in deleg and dataset["lake"]["run_id"] in home:
                    break
                await asyncio.sleep(0.2)
            assert "no ClickHouse tables" not in lake and "missing:" not in lake
            assert 'id="lake-quality"' in lake and "<td>demo</td>" in lake
            assert 'id="auth-roots"' in deleg and parent[:20] in deleg
            # the lake run was answered by both reference agents: one row, both versions
            row = next(r for r in home.split("<tr") if dataset["lake"]["run_id"] in r)
            assert "support-bot@1.0" in row and "support-bot@1.1-beta" in row, row
            # meanwhile the embedded store is the dashboard's: `sql` says who holds it, what to do
            busy = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "agentlake", "sql", "SELECT 1"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            said = " ".join(busy.stderr.split())
            assert busy.returncode == 2, busy.stderr
            assert f"pid {proc.pid} (agentlake dashboard)" in said and "CLICKHOUSE_URL" in said, said
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
