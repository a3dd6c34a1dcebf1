"""Tool policy: may this agent version make this tool call with these arguments?

This module owns the meaning of an agent's tool grants at call time: which
(server, tool) pairs are granted and whether the arguments of a call stay within
the grant's scope. `ScopePolicy` implements the stream processor's `ToolPolicy`
protocol. It is stateless (so ``max_calls`` is only exposed, not enforced) and
pure: no I/O, and it never raises on whatever arguments a call carries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from agentlake.registry._models import AgentSpec, ArgConstraint, ToolGrant

UNDECLARED_TOOL = "undeclared_tool"
OUT_OF_SCOPE = "out_of_scope"
_SHOWN = 80


class ScopePolicy:
    """The tool grants of one agent version, checked call by call.

    A grant for the exact tool wins over the server's wildcard grant (``tool: "*"``).

    Args:
        agent: the agent spec whose grants apply.
    """

    def __init__(self, agent: AgentSpec) -> None:
        self.agent = agent
        self._grants: dict[tuple[str, str], ToolGrant] = {(g.server, g.tool): g for g in agent.tools}

    def __repr__(self) -> str:
        return f"ScopePolicy({self.agent.ref})"

    def grant(self, server_id: str, tool: str) -> ToolGrant | None:
        """The grant that covers ``server_id``/``tool``, or None when the call is not granted."""
        if not isinstance(server_id, str) or not isinstance(tool, str):
            return None
        return self._grants.get((server_id, tool)) or self._grants.get((server_id, "*"))

    def max_calls(self, server_id: str, tool: str) -> int | None:
        """How many calls of this tool one trajectory may make (None: no limit, or not granted).

        A stateless `check` cannot count calls; the stream processor compares this
        limit with its per-trajectory count of calls to ``server_id``/``tool``.
        """
        grant = self.grant(server_id, tool)
        return grant.max_calls if grant is not None else None

    def check(self, server_id: str, tool: str, arguments: Any) -> tuple[str, str] | None:
        """Judge one tool call.

        Args:
            server_id: the MCP server called.
            tool: the tool called.
            arguments: the call's arguments, whatever they are (normally a dict; None means none).

        Returns:
            None when the call is granted and every scoped argument satisfies its
            constraint; else ``("undeclared_tool", detail)`` or ``("out_of_scope", detail)``
            where detail is one line, e.g. ``shop.refund_order: argument amount=900 exceeds max 500``.
            The first failing argument (in scope declaration order) is reported.
        """
        grant = self.grant(server_id, tool)
        if grant is None:
            return UNDECLARED_TOOL, f"{self.agent.ref} may not call {_name(server_id)}.{_name(tool)}"
        if not grant.scope:
            return None
        where = f"{server_id}.{tool}"
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            return OUT_OF_SCOPE, f"{where}: arguments must be an object, got {type(arguments).__name__}"
        for name, constraint in grant.scope.items():
            try:
                problem = violation(constraint, name, arguments)
            except Exception as e:  # a policy must answer; an uncheckable argument is out of scope
                problem = f"argument {name} could not be checked ({type(e).__name__})"
            if problem is not None:
                return OUT_OF_SCOPE, f"{where}: {problem}"
        return None


def violation(constraint: ArgConstraint, name: str, arguments: Mapping[Any, Any]) -> str | None:
    """Why argument ``name`` of ``arguments`` breaks ``constraint``, or None when it does not.

    Args:
        constraint: the scope of the argument.
        name: the argument's name.
        arguments: the call's arguments.

    Returns:
        One line such as ``argument amount=900 exceeds max 500``, or None.
    """
    if name not in arguments:
        return f"argument {name} is required" if constraint.required else None
    value = arguments[name]
    shown = f"argument {name}={_show(value)}"
    checks = constraint.constraints
    if "equals" in checks and not json_equal(value, constraint.equals):
        return f"{shown} must equal {_show(constraint.equals)}"
    if constraint.enum is not None and not any(json_equal(value, option) for option in constraint.enum):
        return f"{shown} is not one of {_show(constraint.enum)}"
    if constraint.min is not None or constraint.max is not None:
        if not _is_number(value):
            return f"{shown} is not a finite number"
        if constraint.min is not None and value < constraint.min:
            return f"{shown} is below min {_show(constraint.min)}"
        if constraint.max is not None and value > constraint.max:
            return f"{shown} exceeds max {_show(constraint.max)}"
    if constraint.max_length is not None:
        if not isinstance(value, str | list):
            return f"{shown} is not a string or a list (max_length {constraint.max_length})"
        if len(value) > constraint.max_length:
            return f"{shown} is longer than max_length {constraint.max_length}"
    if constraint.pattern is not None:
        if not isinstance(value, str):
            return f"{shown} is not a string (pattern {constraint.pattern!r})"
        if re.fullmatch(constraint.pattern, value) is None:
            return f"{shown} does not match pattern {constraint.pattern!r}"
    if constraint.prefix is not None:
        if not isinstance(value, str):
            return f"{shown} is not a string (prefix {constraint.prefix!r})"
        if not value.startswith(constraint.prefix):
            return f"{shown} does not start with {constraint.prefix!r}"
    return None


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0`` but ``true != 1`` and ``"1" != 1``.

    Args:
        a: a JSON value (dicts, lists, str, int, float, bool, None).
        b: another.

    Returns:
        Whether they are the same JSON value.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return False


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _name(value: Any) -> str:
    return value if isinstance(value, str) else _show(value)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
