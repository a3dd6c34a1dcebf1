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
import base64
import binascii
import contextlib
import copy
import importlib
import inspect
import json
import logging
import random
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import httpx
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
    field_serializer,
    field_validator,
    model_validator,
)

from agentlake._validation import first_error

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

ERROR_KIND_KEY = "agentlake/error_kind"
"""Result meta key naming the kind of failure (read by `agentlake.sdk.TracedSession`)."""

INJECTED_KEY = "agentlake/injected"
"""Result meta key set to True when the failure comes from staging, not from the agent."""

REPLAY_KEY = "agentlake/replay"
"""Result meta key of a replayed answer: ``{"exact": bool, "similarity": float}``."""

HTTP_STATUS_KEY = "agentlake/http_status"
"""Result meta key with the HTTP status of a forwarded call."""

MALFORMED_TEXT = '{"status": "ok", "data": {"items": [{"id": 1, "name": "wid'
"""What a ``malformed`` fault returns: truncated JSON, as from a dropped connection."""

_LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}

Handler = Callable[[dict[str, Any], str, dict[str, Any]], Any]
"""``handler(state, tool, args)``: returns the result (or an awaitable of it); raises
`ValueError` for a business error."""


# ---------------------------------------------------------------------------
# JSON helpers


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: ``True`` is not ``1``, ``1`` is ``1.0``, tuples are lists."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _subset_match(pattern: Any, value: Any) -> bool:
    """True when `value` contains `pattern`: objects match on the keys of the pattern
    (recursively), every other value must be equal."""
    if isinstance(pattern, Mapping):
        return isinstance(value, Mapping) and all(
            k in value and _subset_match(v, value[k]) for k, v in pattern.items()
        )
    return _json_equal(pattern, value)


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list | tuple) and value:
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, json.dumps(value, sort_keys=True, default=str)


