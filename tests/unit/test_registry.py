"""The registry: file formats, one-line errors, scope policies and the read model."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlake.registry import (
    OUT_OF_SCOPE,
    UNDECLARED_TOOL,
    AgentSpec,
    ArgConstraint,
    Registry,
    RegistryError,
    ScopePolicy,
    ServerSpec,
    ToolGrant,
    ToolSpec,
    dump_spec,
    load_registry_file,
    parse_registry,
    spec_from_dict,
    spec_kind,
    version_key,
)
from agentlake.sim.reference import SHOP_TOOLS
from agentlake.streams.processor import AgentRules
from agentlake.streams.rewards import BUILTIN_COMPONENTS, DEFAULT_SPEC, ComponentSpec, RewardSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path: Path, text: str, name: str = "registry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def shop() -> ServerSpec:
    return ServerSpec(id="shop", version="1.0", tools=[ToolSpec.model_validate(t) for t in SHOP_TOOLS])


def agent(*grants: dict[str, Any], version: str = "1.0", **fields: Any) -> AgentSpec:
    data: dict[str, Any] = {
        "id": "support-bot",
        "version": version,
        "owner": "support-team",
        "objective": "resolve order questions",
        "tools": list(grants),
    }
    data.update(fields)
    return AgentSpec.model_validate(data)


def error_of(data: Any, source: str = "registry.yaml", **kwargs: Any) -> str:
    with pytest.raises(RegistryError) as info:
        parse_registry(data, source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: ")
    return message


AGENT = {"id": "bot", "version": "1", "owner": "me", "objective": "help"}


# --- file layouts ---------------------------------------------------------------------------


def test_lists_layout_gives_servers_then_agents(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        agents:
          - id: support-bot
            version: "1.0"
            owner: support-team
            objective: resolve order questions
            tools:
              - {server: shop, tool: get_order}
        servers:
          - id: shop
            tools:
              - name: get_order
                input_schema: {type: object, properties: {order_id: {type: integer}}}
        """,
    )
    specs = load_registry_file(path)
    assert [type(s) for s in specs] == [ServerSpec, AgentSpec]
    server, bot = specs
    assert isinstance(server, ServerSpec) and isinstance(bot, AgentSpec)
    assert server.ref == "shop@1" and server.transport == "memory" and server.tool_names == ["get_order"]
    assert bot.ref == "support-bot@1.0"
    assert bot.tools == [ToolGrant(server="shop", tool="get_order")]
    assert bot.reward is None and bot.reward_spec is DEFAULT_SPEC


