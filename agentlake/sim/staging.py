"""Staging MCP servers generated at run time: the tools an agent meets in simulation.

This module owns the staging side of "simulation as CI for agents". A
`StagingServer` serves a list of `ToolDef` over the real MCP protocol (in memory
through `mcp.Client(staging.server)`, over stdio with `serve_stdio`, or over
streamable HTTP with `serve_http`). Each tool answers through one declared
behaviour:

- `FixtureBehaviour`: canned answers chosen by a subset match on the arguments;
- `HandlerBehaviour`: a Python function over the server's shared mutable state;
- `ForwardBehaviour`: forwards the call to an HTTP API (a sandbox of the real one);
- `ReplayBehaviour`: answers with calls recorded in past trajectories.

Around the behaviour, the server validates the arguments against the tool's input
schema and injects seeded `Faults` (latency, errors, timeouts, malformed output).
Every call is appended to `StagingServer.calls` for the grader.

A failed call is an MCP result with ``isError`` set and its kind in
``meta["agentlake/error_kind"]``:

- ``invalid_arguments``: unknown tool, or arguments rejected by the input schema;
- ``tool_error``: a business error of the simulated service (fixture ``error``,
  handler ``ValueError``, non-2xx answer of a forwarded call, replayed error);
- ``timeout``: an injected timeout, or a forwarded call that timed out;
- ``injected_error``: an injected failure;
- ``replay_miss`` / ``fixture_miss`` / ``not_configured``: the staging setup had no
  answer for this call;
- ``staging_error``: a handler raised something other than ``ValueError`` (a bug in
  the staging code, not in the agent).

Results produced by the staging setup rather than by the simulated service (all
injected faults and the four staging-gap kinds above) also carry
``meta["agentlake/injected"] = True`` so that the grader does not blame the agent
for them. A ``malformed`` fault is not ``isError``: the agent receives text that
is not valid JSON, no structured content, and ``error_kind`` ``malformed`` in meta
(and in `CallRecord`), which tests whether the agent notices.

Serve a YAML spec as a subprocess (for agents that only speak stdio):
``python -m agentlake.sim.staging spec.yaml`` (add ``--http-port N`` for HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import mcp_types as types
import uvicorn
import yaml
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentlake._files import UserFileError, read_user_text
from agentlake._validation import first_error
from agentlake.sim.behaviours import (
    ERROR_KIND_KEY,
    HTTP_STATUS_KEY,
    INJECTED_KEY,
    REPLAY_KEY,
    Behaviour,
    Fixture,
    FixtureBehaviour,
    ForwardBehaviour,
    Handler,
    HandlerBehaviour,
    Outcome,
    ReplayBehaviour,
    ReplayRecord,
    WireParam,
    _to_text,
    argument_similarity,
    import_handler,
)

__all__ = [
    "ERROR_KIND_KEY",
    "HTTP_STATUS_KEY",
    "INJECTED_KEY",
    "MALFORMED_TEXT",
    "REPLAY_KEY",
    "Behaviour",
    "CallRecord",
    "Faults",
    "Fixture",
    "FixtureBehaviour",
    "ForwardBehaviour",
    "Handler",
    "HandlerBehaviour",
    "HttpHandle",
    "Outcome",
    "ReplayBehaviour",
    "ReplayRecord",
    "StagingServer",
    "StagingSpec",
    "ToolDef",
    "WireParam",
    "argument_similarity",
    "import_handler",
    "load_staging_spec",
    "serve_asgi",
    "serve_http",
    "serve_stdio",
    "tools_from_specs",
]

log = logging.getLogger(__name__)

MALFORMED_TEXT = '{"status": "ok", "data": {"items": [{"id": 1, "name": "wid'
"""What a ``malformed`` fault returns: truncated JSON, as from a dropped connection."""

_LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}


# ---------------------------------------------------------------------------
# Faults


class Faults(BaseModel):
    """Seeded faults injected around a tool's behaviour.

    For every valid call, two numbers are drawn from the tool's own
    ``random.Random(f"{seed}:{tool}")``: one picks the latency, the other the
    fault (``u < timeout_rate`` → timeout, then ``error_rate`` → injected error,
    then ``malformed_rate`` → malformed). The same seed and the same sequence of
    calls to a tool therefore give the same faults, whatever other tools do.
    A faulted call does not reach the behaviour, so the state is untouched.

    Attributes:
        latency_ms: added delay, fixed or drawn uniformly from ``[min, max]``.
        error_rate: probability of an injected error (kind ``injected_error``).
        timeout_rate: probability of a timeout: sleeps `timeout_s`, then fails
            with kind ``timeout``.
        timeout_s: how long a timeout hangs before failing.
        malformed_rate: probability of a malformed answer (not ``isError``).
        error_message: the text of an injected error.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: float | tuple[float, float] = 0.0
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_s: float = Field(default=30.0, ge=0.0)
    malformed_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_message: str = "service unavailable (injected by staging)"

    @model_validator(mode="after")
    def _consistent(self) -> Faults:
        low, high = self.latency_range
        if low < 0 or high < low:
            raise ValueError(
                f"latency_ms must be >= 0, or [min, max] with 0 <= min <= max; got {self.latency_ms}"
            )
        if self.error_rate + self.timeout_rate + self.malformed_rate > 1.0 + 1e-9:
            raise ValueError("error_rate + timeout_rate + malformed_rate must not exceed 1")
        return self

    @property
    def latency_range(self) -> tuple[float, float]:
        """The latency bounds in milliseconds (equal for a fixed latency)."""
        if isinstance(self.latency_ms, tuple):
            return self.latency_ms
        return self.latency_ms, self.latency_ms

    def draw(self, rng: random.Random) -> tuple[float, str | None]:
        """Draw one call's latency (seconds) and fault (None, timeout, error, malformed).

        Always consumes exactly two numbers from `rng`, so the sequence does not
        depend on which faults happened before.
        """
        u_latency, u_fault = rng.random(), rng.random()
        low, high = self.latency_range
        latency_s = (low + (high - low) * u_latency) / 1000.0
        fault: str | None = None
        if u_fault < self.timeout_rate:
            fault = "timeout"
        elif u_fault < self.timeout_rate + self.error_rate:
            fault = "error"
        elif u_fault < self.timeout_rate + self.error_rate + self.malformed_rate:
            fault = "malformed"
        return latency_s, fault