def argument_similarity(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How alike two argument objects are, from 0.0 to 1.0.

    Both objects are flattened into leaf keys (``customer.address.city``,
    ``items[0].sku``). Over the union of leaf keys, a key present in both with an
    equal value scores 1, a key present in both with a different value scores 0.5
    (the call has the same shape), a key present on one side only scores 0. The
    similarity is the mean score; two empty objects are 1.0.

    Args:
        a: arguments of one call.
        b: arguments of the other call.

    Returns:
        The similarity, symmetric in `a` and `b`.
    """
    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    fa.pop("", None)  # an empty object flattens to one leaf with an empty key
    fb.pop("", None)
    keys = fa.keys() | fb.keys()
    if not keys:
        return 1.0
    score = sum(1.0 if fa[k] == fb[k] else 0.5 for k in fa.keys() & fb.keys())
    return score / len(keys)


def _to_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


# ---------------------------------------------------------------------------
# Behaviours


@dataclass(frozen=True)
class Outcome:
    """What a behaviour answered for one call.

    Attributes:
        value: the result (any JSON value) when the call succeeded.
        error: the error message when the call failed; None on success.
        kind: the error kind when `error` is set.
        injected: True when the failure comes from the staging setup, not the service.
        meta: extra result meta (e.g. replay similarity, HTTP status).
    """

    value: Any = None
    error: str | None = None
    kind: str = "tool_error"
    injected: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


class Fixture(BaseModel):
    """One canned answer: used when `match` is a subset of the call's arguments.

    Attributes:
        match: argument values to match; nested objects match on their own keys.
            An empty match matches every call.
        result: the result returned on a match.
        error: when set, the call fails with this message (kind ``tool_error``).
    """

    model_config = ConfigDict(extra="forbid")

    match: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None


class FixtureBehaviour(BaseModel):
    """Canned answers. The first fixture whose `match` fits the arguments wins.

    When none fits: `default_error` (if set) fails the call, else `default` (if
    declared, even as ``null``) is returned, else the call fails with kind
    ``fixture_miss``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fixture"] = "fixture"
    fixtures: list[Fixture] = Field(default_factory=list)
    default: Any = None
    default_error: str | None = None

    async def respond(self, state: dict[str, Any], tool: str, args: dict[str, Any]) -> Outcome:
        """Answer one call (see the class docstring)."""
        for fixture in self.fixtures:
            if _subset_match(fixture.match, args):
                if fixture.error is not None:
                    return Outcome(error=fixture.error)
                return Outcome(value=copy.deepcopy(fixture.result))
        if self.default_error is not None:
            return Outcome(error=self.default_error)
        if "default" in self.model_fields_set:
            return Outcome(value=copy.deepcopy(self.default))
        return Outcome(
            error=f"staging has no fixture of {tool} for {_to_text(args)} and no default",
            kind="fixture_miss",
            injected=True,
        )


def import_handler(ref: str) -> Handler:
    """Import a handler from a ``"package.module:function"`` reference.

    Args:
        ref: module path, a colon, then the attribute path (dots allowed).

    Returns:
        The callable.

    Raises:
        ValueError: the reference is malformed, or does not name a callable.
    """
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"handler {ref!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"handler {ref!r}: cannot import module {module_name!r} ({e})") from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"handler {ref!r}: {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"handler {ref!r} is not callable")
    handler: Handler = obj
    return handler


class HandlerBehaviour(BaseModel):
    """A Python function ``handler(state, tool, args)`` over the server's shared state.

    The function may mutate `state` (it is the `StagingServer.state` dict, shared by
    all tools of the server), may be ``async``, and raises `ValueError` for a
    business error (kind ``tool_error``). Any other exception is reported as kind
    ``staging_error``. In YAML the handler is a ``"package.module:function"`` string.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: Literal["handler"] = "handler"
    handler: Handler

    @field_validator("handler", mode="before")
    @classmethod
    def _import_reference(cls, value: Any) -> Any:
        return import_handler(value) if isinstance(value, str) else value

    @field_serializer("handler")
    def _reference(self, handler: Handler) -> str:
        return f"{handler.__module__}:{getattr(handler, '__qualname__', repr(handler))}"

    async def respond(self, state: dict[str, Any], tool: str, args: dict[str, Any]) -> Outcome:
        """Call the handler; a `ValueError` becomes a ``tool_error``."""
        try:
            value = self.handler(state, tool, args)
            if inspect.isawaitable(value):
                value = await value
        except ValueError as e:
            return Outcome(error=str(e) or type(e).__name__)
        return Outcome(value=value)


_HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_PATH_PARAM = re.compile(r"\{([^{}]+)\}")


class WireParam(BaseModel):
    """Where one argument goes on the wire, as an OpenAPI parameter describes it.

    Attributes:
        arg: the tool argument name.
        name: the parameter's name on the wire (``filter[status]``, ``X-Request-Id``).
        location: ``path``, ``query``, ``header`` or ``cookie`` (``in`` in YAML).
        style: the OpenAPI style (default by location, see `agentlake.sim.wire`).
        explode: the OpenAPI explode flag (default by style).
        allow_reserved: keep reserved characters unencoded in a query value.
        content: a media type when the parameter is described by ``content`` (sent as JSON text).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    arg: str
    name: str
    location: Literal["path", "query", "header", "cookie"] = Field(alias="in")
    style: str | None = None
    explode: bool | None = None
    allow_reserved: bool = False
    content: str | None = None


class ForwardBehaviour(BaseModel):
    """Forward the call to an HTTP API with `httpx.AsyncClient`.

    With `params` (what `agentlake.sim.openapi` generates) every argument is placed
    as its OpenAPI parameter says (name on the wire, location, style, explode; see
    `agentlake.sim.wire`); the body is `body_arg`'s value, or an object of the
    arguments in `body_fields` (argument -> property name), sent as `media_type`:
    JSON, ``application/x-www-form-urlencoded``, ``multipart/form-data`` (the
    arguments in `binary` are base64 text decoded into file parts), text as is, or
    any other type as the base64-decoded bytes of the body argument.

    Without `params` (hand-written YAML) the simpler rules below apply.

    Arguments are placed as follows: names in the `path` template (``/orders/{order_id}``)
    fill it (URL-quoted); names in `query` go to the query string (lists repeat the
    key); names in `headers` become request headers. The JSON body is
    ``args[body_arg]`` when `body_arg` is set, else an object of the arguments named
    in `body` (sent even if empty when `body` is non-empty). When `body` is None,
    the remaining arguments form the body of POST/PUT/PATCH and the query string of
    other methods.

    A 2xx answer returns the JSON body (the text when it is not JSON, ``{"status":
    code}`` when empty). Any other status fails with kind ``tool_error``, the status
    and the body text; a timeout fails with kind ``timeout``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["forward"] = "forward"
    base_url: str
    method: str = "GET"
    path: str = "/"
    query: list[str] = Field(default_factory=list)
    headers: list[str] = Field(default_factory=list)
    body: list[str] | None = None
    body_arg: str | None = None
    static_headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0)
    params: list[WireParam] = Field(default_factory=list)
    body_fields: dict[str, str] | None = None
    media_type: str = "application/json"
    binary: list[str] = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        method = value.upper()
        if method not in _HTTP_METHODS:
            raise ValueError(f"unsupported HTTP method {value!r}; use one of {sorted(_HTTP_METHODS)}")
        return method

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if urllib.parse.urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"base_url {value!r} must be an absolute http(s) URL")
        return value

    @property
    def path_args(self) -> list[str]:
        """The argument names used by the path template, in order."""
        return _PATH_PARAM.findall(self.path)

    def _request(self, args: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, str], Any, bool]:
        """(url, query params, headers, json body, has body) for these arguments."""
        missing = [name for name in self.path_args if args.get(name) is None]
        if missing:
            raise ValueError(f"missing path argument(s) {', '.join(missing)} for {self.path}")
        path = _PATH_PARAM.sub(lambda m: urllib.parse.quote(str(args[m.group(1)]), safe=""), self.path)
        url = self.base_url.rstrip("/") + "/" + path.lstrip("/")
        placed = set(self.path_args) | set(self.query) | set(self.headers)
        params = {k: _query_value(args[k]) for k in self.query if args.get(k) is not None}
        headers = dict(self.static_headers)
        headers.update({k: _to_text(args[k]) for k in self.headers if args.get(k) is not None})
        if self.body_arg is not None:
            return url, params, headers, args.get(self.body_arg), self.body_arg in args
        if self.body is not None:
            return url, params, headers, {k: args[k] for k in self.body if k in args}, bool(self.body)
        rest = {k: v for k, v in args.items() if k not in placed}
        if self.method in _BODY_METHODS:
            return url, params, headers, rest, bool(rest)
        params.update({k: _query_value(v) for k, v in rest.items() if v is not None})
        return url, params, headers, None, False

    def build_request(self, args: Mapping[str, Any]) -> httpx.Request:
        """The HTTP request these arguments make (nothing is sent).

        Raises:
            ValueError: a path argument is missing, or a value cannot take its parameter's style.
        """
        described = self.params or self.body_fields is not None or self.binary
        if not described and self.media_type == "application/json":
            url, query, headers, body, has_body = self._request(args)
            return httpx.Request(
                self.method, url, params=query, headers=headers, json=body if has_body else None
            )
        from agentlake.sim import wire

        path = self.path
        pieces: list[str] = []
        headers = dict(self.static_headers)
        cookies: list[str] = []
        for p in self.params:
            value = args.get(p.arg)
            if value is None:
                if p.location == "path":
                    raise ValueError(f"missing path argument {p.arg} for {self.path}")
                continue
            if p.content is not None:
                value = json.dumps(value, separators=(",", ":"))
            style, explode = wire.default_style(p.location)
            style = p.style or style
            explode = p.explode if p.explode is not None else (style == "form")
            if p.location == "path":
                path = path.replace("{" + p.name + "}", wire.path_value(p.name, value, style, explode))
            elif p.location == "query":
                pieces.extend(wire.query_pairs(p.name, value, style, explode, p.allow_reserved))
            elif p.location == "header":
                headers[p.name] = wire.header_value(value, explode)
            else:
                cookies.extend(wire.cookie_pairs(p.name, value, explode))
        if cookies:
            headers["cookie"] = "; ".join(cookies)
        url = self.base_url.rstrip("/") + "/" + path.lstrip("/") + ("?" + "&".join(pieces) if pieces else "")
        if self.body_arg is not None:
            if self.body_arg not in args:
                return httpx.Request(self.method, url, headers=headers)
            payload: Any = args[self.body_arg]
        elif self.body_fields is not None:
            payload = {wire_name: args[a] for a, wire_name in self.body_fields.items() if a in args}
            if not payload and not self.body_fields:
                return httpx.Request(self.method, url, headers=headers)
        elif self.body is None and self.method in _BODY_METHODS:  # an open body: the rest goes there
            placed = {p.arg for p in self.params}
            payload = {k: v for k, v in args.items() if k not in placed}
            if not payload:
                return httpx.Request(self.method, url, headers=headers)
        else:
            return httpx.Request(self.method, url, headers=headers)
        return self._with_body(url, headers, payload)

    def _with_body(self, url: str, headers: dict[str, str], body: Any) -> httpx.Request:
        from agentlake.sim import wire

        media = self.media_type.split(";")[0].strip().lower()
        binary = {self.body_fields.get(a, a) for a in self.binary} if self.body_fields else set(self.binary)
        if media == "application/json" or media.endswith("+json"):
            headers.setdefault("content-type", self.media_type)
            content = json.dumps(body, separators=(",", ":")).encode()
            return httpx.Request(self.method, url, headers=headers, content=content)
        if media == "application/x-www-form-urlencoded":
            pairs: list[tuple[str, str]] = []
            for k, v in (body or {}).items():
                values = v if isinstance(v, list | tuple) else [v]
                pairs.extend((k, wire.scalar_text(x)) for x in values)
            headers.setdefault("content-type", media)
            return httpx.Request(self.method, url, headers=headers, content=urllib.parse.urlencode(pairs))
        if media == "multipart/form-data":
            fields: list[tuple[str, Any]] = []
            for k, v in (body or {}).items():
                if k in binary:
                    fields.append(
                        (k, (k, base64.b64decode(str(v), validate=True), "application/octet-stream"))
                    )
                else:
                    values = v if isinstance(v, list | tuple) else [v]
                    fields.extend((k, (None, wire.scalar_text(x))) for x in values)
            return httpx.Request(self.method, url, headers=headers, files=fields or {"": (None, "")})
        headers.setdefault("content-type", self.media_type)
        if media.startswith("text/") or media.endswith("xml") or not self.binary:
            return httpx.Request(self.method, url, headers=headers, content=str(body).encode())
        return httpx.Request(
            self.method, url, headers=headers, content=base64.b64decode(str(body), validate=True)
        )

    async def respond(self, state: dict[str, Any], tool: str, args: dict[str, Any]) -> Outcome:
        """Send the request and translate the answer (see the class docstring)."""
        try:
            request = self.build_request(args)
        except (ValueError, binascii.Error) as e:
            return Outcome(error=str(e), kind="invalid_arguments")
        url = str(request.url)
        request.extensions["timeout"] = httpx.Timeout(self.timeout_s).as_dict()
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.send(request)
        except httpx.TimeoutException:
            return Outcome(error=f"{self.method} {url} timed out after {self.timeout_s}s", kind="timeout")
        except httpx.HTTPError as e:
            return Outcome(error=f"{self.method} {url} failed: {type(e).__name__}: {e}")
        status = {HTTP_STATUS_KEY: response.status_code}
        if not response.is_success:
            text = response.text[:2000]
            return Outcome(error=f"HTTP {response.status_code} from {self.method} {url}: {text}", meta=status)
        return Outcome(value=_decode(response), meta=status)


def _query_value(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_query_value(v) for v in value]
    if isinstance(value, Mapping):
        return json.dumps(value)
    return value


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return {"status": response.status_code}
    try:
        return response.json()
    except ValueError:
        return response.text


class ReplayRecord(BaseModel):
    """One recorded call: the arguments, what came back, and whether it failed.

    Also accepts a ``[arguments, result, is_error]`` list or tuple.
    """

    model_config = ConfigDict(extra="forbid")

    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    is_error: bool = False
    error_kind: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_tuple(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not 2 <= len(value) <= 3:
                raise ValueError("a replay record tuple is (arguments, result[, is_error])")
            return {"arguments": value[0], "result": value[1], "is_error": bool(value[2:3] and value[2])}
        return value


class ReplayBehaviour(BaseModel):
    """Answer with calls recorded in past trajectories.

    A record whose arguments equal the call's (JSON equality) is used first;
    otherwise the record with the highest `argument_similarity` (earliest on a
    tie), if that similarity is at least `min_similarity`. The result meta
    ``agentlake/replay`` says ``{"exact": bool, "similarity": float}``. With no
    usable record the call fails with kind ``replay_miss``. A recorded error is
    replayed as an error with its recorded kind (``tool_error`` by default).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["replay"] = "replay"
    records: list[ReplayRecord] = Field(default_factory=list)
    min_similarity: float = Field(default=0.0, ge=0.0, le=1.0)

    async def respond(self, state: dict[str, Any], tool: str, args: dict[str, Any]) -> Outcome:
        """Pick the exact or the nearest record (see the class docstring)."""
        record, similarity = self.nearest(args)
        if record is None or similarity < self.min_similarity:
            return Outcome(
                error=f"staging has no recorded call of {tool} close to {_to_text(args)}",
                kind="replay_miss",
                injected=True,
            )
        meta = {
            REPLAY_KEY: {
                "exact": similarity == 1.0 and _json_equal(record.arguments, args),
                "similarity": round(similarity, 4),
            }
        }
        if record.is_error:
            return Outcome(error=_to_text(record.result), kind=record.error_kind or "tool_error", meta=meta)
        return Outcome(value=copy.deepcopy(record.result), meta=meta)

    def nearest(self, args: Mapping[str, Any]) -> tuple[ReplayRecord | None, float]:
        """The record to replay for `args` and its similarity (1.0 for an exact match).

        Args:
            args: the call's arguments.

        Returns:
            ``(record, similarity)``, or ``(None, 0.0)`` when nothing is recorded.
        """
        for record in self.records:
            if _json_equal(record.arguments, args):
                return record, 1.0
        best: ReplayRecord | None = None
        best_score = -1.0
        for record in self.records:
            score = argument_similarity(record.arguments, args)
            if score > best_score:
                best, best_score = record, score
        return best, max(best_score, 0.0)


Behaviour = Annotated[
    FixtureBehaviour | HandlerBehaviour | ForwardBehaviour | ReplayBehaviour,
    Field(discriminator="kind"),
]
"""A tool's behaviour, chosen in YAML by ``kind``: fixture, handler, forward or replay."""


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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
