"""Helpers for the auth tests: token specs, requests, a toy upstream MCP server, protobuf surgery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import mcp_types as types
from mcp.server import Server

from agentlake.auth.policy import Grant, Request, TokenSpec

SHOP_TOOLS = {"get_order": True, "search_orders": True, "refund_order": False}  # name -> read-only


def now() -> datetime:
    return datetime.now(UTC)


def shop_spec(**kw: Any) -> TokenSpec:
    base: dict[str, Any] = {
        "user": "alice",
        "agent": "support-bot",
        "grants": (Grant("shop", "get_order"), Grant("shop", "refund_order", "write")),
        "expires": now() + timedelta(minutes=10),
        "task": "t-1",
    }
    base.update(kw)
    return TokenSpec(**base)


def call(
    tool: str = "get_order", op: str = "read", task: str = "t-1", server: str = "shop", **kw: Any
) -> Request:
    args = kw.pop("arguments", {"order_id": 42})
    return Request(
        server, tool, op, kw.pop("resource", f"orders/{args.get('order_id', '')}"), task, args, **kw
    )


def shop_server() -> Server[Any]:
    """A toy upstream: answers every call with its name and arguments."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=n,
                    input_schema={"type": "object"},
                    annotations=types.ToolAnnotations(read_only_hint=ro),
                )
                for n, ro in SHOP_TOOLS.items()
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"{params.name} {dict(params.arguments or {})}")]
        )

    return Server("shop", on_list_tools=list_tools, on_call_tool=call_tool)


# -- protobuf surgery on serialized tokens (Biscuit: 1 root key id, 2 authority, 3 blocks, 4 proof) --


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def split_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """Top-level (field number, wire type, raw value) of a protobuf message."""
    out = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, j = _varint(data, i)
            out.append((field, wire, data[i:j]))
            i = j
        elif wire == 2:
            n, i = _varint(data, i)
            out.append((field, wire, data[i : i + n]))
            i += n
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def join_fields(fields: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray()
    for field, wire, raw in fields:
        out += _enc_varint(field << 3 | wire)
        if wire == 2:
            out += _enc_varint(len(raw))
        out += raw
    return bytes(out)