def test_kind_documents_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        kind: server
        id: shop
        version: "2"
        transport: http
        url: http://localhost:8080/mcp
        tools:
          - name: get_order
        ---
        kind: agent
        id: support-bot
        version: 1.0-rc1
        owner: support-team
        objective: resolve order questions
        tools:
          - server: shop
            tool: get_order
        ---
        """,
    )
    specs = load_registry_file(path)
    assert [s.ref for s in specs] == ["shop@2", "support-bot@1.0-rc1"]
    server = specs[0]
    assert isinstance(server, ServerSpec)
    assert server.url == "http://localhost:8080/mcp"
    assert server.tools[0].input_schema == {"type": "object"}


def test_layouts_mix_across_documents_and_empty_input_declares_nothing() -> None:
    docs = [{"servers": [{"id": "shop"}]}, {"kind": "agent", **AGENT}, None]
    assert [s.ref for s in parse_registry(docs, "mixed.yaml")] == ["shop@1", "bot@1"]
    assert parse_registry(None, "empty.yaml") == []
    assert parse_registry({"agents": None, "servers": []}, "empty.yaml") == []


def test_integer_version_becomes_a_string_but_a_float_is_refused() -> None:
    assert spec_from_dict("agent", {**AGENT, "version": 2}).version == "2"
    message = error_of({"agents": [{**AGENT, "version": 1.10}]})
    assert message.startswith("registry.yaml: agents[0].version: write the version as a string")


# --- one-line errors naming the field -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {
                "agents": [
                    {**AGENT, "tools": [{"server": "s", "tool": "t", "scope": {"amount": {"max": "x"}}}]}
                ]
            },
            "registry.yaml: agents[0].tools[0].scope.amount.max: Input should be a valid number",
        ),
        (
            {"agents": [{**AGENT, "tools": [{"server": "s", "tool": "t", "scope": {"amount": {}}}]}]},
            "registry.yaml: agents[0].tools[0].scope.amount: set at least one of enum, equals, min, max, "
            "pattern, max_length, prefix (or required: true)",
        ),
        (
            {
                "agents": [
                    {**AGENT, "tools": [{"server": "s", "tool": "t", "scope": {"n": {"min": 5, "max": 1}}}]}
                ]
            },
            "registry.yaml: agents[0].tools[0].scope.n: min 5 is greater than max 1",
        ),
        (
            {
                "agents": [
                    {**AGENT, "tools": [{"server": "s", "tool": "t", "scope": {"n": {"pattern": "(a"}}}]}
                ]
            },
            "registry.yaml: agents[0].tools[0].scope.n.pattern: not a valid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            {"agents": [{**AGENT, "tools": [{"server": "s", "tool": "t", "scope": {"n": {"enum": []}}}]}]},
            "registry.yaml: agents[0].tools[0].scope.n.enum: enum must list at least one value",
        ),
        (
            {
                "agents": [
                    {**AGENT, "tools": [{"server": "s", "tool": "t", "scope": {"n": {"max_length": -1}}}]}
                ]
            },
            "registry.yaml: agents[0].tools[0].scope.n.max_length: "
            "Input should be greater than or equal to 0",
        ),
        (
            {"agents": [{**AGENT, "tools": [{"server": "s", "tool": "t", "max_calls": 0}]}]},
            "registry.yaml: agents[0].tools[0].max_calls: Input should be greater than or equal to 1",
        ),
        (
            {"agents": [{**AGENT, "tools": [{"server": "s", "tool": "t", "scop": {}}]}]},
            "registry.yaml: agents[0].tools[0].scop: Extra inputs are not permitted",
        ),
        (
            {"agents": [{**AGENT, "tools": [{"server": "s", "tool": "t"}, {"server": "s", "tool": "t"}]}]},
            "registry.yaml: agents[0].tools: s.t is granted twice; merge the two grants",
        ),
        (
            {"agents": [{**AGENT, "id": "support bot"}]},
            "registry.yaml: agents[0].id: must be non-empty and use only letters, digits, '_', '.' and '-' "
            "(got 'support bot')",
        ),
        (
            {"agents": [{**AGENT, "version": ""}]},
            "registry.yaml: agents[0].version: must be non-empty and use only letters, digits, "
            "'_', '.' and '-' (got '')",
        ),
        (
            {"agents": [{k: v for k, v in AGENT.items() if k != "owner"}]},
            "registry.yaml: agents[0].owner: Field required",
        ),
        (
            {"agents": [{**AGENT, "entrypoint": "not a callable"}]},
            "registry.yaml: agents[0].entrypoint: must look like 'package.module:callable' "
            "(got 'not a callable')",
        ),
        (
            {"agents": [{**AGENT, "reward": {"components": [{"name": "task_success"}]}}]},
            "registry.yaml: agents[0].reward: a reward spec needs an id "
            "(its id@version is recorded with every score)",
        ),
        (
            {"agents": [{**AGENT, "reward": {"id": "default", "components": [{"name": "latency"}]}}]},
            "registry.yaml: agents[0].reward: default@1 names the built-in default spec; "
            "give this spec its own id",
        ),
        (
            {"agents": [{**AGENT, "reward": {"id": "r", "components": [{"name": "speed"}]}}]},
            "registry.yaml: agents[0].reward.components[0]: unknown reward function 'speed': use one of "
            f"{sorted(BUILTIN_COMPONENTS)} or 'module:function'",
        ),
        (
            {"servers": [{"id": "shop", "tools": [{"name": "t", "input_schema": {"type": "strin"}}]}]},
            "registry.yaml: servers[0].tools[0].input_schema: not a valid JSON Schema at type: "
            "'strin' is not valid under any of the given schemas",
        ),
        (
            {"servers": [{"id": "shop", "tools": [{"name": "t", "input_schema": {"type": "string"}}]}]},
            "registry.yaml: servers[0].tools[0].input_schema: an MCP tool's input_schema must have "
            "type: object at its root",
        ),
        (
            {"servers": [{"id": "shop", "tools": [{"name": "t", "output_schema": {"minimum": "zero"}}]}]},
            "registry.yaml: servers[0].tools[0].output_schema: not a valid JSON Schema at minimum: "
            "'zero' is not of type 'number'",
        ),
        (
            {"servers": [{"id": "shop", "tools": [{"name": "t"}, {"name": "t"}]}]},
            "registry.yaml: servers[0].tools: tool 't' is declared twice",
        ),
        (
            {"servers": [{"id": "shop", "transport": "http"}]},
            "registry.yaml: servers[0]: transport http needs a url",
        ),
        (
            {"servers": [{"id": "shop", "transport": "stdio", "command": []}]},
            "registry.yaml: servers[0]: transport stdio needs a command "
            "(a list of strings, e.g. [python, -m, shop])",
        ),
        (
            {"servers": [{"id": "shop", "transport": "carrier-pigeon"}]},
            "registry.yaml: servers[0].transport: Input should be 'memory', 'stdio' or 'http'",
        ),
        (
            {"servers": [{"id": "shop"}, "oops"]},
            "registry.yaml: servers[1]: Input should be a valid dictionary or instance of ServerSpec",
        ),
        (
            {"servers": {"id": "shop"}},
            "registry.yaml: servers: must be a list of servers",
        ),
        (
            {"agent": []},
            "registry.yaml: agent: unknown key: a document holds servers: and/or agents: lists, "
            "or one spec with kind: agent|server",
        ),
        (
            {"kind": "robot", "id": "x"},
            "registry.yaml: kind: must be 'agent' or 'server' (got 'robot')",
        ),
        (
            {"kind": ["agent"], "id": "x"},
            "registry.yaml: kind: must be 'agent' or 'server' (got ['agent'])",
        ),
        (
            [{"kind": "server", "id": "shop"}, {"kind": "agent", **AGENT, "tags": "x"}],
            "registry.yaml: document 2: tags: Input should be a valid list",
        ),
        (
            [{"servers": []}, {"agents": [{**AGENT, "tools": [{"server": "s"}]}]}],
            "registry.yaml: document 2: agents[0].tools[0].tool: Field required",
        ),
        (
            ["just a string"],
            "registry.yaml: expected a mapping with servers: and/or agents: lists, "
            "or one spec with kind: agent|server",
        ),
    ],
)
def test_validation_errors_are_one_line_and_name_the_field(data: Any, expected: str) -> None:
    assert error_of(data) == expected


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    message = error_of({"agents": [{"id": "bot"}]})
    assert message == "registry.yaml: agents[0].version: Field required (and 2 more errors)"


def test_a_spec_declared_twice_is_refused() -> None:
    message = error_of({"servers": [{"id": "shop"}], "agents": [AGENT, {**AGENT, "owner": "you"}]})
    assert message == "registry.yaml: agents[1]: agent bot@1 is declared twice (first at agents[0])"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "agents:\n  - id: bot\n    version: '1'\n    owner: me: you\n")
    with pytest.raises(RegistryError) as info:
        load_registry_file(path)
    assert str(info.value) == f"{path}: line 4: mapping values are not allowed here"
    assert info.value.path == "line 4"


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "servers:\n  - id: shop\n    id: store\n")
    with pytest.raises(RegistryError, match=r": line 3: duplicate key 'id'$"):
        load_registry_file(path)


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        servers:
          - &base {id: shop, description: base}
          - {<<: *base, id: store}
        """,
    )
    assert [s.ref for s in load_registry_file(path)] == ["shop@1", "store@1"]