# ---------------------------------------------------------------------------
# Tools and the server


class ToolDef(BaseModel):
    """One tool of a staging server: what the agent sees, and how it answers.

    Attributes:
        name: tool name.
        description: tool description shown to the agent.
        input_schema: JSON Schema of the arguments (``inputSchema`` accepted too).
        behaviour: how the tool answers; None answers every call with kind
            ``not_configured``.
        faults: faults for this tool; None uses the server's default faults.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        validation_alias=AliasChoices("input_schema", "inputSchema"),
    )
    behaviour: Behaviour | None = None
    faults: Faults | None = None

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        # MCP requires an object schema; anything else makes every tools/list fail later
        if schema.get("type") != "object":
            raise ValueError(
                f"input_schema must have type 'object' (MCP tool arguments), got {schema.get('type')!r}"
            )
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            raise ValueError(
                f"input_schema is not valid JSON Schema{f' at {where}' if where else ''}: {e.message}"
            ) from None
        return schema


@dataclass(frozen=True)
class CallRecord:
    """One call as the staging server saw it, for the grader.

    Attributes:
        tool: the tool name, as called.
        args: the arguments, as received (a copy taken before the behaviour ran).
        is_error: whether the result had ``isError`` set.
        error_kind: the error kind, ``malformed`` for a malformed answer, else None.
        latency_ms: time spent answering, injected latency included.
        injected: True when staging (not the agent nor the service) caused the failure.
        result: the value returned (None for errors).
    """

    tool: str
    args: dict[str, Any]
    is_error: bool
    error_kind: str | None
    latency_ms: float
    injected: bool = False
    result: Any = None


class StagingSpec(BaseModel):
    """A staging server declared in YAML or JSON (see `load_staging_spec`).

    Attributes:
        name: server name announced over MCP.
        version: server version announced over MCP.
        seed: seed of the fault generators.
        state: the initial shared state handed to handlers.
        faults: default faults for tools that declare none.
        tools: the tools.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "staging"
    version: str = "0.1"
    seed: int = 0
    state: dict[str, Any] = Field(default_factory=dict)
    faults: Faults | None = None
    tools: list[ToolDef]


