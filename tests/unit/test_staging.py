"""Staging MCP servers through a real MCP client: behaviours, faults, records, transports."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import pytest_asyncio
from mcp import Client, StdioServerParameters
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agentlake.schemas import ToolCallCompleted, codec
from agentlake.sdk import MemoryEmitter, TracedSession, Tracer
from agentlake.settings import Settings
from agentlake.sim.reference import SHOP_TOOLS, shop_handler, shop_state
from agentlake.sim.staging import (
    ERROR_KIND_KEY,
    INJECTED_KEY,
    MALFORMED_TEXT,
    Faults,
    Fixture,
    FixtureBehaviour,
    ForwardBehaviour,
    HandlerBehaviour,
    HttpHandle,
    ReplayBehaviour,
    ReplayRecord,
    StagingServer,
    StagingSpec,
    ToolDef,
    argument_similarity,
    import_handler,
    load_staging_spec,
    serve_asgi,
    serve_http,
    tools_from_specs,
)

ANY_OBJECT: dict[str, Any] = {"type": "object"}


def shop(**kwargs: Any) -> StagingServer:
    """The reference shop as a staging server (handler behaviour over a seeded state)."""
    tools = tools_from_specs(SHOP_TOOLS, HandlerBehaviour(handler=shop_handler))
    return StagingServer(tools, shop_state(seed=1, ensure={5: "delivered", 6: "processing"}), **kwargs)


def kind(result: types.CallToolResult) -> Any:
    return (result.meta or {}).get(ERROR_KIND_KEY)


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def ping_server(**kwargs: Any) -> StagingServer:
    tool = ToolDef(name="ping", input_schema=ANY_OBJECT, behaviour=FixtureBehaviour(default={"pong": True}))
    return StagingServer([tool], **kwargs)


# ---------------------------------------------------------------------------
# tools, arguments, results


async def test_list_tools_returns_the_declared_schemas() -> None:
    async with Client(shop().server) as client:
        listed = await client.list_tools()
    assert [t.name for t in listed.tools] == [t["name"] for t in SHOP_TOOLS]
    for tool, spec in zip(listed.tools, SHOP_TOOLS, strict=True):
        assert tool.description == spec["description"]
        assert tool.input_schema == spec["input_schema"]


async def test_valid_call_returns_structured_content_and_json_text() -> None:
    staging = shop()
    async with Client(staging.server) as client:
        result = await client.call_tool("get_order", {"order_id": 5})
    assert not result.is_error
    assert result.structured_content == staging.state["orders"]["5"]
    assert json.loads(text(result)) == result.structured_content


async def test_invalid_arguments_are_rejected_with_the_schema_message() -> None:
    staging = shop()
    async with Client(staging.server) as client:
        wrong_type = await client.call_tool("get_order", {"order_id": "5"})
        missing = await client.call_tool("get_order", {})
        extra = await client.call_tool("get_order", {"order_id": 5, "verbose": True})
        unknown = await client.call_tool("delete_everything", {})
    for result in (wrong_type, missing, extra, unknown):
        assert result.is_error and kind(result) == "invalid_arguments"
        assert INJECTED_KEY not in (result.meta or {})  # the agent's fault, not staging's
    assert "'5' is not of type 'integer'" in text(wrong_type) and "(at order_id)" in text(wrong_type)
    assert "'order_id' is a required property" in text(missing)
    assert "Additional properties are not allowed" in text(extra)
    assert "unknown tool 'delete_everything'" in text(unknown) and "get_order" in text(unknown)
    assert staging.state["orders"]["5"]["status"] == "delivered"


async def test_non_object_results_are_text_only() -> None:
    tools = [
        ToolDef(name="names", behaviour=FixtureBehaviour(default=["ada", "grace"])),
        ToolDef(name="greeting", behaviour=FixtureBehaviour(default="hello there")),
        ToolDef(name="nothing", behaviour=FixtureBehaviour(default=None)),
    ]
    async with Client(StagingServer(tools).server) as client:
        names = await client.call_tool("names", {})
        greeting = await client.call_tool("greeting", {})
        nothing = await client.call_tool("nothing", {})
    assert names.structured_content is None and json.loads(text(names)) == ["ada", "grace"]
    assert greeting.structured_content is None and text(greeting) == "hello there"
    assert not nothing.is_error and text(nothing) == "null"


def test_invalid_input_schema_and_duplicate_names_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="must have type 'object'"):
        StagingServer([ToolDef(name="x", input_schema={"type": "objekt"})])
    with pytest.raises(ValueError, match="not valid JSON Schema at properties/n/minimum"):
        ToolDef(name="x", input_schema={"type": "object", "properties": {"n": {"minimum": "zero"}}})
    with pytest.raises(ValueError, match="must have type 'object'"):
        ToolDef(name="x", input_schema={"type": "array", "items": {}})
    with pytest.raises(ValueError, match="duplicate tool name 'x'"):
        StagingServer([ToolDef(name="x"), ToolDef(name="x")])


def test_tools_from_specs_accepts_dicts_and_objects() -> None:
    class Described:
        name = "lookup"
        description = "Look something up."
        inputSchema = {"type": "object", "properties": {"q": {"type": "string"}}}

    replay = ReplayBehaviour()
    tools = tools_from_specs([SHOP_TOOLS[0], Described()], {"lookup": replay})
    assert [t.name for t in tools] == ["get_order", "lookup"]
    assert tools[0].input_schema == SHOP_TOOLS[0]["input_schema"]
    assert tools[0].input_schema is not SHOP_TOOLS[0]["input_schema"]  # copied
    assert tools[1].description == "Look something up." and tools[1].input_schema == Described.inputSchema
    assert tools[0].behaviour is None and tools[1].behaviour == replay
    with pytest.raises(ValueError, match="has no name"):
        tools_from_specs([{"description": "nameless"}])


async def test_tool_without_behaviour_is_a_staging_gap() -> None:
    staging = StagingServer(tools_from_specs(SHOP_TOOLS))
    async with Client(staging.server) as client:
        result = await client.call_tool("get_order", {"order_id": 1})
    assert result.is_error and kind(result) == "not_configured" and result.meta[INJECTED_KEY] is True


# ---------------------------------------------------------------------------
# fixture behaviour


async def test_fixtures_first_subset_match_wins_then_default() -> None:
    behaviour = FixtureBehaviour(
        fixtures=[
            Fixture(match={"city": "Paris", "options": {"units": "metric"}}, result={"temp": 21}),
            Fixture(match={"city": "Paris"}, result={"temp": 70}),
            Fixture(match={"city": "Atlantis"}, error="no such city"),
            Fixture(match={"strict": True}, result={"bool": True}),
        ],
        default={"temp": None},
    )
    tool = ToolDef(name="weather", input_schema=ANY_OBJECT, behaviour=behaviour)
    async with Client(StagingServer([tool]).server) as client:
        metric = await client.call_tool("weather", {"city": "Paris", "options": {"units": "metric", "x": 1}})
        imperial = await client.call_tool("weather", {"city": "Paris", "options": {"units": "imperial"}})
        atlantis = await client.call_tool("weather", {"city": "Atlantis"})
        other = await client.call_tool("weather", {"city": "Oslo"})
        one_is_not_true = await client.call_tool("weather", {"strict": 1})
    assert metric.structured_content == {"temp": 21}
    assert imperial.structured_content == {"temp": 70}
    assert atlantis.is_error and kind(atlantis) == "tool_error" and text(atlantis) == "no such city"
    assert INJECTED_KEY not in (atlantis.meta or {})
    assert other.structured_content == {"temp": None}
    assert one_is_not_true.structured_content == {"temp": None}  # JSON equality: 1 is not true


async def test_fixture_default_error_and_miss() -> None:
    tools = [
        ToolDef(
            name="strict", behaviour=FixtureBehaviour(fixtures=[Fixture(match={"a": 1}, result={"ok": 1})])
        ),
        ToolDef(name="closed", behaviour=FixtureBehaviour(default_error="service closed")),
    ]
    async with Client(StagingServer(tools).server) as client:
        hit = await client.call_tool("strict", {"a": 1.0})
        miss = await client.call_tool("strict", {"a": 2})
        closed = await client.call_tool("closed", {})
    assert hit.structured_content == {"ok": 1}  # 1 == 1.0 in JSON
    assert miss.is_error and kind(miss) == "fixture_miss" and miss.meta[INJECTED_KEY] is True
    assert closed.is_error and kind(closed) == "tool_error" and text(closed) == "service closed"


# ---------------------------------------------------------------------------
# handler behaviour


async def test_handler_mutates_shared_state_and_reports_business_errors() -> None:
    staging = shop()
    async with Client(staging.server) as client:
        refund = await client.call_tool("refund_order", {"order_id": 5, "reason": "broken"})
        again = await client.call_tool("refund_order", {"order_id": 5})
        looked_up = await client.call_tool("get_order", {"order_id": 5})
        missing = await client.call_tool("get_order", {"order_id": 9999})
    assert refund.structured_content == {
        "order_id": 5,
        "status": "refunded",
        "amount": staging.state["orders"]["5"]["total"],
    }
    assert again.is_error and kind(again) == "tool_error" and "only delivered orders" in text(again)
    assert looked_up.structured_content["status"] == "refunded"  # the state is shared across tools
    assert missing.is_error and text(missing) == "order 9999 not found"
    assert staging.state["orders"]["5"]["status"] == "refunded"


async def counter(state: dict[str, Any], tool: str, args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    state["n"] = state.get("n", 0) + args.get("by", 1)
    return {"n": state["n"], "tool": tool}


def crashing(state: dict[str, Any], tool: str, args: dict[str, Any]) -> Any:
    raise KeyError("oops")


async def test_async_handler_imported_by_reference_and_crash_is_staging_error() -> None:
    tools = [
        ToolDef.model_validate(
            {"name": "count", "behaviour": {"kind": "handler", "handler": f"{__name__}:counter"}}
        ),
        ToolDef(name="crash", behaviour=HandlerBehaviour(handler=crashing)),
    ]
    staging = StagingServer(tools, {"n": 10})
    async with Client(staging.server) as client:
        first = await client.call_tool("count", {"by": 5})
        second = await client.call_tool("count", {})
        crash = await client.call_tool("crash", {})
    assert first.structured_content == {"n": 15, "tool": "count"}
    assert second.structured_content == {"n": 16, "tool": "count"}
    assert crash.is_error and kind(crash) == "staging_error" and crash.meta[INJECTED_KEY] is True
    assert "KeyError" in text(crash)
    assert tools[0].behaviour is not None
    assert tools[0].behaviour.model_dump()["handler"] == f"{__name__}:counter"


def test_handler_references_fail_with_one_line_messages() -> None:
    assert import_handler("agentlake.sim.reference:shop_handler") is shop_handler
    for ref, message in [
        ("agentlake.sim.reference.shop_handler", "must look like"),
        ("agentlake.nope:thing", "cannot import module"),
        ("agentlake.sim.reference:nope", "has no attribute"),
        ("agentlake.sim.reference:SHOP_TOOLS", "is not callable"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            import_handler(ref)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# replay behaviour


def test_argument_similarity() -> None:
    assert argument_similarity({}, {}) == 1.0
    assert argument_similarity({"a": 1}, {"a": 1}) == 1.0
    assert argument_similarity({"a": 1}, {"a": 2}) == 0.5
    assert argument_similarity({"a": 1}, {"b": 1}) == 0.0
    assert argument_similarity({"a": 1, "b": 2}, {"a": 1, "c": 3}) == pytest.approx(1 / 3)
    nested_a = {"customer": {"name": "ada", "city": "London"}, "items": [1, 2]}
    nested_b = {"customer": {"name": "ada", "city": "Paris"}, "items": [1, 3]}
    assert argument_similarity(nested_a, nested_b) == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    assert argument_similarity(nested_a, nested_b) == argument_similarity(nested_b, nested_a)


async def test_replay_exact_then_nearest_then_recorded_error() -> None:
    behaviour = ReplayBehaviour(
        records=[
            ReplayRecord(arguments={"customer": "ada", "status": "open"}, result={"orders": [1]}),
            ({"customer": "grace", "status": "open"}, {"orders": [2]}, False),
            ({"customer": "linus", "status": "closed"}, "customer is banned", True),
        ]
    )
    tool = ToolDef(name="search", input_schema=ANY_OBJECT, behaviour=behaviour)
    async with Client(StagingServer([tool]).server) as client:
        exact = await client.call_tool("search", {"customer": "grace", "status": "open"})
        near = await client.call_tool("search", {"customer": "ada", "status": "closed"})
        tie = await client.call_tool("search", {"customer": "ken", "status": "open"})
        error = await client.call_tool("search", {"customer": "linus", "status": "closed"})
    assert exact.structured_content == {"orders": [2]}
    assert exact.meta["agentlake/replay"] == {"exact": True, "similarity": 1.0}
    # ada/closed shares the customer with record 0 and the status with record 2: the earliest wins
    assert near.structured_content == {"orders": [1]}
    assert near.meta["agentlake/replay"] == {"exact": False, "similarity": 0.75}
    assert tie.structured_content == {"orders": [1]}
    assert error.is_error and kind(error) == "tool_error" and text(error) == "customer is banned"
    assert INJECTED_KEY not in (error.meta or {})  # a replayed error is the service's answer


async def test_replay_miss_without_records_or_below_min_similarity() -> None:
    tools = [
        ToolDef(name="empty", behaviour=ReplayBehaviour()),
        ToolDef(
            name="picky",
            behaviour=ReplayBehaviour(records=[({"a": 1, "b": 1}, {"ok": True})], min_similarity=0.8),
        ),
    ]
    async with Client(StagingServer(tools).server) as client:
        empty = await client.call_tool("empty", {"a": 1})
        close = await client.call_tool("picky", {"a": 1, "b": 1})
        far = await client.call_tool("picky", {"a": 1, "b": 2})
    assert empty.is_error and kind(empty) == "replay_miss" and empty.meta[INJECTED_KEY] is True
    assert close.structured_content == {"ok": True}
    assert far.is_error and kind(far) == "replay_miss"


# ---------------------------------------------------------------------------
# faults


async def fault_kinds(seed: int, n: int = 40, other_tool_calls: bool = False) -> list[str | None]:
    tools = [
        ToolDef(name="ping", behaviour=FixtureBehaviour(default={"pong": True})),
        ToolDef(name="other", behaviour=FixtureBehaviour(default={})),
    ]
    staging = StagingServer(tools, faults=Faults(error_rate=0.3, malformed_rate=0.2), seed=seed)
    async with Client(staging.server) as client:
        for _ in range(n):
            if other_tool_calls:
                await client.call_tool("other", {})
            await client.call_tool("ping", {})
    return [c.error_kind for c in staging.calls if c.tool == "ping"]


async def test_faults_are_reproducible_by_seed() -> None:
    first, again = await fault_kinds(7), await fault_kinds(7)
    assert first == again
    assert {"injected_error", "malformed", None} <= set(first)
    assert await fault_kinds(8) != first
    # each tool has its own generator: calls to other tools do not shift the sequence
    assert await fault_kinds(7, other_tool_calls=True) == first
    # and the sequence is the documented one: two draws per call from Random("seed:tool")
    rng = random.Random("7:ping")
    expected = []
    for _ in range(40):
        rng.random()
        u = rng.random()
        expected.append("injected_error" if u < 0.3 else "malformed" if u < 0.5 else None)
    assert first == expected


async def test_reset_restarts_faults_and_replaces_state() -> None:
    staging = ping_server(faults=Faults(error_rate=0.5), seed=3)
    async with Client(staging.server) as client:
        for _ in range(10):
            await client.call_tool("ping", {})
        first = [c.is_error for c in staging.calls]
        staging.reset({"fresh": True})
        assert staging.calls == [] and staging.state == {"fresh": True}
        for _ in range(10):
            await client.call_tool("ping", {})
    assert [c.is_error for c in staging.calls] == first
    assert any(first) and not all(first)


async def test_injected_error_is_attributed_to_staging_and_skips_the_behaviour() -> None:
    staging = shop(faults=Faults(error_rate=1.0, error_message="503 from upstream"))
    async with Client(staging.server) as client:
        result = await client.call_tool("refund_order", {"order_id": 5})
        invalid = await client.call_tool("refund_order", {"order_id": "5"})
    assert result.is_error and text(result) == "503 from upstream"
    assert result.meta[ERROR_KIND_KEY] == "injected_error" and result.meta[INJECTED_KEY] is True
    assert staging.state["orders"]["5"]["status"] == "delivered"
    assert kind(invalid) == "invalid_arguments"  # the schema check comes before faults


async def test_latency_is_injected() -> None:
    staging = ping_server(faults=Faults(latency_ms=60))
    async with Client(staging.server) as client:
        started = time.perf_counter()
        result = await client.call_tool("ping", {})
        elapsed = time.perf_counter() - started
    assert result.structured_content == {"pong": True}
    assert elapsed >= 0.06
    assert staging.calls[0].latency_ms >= 60


async def test_latency_range_is_respected() -> None:
    staging = ping_server(faults=Faults(latency_ms=(20, 40)), seed=1)
    async with Client(staging.server) as client:
        for _ in range(3):
            await client.call_tool("ping", {})
    assert all(c.latency_ms >= 20 for c in staging.calls)


async def test_timeout_waits_then_fails() -> None:
    staging = shop(faults=Faults(timeout_rate=1.0, timeout_s=0.1))
    async with Client(staging.server) as client:
        started = time.perf_counter()
        result = await client.call_tool("cancel_order", {"order_id": 6})
        elapsed = time.perf_counter() - started
    assert result.is_error and kind(result) == "timeout" and result.meta[INJECTED_KEY] is True
    assert elapsed >= 0.1
    assert staging.state["orders"]["6"]["status"] == "processing"
    assert staging.calls[0].latency_ms >= 100


async def test_malformed_answer_is_not_json_and_not_an_error() -> None:
    staging = ping_server(faults=Faults(malformed_rate=1.0))
    async with Client(staging.server) as client:
        result = await client.call_tool("ping", {})
    assert not result.is_error and result.structured_content is None
    assert text(result) == MALFORMED_TEXT
    with pytest.raises(json.JSONDecodeError):
        json.loads(text(result))
    assert result.meta[ERROR_KIND_KEY] == "malformed" and result.meta[INJECTED_KEY] is True
    [call] = staging.calls
    assert (call.is_error, call.error_kind, call.injected) == (False, "malformed", True)


async def test_tool_faults_override_the_server_default() -> None:
    tools = [
        ToolDef(name="flaky", behaviour=FixtureBehaviour(default={}), faults=Faults(error_rate=1.0)),
        ToolDef(name="steady", behaviour=FixtureBehaviour(default={})),
    ]
    staging = StagingServer(tools, faults=Faults(malformed_rate=1.0))
    async with Client(staging.server) as client:
        flaky = await client.call_tool("flaky", {})
        steady = await client.call_tool("steady", {})
    assert kind(flaky) == "injected_error" and kind(steady) == "malformed"


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="must not exceed 1"):
        Faults(error_rate=0.6, timeout_rate=0.5)
    with pytest.raises(ValueError, match="latency_ms"):
        Faults(latency_ms=(50, 10))
    with pytest.raises(ValueError):
        Faults(error_rate=1.5)


async def test_injected_kind_reaches_the_sdk_trajectory() -> None:
    em = MemoryEmitter()
    settings = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]
    tracer = Tracer("bot", "1.0", tenant="acme", emitter=em, settings=settings)
    staging = shop(faults=Faults(error_rate=1.0))
    async with Client(staging.server) as client, tracer.trajectory("refund 5") as trajectory:
        traced = TracedSession(client, trajectory, "shop")
        await traced.call_tool("refund_order", {"order_id": 5})
        trajectory.end("failure")
    [done] = [e for e in (codec().decode(v) for _, _, v in em.records) if isinstance(e, ToolCallCompleted)]
    assert done.is_error and done.error_kind == "injected_error"


# ---------------------------------------------------------------------------
# call records


async def test_every_call_is_recorded_for_the_grader() -> None:
    staging = shop()
    async with Client(staging.server) as client:
        await client.call_tool("get_order", {"order_id": 5})
        await client.call_tool("cancel_order", {"order_id": 5})
        await client.call_tool("get_order", {"order_id": "x"})
    assert [(c.tool, c.args, c.is_error, c.error_kind, c.injected) for c in staging.calls] == [
        ("get_order", {"order_id": 5}, False, None, False),
        ("cancel_order", {"order_id": 5}, True, "tool_error", False),
        ("get_order", {"order_id": "x"}, True, "invalid_arguments", False),
    ]
    assert staging.calls[0].result == staging.state["orders"]["5"]
    assert all(c.latency_ms >= 0 for c in staging.calls)


# ---------------------------------------------------------------------------
# YAML specs


SPEC_YAML = """
name: shop-staging
version: "2.0"
seed: 11
state:
  orders:
    "1": {order_id: 1, customer: ada, status: delivered, total: 12.5}
