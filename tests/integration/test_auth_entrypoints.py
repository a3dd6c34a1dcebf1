"""Every entry point denies the same expired and wrong-audience tokens, naming the failed check.

CLI ``token verify``, the gateway in memory, the gateway over HTTP (the official
``mcp`` client, bearer header) and the Python API all take one token and one
call; each must deny with the same check from the token's first block.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from agentlake.auth.authority import Authority
from agentlake.auth.events import AuthEvents
from agentlake.auth.gateway import Gateway, GatewayConfig, WithMeta
from agentlake.auth.gateway_http import WELL_KNOWN, serve
from agentlake.auth.keys import KeyRing
from agentlake.auth.policy import Grant, Request, TokenSpec
from tests.unit.auth.helpers import shop_server

EXPIRED = "check if time($t)"
AUDIENCE = 'check if server($s), $s == "billing"'


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Authority, dict[str, str]]:
    monkeypatch.setenv("AGENTLAKE_HOME", str(tmp_path))
    auth = Authority(KeyRing(tmp_path / "auth" / "keys"), AuthEvents(keep=True))
    base = {"user": "alice", "agent": "bot", "task": "t-1"}
    expired = auth.mint(
        TokenSpec(
            **base, grants=(Grant("shop", "get_order"),), expires=datetime.now(UTC) - timedelta(minutes=1)
        )
    )
    other_audience = auth.mint(
        TokenSpec(**base, grants=(Grant("billing", "*"),), expires=datetime.now(UTC) + timedelta(minutes=10))
    )
    valid = auth.mint(
        TokenSpec(
            **base, grants=(Grant("shop", "get_order"),), expires=datetime.now(UTC) + timedelta(minutes=10)
        )
    )
    return auth, {"expired": expired, "audience": other_audience, "valid": valid}


EXPECT = {"expired": EXPIRED, "audience": AUDIENCE}


def test_python_api(tokens: tuple[Authority, dict[str, str]]) -> None:
    auth, t = tokens
    req = Request("shop", "get_order", "read", "shop/get_order", "t-1", {"order_id": 1})
    assert auth.verify(t["valid"], req).allowed
    for name, check in EXPECT.items():
        d = auth.verify(t[name], req)
        assert not d.allowed and check in (d.failed_check or ""), (name, d)
        assert d.failed_check is not None and d.failed_check.startswith("block 0")


def test_cli_verify(tokens: tuple[Authority, dict[str, str]]) -> None:
    from agentlake.cli import app

    _, t = tokens
    runner = CliRunner()
    args = ["--server", "shop", "--tool", "get_order", "--task", "t-1", "--offline", "--json"]
    ok = runner.invoke(app, ["token", "verify", t["valid"], *args])
    assert ok.exit_code == 0, ok.output
    for name, check in EXPECT.items():
        res = runner.invoke(app, ["token", "verify", t[name], *args])
        assert res.exit_code == 1, res.output
        assert check in json.loads(res.stdout)["failed_check"], name


async def test_gateway_in_memory(tokens: tuple[Authority, dict[str, str]]) -> None:
    auth, t = tokens
    async with Client(shop_server()) as upstream:
        gw = Gateway(upstream, GatewayConfig("shop"), auth.verifier, auth.events)
        async with Client(gw.server) as client:
            assert not (
                await WithMeta(client, t["valid"], "t-1").call_tool("get_order", {"order_id": 1})
            ).is_error
            for name, check in EXPECT.items():
                with pytest.raises(MCPError) as err:
                    await WithMeta(client, t[name], "t-1").call_tool("get_order", {"order_id": 1})
                assert check in str(err.value), name


async def test_gateway_over_http_with_the_official_client(tokens: tuple[Authority, dict[str, str]]) -> None:
    auth, t = tokens
    async with Client(shop_server()) as upstream:
        gw = Gateway(upstream, GatewayConfig("shop"), auth.verifier, auth.events)
        served = await serve(gw)
        try:
            # no token: 401 pointing at the RFC 9728 metadata, which names this resource
            async with httpx2.AsyncClient() as http:
                r = await http.post(served.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
                assert r.status_code == 401
                challenge = r.headers["www-authenticate"]
                assert (
                    challenge.startswith("Bearer ")
                    and f'resource_metadata="{served.base_url}{WELL_KNOWN}/mcp"' in challenge
                )
                meta = (await http.get(f"{served.base_url}{WELL_KNOWN}/mcp")).json()
                assert meta["resource"] == served.url and meta["bearer_methods_supported"] == ["header"]
                bad = await http.post(served.url, json={}, headers={"Authorization": "Bearer not-a-token"})
                assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]

            def client_for(token: str) -> Client:
                headers = {"Authorization": f"Bearer {token}", "X-Agentlake-Task": "t-1"}
                return Client(
                    streamable_http_client(served.url, http_client=httpx2.AsyncClient(headers=headers))
                )

            async with client_for(t["valid"]) as client:
                result = await client.call_tool("get_order", {"order_id": 1})
                assert not result.is_error
            for name, check in EXPECT.items():
                async with client_for(t[name]) as client:
                    with pytest.raises(MCPError) as err:
                        await client.call_tool("get_order", {"order_id": 1})
                    assert check in str(err.value), name
                    assert "alice" not in str(err.value)  # the check, not the token's facts
        finally:
            await served.close()
