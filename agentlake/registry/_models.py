"""Registry domain models: MCP servers with their tools, and agents with their tool grants.

This module owns the declared shape of everything the registry holds and the
validation of each spec on its own (ids, JSON Schemas, scope constraints, reward
specs). Checks that need several specs at once (does the granted tool exist on
the server?) live in `_load`. Pure pydantic: no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, TypeAlias

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from agentlake.streams.rewards import DEFAULT_SPEC, RewardSpec

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ENTRYPOINT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _short(text: str, limit: int = 200) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _identifier(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"must be non-empty and use only letters, digits, '_', '.' and '-' (got {value!r})")
    return value


def _version_input(value: Any) -> Any:
    # YAML reads `version: 1.10` as the float 1.1: refuse floats rather than guess.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f'write the version as a string, e.g. version: "{value}" (YAML read a number)')
    return value


def _tool_name(value: str) -> str:
    return value if value == "*" else _identifier(value)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _number(value: Any) -> int | float:
    # Strict: YAML `max: "500"` or `max: true` is a mistake, not a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a valid number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Input should be a finite number")
    return value


def _input_schema(value: dict[str, Any]) -> dict[str, Any]:
    _check_json_schema(value)
    if value.get("type") != "object":
        raise ValueError("an MCP tool's input_schema must have type: object at its root")
    return value


def _output_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        _check_json_schema(value)
    return value


def _check_json_schema(value: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        at = f" at {where}" if where else ""
        raise ValueError(f"not a valid JSON Schema{at}: {_short(e.message)}") from None


Identifier = Annotated[str, AfterValidator(_identifier)]
"""An id: non-empty, letters, digits, ``_``, ``.`` and ``-``."""

VersionString = Annotated[str, BeforeValidator(_version_input), AfterValidator(_identifier)]
"""A version: same alphabet as an id; an integer is accepted and turned into a string."""

Number = Annotated[int | float, PlainValidator(_number)]


def version_key(version: str) -> tuple[int, Version, str]:
    """Sort key for versions: PEP 440 order when parseable, else lexical.

    Parseable versions sort above unparseable ones; pre-releases sort below their
    release (``1.1-beta`` < ``1.1``) and above earlier releases (``1.0`` < ``1.1-beta``).
    The raw string breaks ties between equal versions (``1.0`` < ``1.0.0``).

    Args:
        version: the version string.

    Returns:
        A tuple that orders versions from oldest to newest.
    """
    try:
        return (1, Version(version), version)
    except InvalidVersion:
        return (0, Version("0"), version)


class ToolSpec(BaseModel):
    """One tool of an MCP server, as it would appear in ``tools/list``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Identifier
    description: str = ""
    input_schema: Annotated[dict[str, Any], AfterValidator(_input_schema)] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema (2020-12) of the arguments; its root must be type: object",
    )
    output_schema: Annotated[dict[str, Any] | None, AfterValidator(_output_schema)] = None


