"""The agent-auth part of `agentlake demo`: delegation, a denied tool, live revocation.

alice's agent ``support-bot`` gets a task-bound token for the shop (look up and
refund orders). It delegates to a sub-agent ``lookup-bot``, narrowed offline to
``get_order``. Through the gateway, the sub-agent's lookup is allowed, its
refund is denied (naming the failed check), and once the parent token is
revoked, the revocation travels through the compacted ``auth.revocations``
topic to the gateway's follower and the same lookup is denied.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import mcp_types as types
from mcp import Client
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from agentlake.auth.authority import Authority
from agentlake.auth.events import AuthEvents, RecordEmitter
from agentlake.auth.follow import AuthFollower
from agentlake.auth.gateway import Gateway, GatewayConfig
from agentlake.auth.keys import keyring_for
from agentlake.auth.policy import Attenuation, Grant, TokenSpec
from agentlake.auth.verify import RevocationSet, Verifier
from agentlake.settings import Settings

ORDERS = {7: {"status": "delivered", "total": 42.0}}


def demo_shop() -> Server[Any]:
    """A two-tool shop (``get_order`` read-only, ``refund_order``) for the demo."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        obj = {"type": "object", "properties": {"order_id": {"type": "integer"}}}
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name="get_order", input_schema=obj, annotations=types.ToolAnnotations(read_only_hint=True)
                ),
                types.Tool(name="refund_order", input_schema=obj),
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        order = ORDERS.get(int((params.arguments or {}).get("order_id", 0)), {})
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(order))])

    return Server("shop", on_list_tools=list_tools, on_call_tool=call_tool)


async def _attempt(gw: Gateway, token: str, tool: str, task: str) -> dict[str, Any]:
    try:
        await gw.call(token, tool, {"order_id": 7}, task=task)
        return {"tool": tool, "allowed": True, "detail": "forwarded to the shop"}
    except MCPError as e:
        return {"tool": tool, "allowed": False, "detail": e.message}


async def auth_demo(settings: Settings, emitter: RecordEmitter | None = None) -> dict[str, Any]:
    """Run the auth story on the stack `settings` points at; events go to `emitter` (e.g. Kafka).

    Returns the steps (who called what, allowed or the failed check) and the
    measured revoke → denied propagation time through the log.
    """
    events = AuthEvents(emitter, topic=settings.topic)
    auth = Authority(keyring_for(settings), events)
    task = f"demo-{int(time.time())}"
    parent = auth.mint(
        TokenSpec(
            "alice",
            "support-bot",
            (Grant("shop", "get_order"), Grant("shop", "refund_order", "write")),
            datetime.now(UTC) + timedelta(minutes=15),
            task=task,
        )
    )
    sub = auth.attenuate(parent, Attenuation(delegate="lookup-bot", tools=(("shop", "get_order"),)))
    live = RevocationSet()  # the gateway's own set, fed only by the log
    follower = AuthFollower(settings, live).start()
    steps: list[dict[str, Any]] = []
    try:
        async with Client(demo_shop()) as shop:
            gw = Gateway(shop, GatewayConfig("shop"), Verifier(auth.root_key, revocations=live), events)
            steps.append({"who": "lookup-bot", **await _attempt(gw, sub, "get_order", task)})
            steps.append({"who": "lookup-bot", **await _attempt(gw, sub, "refund_order", task)})
            revoked_at = time.perf_counter()
            rid = auth.revoke(parent, reason="demo: parent token revoked", by="alice")
            flush = getattr(emitter, "flush", None)
            if flush is not None:
                await asyncio.to_thread(flush, 10)
            while rid not in live and time.perf_counter() - revoked_at < 30:
                await asyncio.sleep(0.005)
            propagation_ms = (time.perf_counter() - revoked_at) * 1000
            steps.append({"who": "lookup-bot", **await _attempt(gw, sub, "get_order", task)})
    finally:
        follower.stop()
    return {
        "task": task,
        "parent_token": auth.parse(parent).revocation_ids[0],
        "sub_token_block": auth.parse(sub).revocation_ids[-1],
        "steps": steps,
        "revocation_propagation_ms": round(propagation_ms, 1),
    }


def render_lines(result: dict[str, Any]) -> list[str]:
    """The demo's auth part as printable lines."""
    lines = [
        f"alice → support-bot (token {result['parent_token'][:12]}…, task {result['task']}) "
        f"→ lookup-bot (attenuated offline to shop/get_order)"
    ]
    labels = ["", "", "after revoking the parent token"]
    for step, label in zip(result["steps"], labels, strict=False):
        verdict = "ALLOWED" if step["allowed"] else "DENIED"
        suffix = f"  ({label})" if label else ""
        lines.append(f"  {step['who']} calls shop/{step['tool']:<13} {verdict:<8} {step['detail']}{suffix}")
    lines.append(
        f"  revoke → denied at the gateway via auth.revocations: {result['revocation_propagation_ms']} ms"
    )
    return lines
