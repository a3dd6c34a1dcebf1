"""Staging tools generated from an OpenAPI 3 document.

This module owns the translation of an OpenAPI 3.0/3.1 document (a dict, or a
JSON/YAML file) into staging tools: one `ToolDef` per operation, whose input
schema merges the operation's parameters and JSON request body and whose
`ForwardBehaviour` calls the API (or its sandbox). `openapi_to_server_spec`
gives the same tools as plain dicts for the registry.

Translation rules:

- name: the ``operationId``, else ``{method}_{path}``; sanitised to
  ``[a-zA-Z0-9_]``, at most 64 characters, made unique with ``_2``, ``_3``...
- description: ``summary`` (and ``description`` when it says more), else
  ``METHOD /path``.
- arguments: path, query and header parameters by name (path-item parameters
  merged with the operation's; path parameters are always required; cookie
  parameters are left out). A JSON request body that is an object (``allOf``
  of objects included) is merged at the top level; its required properties
  are required when the body is; ``readOnly`` properties are dropped. Any
  other JSON body, or an object body whose property names clash with a
  parameter, becomes one ``body`` argument. Operations whose body is not JSON
  are skipped (logged).
- schemas: local ``$ref`` (``#/...``) are inlined; a recursive reference
  becomes ``{"$ref": "#/$defs/Name"}`` with ``Name`` defined under the tool
  schema's ``$defs``. OpenAPI 3.0 quirks are converted to JSON Schema
  (``nullable``, boolean ``exclusiveMinimum``/``exclusiveMaximum``, ``example``);
  ``discriminator``, ``xml`` and ``externalDocs`` are dropped. Unless the body
  allows extra properties, the tool schema sets ``additionalProperties: false``.
- base URL: the ``base_url`` argument, else the operation's, path item's or
  document's ``servers[0].url`` with its variables' defaults.

Unsupported or invalid documents raise `OpenAPIError` with a one-line message.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentlake.sim.staging import ForwardBehaviour, ToolDef

__all__ = ["OpenAPIError", "load_openapi", "openapi_to_server_spec", "tools_from_openapi"]

log = logging.getLogger(__name__)

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_MAX_NAME = 64
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_OPENAPI_ONLY = ("discriminator", "xml", "externalDocs", "nullable", "example")
_IGNORED_HEADERS = {"accept", "content-type", "authorization"}


class OpenAPIError(ValueError):
    """The document is not an OpenAPI 3 document this module can translate."""


@dataclass
class _Operation:
    """One operation, translated: what the tool looks like and where arguments go."""

    name: str
    description: str
    method: str
    path: str
    input_schema: dict[str, Any]
    query: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    body: list[str] | None = None
    body_arg: str | None = None
    servers: list[Any] | None = None


def load_openapi(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Read an OpenAPI document and check that it is OpenAPI 3 with paths.

    Args:
        source: the document as a mapping, or the path of a JSON or YAML file.

    Returns:
        The document (a deep copy when a mapping was given).

    Raises:
        OpenAPIError: the file is missing or unparsable, or the document is not
            OpenAPI 3.x with a ``paths`` object.
    """
    if isinstance(source, Mapping):
        doc: Any = copy.deepcopy(dict(source))
        where = "the document"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise OpenAPIError(f"OpenAPI file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OpenAPIError(f"cannot parse {path}: {first_line}") from e
    if not isinstance(doc, dict):
        raise OpenAPIError(f"{where} is not an OpenAPI document (expected a mapping at the top level)")
    version = doc.get("openapi")
    if version is None:
        if "swagger" in doc:
            raise OpenAPIError(
                f"{where} is Swagger {doc['swagger']}; only OpenAPI 3.x is supported "
                "(convert it first, e.g. with swagger2openapi)"
            )
        raise OpenAPIError(f"{where} has no 'openapi' version field; expected an OpenAPI 3.x document")
    if not str(version).startswith("3."):
        raise OpenAPIError(f"{where} is OpenAPI {version}; only OpenAPI 3.x is supported")
    if not isinstance(doc.get("paths"), Mapping):
        raise OpenAPIError(f"{where} has no 'paths' object, so there are no operations to turn into tools")
    return doc


def tools_from_openapi(doc: Mapping[str, Any] | str | Path, base_url: str | None = None) -> list[ToolDef]:
    """One staging tool per operation, forwarding to the API (see the module docstring).

    Args:
        doc: the document as a mapping, or the path of a JSON or YAML file.
        base_url: where to send the calls, replacing the document's
            ``servers[0].url`` entirely (include any base path, e.g. ``/v1``).

    Returns:
        The tools, in document order.

    Raises:
        OpenAPIError: the document is invalid or unsupported, or no absolute base
            URL is known for an operation.
    """
    document = load_openapi(doc)
    tools = []
    for op in _operations(document):
        url = base_url or _server_url(op.servers or document.get("servers"), op.name)
        behaviour = ForwardBehaviour(
            base_url=url,
            method=op.method,
            path=op.path,
            query=op.query,
            headers=op.headers,
            body=op.body,
            body_arg=op.body_arg,
        )
        tools.append(
            ToolDef(
                name=op.name, description=op.description, input_schema=op.input_schema, behaviour=behaviour
            )
        )
    return tools


def openapi_to_server_spec(doc: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """The document as an MCP server description for the registry.

    Args:
        doc: the document as a mapping, or the path of a JSON or YAML file.

    Returns:
        ``{"id": slug of info.title, "tools": [{"name", "description", "input_schema"}]}``.
        No base URL is needed.

    Raises:
        OpenAPIError: the document is invalid or unsupported.
    """
    document = load_openapi(doc)
    info = document.get("info")
    title = info.get("title") if isinstance(info, Mapping) else None
    server_id = re.sub(r"[^a-z0-9]+", "-", str(title or "").lower()).strip("-") or "openapi"
    return {
        "id": server_id,
        "tools": [
            {"name": op.name, "description": op.description, "input_schema": op.input_schema}
            for op in _operations(document)
        ],
    }


# ---------------------------------------------------------------------------
# Operations


def _operations(doc: dict[str, Any]) -> list[_Operation]:
    resolver = _Resolver(doc)
    operations: list[_Operation] = []
    taken: set[str] = set()
    for path, raw_item in doc["paths"].items():
        if not str(path).startswith("/"):
            raise OpenAPIError(f"path {path!r} must start with '/'")
        item = resolver.deref(raw_item, f"paths[{path!r}]")
        if not isinstance(item, Mapping):
            raise OpenAPIError(f"paths[{path!r}] must be a mapping")
        for method in _METHODS:
            raw_op = item.get(method)
            if raw_op is None:
                continue
            if not isinstance(raw_op, Mapping):
                raise OpenAPIError(f"{method.upper()} {path} must be a mapping")
            op = _operation(resolver, str(path), method, item, raw_op, taken)
            if op is not None:
                taken.add(op.name)
                operations.append(op)
    if not operations:
        raise OpenAPIError("the document's 'paths' hold no operations to turn into tools")
    return operations


def _operation(
    resolver: _Resolver,
    path: str,
    method: str,
    item: Mapping[str, Any],
    raw: Mapping[str, Any],
    taken: set[str],
) -> _Operation | None:
    where = f"{method.upper()} {path}"
    raw_name = raw.get("operationId") or f"{method}_{path}"
    name = _unique(_sanitise(str(raw_name)) or method, taken)
    summary = str(raw.get("summary") or "").strip()
    details = str(raw.get("description") or "").strip()
    if summary and details and details != summary:
        description = f"{summary}\n\n{details}"
    else:
        description = summary or details or where

    properties: dict[str, Any] = {}
    required: list[str] = []
    locations: dict[str, str] = {}
    for param in _parameters(resolver, item, raw, where):
        pname, location = str(param["name"]), str(param["in"])
        if location == "cookie" or (location == "header" and pname.lower() in _IGNORED_HEADERS):
            continue
        if location not in ("path", "query", "header"):
            raise OpenAPIError(f"{where}: parameter {pname!r} has an unknown location {location!r}")
        if pname in properties:
            log.warning(
                "%s: parameter %r appears in %s and %s; keeping the first",
                where,
                pname,
                locations[pname],
                location,
            )
            continue
        schema = resolver.schema(_parameter_schema(param), ())
        if not isinstance(schema, dict):
            schema = {}
        if param.get("description") and "description" not in schema:
            schema["description"] = str(param["description"])
        properties[pname] = schema
        locations[pname] = location
        if location == "path" or param.get("required") is True:
            required.append(pname)
    missing = [p for p in re.findall(r"\{([^{}]+)\}", path) if locations.get(p) != "path"]
    if missing:
        raise OpenAPIError(f"{where}: path parameter(s) {', '.join(missing)} are not declared")

    body_names: list[str] | None = []
    body_arg: str | None = None
    additional: Any = False
    request_body = raw.get("requestBody")
    if request_body is not None:
        body = resolver.deref(request_body, f"{where} requestBody")
        if not isinstance(body, Mapping):
            raise OpenAPIError(f"{where}: requestBody must be a mapping")
        media = _json_media(body.get("content"))
        if media is None:
            kinds = ", ".join(sorted(body.get("content") or {})) or "no content"
            log.warning("skipping %s: its request body is not JSON (%s)", where, kinds)
            return None
        body_required = body.get("required") is True
        body_schema = resolver.schema(media.get("schema", {}), ())
        merged = _object_schema(body_schema)
        if merged is not None and not (merged["properties"].keys() & properties.keys()):
            body_props: dict[str, Any] = merged["properties"]
            properties.update(body_props)
            if body_required:
                required.extend(r for r in merged["required"] if r in body_props and r not in required)
            additional = merged["additionalProperties"]
            body_names = None if additional is not False else list(body_props)
        else:
            body_arg = "body" if "body" not in properties else "request_body"
            properties[body_arg] = body_schema if isinstance(body_schema, dict) else {}
            if body_required:
                required.append(body_arg)

    input_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    input_schema["additionalProperties"] = additional
    defs = resolver.take_defs()
    if defs:
        input_schema["$defs"] = defs
    servers = raw.get("servers") or item.get("servers")
    return _Operation(
        name=name,
        description=description,
        method=method.upper(),
        path=path,
        input_schema=input_schema,
        query=[p for p, loc in locations.items() if loc == "query"],
        headers=[p for p, loc in locations.items() if loc == "header"],
        body=body_names if body_arg is None else None,
        body_arg=body_arg,
        servers=servers if isinstance(servers, list) else None,
    )


def _parameters(
    resolver: _Resolver, item: Mapping[str, Any], raw: Mapping[str, Any], where: str
) -> list[Mapping[str, Any]]:
    """Path-item parameters overridden by the operation's, keyed by (name, in)."""
    merged: dict[tuple[str, str], Mapping[str, Any]] = {}
    for source in (item.get("parameters") or [], raw.get("parameters") or []):
        if not isinstance(source, list):
            raise OpenAPIError(f"{where}: 'parameters' must be a list")
        for raw_param in source:
            param = resolver.deref(raw_param, f"{where} parameter")
            if not isinstance(param, Mapping) or "name" not in param or "in" not in param:
                raise OpenAPIError(f"{where}: every parameter needs a 'name' and an 'in'")
            merged[(str(param["name"]), str(param["in"]))] = param
    return list(merged.values())


def _parameter_schema(param: Mapping[str, Any]) -> Any:
    if "schema" in param:
        return param["schema"]
    content = param.get("content")
    if isinstance(content, Mapping) and content:
        media = next(iter(content.values()))
        if isinstance(media, Mapping):
            return media.get("schema", {})
    return {}


def _json_media(content: Any) -> Mapping[str, Any] | None:
    """The JSON media type object of a request body's content, if any."""
    if not isinstance(content, Mapping):
        return None
    ranked = sorted(
        (str(k).split(";")[0].strip().lower(), v) for k, v in content.items() if isinstance(v, Mapping)
    )
    for wanted in (
        lambda t: t == "application/json",
        lambda t: t.endswith("+json") or t.endswith("/json"),
        lambda t: t in ("*/*", "application/*"),
    ):
        for media_type, media in ranked:
            if wanted(media_type):
                return media
    return None


def _object_schema(schema: Any) -> dict[str, Any] | None:
    """``{"properties", "required", "additionalProperties"}`` when `schema` is an object
    (``allOf`` of objects included), else None."""
    if not isinstance(schema, Mapping):
        return None
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        properties: dict[str, Any] = {}
        required: list[str] = []
        additional: Any = False
        for part in parts:
            sub = _object_schema(part)
            if sub is None:
                return None
            properties.update(sub["properties"])
            required.extend(r for r in sub["required"] if r not in required)
            if sub["additionalProperties"] is not False:
                additional = sub["additionalProperties"]
        own = _object_schema({k: v for k, v in schema.items() if k != "allOf"} | {"type": "object"})
        if own is not None:
            properties.update(own["properties"])
            required.extend(r for r in own["required"] if r not in required)
        return {"properties": properties, "required": required, "additionalProperties": additional}
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if not is_object and not (kind is None and "properties" in schema):
        return None
    if any(k in schema for k in ("anyOf", "oneOf", "not", "if", "patternProperties")):
        return None  # conditional shapes don't flatten into plain arguments
    additional = schema.get("additionalProperties", False)
    if additional is True or additional == {}:
        additional = True
    return {
        "properties": dict(schema.get("properties") or {}),
        "required": [str(r) for r in schema.get("required") or []],
        "additionalProperties": additional,
    }


def _sanitise(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9_]", "_", name)).strip("_")[:_MAX_NAME].rstrip("_")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        suffix = f"_{n}"
        candidate = name[: _MAX_NAME - len(suffix)] + suffix
    return candidate


def _server_url(servers: Any, tool: str) -> str:
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], Mapping):
        raise OpenAPIError(f"no base URL for {tool}: the document has no servers[0].url; pass base_url=")
    server = servers[0]
    url = str(server.get("url") or "")
    variables = server.get("variables") or {}
    for var, spec in variables.items() if isinstance(variables, Mapping) else ():
        default = spec.get("default") if isinstance(spec, Mapping) else None
        if default is not None:
            url = url.replace("{" + str(var) + "}", str(default))
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or "{" in url:
        raise OpenAPIError(f"servers[0].url {url!r} is not an absolute http(s) URL; pass base_url=")
    return url