class ServerSpec(BaseModel):
    """An MCP server: how to reach it and which tools it offers.

    ``tools`` may be left empty when they come from an OpenAPI document
    (``openapi``) or are discovered at connection time; grants to such a server
    cannot be checked against its tool list.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    version: VersionString = "1"
    description: str = ""
    transport: Literal["memory", "stdio", "http"] = "memory"
    url: str | None = None
    command: list[str] | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    openapi: str | None = Field(default=None, description="path of an OpenAPI document the tools come from")

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[ToolSpec]) -> list[ToolSpec]:
        seen: set[str] = set()
        for t in tools:
            if t.name in seen:
                raise ValueError(f"tool {t.name!r} is declared twice")
            seen.add(t.name)
        return tools

    @model_validator(mode="after")
    def _reachable(self) -> ServerSpec:
        if self.transport == "http" and not self.url:
            raise ValueError("transport http needs a url")
        if self.transport == "stdio" and not self.command:
            raise ValueError("transport stdio needs a command (a list of strings, e.g. [python, -m, shop])")
        return self

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.id}@{self.version}"

    @property
    def tool_names(self) -> list[str]:
        """Names of the declared tools, in declaration order."""
        return [t.name for t in self.tools]

    def tool(self, name: str) -> ToolSpec | None:
        """The declared tool called ``name``, or None."""
        return next((t for t in self.tools if t.name == name), None)


_CONSTRAINTS = ("enum", "equals", "min", "max", "pattern", "max_length", "prefix")


class ArgConstraint(BaseModel):
    """What one argument of a granted tool may be. Every constraint set must hold.

    ``min``/``max`` need a number, ``pattern`` (a full match) and ``prefix`` a
    string, ``max_length`` a string or a list; ``enum`` and ``equals`` compare
    JSON values (``true`` is not ``1``). A missing argument is allowed unless
    ``required`` is true. ``equals: null`` is a constraint (the argument must be
    null); every other constraint is unset when null.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enum: list[Any] | None = None
    equals: Any = None
    min: Number | None = None
    max: Number | None = None
    pattern: str | None = None
    max_length: int | None = Field(default=None, ge=0, strict=True)
    prefix: str | None = None
    required: bool = Field(default=False, strict=True)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return pattern

    @field_validator("enum")
    @classmethod
    def _enum_not_empty(cls, enum: list[Any] | None) -> list[Any] | None:
        if enum is not None and not enum:
            raise ValueError("enum must list at least one value")
        return enum

    @model_validator(mode="after")
    def _meaningful(self) -> ArgConstraint:
        if not self.constraints and not self.required:
            raise ValueError(f"set at least one of {', '.join(_CONSTRAINTS)} (or required: true)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self

    @property
    def constraints(self) -> list[str]:
        """Names of the constraints that are set, in checking order."""
        return [
            name
            for name in _CONSTRAINTS
            if (name == "equals" and "equals" in self.model_fields_set)
            or (name != "equals" and getattr(self, name) is not None)
        ]

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Unset constraints are left out so that `equals: null` survives a round trip.
        data: dict[str, Any] = handler(self)
        keep = set(self.constraints) | {"required"}
        return {k: v for k, v in data.items() if k in keep}


class ToolGrant(BaseModel):
    """Permission for an agent to call one tool (or, with ``tool: "*"``, every tool) of a server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: Identifier
    tool: Annotated[str, AfterValidator(_tool_name)]
    scope: dict[str, ArgConstraint] = Field(default_factory=dict, description="argument name -> constraint")
    max_calls: int | None = Field(default=None, ge=1, strict=True, description="per trajectory, per tool")

    @field_validator("scope")
    @classmethod
    def _argument_names(cls, scope: dict[str, ArgConstraint]) -> dict[str, ArgConstraint]:
        for name in scope:
            if not name.strip():
                raise ValueError("argument names must not be empty")
        return scope

    @property
    def ref(self) -> str:
        """``server.tool``."""
        return f"{self.server}.{self.tool}"


class AgentSpec(BaseModel):
    """An agent version: who owns it, what it is for, which tools it may call, how it is scored.

    ``reward`` None means the built-in `DEFAULT_SPEC`. A declared reward spec must
    have its own ``id``: its ``id@version`` is recorded with every score.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier
    version: VersionString
    owner: Annotated[str, AfterValidator(_non_empty)]
    objective: Annotated[str, AfterValidator(_non_empty)]
    description: str = ""
    tools: list[ToolGrant] = Field(default_factory=list)
    reward: RewardSpec | None = None
    tags: list[str] = Field(default_factory=list)
    entrypoint: str | None = Field(default=None, description="'module:callable' that runs the agent")

    @field_validator("tools")
    @classmethod
    def _unique_grants(cls, tools: list[ToolGrant]) -> list[ToolGrant]:
        seen: set[tuple[str, str]] = set()
        for g in tools:
            if (g.server, g.tool) in seen:
                raise ValueError(f"{g.ref} is granted twice; merge the two grants")
            seen.add((g.server, g.tool))
        return tools

    @field_validator("reward")
    @classmethod
    def _named_reward(cls, reward: RewardSpec | None) -> RewardSpec | None:
        if reward is None:
            return None
        if "id" not in reward.model_fields_set:
            raise ValueError("a reward spec needs an id (its id@version is recorded with every score)")
        if reward.ref == DEFAULT_SPEC.ref and reward != DEFAULT_SPEC:
            raise ValueError(f"{DEFAULT_SPEC.ref} names the built-in default spec; give this spec its own id")
        return reward

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, entrypoint: str | None) -> str | None:
        if entrypoint is not None and not _ENTRYPOINT.fullmatch(entrypoint):
            raise ValueError(f"must look like 'package.module:callable' (got {entrypoint!r})")
        return entrypoint

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.id}@{self.version}"

    @property
    def reward_spec(self) -> RewardSpec:
        """The reward spec that scores this agent: its own, else `DEFAULT_SPEC`."""
        return self.reward if self.reward is not None else DEFAULT_SPEC


Spec: TypeAlias = AgentSpec | ServerSpec
"""Anything the registry holds."""

SpecKind = Literal["agent", "server"]