def load_staging_spec(source: StagingSpec | Mapping[str, Any] | str | Path) -> StagingSpec:
    """Read a staging spec from a YAML/JSON file, a mapping, or pass a spec through.

    Args:
        source: a `StagingSpec`, a mapping of its fields, or a file path.

    Returns:
        The validated spec.

    Raises:
        ValueError: the file is missing or not a mapping, or the spec is invalid
            (pydantic's `ValidationError` is a `ValueError`).
    """
    if isinstance(source, StagingSpec):
        return source
    if isinstance(source, Mapping):
        return StagingSpec.model_validate(dict(source))
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"staging spec {path} does not exist")
    try:
        data = yaml.safe_load(read_user_text(path))
    except UserFileError as e:
        raise ValueError(f"staging spec {e}") from None
    except yaml.YAMLError as e:
        raise ValueError(" ".join(f"staging spec {path}: YAML error: {e}".split())) from None
    if not isinstance(data, Mapping):
        raise ValueError(f"staging spec {path} must be a mapping with a 'tools' list")
    try:
        return StagingSpec.model_validate(dict(data))
    except ValidationError as e:
        where, reason = first_error(e)
        raise ValueError(" ".join(f"staging spec {path}: {where or '<root>'}: {reason}".split())) from None


def tools_from_specs(
    tools: Iterable[Mapping[str, Any] | object],
    behaviour: Behaviour | Mapping[str, Behaviour] | None = None,
) -> list[ToolDef]:
    """Staging tools from tool descriptions such as ``SHOP_TOOLS`` or registry entries.

    Args:
        tools: mappings with ``name``, ``description`` and ``input_schema`` (or
            ``inputSchema``) keys, or objects with those attributes.
        behaviour: one behaviour for every tool, or a mapping tool name →
            behaviour (tools left out get none), or None.

    Returns:
        One `ToolDef` per description, schemas deep-copied.

    Raises:
        ValueError: a description has no name.
    """
    result = []
    for spec in tools:

        def get(key: str, spec: Any = spec) -> Any:
            return spec.get(key) if isinstance(spec, Mapping) else getattr(spec, key, None)

        name = get("name")
        if not name:
            raise ValueError(f"tool description {spec!r} has no name")
        schema = get("input_schema")
        if schema is None:
            schema = get("inputSchema")
        chosen = behaviour.get(name) if isinstance(behaviour, Mapping) else behaviour
        result.append(
            ToolDef(
                name=str(name),
                description=str(get("description") or ""),
                input_schema=copy.deepcopy(dict(schema)) if schema is not None else {"type": "object"},
                behaviour=chosen,
            )
        )
    return result