def test_missing_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"nope\.yaml: cannot read the file: No such file or directory$"):
        load_registry_file(tmp_path / "nope.yaml")


# --- cross references -----------------------------------------------------------------------


def test_grant_of_a_tool_the_server_does_not_have() -> None:
    data = {
        "servers": [dump_spec(shop())],
        "agents": [
            {**AGENT, "id": "ok-bot", "tools": [{"server": "shop", "tool": "get_order"}]},
            {**AGENT, "id": "support-bot", "version": "1.0", "tools": [{"server": "shop", "tool": "refund"}]},
        ],
    }
    assert error_of(data) == (
        "registry.yaml: agents[1]: agent support-bot@1.0 declares tool shop.refund which server shop does not"
        " have (it has: get_order, refund_order, cancel_order, search_orders)"
    )


def test_known_servers_are_checked_and_unknown_servers_are_not() -> None:
    bad = {"agents": [{**AGENT, "tools": [{"server": "shop", "tool": "refund"}]}]}
    assert "declares tool shop.refund which server shop does not have" in error_of(
        bad, known_servers=[shop()]
    )
    assert [s.ref for s in parse_registry(bad, "registry.yaml")] == ["bot@1"]


def test_servers_without_a_tool_list_and_wildcards_are_not_checked() -> None:
    data = {
        "servers": [{"id": "api", "openapi": "specs/api.yaml"}, {"id": "live"}, dump_spec(shop())],
        "agents": [
            {
                **AGENT,
                "tools": [
                    {"server": "api", "tool": "anything"},
                    {"server": "live", "tool": "whatever"},
                    {"server": "shop", "tool": "*", "scope": {"nonsense": {"max": 1}}},
                ],
            }
        ],
    }
    assert len(parse_registry(data, "registry.yaml")) == 4


