"""The lake as an MCP server: the same operations as the HTTP API, as tools.

``agentlake lake serve --mcp`` mounts it at ``/mcp`` (streamable HTTP) next to the
HTTP API; tests connect with ``mcp.Client(server)`` in memory.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from agentlake.lake import api
from agentlake.lake.service import LakeService


def build_mcp(service: LakeService) -> MCPServer:
    """An MCP server whose tools call `service`'s lake."""
    lake = service.lake
    server = MCPServer(
        "agentlake-lake",
        instructions="Context lake: check the cache before planning, report whether a reused plan worked.",
    )

    @server.tool()
    def cache_lookup(
        tenant: str,
        task: str,
        toolset: str = "",
        user_id: str | None = None,
        agent_id: str | None = None,
        agent_version: str | None = None,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """Look the task up in the semantic cache: a hit returns a successful past trajectory's
        plan and result with provenance; a miss says why. `principal` (user:NAME,group:NAME)
        unlocks entries built from documents it may read."""
        q = api.TaskQuery(
            tenant=tenant,
            task=task,
            toolset=toolset,
            user_id=user_id,
            agent_id=agent_id,
            agent_version=agent_version,
            principal=principal,
        )
        return api.cache_lookup(lake, q)

    @server.tool()
    def search_trajectories(
        tenant: str, task: str, k: int = 5, toolset: str = "", principal: str | None = None
    ) -> dict[str, Any]:
        """The k most similar past trajectories of the tenant (any outcome), with rewards."""
        q = api.SearchQuery(tenant=tenant, task=task, k=k, toolset=toolset, principal=principal)
        return api.search_trajectories(lake, q)

    @server.tool()
    def suggest_plan(
        tenant: str,
        task: str,
        toolset: str = "",
        user_id: str | None = None,
        agent_id: str | None = None,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """A fused plan: consensus tool sequence weighted by reward and similarity, suggested
        tools, and lessons from failed similar trajectories."""
        q = api.SearchQuery(
            tenant=tenant, task=task, toolset=toolset, user_id=user_id, agent_id=agent_id, principal=principal
        )
        return api.suggest_plan(lake, q)

    @server.tool()
    def next_tools(tenant: str, task: str, calls: list[str], toolset: str = "") -> dict[str, Any]:
        """Given the task and the tool calls so far, what successful agents called next."""
        return api.next_tools(lake, api.NextQuery(tenant=tenant, task=task, calls=calls, toolset=toolset))

    @server.tool()
    def report_outcome(lookup_id: str, success: bool) -> dict[str, Any]:
        """Whether reusing a cache hit worked; a failure demotes the entry and tightens its cluster."""
        return api.report_outcome(lake, api.OutcomeReport(lookup_id=lookup_id, success=success))

    @server.tool()
    def search_documents(tenant: str, query: str, k: int = 5, principal: str | None = None) -> dict[str, Any]:
        """Enterprise document chunks of the tenant that the principal may read."""
        q = api.DocumentQuery(tenant=tenant, query=query, k=k, principal=principal)
        return api.search_documents(service.settings, q)

    return server
