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

import jsonschema
import jsonschema.exceptions
import yaml

from agentlake._files import UserFileError, read_user_text
from agentlake.sim.staging import ForwardBehaviour, ToolDef, WireParam

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
    params: list[WireParam] = field(default_factory=list)
    body: list[str] | None = None
    body_fields: dict[str, str] | None = None
    body_arg: str | None = None
    media_type: str = "application/json"
    binary: list[str] = field(default_factory=list)
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
        try:
            text = read_user_text(path)
        except UserFileError as e:
            raise OpenAPIError(str(e)) from None
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
            params=op.params,
            body=op.body,
            body_fields=op.body_fields,
            body_arg=op.body_arg,
            media_type=op.media_type,
            binary=op.binary,
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
    wire_params: list[WireParam] = []
    path_names: set[str] = set()
    for param in _parameters(resolver, item, raw, where):
        pname, location = str(param["name"]), str(param["in"])
        if location == "header" and pname.lower() in _IGNORED_HEADERS:
            continue
        if location not in ("path", "query", "header", "cookie"):
            raise OpenAPIError(f"{where}: parameter {pname!r} has an unknown location {location!r}")
        arg = _arg_name(pname, location, properties)
        schema = resolver.schema(_parameter_schema(param), ())
        if not isinstance(schema, dict):
            schema = {}
        described = str(param.get("description") or "").strip()
        if arg != pname:  # the model sees the wire name too
            described = f"{described} ({location} parameter {pname!r})".strip()
        if described and "description" not in schema:
            schema["description"] = described
        properties[arg] = schema
        if location == "path":
            path_names.add(pname)
        if location == "path" or param.get("required") is True:
            required.append(arg)
        content = param.get("content")
        wire_params.append(
            WireParam.model_validate(
                {
                    "arg": arg,
                    "name": pname,
                    "in": location,
                    "style": str(param["style"]) if param.get("style") else None,
                    "explode": bool(param["explode"]) if "explode" in param else None,
                    "allow_reserved": param.get("allowReserved") is True,
                    "content": next(iter(content)) if isinstance(content, Mapping) and content else None,
                }
            )
        )
    missing = [p for p in re.findall(r"\{([^{}]+)\}", path) if p not in path_names]
    if missing:
        raise OpenAPIError(f"{where}: path parameter(s) {', '.join(missing)} are not declared")

    body_fields: dict[str, str] | None = None
    body_arg: str | None = None
    binary: list[str] = []
    media_type = "application/json"
    additional: Any = False
    request_body = raw.get("requestBody")
    if request_body is not None:
        body = resolver.deref(request_body, f"{where} requestBody")
        if not isinstance(body, Mapping):
            raise OpenAPIError(f"{where}: requestBody must be a mapping")
        chosen = _body_media(body.get("content"))
        if chosen is None:
            raise OpenAPIError(f"{where}: requestBody has no content")
        media_type, media = chosen
        kind = _media_kind(media_type)
        body_required = body.get("required") is True
        body_schema = resolver.schema(media.get("schema", {}), ())
        merged = _object_schema(body_schema) if kind in ("json", "form", "multipart") else None
        if merged is not None and (kind != "json" or merged["additionalProperties"] is False):
            body_fields = {}
            for prop, prop_schema in merged["properties"].items():
                arg = _arg_name(str(prop), "body", properties)
                if kind == "multipart" and _is_binary(prop_schema):
                    prop_schema = _base64_string(prop_schema)
                    binary.append(arg)
                properties[arg] = prop_schema
                body_fields[arg] = str(prop)
                if body_required and prop in merged["required"]:
                    required.append(arg)
        elif (
            merged is not None
            and not (merged["properties"].keys() & properties.keys())
            and all(_SAFE_ARG.match(str(k)) for k in merged["properties"])
        ):
            # an open JSON object: declared properties flat, extra arguments go to the body too
            properties.update(merged["properties"])
            if body_required:
                required.extend(
                    r for r in merged["required"] if r in merged["properties"] and r not in required
                )
            additional = merged["additionalProperties"]
        else:
            body_arg = "body" if "body" not in properties else "request_body"
            if kind in ("json", "form", "multipart"):
                schema = body_schema if isinstance(body_schema, dict) else {}
            elif kind == "text":
                schema = {"type": "string", "description": f"the {media_type} body"}
            else:
                schema = {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": f"the {media_type} body, base64",
                }
                binary.append(body_arg)
            properties[body_arg] = schema
            if body_required:
                required.append(body_arg)

    input_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    input_schema["additionalProperties"] = additional
    defs = resolver.take_defs()
    if defs:
        input_schema["$defs"] = defs
    try:
        jsonschema.Draft202012Validator.check_schema(input_schema)
    except jsonschema.exceptions.SchemaError as e:
        at = "/".join(str(x) for x in e.absolute_path)
        raise OpenAPIError(
            f"{where}: the generated input schema is invalid at {at or '<root>'}: {e.message}"
        ) from None
    servers = raw.get("servers") or item.get("servers")
    if body_fields is None and body_arg is None and additional is not False:
        body_names: list[str] | None = None
    else:
        body_names = list(body_fields or {})
    return _Operation(
        name=name,
        description=description,
        method=method.upper(),
        path=path,
        input_schema=input_schema,
        params=wire_params,
        body=body_names if body_arg is None else None,
        body_fields=body_fields,
        body_arg=body_arg,
        media_type=media_type,
        binary=binary,
        servers=servers if isinstance(servers, list) else None,
    )


