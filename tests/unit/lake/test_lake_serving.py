"""The same operations over HTTP (FastAPI, in memory) and MCP (in-memory client)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mcp import Client

from agentlake.lake.entries import toolset_fingerprint
from agentlake.lake.http_api import create_app
from agentlake.lake.mcp_server import build_mcp
from agentlake.lake.service import LakeService
from agentlake.projections.embeddings import Embedder
from agentlake.settings import Settings
from agentlake.sim.reference import SHOP_TOOLS
from tests.unit.lake.conftest import make_entry

FP = toolset_fingerprint(SHOP_TOOLS)


@pytest.fixture
def service(embedder: Embedder, tmp_path: Any) -> LakeService:
    svc = LakeService(Settings(home=tmp_path), embedder=embedder, kafka=False, milvus=False)
    now = svc.lake.clock()
    svc.lake.add(
        [
            make_entry(
                "t1",
                "Please refund order 48213, it arrived broken.",
                toolset=FP,
                produced_us=now,
                expires_us=now + 10**12,
            ),
            make_entry(
                "t2",
                "Refund order 17, it arrived broken.",
                toolset=FP,
                produced_us=now,
                expires_us=now + 10**12,
            ),
        ]
    )
    return svc


async def test_http_operations_and_openapi(service: LakeService) -> None:
    app = create_app(service, manage=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lake") as c:
        spec = (await c.get("/openapi.json")).json()
        assert {
            "/v1/lookup",
            "/v1/search",
            "/v1/plan",
            "/v1/next",
            "/v1/outcome",
            "/v1/documents/search",
        } <= set(spec["paths"])
        hit = (
            await c.post(
                "/v1/lookup",
                json={"tenant": "acme", "task": "Refund my order #48213, it came damaged.", "toolset": FP},
            )
        ).json()
        assert hit["hit"] and hit["result"]["entry_id"] == "t1"
        miss = (
            await c.post(
                "/v1/lookup",
                json={"tenant": "acme", "task": "Refund my order #48231, it came damaged.", "toolset": FP},
            )
        ).json()
        assert not miss["hit"] and miss["reason"] == "signature_mismatch"
        plan = (
            await c.post("/v1/plan", json={"tenant": "acme", "task": "Refund order 99.", "toolset": FP})
        ).json()
        assert plan["tool_sequence"] == ["get_order", "refund_order"]
        nxt = (
            await c.post(
                "/v1/next",
                json={"tenant": "acme", "task": "Refund order 99.", "toolset": FP, "calls": ["get_order"]},
            )
        ).json()
        assert nxt["next"][0]["tool"] == "refund_order"
        out = (await c.post("/v1/outcome", json={"lookup_id": hit["lookup_id"], "success": False})).json()
        assert out["wrong_hit"]
        assert (await c.post("/v1/outcome", json={"lookup_id": "nope", "success": True})).status_code == 404
        bad = await c.post("/v1/lookup", json={"tenant": "", "task": "x"})
        assert bad.status_code == 422
        stats = (await c.get("/v1/stats")).json()
        assert stats["entries"] == 2 and stats["wrong_hits"] == 1


async def test_mcp_tools_mirror_http(service: LakeService) -> None:
    server = build_mcp(service)
    async with Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {
            "cache_lookup",
            "search_trajectories",
            "suggest_plan",
            "next_tools",
            "report_outcome",
            "search_documents",
        } <= tools
        res = await client.call_tool(
            "cache_lookup",
            {"tenant": "acme", "task": "Refund my order #48213, it came damaged.", "toolset": FP},
        )
        body = res.structured_content or json.loads(res.content[0].text)  # type: ignore[union-attr]
        assert body["hit"] and body["result"]["entry_id"] == "t1"
        res = await client.call_tool("search_trajectories", {"tenant": "globex", "task": "Refund order 17"})
        body = res.structured_content or json.loads(res.content[0].text)  # type: ignore[union-attr]
        assert body["results"] == []  # another tenant sees nothing
        res = await client.call_tool("report_outcome", {"lookup_id": "nope", "success": True})
        assert res.is_error