# ---------------------------------------------------------------------------
# $ref resolution and schema conversion


class _Resolver:
    """Resolves local ``$ref`` and converts OpenAPI schemas to JSON Schema.

    Recursive references found while building one tool schema are collected and
    handed out by `take_defs`, which starts the next tool afresh.
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self._def_names: dict[str, str] = {}

    def lookup(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise OpenAPIError(
                f"external $ref {ref!r} is not supported; bundle the document into one file first"
            )
        node: Any = self.doc
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            key = urllib.parse.unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise OpenAPIError(f"$ref {ref!r} points to nothing in the document")
        return node

    def deref(self, node: Any, where: str) -> Any:
        """Follow a chain of ``$ref`` of a non-schema object (parameter, body, path item)."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                raise OpenAPIError(f"{where}: $ref {ref!r} refers to itself")
            seen.add(ref)
            node = self.lookup(ref)
        return node

    def take_defs(self) -> dict[str, Any]:
        """Definitions of the recursive references met since the last call."""
        defs: dict[str, Any] = {}
        done: set[str] = set()
        while pending := [ref for ref in self._def_names if ref not in done]:
            for ref in pending:
                done.add(ref)
                defs[self._def_names[ref]] = self.schema(self.lookup(ref), (ref,))
        self._def_names = {}
        return defs

    def _def_name(self, ref: str) -> str:
        if ref not in self._def_names:
            base = _sanitise(ref.rsplit("/", 1)[-1]) or "schema"
            self._def_names[ref] = _unique(base, set(self._def_names.values()))
        return self._def_names[ref]

    def schema(self, node: Any, stack: tuple[str, ...]) -> Any:
        """JSON Schema for an OpenAPI schema: refs inlined, recursion through ``$defs``."""
        if isinstance(node, list):
            return [self.schema(x, stack) for x in node]
        if not isinstance(node, Mapping):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            if ref in stack:
                return {"$ref": f"#/$defs/{self._def_name(ref)}"}
            target = self.schema(self.lookup(ref), (*stack, ref))
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if siblings and isinstance(target, dict):
                target = {**target, **self.schema(siblings, stack)}
            return target
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                out[key] = {str(k): self.schema(v, stack) for k, v in value.items()}
            elif key in _SCHEMA_ONE:
                out[key] = self.schema(value, stack)
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.schema(v, stack) for v in value]
            elif key not in _OPENAPI_ONLY:
                out[key] = copy.deepcopy(value)
        _convert_openapi30(node, out)
        return out


def _convert_openapi30(node: Mapping[str, Any], out: dict[str, Any]) -> None:
    """OpenAPI 3.0 keywords whose meaning differs from JSON Schema 2020-12, in place."""
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    if "example" in node and "examples" not in out:
        out["examples"] = [copy.deepcopy(node["example"])]
    properties = out.get("properties")
    if isinstance(properties, dict):
        read_only = [k for k, v in properties.items() if isinstance(v, Mapping) and v.get("readOnly") is True]
        for k in read_only:
            del properties[k]
        if read_only and isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r not in read_only]
