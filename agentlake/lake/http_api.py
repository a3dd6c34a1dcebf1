"""The lake over HTTP: a FastAPI app (OpenAPI document at ``/openapi.json``).

Handlers are ``async`` and run on the server's event loop next to the ingest
task, so the hot tier is only ever touched from one thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from agentlake.lake import api
from agentlake.lake.service import LakeService


def create_app(service: LakeService, *, manage: bool = True) -> FastAPI:
    """The HTTP app over `service`.

    Args:
        manage: start the service (rebuild from Milvus, follow Kafka) with the app and stop it after.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await service.start()
            service.run_in_background()
        try:
            yield
        finally:
            if manage:
                await service.stop()

    app = FastAPI(
        title="AgentLake context lake",
        version="1",
        description="Trajectory memory and semantic cache: lookups with scoped keys and provenance, "
        "fused plans, next-step suggestions, document search.",
        lifespan=lifespan,
    )
    lake = service.lake

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "entries": len(lake.hot)}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        fresh = sorted(service.stats.freshness_ms)
        return {
            **lake.stats(),
            "ingested": service.stats.ingested,
            "rebuilt_from_milvus": service.stats.rebuilt,
            "invalidated": service.stats.invalidated,
            "freshness_ms_p50": fresh[len(fresh) // 2] if fresh else None,
            "freshness_ms_max": fresh[-1] if fresh else None,
        }

    @app.post("/v1/lookup")
    async def lookup(q: api.TaskQuery) -> dict[str, Any]:
        """Cache lookup: a hit returns a successful past trajectory's plan and result, with provenance."""
        return api.cache_lookup(lake, q)

    @app.post("/v1/search")
    async def search(q: api.SearchQuery) -> dict[str, Any]:
        """The k most similar past trajectories of the tenant."""
        return api.search_trajectories(lake, q)

    @app.post("/v1/plan")
    async def plan(q: api.SearchQuery) -> dict[str, Any]:
        """A fused plan from similar successful trajectories, and lessons from failed ones."""
        return api.suggest_plan(lake, q)

    @app.post("/v1/next")
    async def next_step(q: api.NextQuery) -> dict[str, Any]:
        """Given the task and the calls so far, what did successful agents call next?"""
        return api.next_tools(lake, q)

    @app.post("/v1/outcome")
    async def outcome(r: api.OutcomeReport) -> dict[str, Any]:
        """Report whether reusing a hit worked (a failure is a wrong hit: demote, tighten)."""
        try:
            return api.report_outcome(lake, r)
        except api.UnknownLookup as e:
            raise HTTPException(status_code=404, detail=str(e.args[0])) from None

    @app.post("/v1/documents/search")
    async def documents(q: api.DocumentQuery) -> dict[str, Any]:
        """Enterprise document chunks the principal may read."""
        try:
            return api.search_documents(service.settings, q)
        except RuntimeError as e:
            raise HTTPException(status_code=501, detail=str(e)) from None

    return app
