"""`who could call tool X on server S at time T`, from the recorded events, against the verifier itself."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import biscuit_auth as ba
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from agentlake.auth.approval import ApprovalService
from agentlake.auth.authority import Authority
from agentlake.auth.gateway import Gateway, GatewayConfig
from agentlake.auth.graph import who_could
from agentlake.auth.policy import Attenuation, Grant, Request
from agentlake.projections.auth import rows_of
from tests.unit.auth.helpers import now, shop_server, shop_spec

T0 = now()


@pytest.fixture(autouse=True)
def _now_at_each_test() -> None:
    """T0 is when the test starts (tokens are minted with the real clock; the module may be
    imported many minutes before its tests run in a full session)."""
    global T0
    T0 = now()


@pytest.fixture
def world(auth: Authority) -> dict[str, str]:
    """A root token for task t-1 (budget 3, orders/*, refunds need approval, one hop) and its tokens."""
    approver = ApprovalService(ba.KeyPair(), auth.events)
    root = auth.mint(
        shop_spec(
            grants=(Grant("shop", "get_order"), Grant("shop", "refund_order", "write")),
            expires=T0 + timedelta(minutes=30),
            budget=3,
            resources=("orders/*",),
            approval_tools=("refund_order",),
            approver_key=approver.public_key,
            max_depth=1,
        )
    )
    t = {"root": root}
    t["lookup"] = auth.attenuate(root, Attenuation(delegate="lookup-bot", tools=(("shop", "get_order"),)))
    t["eu"] = auth.attenuate(root, Attenuation(delegate="eu-bot", resources=("orders/4*",)))
    t["short"] = auth.attenuate(root, Attenuation(delegate="short-bot", expires=T0 + timedelta(minutes=2)))
    t["deep"] = auth.attenuate(t["lookup"], Attenuation(delegate="deep-bot"))  # depth 2 > max_depth 1
    t["other_task"] = auth.attenuate(root, Attenuation(delegate="x-bot", task="t-2"))
    t["billing"] = auth.attenuate(root, Attenuation(delegate="billing-bot", servers=("billing",)))
    t["gone"] = auth.attenuate(root, Attenuation(delegate="gone-bot"))
    auth.revoke(t["gone"])
    t["refunder"] = auth.attenuate(
        root, Attenuation(delegate="refund-bot", tools=(("shop", "refund_order"),))
    )
    req = approver.request(auth.parse(t["refunder"]), "shop", "refund_order", "t-1", "refund")
    t["approved"] = approver.grant(req.request_id, by="manager")
    return t


def recorded(auth: Authority) -> dict[str, list[dict[str, Any]]]:
    """The projection's rows of every event so far, by table (what ClickHouse would hold)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for _, _, record, data in auth.events.sent:
        out = rows_of(record, data)
        if out is not None:
            tables.setdefault(out[0], []).append(out[1])
    return tables


def ask(auth: Authority, tool: str, at: datetime, resource: str | None = None) -> list[dict[str, Any]]:
    rows = recorded(auth)
    calls: dict[str, set[str]] = {}
    for d in rows.get("auth_decisions", []):
        if d["allowed"] and d["ts"] < at:
            calls.setdefault(d["task_id"] or "", set()).add(d["call_id"])
    return who_could(
        rows.get("auth_blocks", []),
        rows.get("auth_approvals", []),
        rows.get("auth_revocations", []),
        {k: len(v) for k, v in calls.items()},
        "shop",
        tool,
        at,
        resource,
    )


def last_rid(auth: Authority, token: str) -> str:
    return str(auth.parse(token).revocation_ids[-1])


def holders(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["holder"], r["kind"]) for r in rows}


def test_who_could_models_narrowing_expiry_revocation_tasks_depth_resources_and_approvals(
    auth: Authority, world: dict[str, str]
) -> None:
    at = T0 + timedelta(seconds=30)
    lookups = ask(auth, "get_order", at)
    assert holders(lookups) == {
        ("support-bot", "issued"),
        ("lookup-bot", "attenuated"),
        ("eu-bot", "attenuated"),
        ("short-bot", "attenuated"),
    }  # not: deep-bot (depth), x-bot (two tasks), billing-bot (audience), gone-bot (revoked), refunds
    eu = next(r for r in lookups if r["holder"] == "eu-bot")
    assert eu["resources"] == [["orders/*"], ["orders/4*"]] and eu["task_id"] == "t-1"
    assert (eu["budget"], eu["calls_used"]) == (3, 0)
    assert "eu-bot" not in {r["holder"] for r in ask(auth, "get_order", at, resource="orders/12")}
    assert "eu-bot" in {r["holder"] for r in ask(auth, "get_order", at, resource="orders/42")}
    assert ask(auth, "get_order", at, resource="customers/1") == []
    # refunds need an approval: only the approved token could, not its parent nor the root
    [refund] = ask(auth, "refund_order", at)
    assert (refund["holder"], refund["kind"], refund["approved_by"]) == ("refund-bot", "approved", "manager")
    assert refund["revocation_id"] == last_rid(auth, world["approved"])
    # later: short-bot's own expiry has passed; after the root's, nobody
    assert "short-bot" not in {r["holder"] for r in ask(auth, "get_order", T0 + timedelta(minutes=5))}
    assert ask(auth, "get_order", T0 + timedelta(hours=1)) == []
    # before anything was issued, nobody
    assert ask(auth, "get_order", T0 - timedelta(minutes=1)) == []


@pytest.mark.parametrize(
    ("tool", "operation", "resource"),
    [
        ("get_order", "read", "orders/42"),
        ("get_order", "read", "orders/12"),
        ("refund_order", "write", "orders/42"),
    ],
)
def test_who_could_agrees_with_the_verifier_on_every_token(
    auth: Authority, world: dict[str, str], tool: str, operation: str, resource: str
) -> None:
    at = T0 + timedelta(seconds=30)
    answer = {r["revocation_id"] for r in ask(auth, tool, at, resource)}
    for name, token in world.items():
        req = Request("shop", tool, operation, resource, "t-1", {}, at)
        allowed = auth.verify(token, req).allowed
        assert allowed == (last_rid(auth, token) in answer), name


async def test_a_task_whose_budget_is_used_up_is_no_longer_a_could(
    auth: Authority, world: dict[str, str]
) -> None:
    async with Client(shop_server()) as upstream:
        gw = Gateway(
            upstream,
            GatewayConfig("shop", resources={"get_order": "orders/{order_id}"}),
            auth.verifier,
            auth.events,
        )
        for i in range(2):
            await gw.call(world["lookup"], "get_order", {"order_id": 40 + i}, task="t-1")
        mid = now() + timedelta(seconds=1)
        assert {r["calls_used"] for r in ask(auth, "get_order", mid)} == {2}
        await gw.call(world["lookup"], "get_order", {"order_id": 43}, task="t-1")
    after = now() + timedelta(seconds=1)
    assert ask(auth, "get_order", after) == []  # every token is bound to t-1, whose 3 calls are made
    assert not auth.verify(
        world["root"], Request("shop", "get_order", "read", "orders/4", "t-1", {}, after)
    ).allowed


async def test_derived_keeps_tokens_attenuated_from_an_approved_token_and_counts_their_calls(
    auth: Authority, world: dict[str, str]
) -> None:
    from agentlake.auth.graph import derived

    # the approved refund token is handed on, narrowed to one order: a hop past the root's max_depth
    handed = auth.attenuate(world["approved"], Attenuation(delegate="clerk-bot", resources=("orders/42",)))
    async with Client(shop_server()) as upstream:
        gw = Gateway(
            upstream,
            GatewayConfig("shop", resources={t: "orders/{order_id}" for t in ("get_order", "refund_order")}),
            auth.verifier,
            auth.events,
        )
        await gw.call(world["approved"], "refund_order", {"order_id": 42}, task="t-1")
        for order in (42, 7):
            with pytest.raises(MCPError):
                await gw.call(handed, "refund_order", {"order_id": order}, task="t-1")
        await gw.call(world["lookup"], "get_order", {"order_id": 1}, task="t-1")
    rows = recorded(auth)
    tree = derived(
        rows["auth_blocks"], rows["auth_approvals"], rows["auth_decisions"], last_rid(auth, world["refunder"])
    )
    assert [(r["kind"], r["agent_id"], r["calls_allowed"], r["calls_denied"]) for r in tree] == [
        ("attenuated", "refund-bot", 0, 0),
        ("approved", "refund-bot", 1, 0),
        ("attenuated", "clerk-bot", 0, 2),
    ]
    assert tree[1]["approved_by"] == "manager" and tree[2]["depth"] == 2
    whole = derived(
        rows["auth_blocks"], rows["auth_approvals"], rows["auth_decisions"], last_rid(auth, world["root"])
    )
    assert {r["agent_id"] for r in whole} >= {"support-bot", "lookup-bot", "clerk-bot", "gone-bot"}
    assert next(r for r in whole if r["agent_id"] == "lookup-bot")["calls_allowed"] == 1
    assert derived(rows["auth_blocks"], [], [], "0" * 128) == []
