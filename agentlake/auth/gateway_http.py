"""The gateway over streamable HTTP, as an MCP resource server (MCP authorization spec, RFC 9728).

- ``GET /.well-known/oauth-protected-resource[/mcp]``: the protected-resource
  metadata (``resource``, ``bearer_methods_supported``, ...).
- A request to the MCP endpoint without a bearer token, or with one that does
  not verify (signature, key id, revoked): ``401`` with
  ``WWW-Authenticate: Bearer resource_metadata="<metadata URL>"`` (plus
  ``error="invalid_token"`` when one was sent).
- A verified token reaches the MCP server; each ``tools/call`` is authorized
  by `Gateway.call` and a denial is a JSON-RPC error naming the failed check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from agentlake.auth.gateway import Gateway, bearer
from agentlake.auth.tokens import TokenError

WELL_KNOWN = "/.well-known/oauth-protected-resource"

Scope = dict[str, Any]


class ResourceServer:
    """ASGI app: protected-resource metadata, bearer check, then the gateway's MCP app."""

    def __init__(
        self, gateway: Gateway, *, path: str = "/mcp", host: str = "127.0.0.1", public_url: str | None = None
    ):
        self.gateway = gateway
        self.path = path
        self.public_url = public_url.rstrip("/") if public_url else None
        self.inner = gateway.server.streamable_http_app(streamable_http_path=path, host=host)

    def _base(self, scope: Scope) -> str:
        if self.public_url:
            return self.public_url
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host:
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"

    def metadata(self, scope: Scope) -> dict[str, Any]:
        base = self._base(scope)
        return {
            "resource": base + self.path,
            "resource_name": f"AgentLake MCP gateway for {self.gateway.config.server_id}",
            "bearer_methods_supported": ["header"],
            "authorization_servers": [],
            "resource_documentation": base + WELL_KNOWN + self.path,
            "agentlake_token_format": "biscuit-v2 (base64url)",
        }

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in (WELL_KNOWN, WELL_KNOWN + self.path):
            await _json(send, 200, self.metadata(scope))
            return
        if path == self.path or path.startswith(self.path + "/"):
            headers = dict(scope.get("headers") or [])
            raw = headers.get(b"authorization")
            token = bearer(raw.decode("latin-1")) if raw else None
            meta_url = self._base(scope) + WELL_KNOWN + self.path
            if token is None:
                await _json(
                    send,
                    401,
                    {"error": "unauthorized", "error_description": "a Biscuit bearer token is required"},
                    [(b"www-authenticate", f'Bearer resource_metadata="{meta_url}"'.encode())],
                )
                return
            problem = self._check(token)
            if problem is not None:
                challenge = (
                    f'Bearer error="invalid_token", error_description="{problem}", '
                    f'resource_metadata="{meta_url}"'
                )
                await _json(
                    send,
                    401,
                    {"error": "invalid_token", "error_description": problem},
                    [(b"www-authenticate", challenge.encode())],
                )
                return
        await self.inner(scope, receive, send)

    def _check(self, token: str) -> str | None:
        verifier = self.gateway.verifier
        try:
            parsed = verifier.parse(token)
        except TokenError:
            return "the token does not verify"
        if verifier.revocations.revoked(parsed.revocation_ids) is not None:
            return "the token or an ancestor is revoked"
        return None


async def _json(
    send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": data})


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without signal capture: the embedding process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Served:
    """A running HTTP gateway. `url` is the MCP endpoint."""

    url: str
    base_url: str
    _server: uvicorn.Server
    _task: asyncio.Task[None]

    async def close(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> Served:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(gateway: Gateway, host: str = "127.0.0.1", port: int = 0, path: str = "/mcp") -> Served:
    """Serve the gateway over streamable HTTP as a task of the running loop; returns once listening.

    Raises:
        OSError: the port cannot be bound.
    """
    app = ResourceServer(gateway, path=path, host=host)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    server = _EmbeddedUvicorn(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)
    )

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()

    task = asyncio.create_task(run(), name=f"auth-gateway-{bound}")
    while not server.started:
        if task.done():
            await task
            raise RuntimeError(f"gateway on port {bound} stopped during startup")
        await asyncio.sleep(0.005)
    netloc = f"[{host}]" if ":" in host else host
    base = f"http://{netloc}:{bound}"
    return Served(base + path, base, server, task)
