"""The policy vocabulary: what a token may say, in Biscuit Datalog. Pure, no I/O.

Facts the gateway supplies for every ``tools/call`` (the *request facts*)::

    server("shop")  tool("get_order")  operation("read")  resource("orders/42")
    task("t-17")    time(2026-11-30T15:00:00Z)  depth(1)  calls(3)
    arg("order_id", 42)                      # one per scalar argument

The authority block (block 0) of a minted token holds the grants and, as
*checks*, everything that must never be forgotten by a verification path::

    user("alice"); agent("support-bot");
    right("shop", "get_order", "read");     # tool-level scopes ("*" = any tool)
    check if time($t), $t <= 2026-11-30T15:30:00Z;          # expiry
    check if server($s), $s == "shop";                      # audience
    check if task($k), $k == "t-17";                        # task binding
    check if depth($d), $d <= 2;                            # delegation depth
    check if calls($n), $n < 20;                            # per-task budget
    check if resource($r), $r.matches("^orders/.*$");       # resource patterns
    check if tool($t), $t != "refund_order" or approved("t-17", $t) trusting ed25519/…;

A check whose fact is missing fails, so an authorizer that forgets `time` or
`server` denies. Attenuation blocks only add checks (facts in later blocks are
not trusted by the authorizer's policy), so every hop can only narrow; a later
expiry in a child block is still bounded by the parent's check.

Every value enters Datalog as a parameter, never by string interpolation.
"""

from __future__ import annotations

import fnmatch
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Operation = Literal["read", "write"]
OPERATIONS: tuple[str, ...] = ("read", "write")
ANY_TOOL = "*"
NAME_RE = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,200}$")
MAX_BUDGET = 2**63 - 1
"""The largest per-task call budget: Datalog integers are signed 64-bit."""
MAX_TOKEN_TTL = timedelta(days=365)
"""The longest lifetime a token is minted (or attenuated) with."""

# The authorizer's policies: allowed when the authority block grants the call's
# (server, tool, operation), or (server, "*", operation).
AUTHORIZER_POLICIES = """
allow if server($s), tool($t), operation($o), right($s, $t, $o);
allow if server($s), operation($o), right($s, "*", $o);
"""


class PolicyError(ValueError):
    """A grant, scope or request that cannot be expressed (bad name, empty audience, ...)."""


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise PolicyError(f"bad {what} {value!r}: use 1-200 of A-Z a-z 0-9 _ . : @ / + -")
    return value


def _task(value: str) -> str:
    """Task ids are free text (a trial id, a ticket number): 1-200 printable characters.
    They reach Datalog as parameters only, so no character is special."""
    if not isinstance(value, str) or not 0 < len(value) <= 200 or not value.isprintable():
        raise PolicyError(f"bad task id {value!r}: use 1-200 printable characters")
    return value