def test_scoped_argument_the_tool_does_not_take() -> None:
    data = {
        "servers": [dump_spec(shop())],
        "agents": [
            {**AGENT, "tools": [{"server": "shop", "tool": "refund_order", "scope": {"amount": {"max": 5}}}]}
        ],
    }
    assert error_of(data) == (
        "registry.yaml: agents[0]: agent bot@1 scopes argument amount of shop.refund_order, which takes no"
        " such argument (it takes: order_id, reason)"
    )


def test_a_file_server_wins_over_a_known_server_with_the_same_id() -> None:
    newer = ServerSpec(id="shop", version="2.0", tools=[ToolSpec(name="refund")])
    data = {
        "servers": [dump_spec(newer)],
        "agents": [{**AGENT, "tools": [{"server": "shop", "tool": "refund"}]}],
    }
    assert len(parse_registry(data, "registry.yaml", known_servers=[shop()])) == 2


# --- scope policy ---------------------------------------------------------------------------


def policy(scope: dict[str, Any], tool: str = "refund_order", **grant: Any) -> ScopePolicy:
    return ScopePolicy(agent({"server": "shop", "tool": tool, "scope": scope, **grant}))


def test_undeclared_tool_and_other_server() -> None:
    p = policy({})
    assert p.check("shop", "refund_order", {"order_id": 1}) is None
    assert p.check("shop", "delete_all", {}) == (
        UNDECLARED_TOOL,
        "support-bot@1.0 may not call shop.delete_all",
    )
    assert p.check("bank", "refund_order", {}) == (
        UNDECLARED_TOOL,
        "support-bot@1.0 may not call bank.refund_order",
    )


def test_wildcard_grant_and_specific_grant_precedence() -> None:
    p = ScopePolicy(
        agent(
            {"server": "shop", "tool": "*", "max_calls": 10},
            {"server": "shop", "tool": "refund_order", "scope": {"amount": {"max": 500}}, "max_calls": 1},
        )
    )
    assert p.check("shop", "anything", {"amount": 10_000}) is None
    assert p.check("shop", "refund_order", {"amount": 900}) == (
        OUT_OF_SCOPE,
        "shop.refund_order: argument amount=900 exceeds max 500",
    )
    assert p.max_calls("shop", "refund_order") == 1
    assert p.max_calls("shop", "get_order") == 10
    assert p.max_calls("bank", "get_order") is None
    assert p.check("bank", "anything", {}) is not None


