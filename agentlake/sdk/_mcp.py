"""Record every MCP `tools/call` made through a client, automatically."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported lazily: mcp_types takes seconds to import, and the SDK must not
    import mcp_types as types

from agentlake.sdk._tracer import Trajectory


class ToolCaller(Protocol):
    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult: ...


def result_value(result: types.CallToolResult) -> Any:
    """The JSON-able value of a tool result: structured content, else the text/blocks."""
    if result.structured_content is not None:
        return result.structured_content
    from mcp_types import TextContent

    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    if len(texts) == len(result.content) and len(texts) == 1:
        return texts[0]
    return [c.model_dump(mode="json", exclude_none=True) for c in result.content]


def result_text(result: types.CallToolResult) -> str:
    from mcp_types import TextContent

    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _error_kind(e: BaseException) -> str:
    """The error kind of a failed call: the one an MCP error names in its data
    (``{"error_kind": "unauthorized"}`` from an auth gateway), else ``transport``."""
    data = getattr(e, "data", None)
    kind = data.get("error_kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind else "transport"


class TracedSession:
    """Wraps an `mcp.Client` (or `ClientSession`) so that each `call_tool` is recorded.

    Args:
        client: an entered `mcp.Client` / `ClientSession`.
        trajectory: the trajectory the calls belong to.
        server_id: registry id of the MCP server (recorded on each call).

    Everything else is forwarded to the wrapped client unchanged.
    """

    def __init__(self, client: ToolCaller, trajectory: Trajectory, server_id: str) -> None:
        self._client = client
        self.trajectory = trajectory
        self.server_id = server_id

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> types.CallToolResult:
        call = self.trajectory.tool_call(self.server_id, name, arguments or {})
        try:
            result = await self._client.call_tool(name, arguments or {})
        except BaseException as e:
            call.error(f"{type(e).__name__}: {e}", kind=_error_kind(e))
            raise
        if result.is_error:
            meta = result.meta or {}
            kind = str(meta.get("agentlake/error_kind", "tool_error"))
            call.error(result_text(result) or "tool returned isError", result_value(result), kind=kind)
        else:
            call.result(result_value(result))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
