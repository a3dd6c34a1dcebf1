"""Over HTTP, every refusal is an `AuthDecision` like an in-memory denial, and none records the token."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
from starlette.testclient import TestClient

from agentlake.auth.authority import Authority
from agentlake.auth.events import DECISION, AuthEvents, decode
from agentlake.auth.gateway import Gateway, GatewayConfig
from agentlake.auth.gateway_http import ResourceServer
from agentlake.sdk import MemoryEmitter
from tests.unit.auth.helpers import shop_spec


class NeverCalled:
    """The upstream: a refused request must not reach it."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult:
        raise AssertionError("a refused request reached the upstream")

    async def list_tools(self) -> types.ListToolsResult:
        raise AssertionError("a refused request reached the upstream")


@pytest.fixture
def emitter() -> MemoryEmitter:
    return MemoryEmitter()


@pytest.fixture
def http(auth: Authority, emitter: MemoryEmitter) -> tuple[TestClient, AuthEvents]:
    events = AuthEvents(emitter, keep=True)
    gw = Gateway(
        NeverCalled(),
        GatewayConfig("shop", operations={"get_order": "read"}, resources={"get_order": "orders/{order_id}"}),
        auth.verifier,
        events,
    )
    return TestClient(ResourceServer(gw)), events


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }


HEADERS = {"X-Agentlake-Task": "t-1", "X-Agentlake-Trajectory": "traj-9"}


def test_no_token_is_a_401_and_a_no_token_decision_with_the_calls_facts(
    http: tuple[TestClient, AuthEvents],
) -> None:
    client, events = http
    r = client.post("/mcp", json=call("get_order", order_id=7), headers=HEADERS)
    assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"]
    [d] = events.of(DECISION)
    assert d["allowed"] is False and d["reason"] == "no_token"
    assert (d["tool"], d["operation"], d["resource"]) == ("get_order", "read", "orders/7")
    assert (d["task_id"], d["trajectory_id"], d["server_id"]) == ("t-1", "traj-9", "shop")
    assert d["revocation_ids"] == [] and d["agent_id"] is None


def test_a_garbled_token_is_a_401_and_an_invalid_token_decision_that_does_not_record_it(
    http: tuple[TestClient, AuthEvents], emitter: MemoryEmitter
) -> None:
    client, events = http
    garbled = "En0KEwoEc2hvcBgDIgkKBwgKEgMYgAgSJAgAEiDsecret-looking-garbage-AAAA"
    r = client.post(
        "/mcp", json=call("refund_order", order_id=7), headers={"Authorization": f"Bearer {garbled}"}
    )
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    [d] = events.of(DECISION)
    assert d["allowed"] is False and d["reason"] == "invalid_token" and d["tool"] == "refund_order"
    assert d["operation"] == "write"  # not configured, never listed: the safe default
    [(topic, _key, value)] = emitter.records
    assert topic == "auth.delegations" and garbled.encode() not in value
    assert decode(value)[0] == DECISION


def test_a_revoked_token_is_a_401_and_a_revoked_decision_naming_its_chain(
    auth: Authority, http: tuple[TestClient, AuthEvents], emitter: MemoryEmitter
) -> None:
    client, events = http
    token = auth.mint(shop_spec())
    auth.revoke(token)
    r = client.post("/mcp", json=call("get_order", order_id=1), headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["error_description"]
    [d] = events.of(DECISION)
    assert d["reason"] == "revoked" and d["allowed"] is False
    assert d["token_id"] == auth.parse(token).revocation_ids[0]
    assert all(token.encode() not in v for _, _, v in emitter.records)


def test_requests_that_are_not_tool_calls_are_refused_and_recorded_with_no_tool(
    auth: Authority, http: tuple[TestClient, AuthEvents]
) -> None:
    client, events = http
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
    assert client.post("/mcp", json=init).status_code == 401
    assert client.get("/mcp").status_code == 401
    assert client.post("/mcp", content=b"{not json").status_code == 401
    assert [(d["tool"], d["resource"], d["operation"], d["reason"]) for d in events.of(DECISION)] == [
        ("", "", "", "no_token")
    ] * 3