@pytest.mark.parametrize(
    ("constraint", "allowed", "denied", "detail"),
    [
        ({"max": 500}, [500, 0, -3, 499.5], 900, "argument amount=900 exceeds max 500"),
        ({"min": 1}, [1, 2.5, 10**30], 0, "argument amount=0 is below min 1"),
        ({"min": 0.5}, [0.5], 0.25, "argument amount=0.25 is below min 0.5"),
        ({"min": 1}, [], "5", 'argument amount="5" is not a finite number'),
        ({"max": 1}, [], True, "argument amount=true is not a finite number"),
        ({"max": 1}, [], float("nan"), "argument amount=NaN is not a finite number"),
        (
            {"enum": ["eur", "usd"]},
            ["eur", "usd"],
            "gbp",
            'argument amount="gbp" is not one of ["eur", "usd"]',
        ),
        ({"enum": [1, 2]}, [1, 2.0], True, "argument amount=true is not one of [1, 2]"),
        ({"equals": "full"}, ["full"], "half", 'argument amount="half" must equal "full"'),
        ({"equals": None}, [None], 0, "argument amount=0 must equal null"),
        (
            {"equals": {"a": [1]}},
            [{"a": [1.0]}],
            {"a": [1, 2]},
            'argument amount={"a": [1, 2]} must equal {"a": [1]}',
        ),
        (
            {"pattern": "ord-[0-9]+"},
            ["ord-1"],
            "ord-1x",
            "argument amount=\"ord-1x\" does not match pattern 'ord-[0-9]+'",
        ),
        ({"pattern": "a"}, [], 1, "argument amount=1 is not a string (pattern 'a')"),
        (
            {"max_length": 3},
            ["abc", "", [1, 2, 3]],
            "abcd",
            'argument amount="abcd" is longer than max_length 3',
        ),
        ({"max_length": 3}, [], [1, 2, 3, 4], "argument amount=[1, 2, 3, 4] is longer than max_length 3"),
        ({"max_length": 3}, [], 12, "argument amount=12 is not a string or a list (max_length 3)"),
        (
            {"prefix": "ord-"},
            ["ord-", "ord-9"],
            "xord-9",
            "argument amount=\"xord-9\" does not start with 'ord-'",
        ),
        ({"prefix": "ord-"}, [], None, "argument amount=null is not a string (prefix 'ord-')"),
        ({"min": 1, "max": 10, "required": True}, [5], 11, "argument amount=11 exceeds max 10"),
    ],
)
def test_each_constraint_allows_and_denies(
    constraint: dict[str, Any], allowed: list[Any], denied: Any, detail: str
) -> None:
    p = policy({"amount": constraint})
    for value in allowed:
        assert p.check("shop", "refund_order", {"amount": value, "other": "x"}) is None, value
    assert p.check("shop", "refund_order", {"amount": denied}) == (
        OUT_OF_SCOPE,
        f"shop.refund_order: {detail}",
    )


def test_missing_argument_is_allowed_unless_required() -> None:
    assert policy({"reason": {"max_length": 10}}).check("shop", "refund_order", {"order_id": 1}) is None
    assert policy({"reason": {"required": True}}).check("shop", "refund_order", {"order_id": 1}) == (
        OUT_OF_SCOPE,
        "shop.refund_order: argument reason is required",
    )
    assert policy({"reason": {"required": True}}).check("shop", "refund_order", {"reason": "x"}) is None


def test_first_failing_argument_in_declaration_order_is_reported() -> None:
    p = policy({"b": {"max": 1}, "a": {"max": 1}})
    assert p.check("shop", "refund_order", {"a": 5, "b": 5}) == (
        OUT_OF_SCOPE,
        "shop.refund_order: argument b=5 exceeds max 1",
    )


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "arguments",
    [
        None,
        [],
        "order_id=5",
        42,
        {1: 2},
        {"amount": {"nested": [1, {"deeper": None}]}},
        {"amount": Unprintable()},
        {"amount": 10**5000},
        {"amount": float("inf")},
        {"amount": [[[[[]]]]]},
        {(1, 2): "tuple key"},
    ],
)
def test_odd_arguments_never_raise(arguments: Any) -> None:
    p = ScopePolicy(
        agent(
            {"server": "shop", "tool": "refund_order", "scope": {"amount": {"min": 0, "max": 500}}},
            {
                "server": "shop",
                "tool": "get_order",
                "scope": {"amount": {"enum": [1], "pattern": "x", "prefix": "y"}},
            },
            {"server": "shop", "tool": "cancel_order"},
        )
    )
    for tool in ("refund_order", "get_order", "cancel_order", "nope"):
        verdict = p.check("shop", tool, arguments)
        assert verdict is None or (verdict[0] in (OUT_OF_SCOPE, UNDECLARED_TOOL) and "\n" not in verdict[1])
    assert p.check(None, None, arguments) == (UNDECLARED_TOOL, "support-bot@1.0 may not call null.null")  # type: ignore[arg-type]


def test_non_object_arguments_are_out_of_scope_only_when_scoped() -> None:
    p = ScopePolicy(
        agent(
            {"server": "shop", "tool": "refund_order", "scope": {"amount": {"max": 1}}},
            {"server": "shop", "tool": "get_order"},
        )
    )
    assert p.check("shop", "refund_order", [1]) == (
        OUT_OF_SCOPE,
        "shop.refund_order: arguments must be an object, got list",
    )
    assert p.check("shop", "refund_order", None) is None
    assert p.check("shop", "get_order", [1]) is None


