"""The lake over HTTP: a FastAPI app (OpenAPI document at ``/openapi.json``).

Handlers are ``async`` and run on the server's event loop next to the ingest
task, so the hot tier is only ever touched from one thread.

The query endpoints (lookup, search, plan, next) answer with JSON bytes written by
orjson in one call: FastAPI's default path (``jsonable_encoder`` walking the result,
then ``json.dumps``) cost more CPU than the lookup itself. ``POST /v1/lookup``, which
agents call on every step, is served by a plain Starlette route placed in front of
its FastAPI twin (which stays for the OpenAPI document): a bare ASGI endpoint whose body is
validated by pydantic straight from the JSON bytes (FastAPI's per-request dependency
solving and Starlette's request and response objects are skipped); answers and 422 errors
are the same. Concurrent lookups on that route are answered in batches (:mod:`batcher`):
one embedding call and one faiss search per tenant.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentlake.lake import api
from agentlake.lake.batcher import LookupBatcher
from agentlake.lake.service import LakeService

_JSON_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Successful Response",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def json_response(body: dict[str, Any], status_code: int = 200) -> Response:
    """`body` as an ``application/json`` response (orjson; numpy scalars become numbers).
    Raises TypeError for a value JSON cannot hold."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


def validation_error(e: ValidationError) -> Response:
    """422 with FastAPI's body: ``{"detail": [{"type", "loc": ["body", ...], "msg", "input", ...}]}``."""
    errors = [{**err, "loc": ["body", *err["loc"]]} for err in e.errors(include_url=False)]
    return json_response({"detail": jsonable_encoder(errors)}, status_code=422)


class _AsgiEndpoint:
    """An ASGI function as a Starlette route's endpoint (Starlette would call a plain function
    with a Request)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def uvicorn_impl() -> tuple[str, str]:
    """uvicorn's ``(http, loop)``: its C HTTP parser and event loop (``uvicorn[standard]``:
    httptools, uvloop) when installed, else its pure-Python h11 and asyncio."""
    import importlib.util

    return (
        "httptools" if importlib.util.find_spec("httptools") else "h11",
        "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    )


def create_app(
    service: LakeService, *, manage: bool = True, batch: bool = True, freeze_gc: bool = False
) -> FastAPI:
    """The HTTP app over `service`.

    Args:
        manage: start the service (rebuild from Milvus, follow Kafka) with the app and stop it after.
        batch: answer concurrent ``POST /v1/lookup`` requests in batches (:class:`LookupBatcher`).
        freeze_gc: once started, move every object of the process out of the cyclic garbage
            collector's sight (``gc.freeze``) — for a process that only serves the lake (the
            CLI's ``lake serve``): ``gc.get_referrers`` no longer sees frozen objects.
    """
    batcher = LookupBatcher(service.lake) if batch else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await service.start()
            service.run_in_background()
        if freeze_gc:
            # the hot tier built so far (100k entries: about a million objects) leaves the
            # cyclic GC's sight: under load each full collection over it stalled every lookup
            # ≈ 130 ms, a few times in 10 s (lookups' remembered signatures keep promoting objects)
            gc.freeze()
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

    async def lookup_route(scope: Scope, receive: Receive, send: Send) -> None:
        # a bare ASGI endpoint: no Request object, no response wrapper (the route's own
        # CPU is a tenth of a lookup's on this path)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            q = api.TaskQuery.model_validate_json(body)
        except ValidationError as e:
            await validation_error(e)(scope, receive, send)
            return
        answer = (
            api.cache_lookup(lake, q) if batcher is None else (await batcher.lookup(q.request())).to_dict()
        )
        payload = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(payload)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    # serves POST /v1/lookup; the FastAPI route below answers the same and documents it
    app.router.routes.insert(
        0, Route("/v1/lookup", _AsgiEndpoint(lookup_route), methods=["POST"], include_in_schema=False)
    )

    @app.post("/v1/lookup", response_class=Response, responses=_JSON_OK)
    async def lookup(q: api.TaskQuery) -> Response:
        """Cache lookup: a hit returns a successful past trajectory's plan and result, with provenance."""
        return json_response(api.cache_lookup(lake, q))

    @app.post("/v1/search", response_class=Response, responses=_JSON_OK)
    async def search(q: api.SearchQuery) -> Response:
        """The k most similar past trajectories of the tenant."""
        return json_response(api.search_trajectories(lake, q))

    @app.post("/v1/plan", response_class=Response, responses=_JSON_OK)
    async def plan(q: api.SearchQuery) -> Response:
        """A fused plan from similar successful trajectories, and lessons from failed ones."""
        return json_response(api.suggest_plan(lake, q))

    @app.post("/v1/next", response_class=Response, responses=_JSON_OK)
    async def next_step(q: api.NextQuery) -> Response:
        """Given the task and the calls so far, what did successful agents call next?"""
        return json_response(api.next_tools(lake, q))

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
