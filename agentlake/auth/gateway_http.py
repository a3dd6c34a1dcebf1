"""The gateway over streamable HTTP, as an MCP resource server (MCP authorization spec, RFC 9728).

- ``GET /.well-known/oauth-protected-resource[/mcp]``: the protected-resource
  metadata (``resource``, ``bearer_methods_supported``, ...).
- A request to the MCP endpoint without a bearer token, or with one that does
  not verify (signature, key id, revoked): ``401`` with
  ``WWW-Authenticate: Bearer resource_metadata="<metadata URL>"`` (plus
  ``error="invalid_token"`` when one was sent). Each such refusal is an
  `AuthDecision` like any other denial (``allowed=false``, reason ``no_token``,
  ``invalid_token`` or ``revoked``), made by `Gateway.decide` with the tool and
  arguments of the request's JSON-RPC ``tools/call`` (tool "" for any other
  request: ``initialize``, ``tools/list``, a GET); the token itself is never recorded.
- A verified token reaches the MCP server; each ``tools/call`` is authorized
  by `Gateway.call` and a denial (an expired token included: expiry is a check
  inside the token) is a JSON-RPC error naming the failed check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from agentlake.auth.gateway import TASK_HEADER, TRAJECTORY_HEADER, Gateway, bearer
from agentlake.auth.tokens import TokenError
from agentlake.schemas import new_id

WELL_KNOWN = "/.well-known/oauth-protected-resource"
MAX_REFUSED_BODY = 1024 * 1024  # bytes of a refused request read to name its tool; beyond: tool ""

Scope = dict[str, Any]
log = logging.getLogger("agentlake.auth.gateway_http")


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
                await self._record_refusal(scope, receive, None)
                await _json(
                    send,
                    401,
                    {"error": "unauthorized", "error_description": "a Biscuit bearer token is required"},
                    [(b"www-authenticate", f'Bearer resource_metadata="{meta_url}"'.encode())],
                )
                return
            problem = self._check(token)
            if problem is not None:
                await self._record_refusal(scope, receive, token)
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

    async def _record_refusal(self, scope: Scope, receive: Any, token: str | None) -> None:
        """Emit the `AuthDecision` of a request refused with a 401 (the same `Gateway.decide` as
        every call: the verifier names the reason, the token is never recorded). Never raises."""
        try:
            tool, arguments = await _tool_call_of(scope, receive)
            headers = dict(scope.get("headers") or [])
            task = headers.get(TASK_HEADER.encode(), b"").decode("latin-1")[:200] or None
            trajectory = headers.get(TRAJECTORY_HEADER.encode(), b"").decode("latin-1")[:200] or None
            gw = self.gateway
            gw.decide(
                token,
                tool,
                arguments,
                gw.known_operation(tool),
                task,
                call_id=new_id(),
                trajectory_id=trajectory,
            )
        except Exception:
            log.exception("could not record a refused request")

    def _check(self, token: str) -> str | None:
        verifier = self.gateway.verifier
        try:
            parsed = verifier.parse(token)
        except TokenError:
            return "the token does not verify"
        if verifier.revocations.revoked(parsed.revocation_ids) is not None:
            return "the token or an ancestor is revoked"
        return None


async def _tool_call_of(scope: Scope, receive: Any) -> tuple[str, dict[str, Any]]:
    """(tool, arguments) of a JSON-RPC ``tools/call`` request body; ("", {}) for anything else
    (another method, a GET, a body over `MAX_REFUSED_BODY` bytes, not JSON)."""
    if scope.get("method") != "POST":
        return "", {}
    body = bytearray()
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return "", {}
        body += message.get("body", b"")
        if len(body) > MAX_REFUSED_BODY:
            return "", {}
        if not message.get("more_body", False):
            break
    try:
        rpc = json.loads(bytes(body))
    except ValueError:
        return "", {}
    if isinstance(rpc, list):  # a batch: its first tools/call
        rpc = next((m for m in rpc if isinstance(m, dict) and m.get("method") == "tools/call"), None)
    if not isinstance(rpc, dict) or rpc.get("method") != "tools/call":
        return "", {}
    params = rpc.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    if not isinstance(name, str) or not name:
        return "", {}
    arguments = params.get("arguments") if isinstance(params, dict) else None
    return name[:200], arguments if isinstance(arguments, dict) else {}


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
