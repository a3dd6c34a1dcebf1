"""The MCP gateway: a Biscuit-enforcing proxy in front of any MCP server.

`Gateway.call` is the one enforcement path: it builds the request facts
(server, tool, operation, resource from the arguments, task, trusted clock),
asks the `Verifier` (revocation set, budgets, Datalog), emits an `AuthDecision`,
and then forwards to the upstream MCP server and emits `AuthToolInvoked`, or
raises `MCPError` naming the failed check. Everything the gateway sees is on
the log, so it is also where production traffic gets recorded.

`Gateway.server` is an MCP server (low-level `Server`) that proxies
``tools/list`` and enforces ``tools/call``. In memory the token comes from the
request's ``_meta`` (``agentlake/token``); over HTTP (`http_app`) from the
``Authorization: Bearer`` header, and the app behaves as an MCP resource
server: no or invalid token → 401 with ``WWW-Authenticate`` pointing at its
RFC 9728 protected-resource metadata.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import mcp_types as types
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from agentlake.auth.events import DECISION, INVOKED, AuthEvents
from agentlake.auth.policy import Request, derive_resource
from agentlake.auth.verify import Decision, Verifier
from agentlake.schemas import new_id
from agentlake.schemas._bounds import bounded
from agentlake.streams.rewards import UNAUTHORIZED
from agentlake.topics import AUTH_DELEGATIONS

log = logging.getLogger("agentlake.auth.gateway")

META_TOKEN = "agentlake/token"
META_TASK = "agentlake/task_id"
META_TRAJECTORY = "agentlake/trajectory_id"
TASK_HEADER = "x-agentlake-task"
TRAJECTORY_HEADER = "x-agentlake-trajectory"
DENIED_CODE = -32003  # JSON-RPC server-defined error: authorization denied
ERROR_KIND = UNAUTHORIZED  # the error kind a denied call is recorded with; the reward fold counts it


class ToolCaller(Protocol):
    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult: ...
    async def list_tools(self) -> types.ListToolsResult: ...


@dataclass
class GatewayConfig:
    """How the gateway reads calls to one upstream server.

    Attributes:
        server_id: the audience name tokens must grant (``server("shop")``).
        operations: tool -> read | write; tools not listed use the upstream tool's
            ``readOnlyHint`` annotation, else ``write`` (the safe default).
        resources: tool -> resource template over the arguments (``orders/{order_id}``);
            default ``<server>/<tool>``.
        gateway_id: names this gateway in the events.
        payload_limit: arguments recorded on `AuthDecision` are cut at this many bytes.
    """

    server_id: str
    operations: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    gateway_id: str = field(default_factory=lambda: f"gw-{socket.gethostname()}")
    payload_limit: int = 64 * 1024


class Gateway:
    """Enforces tokens on ``tools/call`` to one upstream MCP server.

    Args:
        upstream: a connected MCP client (``mcp.Client``) to the real or staging server.
        config: server id, tool operations and resource templates.
        verifier: decides; its revocation set and budgets are live state.
        events: where decisions and tool calls go.
        clock: the trusted clock (timezone-aware now); tests move it.
    """

    def __init__(
        self,
        upstream: ToolCaller,
        config: GatewayConfig,
        verifier: Verifier,
        events: AuthEvents | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.upstream = upstream
        self.config = config
        self.verifier = verifier
        self.events = events or AuthEvents()
        self.clock = clock
        self._read_only: dict[str, bool] | None = None
        self._server: Server[Any] | None = None
        # a local proxy (stdio) may hold the caller's token itself; requests' own credentials win
        self.default_token: str | None = None
        self.default_task: str | None = None
        self.decisions = 0
        self.denied = 0

    async def operation(self, tool: str) -> str:
        """read | write for `tool` (configured, else the upstream's readOnlyHint, else write)."""
        op = self.config.operations.get(tool)
        if op is not None:
            return op
        if self._read_only is None:
            try:
                listed = await self.upstream.list_tools()
                self._read_only = {
                    t.name: bool(t.annotations is not None and t.annotations.read_only_hint)
                    for t in listed.tools
                }
            except Exception:
                self._read_only = {}
        return "read" if self._read_only.get(tool) else "write"

    def known_operation(self, tool: str) -> str:
        """read | write for `tool` without asking the upstream (configured, else a readOnlyHint
        already listed, else write); "" for no tool. For requests refused before they reach it."""
        if not tool:
            return ""
        op = self.config.operations.get(tool)
        if op is not None:
            return op
        return "read" if (self._read_only or {}).get(tool) else "write"

    def decide(
        self,
        token: str | None,
        tool: str,
        arguments: Mapping[str, Any],
        operation: str,
        task: str | None,
        *,
        call_id: str,
        trajectory_id: str | None = None,
    ) -> Decision:
        """Authorize one call and emit its `AuthDecision`; an allowed call counts against the task budget.

        `tool` "" stands for an HTTP request that is not a ``tools/call`` (refused with a 401
        before the MCP server saw it); its resource is "" too.
        """
        resource = (
            derive_resource(self.config.server_id, tool, arguments, self.config.resources.get(tool))
            if tool
            else ""
        )
        req = Request(self.config.server_id, tool, operation, resource, task or "", arguments, self.clock())
        decision = self.verifier.authorize(token, req)
        self.decisions += 1
        if decision.allowed:
            self.verifier.budgets.record(task or "", call_id)
        else:
            self.denied += 1
        self._emit(
            DECISION,
            decision,
            call_id,
            tool,
            task,
            trajectory_id,
            {
                "operation": operation,
                "resource": resource,
                "arguments_json": bounded(dict(arguments), self.config.payload_limit)["json"],
                "allowed": decision.allowed,
                "reason": decision.reason,
                "failed_check": decision.failed_check,
                "token_id": decision.token_id,
                "agent_id": decision.agent,
                "user_id": decision.user,
                "depth": decision.depth,
                "latency_us": decision.latency_us,
            },
        )
        return decision

    async def call(
        self,
        token: str | None,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        task: str | None = None,
        trajectory_id: str | None = None,
    ) -> types.CallToolResult:
        """Authorize, then forward. Raises `MCPError` (code -32003) naming the failed check when denied."""
        arguments = dict(arguments or {})
        call_id = new_id()
        decision = self.decide(
            token,
            tool,
            arguments,
            await self.operation(tool),
            task,
            call_id=call_id,
            trajectory_id=trajectory_id,
        )
        if not decision.allowed:
            raise MCPError(
                DENIED_CODE,
                f"authorization denied ({decision.reason}): {decision.failed_check or decision.reason}",
                {"reason": decision.reason, "failed_check": decision.failed_check, "error_kind": ERROR_KIND},
            )
        started = asyncio.get_running_loop().time()
        error: str | None = None
        try:
            result = await self.upstream.call_tool(tool, arguments)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            latency_ms = (asyncio.get_running_loop().time() - started) * 1000
            if error is not None:
                self._invoked(decision, call_id, tool, task, trajectory_id, True, error, "", latency_ms)
        text = json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), default=str)
        self._invoked(
            decision,
            call_id,
            tool,
            task,
            trajectory_id,
            bool(result.is_error),
            None,
            text,
            latency_ms,
        )
        return result

    def _invoked(
        self,
        decision: Decision,
        call_id: str,
        tool: str,
        task: str | None,
        trajectory_id: str | None,
        is_error: bool,
        error: str | None,
        result_text: str,
        latency_ms: float,
    ) -> None:
        payload = bounded(result_text, 0)
        self._emit(
            INVOKED,
            decision,
            call_id,
            tool,
            task,
            trajectory_id,
            {
                "agent_id": decision.agent,
                "is_error": is_error,
                "error": error,
                "result_size": payload["size"],
                "result_sha256": payload["sha256"],
                "latency_ms": latency_ms,
            },
        )

    def _emit(
        self,
        kind: str,
        decision: Decision,
        call_id: str,
        tool: str,
        task: str | None,
        trajectory_id: str | None,
        fields: dict[str, Any],
    ) -> None:
        """Emit a `kind` event about one call on ``auth.delegations``, keyed by the token chain's
        last revocation id (the call id for an unparsable token), with the fields every call event
        carries and `fields`."""
        ids = decision.revocation_ids
        self.events.emit(
            AUTH_DELEGATIONS,
            ids[-1] if ids else call_id,
            kind,
            {
                "call_id": call_id,
                "gateway_id": self.config.gateway_id,
                "trajectory_id": trajectory_id,
                "task_id": task,
                "server_id": self.config.server_id,
                "tool": tool,
                "revocation_ids": list(ids),
                **fields,
            },
        )

    # -- the MCP server face ---------------------------------------------------------
    @property
    def server(self) -> Server[Any]:
        """An MCP server that proxies ``tools/list`` and enforces ``tools/call``."""
        if self._server is None:
            self._server = self._build_server()
        return self._server

    def _build_server(self) -> Server[Any]:
        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return await self.upstream.list_tools()

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            token, task, trajectory = credentials(ctx)
            return await self.call(
                token or self.default_token,
                params.name,
                dict(params.arguments or {}),
                task=task or self.default_task,
                trajectory_id=trajectory,
            )

        return Server(
            f"agentlake-gateway:{self.config.server_id}", on_list_tools=list_tools, on_call_tool=call_tool
        )


