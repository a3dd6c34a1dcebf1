"""The gateway through the official MCP Inspector CLI (npm @modelcontextprotocol/inspector 0.15).

`make test` installs it into ``$AGENTLAKE_CACHE_DIR/mcp-inspector`` (``make inspector``);
under ``CI=true`` a missing Inspector or Node fails the test. The Inspector CLI
0.15 cannot send headers, so it meets the gateway twice: over HTTP without a
token (it must get the 401), and over stdio, where the gateway is a local proxy
holding the caller's token (``AGENTLAKE_AUTH_TOKEN``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mcp import Client

from agentlake.auth.authority import Authority
from agentlake.auth.events import AuthEvents
from agentlake.auth.gateway import Gateway, GatewayConfig
from agentlake.auth.gateway_http import serve
from agentlake.auth.keys import KeyRing
from agentlake.auth.policy import Grant, TokenSpec
from agentlake.settings import Settings
from tests.conftest import require
from tests.unit.auth.helpers import shop_server

REPO = Path(__file__).resolve().parents[2]
STAGING = REPO / "tests" / "data" / "auth-shop-staging.yaml"


def _inspector() -> Path:
    path = Settings().cache_dir / "mcp-inspector" / "node_modules" / ".bin" / "mcp-inspector"
    require(shutil.which("node") is not None, "node is not installed: no MCP Inspector")
    require(path.exists(), f"MCP Inspector not installed at {path}: run `make inspector`")
    return path


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_inspector_gets_401_over_http_without_a_token(tmp_path: Path) -> None:
    inspector = _inspector()
    auth = Authority(KeyRing(tmp_path / "keys"), AuthEvents())
    async with Client(shop_server()) as upstream:
        served = await serve(Gateway(upstream, GatewayConfig("shop"), auth.verifier, auth.events))
        try:
            code, out = await _run(str(inspector), "--cli", served.url, "--method", "tools/list")
        finally:
            await served.close()
    assert code != 0, out
    assert "a Biscuit bearer token is required" in out, out


async def test_inspector_calls_through_the_stdio_gateway(tmp_path: Path) -> None:
    inspector = _inspector()
    home = tmp_path / "home"
    auth = Authority(KeyRing(home / "auth" / "keys"), AuthEvents())
    token = auth.mint(
        TokenSpec(
            "alice",
            "bot",
            (Grant("shop", "get_order"),),
            datetime.now(UTC) + timedelta(minutes=10),
            task="t1",
        )
    )
    env = {
        "AGENTLAKE_HOME": str(home),
        "AGENTLAKE_AUTH_TOKEN": token,
        "AGENTLAKE_AUTH_TASK": "t1",
        "PYTHONPATH": str(REPO),
    }
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    gateway = [
        sys.executable,
        "-m",
        "agentlake",
        "auth",
        "gateway",
        "serve",
        "--stdio",
        "--offline",
        "--staging",
        str(STAGING),
        "--server-id",
        "shop",
        "--op",
        "get_order=read",
    ]

    code, out = await _run(
        str(inspector),
        "--cli",
        *env_args,
        *gateway,
        "--method",
        "tools/call",
        "--tool-name",
        "get_order",
        "--tool-arg",
        "order_id=1",
    )
    assert code == 0, out
    assert json.loads(out)["structuredContent"] == {"status": "delivered"}

    code, out = await _run(
        str(inspector),
        "--cli",
        *env_args,
        *gateway,
        "--method",
        "tools/call",
        "--tool-name",
        "refund_order",
        "--tool-arg",
        "order_id=1",
    )
    assert code != 0, out
    assert "MCP error -32003: authorization denied" in out and "no allow policy matched" in out, out