_SAFE_ARG = re.compile(r"^[a-zA-Z0-9_]{1,64}$")


def _arg_name(wire: str, location: str, taken: Mapping[str, Any]) -> str:
    """A tool argument name matching ``^[a-zA-Z0-9_]{1,64}$`` for a wire name, distinct from
    `taken`: unsafe characters become ``_`` (``filter[status]`` -> ``filter_status``); a clash
    (a path ``id`` and a query ``id``) is suffixed with the location (``id_query``), then a number."""
    base = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9_]", "_", wire)).strip("_")[:_MAX_NAME] or "param"
    if base not in taken:
        return base
    suffix = f"_{location}"
    candidate = base[: _MAX_NAME - len(suffix)] + suffix
    n = 1
    while candidate in taken:
        n += 1
        tail = f"_{location}_{n}"
        candidate = base[: _MAX_NAME - len(tail)] + tail
    return candidate


def _media_kind(media_type: str) -> str:
    t = media_type.split(";")[0].strip().lower()
    if t == "application/json" or t.endswith("+json") or t.endswith("/json"):
        return "json"
    if t == "application/x-www-form-urlencoded":
        return "form"
    if t == "multipart/form-data":
        return "multipart"
    if t.startswith("text/") or t.endswith("xml") or t in ("*/*", "application/*"):
        return "text"
    return "binary"


def _body_media(content: Any) -> tuple[str, Mapping[str, Any]] | None:
    """(media type, media object) of a request body: JSON first, then form, multipart, text, binary."""
    if not isinstance(content, Mapping):
        return None
    options = [(str(k), v) for k, v in content.items() if isinstance(v, Mapping)]
    order = {"json": 0, "form": 1, "multipart": 2, "text": 3, "binary": 4}
    options.sort(key=lambda kv: (order[_media_kind(kv[0])], kv[0].lower() != "application/json"))
    return options[0] if options else None


def _is_binary(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    if schema.get("format") in ("binary", "byte") or "contentMediaType" in schema:
        return True
    items = schema.get("items")
    return isinstance(items, Mapping) and _is_binary(items)


def _base64_string(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k not in ("format", "contentMediaType")}
    out.update(type="string", contentEncoding="base64")
    out.setdefault("description", "file content, base64")
    return out


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
        raise OpenAPIError(f"no base URL for {tool}: the document has no servers[0].url; pass --base-url URL")
    server = servers[0]
    url = str(server.get("url") or "")
    variables = server.get("variables") or {}
    for var, spec in variables.items() if isinstance(variables, Mapping) else ():
        default = spec.get("default") if isinstance(spec, Mapping) else None
        if default is not None:
            url = url.replace("{" + str(var) + "}", str(default))
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or "{" in url:
        raise OpenAPIError(f"servers[0].url {url!r} is not an absolute http(s) URL; pass --base-url URL")
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
            elif key == "items" and isinstance(value, list):
                out["prefixItems"] = [self.schema(v, stack) for v in value]  # draft-4 tuple form
                if "additionalItems" in node:
                    out["items"] = self.schema(node["additionalItems"], stack)
            elif key == "additionalItems" and isinstance(node.get("items"), list):
                continue  # became `items` above
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
