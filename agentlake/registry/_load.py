"""Registry files: YAML in, validated specs out, with one-line errors.

This module owns the registry file format, the checks that span several specs
(duplicates, grants of tools a server does not have), the JSON form specs travel
in (`dump_spec` / `spec_from_dict`), and `RegistryError`. The only I/O is
`load_registry_file` reading the file it is given.

A file is either one document with top-level ``servers:`` and/or ``agents:``
lists, or several ``---``-separated documents that each hold one spec with a
``kind: agent|server`` key. Both layouts may be mixed across documents.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Literal, overload

import yaml
from pydantic import ValidationError

from agentlake._files import UserFileError, read_user_text
from agentlake._validation import first_error
from agentlake.registry._models import AgentSpec, ServerSpec, Spec, SpecKind, version_key

_MODELS: dict[str, type[AgentSpec] | type[ServerSpec]] = {"agent": AgentSpec, "server": ServerSpec}
_LISTS: tuple[tuple[str, SpecKind], ...] = (("servers", "server"), ("agents", "agent"))
_LAYOUTS = "servers: and/or agents: lists, or one spec with kind: agent|server"


class RegistryError(Exception):
    """A registry file or spec is invalid. ``str(error)`` is one line: ``source: path: reason``.

    Attributes:
        source: the file (or other origin) the spec came from.
        path: where in it, e.g. ``agents[0].tools[1].scope.amount.max`` or ``line 4``; may be empty.
        reason: what is wrong.
    """

    def __init__(self, source: str, reason: str, path: str = "") -> None:
        self.source = source
        self.path = path
        self.reason = " ".join(reason.split())
        super().__init__(f"{source}: {path}: {self.reason}" if path else f"{source}: {self.reason}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_registry_file(path: str | os.PathLike[str], known_servers: Iterable[ServerSpec] = ()) -> list[Spec]:
    """Read and validate a registry YAML file.

    Args:
        path: the file. Its name, as given, starts every error message.
        known_servers: servers registered elsewhere; grants to them are checked too.

    Returns:
        The specs, servers of a document before its agents, in file order.

    Raises:
        RegistryError: the file cannot be read, is not YAML, or declares an invalid spec.
    """
    source = str(path)
    try:
        text = read_user_text(path)
    except UserFileError as e:
        raise RegistryError(source, e.reason) from None
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise RegistryError(source, e.problem or e.context or "invalid YAML", where) from None
    except yaml.YAMLError as e:
        raise RegistryError(source, f"invalid YAML: {e}") from None
    return parse_registry(documents, source, known_servers)


def parse_registry(data: Any, source: str, known_servers: Iterable[ServerSpec] = ()) -> list[Spec]:
    """Validate already-parsed registry data.

    Args:
        data: one document (a mapping) or a list of documents, as `yaml.safe_load_all` gives them.
            ``None`` documents (empty, e.g. after a trailing ``---``) are skipped.
        source: names the origin in error messages (usually the file name).
        known_servers: servers registered elsewhere; grants to them are checked too.
            A server declared in ``data`` takes precedence over a known one with the same id.

    Returns:
        The specs, servers of a document before its agents, in document order.

    Raises:
        RegistryError: the first problem found, on one line.
    """
    documents: list[Any] = list(data) if isinstance(data, list) else [data]
    numbered = len(documents) > 1
    found: list[tuple[str, Spec]] = []
    for n, doc in enumerate(documents, start=1):
        document = f"document {n}" if numbered else ""
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise RegistryError(source, f"expected a mapping with {_LAYOUTS}", document)
        if "kind" in doc:
            kind = doc["kind"]
            if not isinstance(kind, str) or kind not in _MODELS:
                reason = f"must be 'agent' or 'server' (got {kind!r})"
                raise RegistryError(source, reason, _at(document, "kind"))
            body = {k: v for k, v in doc.items() if k != "kind"}
            found.append((document, _validate(kind, body, source, document)))
            continue
        for key in doc:
            if key not in ("servers", "agents"):
                where = _at(document, str(key))
                raise RegistryError(source, f"unknown key: a document holds {_LAYOUTS}", where)
        for key, list_kind in _LISTS:
            items = doc.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                raise RegistryError(source, f"must be a list of {key}", _at(document, key))
            for i, item in enumerate(items):
                base = f"{key}[{i}]"
                found.append((_at(document, base), _validate(list_kind, item, source, document, base)))
    _check_duplicates(found, source)
    _check_references(found, source, known_servers)
    return [spec for _, spec in found]


def dump_spec(spec: Spec) -> dict[str, Any]:
    """The JSON-serialisable form of a spec (every field, defaults included).

    Args:
        spec: an agent or server spec.

    Returns:
        A dict of JSON types; `spec_from_dict` turns it back into an equal spec.
    """
    return spec.model_dump(mode="json")


@overload
def spec_from_dict(kind: Literal["agent"], data: Any, source: str = ...) -> AgentSpec: ...
@overload
def spec_from_dict(kind: Literal["server"], data: Any, source: str = ...) -> ServerSpec: ...
@overload
def spec_from_dict(kind: str, data: Any, source: str = ...) -> Spec: ...
def spec_from_dict(kind: str, data: Any, source: str = "spec") -> Spec:
    """Validate the dict form of a spec (e.g. from a Kafka event).

    Args:
        kind: ``"agent"`` or ``"server"``.
        data: the dict, as `dump_spec` writes it.
        source: names the origin in error messages.

    Returns:
        The spec.

    Raises:
        RegistryError: unknown kind or invalid data.
    """
    if not isinstance(kind, str) or kind not in _MODELS:
        raise RegistryError(source, f"unknown spec kind {kind!r}: use 'agent' or 'server'")
    return _validate(kind, data, source)


def spec_kind(spec: Spec) -> SpecKind:
    """``"agent"`` or ``"server"``: the kind `spec_from_dict` needs to read ``dump_spec(spec)`` back."""
    return "agent" if isinstance(spec, AgentSpec) else "server"


def _validate(kind: str, data: Any, source: str, document: str = "", base: str = "") -> Spec:
    model = _MODELS[kind]
    try:
        return model.model_validate(data)
    except ValidationError as e:
        path, reason = first_error(e)
        raise RegistryError(source, reason, _at(document, _field(base, path))) from None


def _field(base: str, path: str) -> str:
    if not base or not path:
        return base or path
    return base + path if path.startswith("[") else f"{base}.{path}"


def _at(document: str, field: str) -> str:
    # "document 2" is a place, not a field: separate it the way "line 4: ..." is.
    return f"{document}: {field}" if document and field else document or field


def _check_duplicates(found: list[tuple[str, Spec]], source: str) -> None:
    first: dict[tuple[str, str, str], str] = {}
    for label, spec in found:
        kind = spec_kind(spec)
        key = (kind, spec.id, spec.version)
        if key in first:
            raise RegistryError(source, f"{kind} {spec.ref} is declared twice (first at {first[key]})", label)
        first[key] = label or "the first document"


def _latest_servers(servers: Iterable[ServerSpec]) -> dict[str, ServerSpec]:
    latest: dict[str, ServerSpec] = {}
    for s in servers:
        current = latest.get(s.id)
        if current is None or version_key(s.version) >= version_key(current.version):
            latest[s.id] = s
    return latest


def _check_references(
    found: list[tuple[str, Spec]], source: str, known_servers: Iterable[ServerSpec]
) -> None:
    servers = _latest_servers(known_servers)
    servers.update(_latest_servers(s for _, s in found if isinstance(s, ServerSpec)))
    for label, spec in found:
        if isinstance(spec, AgentSpec):
            problem = reference_problem(spec, servers)
            if problem is not None:
                raise RegistryError(source, problem, label)


def reference_problem(agent: AgentSpec, servers: Mapping[str, ServerSpec]) -> str | None:
    """Why ``agent``'s grants do not fit the servers it names, or None.

    A grant is checked when its server is in ``servers`` and that server lists its
    tools (no OpenAPI document, at least one tool): the tool must exist, and a
    scoped argument must be one the tool takes when its input schema forbids
    other properties. Wildcard grants (``tool: "*"``) are not checked.

    Args:
        agent: the agent spec.
        servers: server id -> the server spec to check against.

    Returns:
        A one-line description of the first problem, or None.
    """
    for grant in agent.tools:
        server = servers.get(grant.server)
        if server is None or grant.tool == "*" or server.openapi is not None or not server.tools:
            continue
        tool = server.tool(grant.tool)
        if tool is None:
            return (
                f"agent {agent.ref} declares tool {grant.ref} which server {server.id} does not have"
                f" (it has: {', '.join(server.tool_names)})"
            )
        properties = tool.input_schema.get("properties")
        closed = tool.input_schema.get("additionalProperties") is False
        if not closed or not isinstance(properties, Mapping):
            continue
        for name in grant.scope:
            if name not in properties:
                takes = ", ".join(str(p) for p in properties) or "nothing"
                return (
                    f"agent {agent.ref} scopes argument {name} of {grant.ref}, which takes no such argument"
                    f" (it takes: {takes})"
                )
    return None
