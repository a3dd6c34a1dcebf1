"""The context lake and delegation graph views (data from the lake and auth projections)."""

from __future__ import annotations

from typing import Any

from agentlake.dashboard._html import empty, page


def add_views(app: Any, d: Any) -> None:
    from fastapi.responses import HTMLResponse

    @app.get("/lake", response_class=HTMLResponse)  # type: ignore[untyped-decorator]
    async def lake_page() -> HTMLResponse:
        return HTMLResponse(
            page("Context lake", empty("the context lake has no ClickHouse tables yet"), d.notice)
        )

    @app.get("/delegations", response_class=HTMLResponse)  # type: ignore[untyped-decorator]
    async def delegations_page() -> HTMLResponse:
        return HTMLResponse(page("Delegations", empty("agent auth has no ClickHouse tables yet"), d.notice))