def test_huge_values_are_shortened_in_details() -> None:
    verdict = policy({"amount": {"max_length": 1}}).check("shop", "refund_order", {"amount": "x" * 1000})
    assert verdict is not None and len(verdict[1]) < 200 and "…" in verdict[1]


def test_reference_agents_stay_in_scope_of_the_example() -> None:
    registry = Registry(load_registry_file(EXAMPLES / "registry.yaml"))
    for version in ("1.0", "1.1-beta"):
        p = registry.rules("support-bot", version).policy
        assert p is not None
        assert p.check("shop", "get_order", {"order_id": 42}) is None
        assert p.check("shop", "refund_order", {"order_id": 42}) is None
        assert (
            p.check("shop", "cancel_order", {"order_id": "42"}) is None
        )  # a schema problem, not a scope one
        assert p.check("shop", "search_orders", {"customer": "ada"}) == (
            UNDECLARED_TOOL,
            f"support-bot@{version} may not call shop.search_orders",
        )
        assert p.check("shop", "refund_order", {"order_id": 20_000}) == (
            OUT_OF_SCOPE,
            "shop.refund_order: argument order_id=20000 exceeds max 10000",
        )
        assert p.check("shop", "get_order", {}) == (
            OUT_OF_SCOPE,
            "shop.get_order: argument order_id is required",
        )
        assert p.check("shop", "delete_all", {}) == (
            UNDECLARED_TOOL,
            f"support-bot@{version} may not call shop.delete_all",
        )
        assert isinstance(p, ScopePolicy) and p.max_calls("shop", "refund_order") == 1


# --- registry read model --------------------------------------------------------------------


def test_versions_sort_pep440_then_lexically() -> None:
    versions = ["1.10", "1.1-beta", "main", "1.0", "1.1", "2.0rc1", "dev", "1.0.0"]
    assert sorted(versions, key=version_key) == [
        "dev",
        "main",
        "1.0",
        "1.0.0",
        "1.1-beta",
        "1.1",
        "1.10",
        "2.0rc1",
    ]


def test_latest_agent_is_the_highest_version_not_the_last_applied() -> None:
    registry = Registry([agent(version="1.10"), agent(version="1.9"), agent(version="1.1-beta")])
    latest = registry.agent("support-bot")
    assert latest is not None and latest.version == "1.10"
    assert [a.version for a in registry.agents()] == ["1.1-beta", "1.9", "1.10"]
    assert registry.agent("support-bot", "1.9") is not None
    assert registry.agent("support-bot", "3") is None
    assert registry.agent("nobody") is None


def test_apply_is_idempotent_and_replaces_the_same_version() -> None:
    registry = Registry()
    first = agent(version="1.0")
    assert registry.apply(first) is True
    assert registry.apply(agent(version="1.0")) is False
    changed = agent(version="1.0", objective="something else")
    assert registry.apply(changed) is True
    assert registry.agents() == [changed]
    assert registry.apply(shop()) is True and registry.apply(shop()) is False
    assert registry.servers() == [shop()]


def test_servers_by_id_and_version() -> None:
    registry = Registry([shop(), ServerSpec(id="shop", version="0.9"), ServerSpec(id="bank")])
    assert [s.ref for s in registry.servers()] == ["bank@1", "shop@0.9", "shop@1.0"]
    assert [s.ref for s in registry.servers("shop")] == ["shop@0.9", "shop@1.0"]
    latest = registry.server("shop")
    assert latest is not None and latest.version == "1.0"
    assert registry.server("shop", "0.9") is not None and registry.server("nope") is None


def test_rules_give_the_reward_spec_and_policy() -> None:
    reward = RewardSpec(id="support", version="2", components=[ComponentSpec(name="task_success", gate=1.0)])
    registry = Registry([agent({"server": "shop", "tool": "get_order"}, reward=reward), agent(version="2.0")])
    rules = registry.rules("support-bot", "1.0")
    assert rules.spec == reward and rules.spec.ref == "support@2"
    assert isinstance(rules.policy, ScopePolicy)
    assert rules.policy.check("shop", "refund_order", {}) == (
        UNDECLARED_TOOL,
        "support-bot@1.0 may not call shop.refund_order",
    )
    assert registry.rules("support-bot", "2.0").spec is DEFAULT_SPEC
    assert registry.rules("nobody", "1") == AgentRules()
    assert registry.rules("nobody", "1").policy is None