class StagingServer:
    """An MCP server generated from tool definitions, for simulation runs.

    Each call is answered in this order: unknown tool or arguments rejected by
    the input schema → ``invalid_arguments`` (no fault drawn); then the tool's
    faults (latency, then possibly a timeout / injected error / malformed answer);
    then the behaviour. A dict result is returned as ``structured_content`` plus
    its JSON text; a string as the text itself; any other value as JSON text.

    Args:
        tools: the tools, with unique names.
        state: the shared mutable state handed to handlers (kept by reference).
        faults: default faults for tools whose `ToolDef.faults` is None.
        seed: seed of the per-tool fault generators.
        name: server name announced over MCP.
        version: server version announced over MCP.

    Raises:
        ValueError: duplicate tool names, or an input schema that is not valid JSON Schema.
    """

    def __init__(
        self,
        tools: Sequence[ToolDef],
        state: dict[str, Any] | None = None,
        *,
        faults: Faults | None = None,
        seed: int = 0,
        name: str = "staging",
        version: str = "0.1",
    ) -> None:
        self.tools: dict[str, ToolDef] = {}
        self._validators: dict[str, Any] = {}
        for tool in tools:
            if tool.name in self.tools:
                raise ValueError(f"duplicate tool name {tool.name!r} in staging server {name!r}")
            cls = jsonschema.validators.validator_for(
                tool.input_schema, default=jsonschema.Draft202012Validator
            )
            try:
                cls.check_schema(tool.input_schema)
            except jsonschema.exceptions.SchemaError as e:
                raise ValueError(f"tool {tool.name!r} has an invalid input schema: {e.message}") from e
            self.tools[tool.name] = tool
            self._validators[tool.name] = cls(tool.input_schema)
        self.state: dict[str, Any] = state if state is not None else {}
        self.faults = faults
        self.seed = seed
        self.name = name
        self.version = version
        self.calls: list[CallRecord] = []
        self._rngs: dict[str, random.Random] = {}
        self._server: Server[Any] | None = None

    @classmethod
    def from_spec(cls, source: StagingSpec | Mapping[str, Any] | str | Path) -> StagingServer:
        """Build a server from a `StagingSpec` (or whatever `load_staging_spec` accepts).

        Args:
            source: the spec, a mapping of it, or a YAML/JSON file path.

        Returns:
            A server whose state is a deep copy of the spec's state.
        """
        spec = load_staging_spec(source)
        return cls(
            spec.tools,
            copy.deepcopy(spec.state),
            faults=spec.faults,
            seed=spec.seed,
            name=spec.name,
            version=spec.version,
        )

    @property
    def server(self) -> Server[Any]:
        """The low-level MCP `Server` (built once; connect with ``mcp.Client(staging.server)``)."""
        if self._server is None:
            self._server = self._build_server()
        return self._server

    def reset(self, state: dict[str, Any] | None = None, *, seed: int | None = None) -> None:
        """Start a new trial: replace the state, forget the calls, restart the faults.

        Args:
            state: the new shared state (kept by reference); None means ``{}``.
            seed: a new seed; None keeps the current one. Either way the fault
                sequences start over, so a reset server replays the same faults.
        """
        self.state = state if state is not None else {}
        if seed is not None:
            self.seed = seed
        self.calls = []
        self._rngs = {}

    def faults_for(self, tool: str) -> Faults | None:
        """The faults applied to `tool`: its own, else the server default."""
        tool_def = self.tools.get(tool)
        if tool_def is not None and tool_def.faults is not None:
            return tool_def.faults
        return self.faults

    def _rng(self, tool: str) -> random.Random:
        rng = self._rngs.get(tool)
        if rng is None:
            # str seeds are hashed with sha512: stable across processes and PYTHONHASHSEED
            rng = self._rngs[tool] = random.Random(f"{self.seed}:{tool}")
        return rng

    def _build_server(self) -> Server[Any]:
        tool_list = [
            types.Tool(name=t.name, description=t.description or None, input_schema=t.input_schema)
            for t in self.tools.values()
        ]

        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=tool_list)

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await self._call(params.name, dict(params.arguments or {}))

        def input_schema(name: str) -> Mapping[str, Any] | None:
            tool = self.tools.get(name)
            return tool.input_schema if tool is not None else None

        return Server(
            self.name,
            version=self.version,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
            get_tool_input_schema=input_schema,
        )

    async def _call(self, name: str, args: dict[str, Any]) -> types.CallToolResult:
        started = time.perf_counter()
        received = copy.deepcopy(args)
        outcome = await self._answer(name, args)

        latency_ms = (time.perf_counter() - started) * 1000.0
        meta = dict(outcome.meta)
        if outcome.injected:
            meta[INJECTED_KEY] = True
        if outcome.error is not None:
            meta[ERROR_KIND_KEY] = outcome.kind
            self.calls.append(CallRecord(name, received, True, outcome.kind, latency_ms, outcome.injected))
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=outcome.error)], is_error=True, _meta=meta
            )
        if outcome.kind == "malformed":
            meta[ERROR_KIND_KEY] = "malformed"
            self.calls.append(
                CallRecord(name, received, False, "malformed", latency_ms, True, MALFORMED_TEXT)
            )
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=MALFORMED_TEXT)],
                structured_content=None,
                _meta=meta,
            )
        text = _to_text(outcome.value)
        structured = json.loads(text) if isinstance(outcome.value, Mapping) else None
        result = structured if structured is not None else outcome.value
        self.calls.append(CallRecord(name, received, False, None, latency_ms, False, result))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=structured,
            _meta=meta or None,
        )

    async def _answer(self, name: str, args: dict[str, Any]) -> Outcome:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return Outcome(error=f"unknown tool {name!r}; this server has: {known}", kind="invalid_arguments")
        problem = jsonschema.exceptions.best_match(self._validators[name].iter_errors(args))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path)
            at = f" (at {where})" if where else ""
            return Outcome(
                error=f"invalid arguments for {name}: {problem.message}{at}", kind="invalid_arguments"
            )

        faults = self.faults_for(name)
        if faults is not None:
            latency_s, fault = faults.draw(self._rng(name))
            if latency_s > 0:
                await anyio.sleep(latency_s)
            if fault == "timeout":
                await anyio.sleep(faults.timeout_s)
                return Outcome(
                    error=f"{name} timed out after {faults.timeout_s}s (injected by staging)",
                    kind="timeout",
                    injected=True,
                )
            if fault == "error":
                return Outcome(error=faults.error_message, kind="injected_error", injected=True)
            if fault == "malformed":
                return Outcome(kind="malformed", injected=True)

        if tool.behaviour is None:
            return Outcome(
                error=f"tool {name!r} has no behaviour in this staging server; declare one "
                "(fixture, handler, forward or replay)",
                kind="not_configured",
                injected=True,
            )
        try:
            return await tool.behaviour.respond(self.state, name, args)
        except Exception as e:
            log.exception("staging behaviour of %s crashed", name)
            return Outcome(
                error=f"staging behaviour of {name} crashed: {type(e).__name__}: {e}",
                kind="staging_error",
                injected=True,
            )