@dataclass(frozen=True)
class Grant:
    """One tool-level scope: `operation` on `tool` of MCP server `server` (`tool="*"`: any tool)."""

    server: str
    tool: str
    operation: str = "read"

    def __post_init__(self) -> None:
        _name(self.server, "server")
        if self.tool != ANY_TOOL:
            _name(self.tool, "tool")
        if self.operation not in OPERATIONS:
            raise PolicyError(f"bad operation {self.operation!r}: expected read or write")

    @classmethod
    def parse(cls, text: str) -> Grant:
        """``server:tool[:read|write]`` (operation defaults to read) -> Grant."""
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise PolicyError(f"bad grant {text!r}: expected SERVER:TOOL[:read|write]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "read")


@dataclass(frozen=True)
class TokenSpec:
    """What a minted (authority) block grants.

    Attributes:
        user: the human principal the agent acts for.
        agent: the agent the token is issued to.
        grants: tool-level scopes; the audience is the set of their servers.
        expires: absolute expiry (timezone-aware).
        task: binds the token to one task id (None: any task).
        max_depth: delegation hops allowed below this token (0: no delegation).
        budget: at most this many tool calls for the task (counted by the gateway).
        resources: resource globs (``orders/*``) the calls must match; empty: any.
        approval_tools: tools that need a human approval block for the task.
        approver_key: the approval service's public key, ``ed25519/<hex>`` (needed with approval_tools).
    """

    user: str
    agent: str
    grants: tuple[Grant, ...]
    expires: datetime
    task: str | None = None
    max_depth: int = 2
    budget: int | None = None
    resources: tuple[str, ...] = ()
    approval_tools: tuple[str, ...] = ()
    approver_key: str | None = None

    def __post_init__(self) -> None:
        _name(self.user, "user")
        _name(self.agent, "agent")
        if not self.grants:
            raise PolicyError("a token needs at least one grant (server:tool)")
        if self.expires.tzinfo is None:
            raise PolicyError("expiry must be timezone-aware")
        if self.task is not None:
            _task(self.task)
        if not 0 <= self.max_depth <= 16:
            raise PolicyError(f"max_depth {self.max_depth} out of range 0..16")
        if self.budget is not None and not 1 <= self.budget <= MAX_BUDGET:
            raise PolicyError(f"budget {self.budget} out of range: use 1..{MAX_BUDGET} calls")
        for t in self.approval_tools:
            _name(t, "tool")
        if self.approval_tools and not self.approver_key:
            raise PolicyError("approval_tools need the approval service's public key")

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(sorted({g.server for g in self.grants}))


@dataclass(frozen=True)
class Attenuation:
    """What an appended block narrows. Every field is optional; None leaves it unchanged.

    Attributes:
        delegate: the agent the attenuated token is handed to (recorded as ``delegate(..)``).
        tools: (server, tool) pairs the holder may still call.
        operations: operations still allowed.
        servers: audience narrowed to these servers.
        resources: resource globs the calls must match.
        expires: an earlier expiry (a later one is harmless: the parent's check still applies).
        task: bind to one task.
    """

    delegate: str | None = None
    tools: tuple[tuple[str, str], ...] | None = None
    operations: tuple[str, ...] | None = None
    servers: tuple[str, ...] | None = None
    resources: tuple[str, ...] = ()
    expires: datetime | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        if self.delegate is not None:
            _name(self.delegate, "agent")
        for s, t in self.tools or ():
            _name(s, "server")
            _name(t, "tool")
        for op in self.operations or ():
            if op not in OPERATIONS:
                raise PolicyError(f"bad operation {op!r}: expected read or write")
        for s in self.servers or ():
            _name(s, "server")
        if self.tools is not None and not self.tools:
            raise PolicyError("an empty tool list would deny everything; omit it to keep the parent's")
        if self.expires is not None and self.expires.tzinfo is None:
            raise PolicyError("expiry must be timezone-aware")
        if self.task is not None:
            _task(self.task)
        fields = (self.delegate, self.tools, self.operations, self.servers, self.expires, self.task)
        if all(f is None for f in fields) and not self.resources:
            raise PolicyError("an attenuation must narrow something or name a delegate")


def beyond_parent(att: Attenuation, rights: set[tuple[str, str, str]]) -> list[str]:
    """What `att` names that the parent's `rights` (``(server, tool, operation)``) never grant:
    ``SERVER:TOOL`` for tools, ``server SERVER`` for audiences, ``operation OP``. Empty when
    everything it names is granted. Naming them makes a token that allows less than intended
    (often nothing), so callers refuse it."""
    missing: list[str] = []
    for s, t in att.tools or ():
        if not any(rs == s and rt in (t, ANY_TOOL) for rs, rt, _ in rights):
            missing.append(f"{s}:{t}")
    for s in att.servers or ():
        if not any(rs == s for rs, _, _ in rights):
            missing.append(f"server {s}")
    for op in att.operations or ():
        if not any(ro == op for _, _, ro in rights):
            missing.append(f"operation {op}")
    return missing


def glob_regex(pattern: str) -> str:
    """A resource glob (``orders/4*``) as an anchored regex for Datalog's ``matches``."""
    if not pattern or len(pattern) > 200:
        raise PolicyError(f"bad resource pattern {pattern!r}")
    return "^" + fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z") + "$"


def _or(var: str, values: Sequence[str], prefix: str) -> tuple[str, dict[str, Any]]:
    """``$v == {p0} || $v == {p1}`` with the values as parameters."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return " || ".join(f"{var} == {{{k}}}" for k in params), params


def _resource_checks(resources: Sequence[str], prefix: str) -> tuple[list[str], dict[str, Any]]:
    if not resources:
        return [], {}
    params = {f"{prefix}{i}": glob_regex(p) for i, p in enumerate(resources)}
    body = " || ".join(f"$r.matches({{{k}}})" for k in params)
    return [f"check if resource($r), {body};"], params


def authority_block(spec: TokenSpec) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Datalog, parameters and scope parameters (public keys, ``ed25519/<hex>``) of the authority block."""
    lines = ["user({user});", "agent({agent});"]
    params: dict[str, Any] = {"user": spec.user, "agent": spec.agent, "exp": spec.expires}
    for i, g in enumerate(sorted(set(spec.grants), key=lambda g: (g.server, g.tool, g.operation))):
        lines.append(f"right({{gs{i}}}, {{gt{i}}}, {{go{i}}});")
        params.update({f"gs{i}": g.server, f"gt{i}": g.tool, f"go{i}": g.operation})
    lines.append("check if time($t), $t <= {exp};")
    body, p = _or("$s", spec.servers, "aud")
    lines.append(f"check if server($s), {body};")
    params.update(p)
    if spec.task is not None:
        lines.append("check if task($k), $k == {task};")
        params["task"] = spec.task
    lines.append("check if depth($d), $d <= {max_depth};")
    params["max_depth"] = spec.max_depth
    if spec.budget is not None:
        lines.append("check if calls($n), $n < {budget};")
        params["budget"] = spec.budget
    checks, p = _resource_checks(spec.resources, "res")
    lines += checks
    params.update(p)
    scope: dict[str, str] = {}
    for i, tool in enumerate(spec.approval_tools):
        params[f"ap{i}"] = tool
        if spec.task is not None:
            lines.append(
                f"check if tool($t), $t != {{ap{i}}} or task($k), approved($k, $t) trusting {{approver}};"
            )
        else:
            lines.append(f"check if tool($t), $t != {{ap{i}}} or approved($k, $t) trusting {{approver}};")
        scope["approver"] = spec.approver_key or ""
    return "\n".join(lines), params, scope


def attenuation_block(att: Attenuation) -> tuple[str, dict[str, Any]]:
    """Datalog and parameters of an attenuation block (checks only, plus a ``delegate`` fact)."""
    lines: list[str] = []
    params: dict[str, Any] = {}
    if att.delegate is not None:
        lines.append("delegate({delegate});")
        params["delegate"] = att.delegate
    if att.tools is not None:
        alts = []
        for i, (s, t) in enumerate(att.tools):
            alts.append(f"$s == {{ts{i}}} && $t == {{tt{i}}}")
            params.update({f"ts{i}": s, f"tt{i}": t})
        lines.append(f"check if server($s), tool($t), {' || '.join(alts)};")
    if att.operations is not None:
        body, p = _or("$o", att.operations, "op")
        lines.append(f"check if operation($o), {body};")
        params.update(p)
    if att.servers is not None:
        body, p = _or("$s", att.servers, "sv")
        lines.append(f"check if server($s), {body};")
        params.update(p)
    checks, p = _resource_checks(att.resources, "res")
    lines += checks
    params.update(p)
    if att.expires is not None:
        lines.append("check if time($t), $t <= {exp};")
        params["exp"] = att.expires
    if att.task is not None:
        lines.append("check if task($k), $k == {task};")
        params["task"] = att.task
    if not lines:
        raise PolicyError("an attenuation must narrow something or name a delegate")
    return "\n".join(lines), params


def approval_block(task: str | None, tool: str, expires: datetime) -> tuple[str, dict[str, Any]]:
    """The third-party block the approval service signs: one tool, one task, until `expires`."""
    _name(tool, "tool")
    return (
        "approved({task}, {tool});\ncheck if time($t), $t <= {exp};",
        {"task": task if task is not None else "*", "tool": tool, "exp": expires},
    )


# -- request facts -------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One ``tools/call`` as the authorizer sees it (all from the gateway, none from the token).

    Attributes:
        server: the MCP server the gateway fronts.
        tool: the tool called.
        operation: read or write (from the gateway's tool map or the tool's annotations).
        resource: the resource derived from the arguments (`derive_resource`).
        task: the task id the caller says it works on ("" when none).
        arguments: the call's arguments (scalars become ``arg(name, value)`` facts).
        time: the gateway's trusted clock (timezone-aware).
    """

    server: str
    tool: str
    operation: str
    resource: str
    task: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


def request_code(req: Request, depth: int, calls: int) -> tuple[str, dict[str, Any]]:
    """Datalog facts (and parameters) describing `req` to the authorizer."""
    lines = [
        "server({server});",
        "tool({tool});",
        "operation({operation});",
        "resource({resource});",
        "task({task});",
        "time({time});",
        "depth({depth});",
        "calls({calls});",
    ]
    params: dict[str, Any] = {
        "server": req.server,
        "tool": req.tool,
        "operation": req.operation,
        "resource": req.resource,
        "task": req.task,
        "time": req.time,
        "depth": depth,
        "calls": calls,
    }
    i = 0
    for k, v in sorted(req.arguments.items()):
        if not isinstance(k, str) or len(k) > 100 or i >= 32:
            continue
        scalar = isinstance(v, bool) or (isinstance(v, str) and len(v) <= 1000)
        if not (scalar or (isinstance(v, int) and -(2**63) <= v < 2**63)):
            continue
        lines.append(f"arg({{ak{i}}}, {{av{i}}});")
        params[f"ak{i}"] = k
        params[f"av{i}"] = v
        i += 1
    return "\n".join(lines), params


def derive_resource(server: str, tool: str, arguments: Mapping[str, Any], template: str | None) -> str:
    """The resource a call touches: `template` formatted with the arguments
    (``orders/{order_id}``; a missing argument renders empty), else ``server/tool``."""
    if not template:
        return f"{server}/{tool}"
    out = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            v = arguments.get(name, "")
            out.append(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str))
    return "".join(out)[:1000]
