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
    """The lake cannot be used: a bad URL, no server there, or an error answer (the
    message is one line that says what to do)."""


class LakeUnreachable(LakeError):
    """Nothing answers at the lake's URL (connection refused, unknown host, timeout)."""


def _check_url(base_url: str) -> str:
    """`base_url` without a trailing slash. Raises `LakeError` unless it is http(s)://HOST[:PORT]."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as e:
        raise LakeError(f"bad lake URL {base_url!r} ({e}): expected http://HOST:PORT") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise LakeError(f"bad lake URL {base_url!r}: expected http://HOST:PORT, e.g. http://127.0.0.1:8765")
    return base_url.rstrip("/")


class LakeClient:
    """Synchronous client; one keep-alive connection pool.

    Raises:
        LakeError: from the constructor for a URL that is not http(s)://HOST[:PORT]; from
            every call for an error answer or an answer that is not JSON.
        LakeUnreachable: from every call when nothing answers at the URL.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = _check_url(base_url)
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> LakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            r = self._http.request(
                method, path, json=None if body is None else {k: v for k, v in body.items() if v is not None}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise LakeUnreachable(
                f"cannot reach the lake at {self.base_url}: {_reason(e)}; is `agentlake lake serve` running?"
            ) from None
        except httpx.TimeoutException:
            raise LakeUnreachable(
                f"the lake at {self.base_url} did not answer {path} within {self.timeout:g} s; "
                "is it overloaded, or is the URL another server?"
            ) from None
        except httpx.HTTPError as e:
            raise LakeError(f"the lake at {self.base_url}: {path} failed: {_reason(e)}") from None
        if r.status_code != 200:
            raise LakeError(f"the lake at {self.base_url}: {path} answered {r.status_code}: {r.text[:300]}")
        try:
            out: dict[str, Any] = r.json()
        except ValueError:
            raise LakeError(
                f"{self.base_url}{path} answered with something that is not JSON: is this the lake's URL?"
            ) from None
        return out

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

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
        return self._request("GET", "/v1/stats")


def _reason(e: Exception) -> str:
    """The library's one-line reason (``[Errno 111] Connection refused``), or the error's name."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text and text[0] else type(e).__name__