faults:
  latency_ms: [0, 2]
tools:
  - name: get_order
    description: Look an order up by id.
    input_schema:
      type: object
      properties: {order_id: {type: integer}}
      required: [order_id]
    behaviour: {kind: handler, handler: "agentlake.sim.reference:shop_handler"}
  - name: weather
    inputSchema: {type: object, properties: {city: {type: string}}}
    behaviour:
      kind: fixture
      fixtures:
        - match: {city: Paris}
          result: {temp: 21}
      default_error: unknown city
    faults: {error_rate: 0.0}
  - name: search
    behaviour:
      kind: replay
      records:
        - arguments: {q: shoes}
          result: {hits: 3}
  - name: upstream
    behaviour: {kind: forward, base_url: "http://127.0.0.1:9", method: post, path: "/things/{id}"}
"""


async def test_spec_from_yaml_builds_every_behaviour(tmp_path: Path) -> None:
    path = tmp_path / "staging.yaml"
    path.write_text(SPEC_YAML)
    spec = load_staging_spec(path)
    assert isinstance(spec, StagingSpec) and spec.seed == 11
    assert [type(t.behaviour).__name__ for t in spec.tools] == [
        "HandlerBehaviour",
        "FixtureBehaviour",
        "ReplayBehaviour",
        "ForwardBehaviour",
    ]
    assert spec.faults is not None and spec.faults.latency_range == (0, 2)
    upstream = spec.tools[3].behaviour
    assert (
        isinstance(upstream, ForwardBehaviour) and upstream.method == "POST" and upstream.path_args == ["id"]
    )
    staging = StagingServer.from_spec(path)
    assert staging.name == "shop-staging" and staging.seed == 11
    async with Client(staging.server) as client:
        order = await client.call_tool("get_order", {"order_id": 1})
        paris = await client.call_tool("weather", {"city": "Paris"})
        rome = await client.call_tool("weather", {"city": "Rome"})
        shoes = await client.call_tool("search", {"q": "shoes"})
    assert order.structured_content["customer"] == "ada"
    assert paris.structured_content == {"temp": 21} and text(rome) == "unknown city"
    assert shoes.structured_content == {"hits": 3}
    assert spec.state["orders"]["1"]["status"] == "delivered"  # the server got a copy


def test_bad_specs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_staging_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_staging_spec(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match=r"does not match any of the expected tags"):
        load_staging_spec({"tools": [{"name": "x", "behaviour": {"kind": "magic"}}]})
    with pytest.raises(ValueError, match="must look like"):
        load_staging_spec({"tools": [{"name": "x", "behaviour": {"kind": "handler", "handler": "nope"}}]})


# ---------------------------------------------------------------------------
# forward behaviour against a real HTTP server


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": [list(kv) for kv in request.query_params.multi_items()],
            "trace": request.headers.get("x-trace"),
            "token": request.headers.get("x-token"),
            "json": json.loads(body) if body else None,
        }
    )


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    if code == 204:
        return Response(status_code=204)
    return PlainTextResponse(f"status {code} body", status_code=code)


async def slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return JSONResponse({})


async def plain(request: Request) -> Response:
    return PlainTextResponse("just text")


ECHO_APP = Starlette(
    routes=[
        Route("/api/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/api/status/{code:int}", status, methods=["GET", "POST"]),
        Route("/api/slow", slow),
        Route("/api/plain", plain),
    ]
)


@pytest_asyncio.fixture(scope="module")
async def echo_api() -> AsyncIterator[str]:
    async with await serve_asgi(ECHO_APP) as handle:
        yield handle.url + "/api"


def forward_server(base_url: str, **tools: dict[str, Any]) -> StagingServer:
    return StagingServer(
        [
            ToolDef(
                name=name,
                input_schema=ANY_OBJECT,
                behaviour=ForwardBehaviour(**{"base_url": base_url, **spec}),
            )
            for name, spec in tools.items()
        ]
    )


async def test_forward_places_arguments_in_path_query_headers_and_body(echo_api: str) -> None:
    staging = forward_server(
        echo_api,
        get_item={"path": "/echo/items/{item_id}", "query": ["expand"], "headers": ["x-trace"]},
        search={"path": "/echo/search"},
        create={"method": "POST", "path": "/echo/items", "static_headers": {"x-token": "sandbox"}},
        update={"method": "PATCH", "path": "/echo/items/{item_id}", "body": ["name"], "query": ["dry_run"]},
        replace_tags={"method": "PUT", "path": "/echo/items/{item_id}/tags", "body_arg": "tags"},
    )
    async with Client(staging.server) as client:
        got = await client.call_tool("get_item", {"item_id": "a/b c", "expand": ["x", "y"], "x-trace": "t-1"})
        search = await client.call_tool("search", {"q": "shoes", "page": 2, "in_stock": True})
        created = await client.call_tool("create", {"name": "box", "size": {"w": 2}})
        updated = await client.call_tool(
            "update", {"item_id": 7, "name": "crate", "dry_run": False, "junk": 1}
        )
        tags = await client.call_tool("replace_tags", {"item_id": 7, "tags": ["red", "big"]})
    assert got.structured_content == {
        "method": "GET",
        "path": "/api/echo/items/a/b c",
        "query": [["expand", "x"], ["expand", "y"]],
        "trace": "t-1",
        "token": None,
        "json": None,
    }
    assert search.structured_content["query"] == [["q", "shoes"], ["page", "2"], ["in_stock", "true"]]
    assert created.structured_content["json"] == {"name": "box", "size": {"w": 2}}
    assert created.structured_content["token"] == "sandbox"
    assert updated.structured_content["json"] == {"name": "crate"}
    assert updated.structured_content["query"] == [["dry_run", "false"]]
    assert tags.structured_content["method"] == "PUT" and tags.structured_content["json"] == ["red", "big"]


async def test_forward_errors_carry_the_status_and_body(echo_api: str) -> None:
    staging = forward_server(
        echo_api,
        not_found={"path": "/status/404"},
        conflict={"method": "POST", "path": "/status/409"},
        no_content={"path": "/status/204"},
        text_answer={"path": "/plain"},
        slow={"path": "/slow", "timeout_s": 0.2},
        unreachable={"path": "/x", "base_url": "http://127.0.0.1:9"},
        missing_path_arg={"path": "/echo/{id}"},
    )
    async with Client(staging.server) as client:
        not_found = await client.call_tool("not_found", {})
        conflict = await client.call_tool("conflict", {"a": 1})
        no_content = await client.call_tool("no_content", {})
        text_answer = await client.call_tool("text_answer", {})
        slow_call = await client.call_tool("slow", {})
        unreachable = await client.call_tool("unreachable", {})
        missing = await client.call_tool("missing_path_arg", {})
    assert not_found.is_error and kind(not_found) == "tool_error"
    assert text(not_found).startswith("HTTP 404 from GET ") and "status 404 body" in text(not_found)
    assert not_found.meta["agentlake/http_status"] == 404
    assert text(conflict).startswith("HTTP 409 from POST ")
    assert no_content.structured_content == {"status": 204}
    assert text(text_answer) == "just text" and text_answer.structured_content is None
    assert slow_call.is_error and kind(slow_call) == "timeout" and INJECTED_KEY not in slow_call.meta
    assert unreachable.is_error and kind(unreachable) == "tool_error" and "ConnectError" in text(unreachable)
    assert kind(missing) == "invalid_arguments" and "missing path argument(s) id" in text(missing)


def test_forward_behaviour_is_validated() -> None:
    with pytest.raises(ValueError, match="absolute http"):
        ForwardBehaviour(base_url="/relative")
    with pytest.raises(ValueError, match="unsupported HTTP method"):
        ForwardBehaviour(base_url="http://x", method="FETCH")


# ---------------------------------------------------------------------------
# transports


async def test_streamable_http_serves_a_real_mcp_client() -> None:
    staging = shop()
    handle = await serve_http(staging)
    assert isinstance(handle, HttpHandle)
    assert handle.url.startswith("http://127.0.0.1:") and handle.url.endswith("/mcp")
    try:
        async with Client(handle.url) as client:
            listed = await client.list_tools()
            refund = await client.call_tool("refund_order", {"order_id": 5})
            invalid = await client.call_tool("refund_order", {"order_id": "5"})
    finally:
        await handle.close()
    assert len(listed.tools) == len(SHOP_TOOLS)
    assert refund.structured_content["status"] == "refunded"
    assert staging.state["orders"]["5"]["status"] == "refunded"
    assert invalid.is_error and kind(invalid) == "invalid_arguments"
    assert [c.tool for c in staging.calls] == ["refund_order", "refund_order"]


async def test_streamable_http_can_serve_twice_and_refuses_other_interfaces() -> None:
    staging = ping_server()
    for _ in range(2):
        async with await serve_http(staging) as handle, Client(handle.url) as client:
            assert (await client.call_tool("ping", {})).structured_content == {"pong": True}
    with pytest.raises(ValueError, match="loopback only"):
        await serve_http(staging, host="0.0.0.0")


def stdio_client_params(args: list[str], cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=args, cwd=str(cwd))


async def test_stdio_module_entry_serves_a_yaml_spec(tmp_path: Path) -> None:
    path = tmp_path / "staging.yaml"
    path.write_text(SPEC_YAML)
    params = stdio_client_params(["-m", "agentlake.sim.staging", str(path)], tmp_path)
    async with Client(params) as client:
        listed = await client.list_tools()
        order = await client.call_tool("get_order", {"order_id": 1})
        invalid = await client.call_tool("get_order", {"order_id": "1"})
    assert [t.name for t in listed.tools] == ["get_order", "weather", "search", "upstream"]
    assert order.structured_content["total"] == 12.5
    assert invalid.is_error and kind(invalid) == "invalid_arguments"


async def test_stdio_serves_a_server_built_in_python(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import anyio
        from agentlake.sim.reference import SHOP_TOOLS, shop_handler, shop_state
        from agentlake.sim.staging import HandlerBehaviour, StagingServer, serve_stdio, tools_from_specs

        tools = tools_from_specs(SHOP_TOOLS, HandlerBehaviour(handler=shop_handler))
        staging = StagingServer(tools, shop_state(seed=1, ensure={5: "delivered"}))
        print("this goes to stderr while serving")
        anyio.run(serve_stdio, staging)
        """
    )
    async with Client(stdio_client_params(["-c", code], tmp_path)) as client:
        refund = await client.call_tool("refund_order", {"order_id": 5})
        again = await client.call_tool("refund_order", {"order_id": 5})
    assert refund.structured_content["status"] == "refunded"
    assert again.is_error and kind(again) == "tool_error"


def test_module_entry_reports_a_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentlake.sim.staging import main

    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
