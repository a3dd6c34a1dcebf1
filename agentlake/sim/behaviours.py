"""Behaviours of staging tools: how a tool of a staging server answers a call.

`FixtureBehaviour` (canned answers by a subset match on the arguments),
`HandlerBehaviour` (a Python function over shared mutable state),
`ForwardBehaviour` (an HTTP API, each argument placed as its OpenAPI parameter
says, see `agentlake.sim.wire`) and `ReplayBehaviour` (calls recorded in past
trajectories), the `Behaviour` union chosen in YAML by ``kind``, the `Outcome`
they return, and the result-meta keys the server and the SDK read. The server
that runs them is `agentlake.sim.staging`, which re-exports every name here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import importlib
import inspect
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

log = logging.getLogger("agentlake.sim.staging")

ERROR_KIND_KEY = "agentlake/error_kind"
"""Result meta key naming the kind of failure (read by `agentlake.sdk.TracedSession`)."""

INJECTED_KEY = "agentlake/injected"
"""Result meta key set to True when the failure comes from staging, not from the agent."""

REPLAY_KEY = "agentlake/replay"
"""Result meta key of a replayed answer: ``{"exact": bool, "similarity": float}``."""

HTTP_STATUS_KEY = "agentlake/http_status"
"""Result meta key with the HTTP status of a forwarded call."""

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