def test_rules_lookup_sees_later_applies() -> None:
    registry = Registry()
    lookup = registry.rules_lookup
    assert lookup("support-bot", "1.0").policy is None
    registry.apply(agent({"server": "shop", "tool": "get_order"}))
    policy_1 = lookup("support-bot", "1.0").policy
    assert policy_1 is not None and policy_1.check("shop", "get_order", {}) is None
    registry.apply(agent({"server": "shop", "tool": "cancel_order"}))
    policy_2 = lookup("support-bot", "1.0").policy
    assert policy_2 is not None and policy_2.check("shop", "get_order", {}) is not None


def test_rules_of_the_example_registry() -> None:
    registry = Registry(load_registry_file(EXAMPLES / "registry.yaml"))
    rules = registry.rules("support-bot", "1.0")
    components = {c.name: c for c in rules.spec.components}
    assert list(components) == [
        "task_success",
        "state_correctness",
        "expected_calls",
        "tool_efficiency",
        "tool_reliability",
        "valid_calls",
        "in_scope",
        "latency",
        "cost",
    ]
    assert components["task_success"].weight == 0.4 and components["task_success"].gate == 1.0
    assert sum(c.weight for c in components.values()) == pytest.approx(1.0)
    assert registry.rules("support-bot", "1.1-beta").spec == rules.spec


# --- JSON round trips -----------------------------------------------------------------------


def test_dump_spec_round_trips_through_json() -> None:
    specs = load_registry_file(EXAMPLES / "registry.yaml")
    odd = agent(
        {
            "server": "shop",
            "tool": "refund_order",
            "scope": {"x": {"equals": None}, "y": {"min": 1, "max": 2.5}},
        },
        reward=RewardSpec(id="r", components=[ComponentSpec(name="latency", params={"target_ms": 100})]),
        tags=["a"],
        entrypoint="pkg.mod:run",
    )
    for spec in [*specs, odd]:
        wire = json.loads(json.dumps(dump_spec(spec)))
        back = spec_from_dict(spec_kind(spec), wire)
        assert back == spec
        assert dump_spec(back) == wire
    scope = dump_spec(odd)["tools"][0]["scope"]
    assert scope == {"x": {"equals": None, "required": False}, "y": {"min": 1, "max": 2.5, "required": False}}


def test_equals_null_is_a_constraint_but_null_elsewhere_is_unset() -> None:
    assert ArgConstraint.model_validate({"equals": None}).constraints == ["equals"]
    with pytest.raises(ValueError, match="set at least one of"):
        ArgConstraint.model_validate({"max": None})
    assert ScopePolicy(agent({"server": "s", "tool": "t", "scope": {"x": {"equals": None}}})).check(
        "s", "t", {"x": 1}
    ) == (
        OUT_OF_SCOPE,
        "s.t: argument x=1 must equal null",
    )


def test_spec_from_dict_errors() -> None:
    with pytest.raises(RegistryError, match=r"^event: unknown spec kind 'robot': use 'agent' or 'server'$"):
        spec_from_dict("robot", {}, source="event")
    with pytest.raises(RegistryError, match=r"^event: owner: Field required$"):
        spec_from_dict("agent", {k: v for k, v in AGENT.items() if k != "owner"}, source="event")


def test_registry_snapshot_round_trip() -> None:
    registry = Registry(load_registry_file(EXAMPLES / "registry.yaml"))
    registry.apply(ServerSpec(id="bank", version="0.1", transport="stdio", command=["python", "-m", "bank"]))
    text = registry.to_json()
    again = Registry.from_json(text)
    assert again.to_json() == text
    assert again.agents() == registry.agents() and again.servers() == registry.servers()
    assert again.rules("support-bot", "1.0").spec == registry.rules("support-bot", "1.0").spec
    assert Registry.from_json(text.encode()).to_json() == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "{",
            "registry snapshot: not JSON: "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ('{"format": "other"}', "registry snapshot: not a agentlake.registry/1 snapshot"),
        (
            '{"format": "agentlake.registry/1", "agents": [{"id": "x"}]}',
            "registry snapshot: agents[0].version: Field required (and 2 more errors)",
        ),
        ('{"format": "agentlake.registry/1", "servers": {}}', "registry snapshot: servers: must be a list"),
    ],
)
def test_bad_snapshots(text: str, expected: str) -> None:
    with pytest.raises(RegistryError) as info:
        Registry.from_json(text)
    assert str(info.value) == expected