# ---------------------------------------------------------------------------
# Transports


def _lowlevel(server: StagingServer | Server[Any]) -> Server[Any]:
    return server.server if isinstance(server, StagingServer) else server


async def serve_stdio(server: StagingServer | Server[Any]) -> None:
    """Serve over this process's stdin/stdout until the client closes stdin.

    Args:
        server: a staging server or any low-level MCP server.
    """
    lowlevel = _lowlevel(server)
    async with stdio_server() as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without signal capture: the embedding process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class HttpHandle:
    """A server running under uvicorn, from `serve_http` or `serve_asgi`.

    Attributes:
        url: for `serve_http` the MCP endpoint (``http://127.0.0.1:54321/mcp``, pass
            it to ``mcp.Client(url)``); for `serve_asgi` the base URL.
    """

    url: str
    _uvicorn: uvicorn.Server
    _task: asyncio.Task[None]

    async def close(self) -> None:
        """Stop accepting connections, close open sessions and wait for the server to end."""
        self._uvicorn.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> HttpHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_http(
    server: StagingServer | Server[Any],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    path: str = "/mcp",
) -> HttpHandle:
    """Serve over streamable HTTP (mcp's own Starlette app under uvicorn), on loopback only.

    Runs as a task of the current asyncio loop and returns once the socket is
    listening. Use the handle as an async context manager, or call ``close()``.

    Args:
        server: a staging server or any low-level MCP server.
        host: ``127.0.0.1`` (default), ``localhost`` or ``::1``; staging servers
            never listen on other interfaces.
        port: TCP port; 0 picks a free one (read it from the handle's `url`).
        path: the MCP endpoint path.

    Returns:
        The handle; its `url` is the MCP endpoint, e.g. ``http://127.0.0.1:54321/mcp``.

    Raises:
        ValueError: `host` is not a loopback address.
        OSError: the port cannot be bound.
    """
    address = _loopback(host)
    app = _lowlevel(server).streamable_http_app(streamable_http_path=path, host=address)
    handle = await serve_asgi(app, address, port)
    handle.url += path
    return handle


