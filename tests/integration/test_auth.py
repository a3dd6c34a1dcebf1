"""Agent auth on the real stack: events on Kafka, the delegation graph in ClickHouse, live revocation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import biscuit_auth as ba
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from agentlake.auth.approval import ApprovalService
from agentlake.auth.authority import Authority
from agentlake.auth.events import DECISION, AuthEvents
from agentlake.auth.follow import AuthFollower
from agentlake.auth.gateway import Gateway, GatewayConfig
from agentlake.auth.keys import KeyRing
from agentlake.auth.policy import Attenuation, Grant, TokenSpec
from agentlake.auth.verify import RevocationSet, TaskBudgets, Verifier
from agentlake.consumers import Projector
from agentlake.projections.auth import chain, derived, who_could
from agentlake.projections.clickhouse import query
from agentlake.sdk import KafkaEmitter
from agentlake.settings import Settings
from tests.unit.auth.helpers import shop_server


@pytest.fixture
def authority(settings: Settings, tmp_path: Path) -> Iterator[Authority]:
    emitter = KafkaEmitter(settings.bootstrap_servers, tmp_path / "spill", client_id="auth-test")
    try:
        yield Authority(KeyRing(tmp_path / "keys"), AuthEvents(emitter, topic=settings.topic, keep=True))
    finally:
        emitter.close(10)


def _flush(auth: Authority) -> None:
    assert auth.events.emitter is not None
    assert auth.events.emitter.flush(30)  # type: ignore[attr-defined]


async def test_delegation_graph_is_projected_and_queried(
    settings: Settings, authority: Authority, projector: Projector
) -> None:
    auth = authority
    approver = ApprovalService(ba.KeyPair(), auth.events)
    spec = TokenSpec(
        "alice",
        "support-bot",
        (Grant("shop", "get_order"), Grant("shop", "refund_order", "write")),
        datetime.now(UTC) + timedelta(minutes=30),
        task="task-graph",
        approval_tools=("refund_order",),
        approver_key=approver.public_key,
    )
    root = auth.mint(spec)
    sub = auth.attenuate(root, Attenuation(delegate="lookup-bot", tools=(("shop", "get_order"),)))
    refunder = auth.attenuate(root, Attenuation(delegate="refund-bot", tools=(("shop", "refund_order"),)))
    async with Client(shop_server()) as upstream:
        gw = Gateway(upstream, GatewayConfig("shop"), auth.verifier, auth.events)
        await gw.call(sub, "get_order", {"order_id": 1}, task="task-graph")
        with pytest.raises(MCPError):
            await gw.call(sub, "refund_order", {"order_id": 1}, task="task-graph")
        req = approver.request(auth.parse(refunder), "shop", "refund_order", "task-graph", "big refund")
        approved = approver.grant(req.request_id, by="manager@example.com")
        await gw.call(approved, "refund_order", {"order_id": 1}, task="task-graph")
    before_revoke = datetime.now(UTC)
    await asyncio.sleep(0.01)
    auth.revoke(sub, reason="compromised", by="alice")
    _flush(auth)
    assert await projector.catch_up(timeout=60)
    client = projector.clickhouse

    decisions = auth.events.of(DECISION)
    allowed_call = decisions[0]["call_id"]
    c = chain(client, allowed_call)
    assert c is not None
    assert [(h["kind"], h["principal"]) for h in c["hops"]] == [
        ("user", "alice"),
        ("issued", "support-bot"),
        ("delegated", "lookup-bot"),
    ]
    approved_chain = chain(client, decisions[2]["call_id"])
    assert approved_chain is not None
    assert [h["kind"] for h in approved_chain["hops"]][-2:] == ["delegated", "approved"]
    assert approved_chain["hops"][-1]["principal"] == "manager@example.com"

    holders = who_could(client, "shop", "get_order", before_revoke)
    assert {h["holder"] for h in holders} >= {"support-bot", "lookup-bot"}
    assert "refund-bot" not in {h["holder"] for h in holders}  # narrowed to refund_order only
    after = who_could(client, "shop", "get_order", datetime.now(UTC) + timedelta(seconds=1))
    assert "lookup-bot" not in {h["holder"] for h in after}  # revoked
    assert who_could(client, "shop", "get_order", datetime.now(UTC) + timedelta(hours=2)) == []  # expired

    tree = derived(client, auth.parse(root).revocation_ids[0])
    by_agent = {r["agent_id"]: r for r in tree}
    assert set(by_agent) >= {"support-bot", "lookup-bot", "refund-bot"}
    assert (by_agent["lookup-bot"]["calls_allowed"], by_agent["lookup-bot"]["calls_denied"]) == (1, 1)
    assert (by_agent["refund-bot"]["calls_allowed"], by_agent["refund-bot"]["calls_denied"]) == (
        1,
        0,
    )  # approved
    revoked = query(
        client,
        "SELECT reason FROM auth_revocations FINAL WHERE revocation_id = {r:String}",
        {"r": auth.parse(sub).revocation_ids[-1]},
    )
    assert revoked == [{"reason": "compromised"}]
    approvals = query(
        client,
        "SELECT state FROM auth_approvals FINAL WHERE request_id = {r:String} ORDER BY ts",
        {"r": req.request_id},
    )
    assert [a["state"] for a in approvals] == ["requested", "granted"]

    # the CLI reads the same graph, and replays a policy over the recorded calls
    from agentlake.cli import app

    runner = CliRunner()
    res = await asyncio.to_thread(
        runner.invoke, app, ["auth", "chain", allowed_call, "--no-catch-up", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["hops"][0]["principal"] == "alice"
    policy = Path(projector.settings.data_dir) / "no-refunds.dl"
    policy.write_text('check if operation("read");\nallow if true;\n')
    res = await asyncio.to_thread(
        runner.invoke,
        app,
        ["auth", "replay", "--policy", str(policy), "--since", "1h", "--no-catch-up", "--json"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    denied = {(r["agent"], r["tool"]): r["would_deny"] for r in report["by_agent_tool"]}
    assert denied[("support-bot", "refund_order")] >= 1 and denied[("support-bot", "get_order")] == 0


async def test_revocation_reaches_a_following_gateway_live(settings: Settings, authority: Authority) -> None:
    auth = authority
    revocations = RevocationSet()
    budgets = TaskBudgets()
    follower = AuthFollower(settings, revocations, budgets).start()
    try:
        verifier = Verifier(auth.root_key, revocations=revocations, budgets=budgets)
        token = auth.mint(
            TokenSpec(
                "alice",
                "bot",
                (Grant("shop", "get_order"),),
                datetime.now(UTC) + timedelta(minutes=5),
                task="live",
            )
        )
        child = auth.attenuate(token, Attenuation(delegate="sub"))
        async with Client(shop_server()) as upstream:
            gw = Gateway(upstream, GatewayConfig("shop"), verifier, AuthEvents())
            await gw.call(child, "get_order", {"order_id": 1}, task="live")
            auth.revoke(token, reason="test")
            _flush(auth)
            deadline = time.monotonic() + 20
            while auth.parse(token).revocation_ids[0] not in revocations and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            with pytest.raises(MCPError, match="revoked"):
                await gw.call(child, "get_order", {"order_id": 1}, task="live")
        # a restarted follower rebuilds the set from the compacted topic
        fresh = RevocationSet()
        again = AuthFollower(settings, fresh).start()
        again.stop()
        assert auth.parse(token).revocation_ids[0] in fresh
    finally:
        follower.stop()


async def test_the_demo_story(settings: Settings, tmp_path: Path) -> None:
    from agentlake.auth.demo import auth_demo, render_lines

    emitter = KafkaEmitter(settings.bootstrap_servers, tmp_path / "spill", client_id="auth-demo-test")
    try:
        result = await auth_demo(settings, emitter)
    finally:
        emitter.close(10)
    assert [(s["tool"], s["allowed"]) for s in result["steps"]] == [
        ("get_order", True),
        ("refund_order", False),
        ("get_order", False),
    ]
    assert "block 1, check 0" in result["steps"][1]["detail"]
    assert "revoked" in result["steps"][2]["detail"]
    assert len(render_lines(result)) == 5


async def test_sim_run_with_auth_denies_the_undeclared_tool(settings: Settings, projector: Projector) -> None:
    """`sim run --auth`: the 1.1-beta candidate calls search_orders, which it was never granted."""
    from agentlake.cli import _sim_run
    from agentlake.registry import apply_specs, load_registry_file
    from agentlake.sim.suite import expand, load_suite

    examples = Path(__file__).resolve().parents[2] / "agentlake" / "examples"
    await apply_specs(settings, load_registry_file(examples / "registry.yaml"))
    await asyncio.sleep(1.0)  # the stream worker's registry follower polls every 100 ms
    suite = load_suite(examples / "suite.yaml")
    _code, report = await _sim_run(
        settings,
        suite,
        expand(suite, 1)[:3],  # three trials are enough to see the denials
        "support-bot@1.1-beta",
        None,
        None,
        8,
        False,
        [],
        0.0,
        180.0,
        projector=projector,
        auth=True,
    )
    assert report["auth"]["decisions"] > report["auth"]["denied"] > 0
    assert set(report["auth"]["denied_tools"]) == {"search_orders"}
    assert await projector.catch_up(timeout=60)
    rows = query(
        projector.clickhouse,
        "SELECT tool, failed_check FROM auth_decisions FINAL WHERE gateway_id = 'sim' AND allowed = 0",
    )
    assert rows and {r["tool"] for r in rows} == {"search_orders"}
    assert all("no allow policy matched" in (r["failed_check"] or "") for r in rows)
