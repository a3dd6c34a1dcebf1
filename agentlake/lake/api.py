"""The lake's operations, once, for every transport (HTTP, MCP, CLI, Python client).

Each operation validates its input (pydantic), runs on the :class:`Lake`
core and returns plain JSON-able dicts. The HTTP app (:mod:`http_api`) and the MCP
server (:mod:`mcp_server`) are thin wrappers around these functions.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, Field

from agentlake.lake.cache import Lake, LookupRequest
from agentlake.lake.entries import principal_tokens
from agentlake.settings import Settings


class TaskQuery(BaseModel):
    """A task in a scope: who asks (tenant, user, agent) with which tools."""

    tenant: str = Field(
        min_length=1, max_length=256, description="the tenant; other tenants are never searched"
    )
    task: str = Field(min_length=1, max_length=8000, description="the task text")
    toolset: str = Field(default="", max_length=64, description="fingerprint of the caller's tool schemas")
    user_id: str | None = Field(default=None, max_length=256, description="for user-scoped entries")
    agent_id: str | None = Field(default=None, max_length=256)
    agent_version: str | None = Field(default=None, max_length=256)
    principal: str | None = Field(
        default=None,
        max_length=1024,
        description="user:NAME,group:NAME,...; entries built from documents are served only to "
        "principals who may read every one of those documents",
    )

    def request(self) -> LookupRequest:
        return LookupRequest(
            self.tenant,
            self.task,
            self.toolset,
            self.user_id,
            self.agent_id,
            self.agent_version,
            principal_tokens(self.principal),
        )


class SearchQuery(TaskQuery):
    k: int = Field(default=5, ge=1, le=100)


class NextQuery(TaskQuery):
    calls: list[str] = Field(default_factory=list, max_length=200, description="tool names called so far")


class OutcomeReport(BaseModel):
    lookup_id: str = Field(min_length=1, max_length=64)
    success: bool


class DocumentQuery(BaseModel):
    tenant: str = Field(min_length=1, max_length=256)
    query: str = Field(min_length=1, max_length=8000)
    k: int = Field(default=5, ge=1, le=100)
    principal: str | None = Field(default=None, max_length=256, description="user:NAME or group:NAME")


class UnknownLookup(KeyError):
    """`report_outcome` for a lookup id the lake does not know (or no longer remembers)."""


def cache_lookup(lake: Lake, q: TaskQuery) -> dict[str, Any]:
    """A hit (cached plan/result with provenance) or a miss (with why)."""
    return lake.lookup(q.request()).to_dict()


def search_trajectories(lake: Lake, q: SearchQuery) -> dict[str, Any]:
    """The k most similar past trajectories of the tenant, any outcome."""
    toolset = q.toolset or None
    return {
        "tenant": q.tenant,
        "task": q.task,
        "results": lake.search(
            q.tenant, q.task, q.k, toolset=toolset, principal=principal_tokens(q.principal)
        ),
    }


def suggest_plan(lake: Lake, q: SearchQuery) -> dict[str, Any]:
    """A fused plan: consensus tool sequence, suggested tool set, lessons from failures."""
    plan = lake.suggest_plan(q.request(), k=max(q.k, 8))
    return {"tenant": q.tenant, "task": q.task, **plan.to_dict()}


def next_tools(lake: Lake, q: NextQuery) -> dict[str, Any]:
    """What successful agents called next after the same calls, on similar tasks."""
    return {"tenant": q.tenant, "calls": q.calls, "next": lake.next_tools(q.request(), q.calls)}


def report_outcome(lake: Lake, r: OutcomeReport) -> dict[str, Any]:
    """Whether reusing a hit worked; a failure demotes the entry and tightens its cluster.
    Raises UnknownLookup."""
    try:
        return lake.report_outcome(r.lookup_id, r.success)
    except KeyError as e:
        raise UnknownLookup(f"unknown lookup id {r.lookup_id!r}") from e


def search_documents(settings: Settings, q: DocumentQuery) -> dict[str, Any]:
    """Enterprise document chunks the principal may read (``agentlake.lake.documents``).
    Raises RuntimeError when the documents part is not available in this build."""
    try:
        documents: Any = importlib.import_module("agentlake.lake.documents")
    except ImportError as e:
        raise RuntimeError("document search is not available in this build (agentlake.lake.documents)") from e
    hits = documents.search_documents(settings, q.tenant, q.query, q.k, q.principal)
    return {"tenant": q.tenant, "query": q.query, "results": [_plain(h) for h in hits]}


def _plain(hit: Any) -> dict[str, Any]:
    if hasattr(hit, "to_json"):
        return dict(hit.to_json())
    if hasattr(hit, "to_dict"):
        return dict(hit.to_dict())
    if hasattr(hit, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(hit)
    return dict(hit)