async def serve_asgi(app: Any, host: str = "127.0.0.1", port: int = 0) -> HttpHandle:
    """Serve any ASGI app with uvicorn on loopback, e.g. a sandbox API for `ForwardBehaviour`.

    Runs as a task of the current asyncio loop (without touching signal handlers)
    and returns once the socket is listening.

    Args:
        app: the ASGI application; its lifespan is run.
        host: ``127.0.0.1`` (default), ``localhost`` or ``::1``.
        port: TCP port; 0 picks a free one.

    Returns:
        The handle; its `url` is the base URL, e.g. ``http://127.0.0.1:54321``.

    Raises:
        ValueError: `host` is not a loopback address.
        OSError: the port cannot be bound.
        RuntimeError: the app's lifespan startup failed.
    """
    address = _loopback(host)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    embedded = _EmbeddedUvicorn(config)

    async def run() -> None:
        try:
            await embedded.serve(sockets=[sock])
        except SystemExit as e:  # uvicorn exits the process when startup fails
            raise RuntimeError(f"HTTP server on port {bound_port} failed to start") from e
        finally:
            sock.close()

    task = asyncio.create_task(run(), name=f"staging-http-{bound_port}")
    while not embedded.started:
        if task.done():
            await task
            raise RuntimeError(f"HTTP server on port {bound_port} stopped during startup")
        await asyncio.sleep(0.005)
    netloc = f"[{address}]" if family == socket.AF_INET6 else address
    return HttpHandle(url=f"http://{netloc}:{bound_port}", _uvicorn=embedded, _task=task)


def _loopback(host: str) -> str:
    if host not in _LOOPBACK:
        raise ValueError(f"staging servers listen on loopback only (127.0.0.1, localhost, ::1), not {host!r}")
    return _LOOPBACK[host]


# ---------------------------------------------------------------------------
# Subprocess entry: python -m agentlake.sim.staging SPEC


async def _serve_http_forever(staging: StagingServer, host: str, port: int) -> None:
    handle = await serve_http(staging, host, port)
    print(handle.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await handle.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a staging spec file over stdio (default) or streamable HTTP.

    Args:
        argv: command-line arguments (``SPEC [--http-port N] [--host H]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(prog="python -m agentlake.sim.staging", description=main.__doc__)
    parser.add_argument("spec", help="staging spec (YAML or JSON)")
    parser.add_argument("--http-port", type=int, default=None, help="serve streamable HTTP on this port")
    parser.add_argument("--host", default="127.0.0.1", help="loopback host for HTTP (default 127.0.0.1)")
    ns = parser.parse_args(argv)
    try:
        staging = StagingServer.from_spec(ns.spec)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runner: Callable[[], Awaitable[None]]
    if ns.http_port is None:

        async def runner() -> None:
            await serve_stdio(staging)

    else:

        async def runner() -> None:
            await _serve_http_forever(staging, ns.host, ns.http_port)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
