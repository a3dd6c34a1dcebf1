"""The gateway in memory: a delegated sub-agent through a real MCP client, approvals, budgets, events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import biscuit_auth as ba
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from agentlake.auth.approval import ApprovalError, ApprovalService
from agentlake.auth.authority import Authority
from agentlake.auth.events import APPROVAL, DECISION, INVOKED, decode
from agentlake.auth.follow import apply_record
from agentlake.auth.gateway import DENIED_CODE, Gateway, GatewayConfig, WithMeta
from agentlake.auth.policy import Attenuation, Grant
from agentlake.auth.verify import RevocationSet, TaskBudgets
from agentlake.sdk import MemoryEmitter
from tests.unit.auth.helpers import now, shop_server, shop_spec


def _gateway(auth: Authority, client: Any) -> Gateway:
    return Gateway(
        client,
        GatewayConfig("shop", resources={"get_order": "orders/{order_id}"}),
        auth.verifier,
        auth.events,
    )


async def test_delegated_sub_agent_allowed_on_one_tool_denied_on_another_then_revoked(
    auth: Authority,
) -> None:
    parent = auth.mint(shop_spec())
    sub = auth.attenuate(parent, Attenuation(delegate="lookup-bot", tools=(("shop", "get_order"),)))
    async with Client(shop_server()) as upstream:
        gw = _gateway(auth, upstream)
        async with Client(gw.server) as client:
            agent = WithMeta(client, sub, task="t-1")
            result = await agent.call_tool("get_order", {"order_id": 7})
            assert "get_order {'order_id': 7}" in result.content[0].text  # type: ignore[union-attr]
            with pytest.raises(MCPError) as denied:
                await agent.call_tool("refund_order", {"order_id": 7})
            assert denied.value.code == DENIED_CODE
            assert (
                'block 1, check 0: check if server($s), tool($t), $s == "shop" && $t == "get_order"'
                in str(denied.value)
            )
            # the error names the failed check only: no facts of the token leak
            assert "alice" not in str(denied.value) and "right(" not in str(denied.value)
            auth.revoke(parent)
            with pytest.raises(MCPError) as revoked:
                await agent.call_tool("get_order", {"order_id": 7})
            assert "revoked" in str(revoked.value)
    decisions = auth.events.of(DECISION)
    assert [d["allowed"] for d in decisions] == [True, False, False]
    assert decisions[0]["resource"] == "orders/7" and decisions[0]["operation"] == "read"
    assert decisions[1]["operation"] == "write"  # from the upstream's readOnlyHint=False
    assert decisions[0]["agent_id"] == "support-bot" and decisions[0]["depth"] == 1
    invoked = auth.events.of(INVOKED)
    assert len(invoked) == 1 and invoked[0]["call_id"] == decisions[0]["call_id"]


async def test_no_token_is_denied_with_a_clear_error(auth: Authority) -> None:
    async with Client(shop_server()) as upstream, Client(_gateway(auth, upstream).server) as client:
        with pytest.raises(MCPError, match="no_token"):
            await client.call_tool("get_order", {"order_id": 1})
        listed = await client.list_tools()  # listing is not a tool call
        assert {t.name for t in listed.tools} == {"get_order", "search_orders", "refund_order"}


async def test_per_task_budget_counts_each_call_once(auth: Authority) -> None:
    emitter = MemoryEmitter()
    auth.events.emitter = emitter
    token = auth.mint(shop_spec(budget=2))
    async with Client(shop_server()) as upstream:
        gw = _gateway(auth, upstream)
        await gw.call(token, "get_order", {"order_id": 1}, task="t-1")
        await gw.call(token, "get_order", {"order_id": 2}, task="t-1")
        with pytest.raises(MCPError, match=r"calls\(\$n\), \$n < 2"):
            await gw.call(token, "get_order", {"order_id": 3}, task="t-1")
    # another gateway counting from the event stream (re-delivered twice) agrees: 2 allowed calls
    other = TaskBudgets()
    for _ in range(2):
        for _, _, value in emitter.records:
            apply_record(value, RevocationSet(), other)
    assert other.count("t-1") == 2


async def test_approval_lifecycle_request_grant_deny_expire(auth: Authority) -> None:
    approver = ApprovalService(ba.KeyPair(), auth.events)
    spec = shop_spec(approval_tools=("refund_order",), approver_key=approver.public_key)
    token = auth.mint(spec)
    async with Client(shop_server()) as upstream:
        gw = _gateway(auth, upstream)
        with pytest.raises(MCPError, match="approved"):
            await gw.call(token, "refund_order", {"order_id": 5}, task="t-1")
        req = approver.request(auth.parse(token), "shop", "refund_order", "t-1", "refund over limit")
        assert [r.request_id for r in approver.pending()] == [req.request_id]
        approved = approver.grant(req.request_id, by="manager@example.com")
        waited = await approver.wait(req.request_id)
        assert waited.state == "granted" and waited.approved_token == approved
        result = await gw.call(approved, "refund_order", {"order_id": 5}, task="t-1")
        assert not result.is_error
        with pytest.raises(ApprovalError):
            approver.deny(req.request_id, by="x")
        denied = approver.request(auth.parse(token), "shop", "refund_order", "t-1", "again")
        approver.deny(denied.request_id, by="manager@example.com")
        late = approver.request(
            auth.parse(token), "shop", "refund_order", "t-1", "late", timeout=timedelta(0)
        )
        assert (await approver.wait(late.request_id)).state == "expired"
    states = [(e["request_id"], e["state"]) for e in auth.events.of(APPROVAL)]
    assert states == [
        (req.request_id, "requested"),
        (req.request_id, "granted"),
        (denied.request_id, "requested"),
        (denied.request_id, "denied"),
        (late.request_id, "requested"),
        (late.request_id, "expired"),
    ]
    granted = auth.events.of(APPROVAL)[1]
    assert granted["approval_revocation_id"] == auth.parse(approved).revocation_ids[-1]


async def test_an_expired_approval_block_no_longer_counts(auth: Authority) -> None:
    approver = ApprovalService(ba.KeyPair(), approval_ttl=timedelta(seconds=-1))
    token = auth.mint(shop_spec(approval_tools=("refund_order",), approver_key=approver.public_key))
    approved = approver.grant(
        approver.request(auth.parse(token), "shop", "refund_order", "t-1", "x").request_id, "m"
    )
    d = auth.verify(
        approved, __import__("tests.unit.auth.helpers", fromlist=["call"]).call("refund_order", "write")
    )
    assert not d.allowed and "block 1" in (d.failed_check or "")


def test_events_round_trip_through_the_codec(auth: Authority) -> None:
    emitter = MemoryEmitter()
    auth.events.emitter = emitter
    token = auth.mint(shop_spec(grants=(Grant("shop", "*", "read"),), expires=now() + timedelta(minutes=1)))
    auth.attenuate(token, Attenuation(delegate="x", operations=("read",)))
    auth.revoke(token)
    auth.publish_keys()
    records = [decode(v) for _, _, v in emitter.records]
    assert [r for r, _ in records] == [
        "AuthTokenIssued",
        "AuthTokenAttenuated",
        "AuthRevoked",
        "AuthKeyPublished",
    ]
    topics = [t for t, _, _ in emitter.records]
    assert topics == ["auth.delegations", "auth.delegations", "auth.revocations", "registry.keys"]
    issued = records[0][1]
    assert emitter.records[0][1].decode() == issued["revocation_id"]  # keyed by block revocation id
    assert records[1][1]["parent_revocation_id"] == issued["revocation_id"]


async def test_sim_hook_denies_undeclared_tools_as_unauthorized_tool_errors() -> None:
    from types import SimpleNamespace

    from agentlake.auth.simhook import SimAuth
    from agentlake.registry import parse_registry

    registry_yaml = {
        "servers": [
            {
                "id": "shop",
                "version": "1",
                "tools": [
                    {"name": n, "input_schema": {"type": "object"}}
                    for n in ("get_order", "refund_order", "search_orders")
                ],
            }
        ],
        "agents": [
            {
                "id": "support-bot",
                "version": "1.0",
                "owner": "o@example.com",
                "objective": "x",
                "tools": [{"server": "shop", "tool": "get_order"}],
            }
        ],
    }
    from agentlake.registry import Registry

    registry = Registry()
    for spec in parse_registry(registry_yaml, "test"):
        registry.apply(spec)
    hook = SimAuth.for_agent(registry, "support-bot", "1.0")
    trial = SimpleNamespace(trial_id="trial-1", server="shop", budgets=SimpleNamespace(timeout_s=30))
    async with Client(shop_server()) as upstream:
        client = hook.wrap(trial, upstream)
        ok = await client.call_tool("get_order", {"order_id": 1})
        assert not ok.is_error
        denied = await client.call_tool("search_orders", {"q": "x"})
        assert denied.is_error and (denied.meta or {}).get("agentlake/error_kind") == "unauthorized"
        assert "no allow policy matched" in denied.content[0].text  # type: ignore[union-attr]
    assert hook.summary() == {"decisions": 2, "denied": 1, "denied_tools": {"search_orders": 1}}