def _meta_dict(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if isinstance(meta, Mapping):
        return dict(meta)
    dump = getattr(meta, "model_dump", None)
    return dict(dump(by_alias=True)) if dump is not None else {}


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def credentials(ctx: Any) -> tuple[str | None, str | None, str | None]:
    """(token, task, trajectory) of a request: HTTP headers first, then ``_meta``."""
    meta = _meta_dict(getattr(ctx, "meta", None))
    token = task = trajectory = None
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None)
    if headers is not None:
        token = bearer(headers.get("authorization"))
        task = headers.get(TASK_HEADER)
        trajectory = headers.get(TRAJECTORY_HEADER)
    token = token or _str(meta.get(META_TOKEN))
    task = task or _str(meta.get(META_TASK))
    trajectory = trajectory or _str(meta.get(META_TRAJECTORY))
    return token, task, trajectory


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def token_meta(token: str, task: str | None = None, trajectory_id: str | None = None) -> dict[str, Any]:
    """The ``_meta`` a client sends to an in-memory gateway: token, task and trajectory."""
    out: dict[str, Any] = {META_TOKEN: token}
    if task:
        out[META_TASK] = task
    if trajectory_id:
        out[META_TRAJECTORY] = trajectory_id
    return out


class WithMeta:
    """An MCP client whose every ``call_tool`` carries the token in ``_meta`` (in-memory gateways)."""

    def __init__(
        self, client: Any, token: str, task: str | None = None, trajectory_id: str | None = None
    ) -> None:
        self._client = client
        self.meta = token_meta(token, task, trajectory_id)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult:
        result: types.CallToolResult = await self._client.call_tool(name, arguments or {}, meta=self.meta)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def serve_stdio(gateway: Gateway) -> None:
    """Serve the gateway over stdio (a local proxy; set `default_token` for its caller)."""
    from mcp.server.stdio import stdio_server

    server = gateway.server
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
