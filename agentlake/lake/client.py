"""A small Python client for the lake's HTTP API.

from agentlake.lake.client import LakeClient

with LakeClient("http://127.0.0.1:8765") as lake:
    hit = lake.lookup("acme", "Refund order 48213", toolset=fp)
    if hit["hit"]:
        ...  # reuse hit["result"]["tool_sequence"], then:
        lake.report_outcome(hit["lookup_id"], success=True)
"""

from __future__ import annotations

from typing import Any

import httpx


class LakeError(RuntimeError):
    """The lake answered with an error (status and detail in the message)."""


class LakeClient:
    """Synchronous client; one keep-alive connection pool. Raises LakeError on HTTP errors."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def __enter__(self) -> LakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._http.post(path, json={k: v for k, v in body.items() if v is not None})
        if r.status_code != 200:
            raise LakeError(f"{path} answered {r.status_code}: {r.text[:300]}")
        out: dict[str, Any] = r.json()
        return out

    def lookup(self, tenant: str, task: str, **scope: Any) -> dict[str, Any]:
        """Cache lookup (scope: toolset, user_id, agent_id, agent_version)."""
        return self._post("/v1/lookup", {"tenant": tenant, "task": task, **scope})

    def search(self, tenant: str, task: str, k: int = 5, **scope: Any) -> dict[str, Any]:
        return self._post("/v1/search", {"tenant": tenant, "task": task, "k": k, **scope})

    def suggest_plan(self, tenant: str, task: str, **scope: Any) -> dict[str, Any]:
        return self._post("/v1/plan", {"tenant": tenant, "task": task, **scope})

    def next_tools(self, tenant: str, task: str, calls: list[str], **scope: Any) -> dict[str, Any]:
        return self._post("/v1/next", {"tenant": tenant, "task": task, "calls": calls, **scope})

    def report_outcome(self, lookup_id: str, success: bool) -> dict[str, Any]:
        return self._post("/v1/outcome", {"lookup_id": lookup_id, "success": success})

    def search_documents(
        self, tenant: str, query: str, k: int = 5, principal: str | None = None
    ) -> dict[str, Any]:
        return self._post(
            "/v1/documents/search", {"tenant": tenant, "query": query, "k": k, "principal": principal}
        )

    def stats(self) -> dict[str, Any]:
        r = self._http.get("/v1/stats")
        if r.status_code != 200:
            raise LakeError(f"/v1/stats answered {r.status_code}: {r.text[:300]}")
        out: dict[str, Any] = r.json()
        return out