# --- the example files ----------------------------------------------------------------------


def test_example_registry_loads() -> None:
    specs = load_registry_file(EXAMPLES / "registry.yaml")
    assert [s.ref for s in specs] == ["shop@1.0", "support-bot@1.0", "support-bot@1.1-beta"]
    server = specs[0]
    assert isinstance(server, ServerSpec)
    assert [t.model_dump(exclude_defaults=True) for t in server.tools] == SHOP_TOOLS
    for bot in specs[1:]:
        assert isinstance(bot, AgentSpec)
        assert {g.tool for g in bot.tools} == {"get_order", "refund_order", "cancel_order"}
        assert bot.reward is not None and bot.reward.ref == "support@1"
        assert bot.owner and bot.objective
        refund = next(g for g in bot.tools if g.tool == "refund_order")
        assert refund.scope["order_id"] == ArgConstraint(min=1, max=10000, required=True)


def test_example_registry_is_plain_yaml_of_the_documented_shape() -> None:
    data = yaml.safe_load((EXAMPLES / "registry.yaml").read_text(encoding="utf-8"))
    assert set(data) == {"servers", "agents"}


def test_bad_example_fails_with_one_line() -> None:
    with pytest.raises(RegistryError) as info:
        load_registry_file(EXAMPLES / "bad-registry.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(
        "bad-registry.yaml: agents[0].tools[0].scope.order_id.max: Input should be a valid number"
    )


class HostileArguments(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(["amount"])

    def __len__(self) -> int:
        return 1


def test_an_argument_that_cannot_be_read_is_out_of_scope_not_an_exception() -> None:
    verdict = policy({"amount": {"max": 1}}).check("shop", "refund_order", HostileArguments())
    assert verdict == (OUT_OF_SCOPE, "shop.refund_order: argument amount could not be checked (RuntimeError)")


def test_grants_are_checked_against_the_latest_known_server_version() -> None:
    newer = ServerSpec(id="shop", version="2.0", tools=[ToolSpec(name="refund")])
    known = [newer, shop()]
    ok = {"agents": [{**AGENT, "tools": [{"server": "shop", "tool": "refund"}]}]}
    assert len(parse_registry(ok, "registry.yaml", known_servers=known)) == 1
    old_tool = {"agents": [{**AGENT, "tools": [{"server": "shop", "tool": "get_order"}]}]}
    assert error_of(old_tool, known_servers=known).endswith(
        "which server shop does not have (it has: refund)"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "params: {target_ms: 5000}",
            'params: {target_ms: "fast"}',
            "agents[0].reward.components[7]: params.target_ms: Input should be a valid number (got 'fast')",
        ),
        (
            "params: {budget_tokens: 4000}",
            "params: {budget_tokens: -4000}",
            "agents[0].reward.components[8]: params.budget_tokens: "
            "Input should be greater than 0 (got -4000)",
        ),
        (
            "params: {target_ms: 5000}",
            "params: {target_sec: 5}",
            "agents[0].reward.components[7]: params.target_sec: "
            "unknown param of latency: did you mean 'target_ms'?",
        ),
        (
            "weight: 0.05, params: {target_ms",
            "weight: .nan, params: {target_ms",
            "agents[0].reward.components[7].weight: Input should be a finite number",
        ),
    ],
)
def test_reward_params_that_cannot_work_are_refused_at_apply(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = (EXAMPLES / "registry.yaml").read_text(encoding="utf-8")
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1), "r_params.yaml")
    with pytest.raises(RegistryError) as e:
        load_registry_file(path)
    assert str(e.value) == f"{path}: {expected}"


def test_a_registry_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r_binary.yaml"
    path.write_bytes(b"\xd2W D\x98\x8a")
    with pytest.raises(
        RegistryError, match=r"r_binary\.yaml: not UTF-8 text: invalid continuation byte at byte 0$"
    ):
        load_registry_file(path)
