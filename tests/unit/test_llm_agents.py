"""LLM agents against a real local OpenAI-compatible server and the real shop MCP server.

The "model" is a scripted Starlette app served over HTTP with `serve_asgi`; the
``model`` field of each request picks its behaviour. It records every request so
the tests can check what the client actually sent.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agentlake.schemas import AgentStep, Event, ToolCallCompleted, ToolCallRequested, TrajectoryEnded, codec
from agentlake.sdk import MemoryEmitter, TracedSession, Tracer, Trajectory
from agentlake.settings import Settings
from agentlake.sim.agents import (
    BUDGET_EXHAUSTED,
    OpenAIChatAgent,
    PersonaUser,
    ScriptedUser,
    UserChannel,
    UserSimulationError,
)
from agentlake.sim.export import tools_to_openai, trajectory_to_chat
from agentlake.sim.llm import ChatClient, LLMError
from agentlake.sim.reference import SHOP_TOOLS, shop_server, shop_state
from agentlake.sim.staging import serve_asgi

SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]
KEY = "sk-test-123"
NUMBER = re.compile(r"\d+")
PROVIDER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


# ---------------------------------------------------------------------------
# the scripted model


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant(content: str | None = None, *calls: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return message


def called_tool(messages: list[dict[str, Any]], tool_call_id: str) -> str:
    """The name of the tool a tool message answers (KeyError if the id was never issued)."""
    names = {
        c["id"]: c["function"]["name"]
        for m in messages
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or []
    }
    return str(names[tool_call_id])


def support_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Finds the order number in what the user said, looks it up, refunds it, says so."""
    said = " ".join(m["content"] for m in messages if m["role"] == "user")
    found = NUMBER.search(said)
    last = messages[-1]
    if found is None:
        return assistant("What is your order number?")
    oid = int(found.group())
    if last["role"] == "user":
        return assistant(
            f"Let me look up order {oid}.", tool_call("c1", "get_order", json.dumps({"order_id": oid}))
        )
    tool = called_tool(messages, last["tool_call_id"])
    if tool == "get_order":
        return assistant(
            None, tool_call("c2", "refund_order", json.dumps({"order_id": oid, "reason": "broken"}))
        )
    if last["content"].startswith("Error:"):
        return assistant(f"Cannot refund order {oid}.")
    return assistant(f"Order {oid} refunded.")


def persona_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Plays the customer: gives the order number from its hidden facts when asked."""
    system, agent_said = messages[0]["content"], messages[-1]["content"]
    if "order number" in agent_said:
        hidden = re.search(r'"order_id": (\d+)', system)
        return assistant(f"It's order {hidden.group(1)}." if hidden else "I don't know.")
    if "refunded" in agent_said:
        return assistant("DONE")
    return assistant("I just want my money back.")


class FakeOpenAI:
    """POST /v1/chat/completions; the request's ``model`` picks the behaviour."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])

    def bodies(self, model: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["body"]["model"] == model]

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "invalid api key\nprovided"}}, status_code=401)
        model, messages = body["model"], body["messages"]
        seen = len(self.bodies(model))
        if model == "always-500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if model == "flaky" and seen <= 2:
            return PlainTextResponse("overloaded", status_code=503, headers={"retry-after": "0"})
        if model == "not-json":
            return PlainTextResponse("<html>gateway</html>")
        if model == "no-choices":
            return JSONResponse({"choices": []})
        if model == "persona-broken":
            return JSONResponse({"error": {"message": "model persona-broken not found"}}, status_code=404)
        if model == "strict-names":  # what OpenAI does with a tool name it does not accept
            bad = [
                t["function"]["name"]
                for t in body.get("tools", [])
                if not PROVIDER_NAME.match(t["function"]["name"])
            ]
            if bad:
                return JSONResponse(
                    {"error": {"message": f"Invalid 'tools[0].function.name': {bad[0]}"}}, status_code=400
                )
        if model == "strict-names":
            message = (
                assistant(None, tool_call("s1", "orders_refund", '{"order_id": 5}'))
                if messages[-1]["role"] == "user"
                else assistant(f"Refunded: {messages[-1]['content']}")
            )
        elif model == "loop":
            message = assistant(None, tool_call(f"loop{seen}", "get_order", '{"order_id": 1}'))
        elif model == "bad-args":
            message = (
                assistant(None, tool_call("b1", "get_order", '{"order_id": 5'))
                if messages[-1]["role"] == "user"
                else assistant("Sorry, I sent broken arguments.")
            )
        elif model == "persona":
            message = persona_model(messages)
        else:
            message = support_model(messages)
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10 * len(messages), "completion_tokens": 7},
            }
        )


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[tuple[str, FakeOpenAI]]:
    fake = FakeOpenAI()
    async with await serve_asgi(fake.app, "127.0.0.1", 0) as handle:
        yield handle.url + "/v1", fake


@pytest.fixture
def fake(server: tuple[str, FakeOpenAI]) -> FakeOpenAI:
    server[1].requests.clear()
    return server[1]


@pytest.fixture
def base_url(server: tuple[str, FakeOpenAI]) -> str:
    return server[0]


# ---------------------------------------------------------------------------
# helpers


def events(em: MemoryEmitter) -> list[Event]:
    return [codec().decode(v) for _, _, v in em.records]


def steps(evs: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.content) for e in evs if isinstance(e, AgentStep)]


def calls(evs: list[Event]) -> list[tuple[str, Any]]:
    return [(e.tool, e.arguments.value()) for e in evs if isinstance(e, ToolCallRequested)]


def ended(evs: list[Event]) -> TrajectoryEnded:
    (end,) = [e for e in evs if isinstance(e, TrajectoryEnded)]
    return end


async def run_agent(
    base_url: str,
    model: str,
    task: str,
    state: dict[str, Any],
    *,
    user: UserChannel | None = None,
    max_steps: int = 10,
) -> tuple[str, list[Event], Trajectory]:
    em = MemoryEmitter()
    tracer = Tracer("llm-bot", "0.1", emitter=em, settings=SETTINGS)
    async with ChatClient(base_url, KEY, model, max_retries=0) as llm, Client(shop_server(state)) as client:
        trajectory = tracer.trajectory(task)
        agent = OpenAIChatAgent(llm, max_steps=max_steps)
        answer = await agent(task, TracedSession(client, trajectory, "shop"), trajectory, user=user)
    return answer, events(em), trajectory


# ---------------------------------------------------------------------------
# the agent loop


async def test_agent_refunds_an_order_through_the_real_mcp_server(base_url: str, fake: FakeOpenAI) -> None:
    state = shop_state(seed=3, ensure={5: "delivered"})
    answer, evs, trajectory = await run_agent(base_url, "support", "Please refund order 5, it broke.", state)

    assert answer == "Order 5 refunded."
    assert state["orders"]["5"]["status"] == "refunded"
    assert [e.record for e in evs] == [
        "TrajectoryStarted",
        "AgentStep",
        "ToolCallRequested",
        "ToolCallCompleted",
        "AgentStep",
        "ToolCallRequested",
        "ToolCallCompleted",
        "AgentStep",
        "TrajectoryEnded",
    ]
    assert steps(evs) == [
        ("thought", "Let me look up order 5."),
        ("thought", ""),
        ("final", "Order 5 refunded."),
    ]
    assert calls(evs) == [
        ("get_order", {"order_id": 5}),
        ("refund_order", {"order_id": 5, "reason": "broken"}),
    ]
    assert [(e.is_error, e.server_id) for e in evs if isinstance(e, ToolCallCompleted)] == [
        (False, "shop"),
        (False, "shop"),
    ]
    token_use = [(e.tokens_in, e.tokens_out) for e in evs if isinstance(e, AgentStep)]
    assert token_use == [(20, 7), (40, 7), (60, 7)]  # usage of each turn, on its step
    end = ended(evs)
    assert (end.outcome, end.final_answer) == ("success", "Order 5 refunded.")
    assert trajectory.ended

    first, second, third = fake.bodies("support")
    assert all(r["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    assert [t["function"]["name"] for t in first["tools"]] == [t["name"] for t in SHOP_TOOLS]
    assert first["tools"] == tools_to_openai(SHOP_TOOLS)
    assert first["tools"][0]["function"]["parameters"]["properties"] == {"order_id": {"type": "integer"}}
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][1]["content"] == "Please refund order 5, it broke."
    assert first["temperature"] == 0 and "seed" not in first

    tool_msg = second["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "c1"
    assert json.loads(tool_msg["content"])["status"] == "delivered"
    assert second["messages"][-2]["tool_calls"][0]["id"] == "c1"
    assert third["messages"][-1]["tool_call_id"] == "c2"
    assert json.loads(third["messages"][-1]["content"]) == {
        "order_id": 5,
        "status": "refunded",
        "amount": state["orders"]["5"]["total"],
    }


async def test_tool_errors_go_back_to_the_model(base_url: str, fake: FakeOpenAI) -> None:
    state = shop_state(seed=3, ensure={5: "shipped"})
    answer, evs, _ = await run_agent(base_url, "support", "Please refund order 5.", state)

    assert answer == "Cannot refund order 5."
    assert state["orders"]["5"]["status"] == "shipped"
    refund = [e for e in evs if isinstance(e, ToolCallCompleted)][-1]
    assert refund.is_error and refund.error_kind == "tool_error"
    sent = fake.bodies("support")[-1]["messages"][-1]["content"]
    assert sent == "Error: order 5 is shipped, only delivered orders are refunded"
    assert ended(evs).outcome == "success"  # the agent answered; whether it is right is the grader's call


async def test_step_budget_exhausted_ends_in_failure(base_url: str, fake: FakeOpenAI) -> None:
    answer, evs, trajectory = await run_agent(base_url, "loop", "Refund order 1.", shop_state(), max_steps=3)

    assert answer == BUDGET_EXHAUSTED
    assert len(fake.bodies("loop")) == 3
    assert calls(evs) == [("get_order", {"order_id": 1})] * 3
    assert [k for k, _ in steps(evs)] == ["thought"] * 3
    end = ended(evs)
    assert (end.outcome, end.final_answer) == ("failure", BUDGET_EXHAUSTED)
    assert trajectory.outcome == "failure"


async def test_an_ended_trajectory_is_not_ended_again(base_url: str, fake: FakeOpenAI) -> None:
    em = MemoryEmitter()
    tracer = Tracer("llm-bot", "0.1", emitter=em, settings=SETTINGS)
    async with ChatClient(base_url, KEY, "loop") as llm, Client(shop_server(shop_state())) as client:
        t = tracer.trajectory("Refund order 1.")
        t.end("aborted", final_answer="stopped by the operator")
        answer = await OpenAIChatAgent(llm, max_steps=1)(
            "Refund order 1.", TracedSession(client, t, "shop"), t
        )
    assert answer == BUDGET_EXHAUSTED
    end = ended(events(em))
    assert (end.outcome, end.final_answer) == ("aborted", "stopped by the operator")


async def test_bad_tool_call_json_is_reported_to_the_model(base_url: str, fake: FakeOpenAI) -> None:
    answer, evs, _ = await run_agent(base_url, "bad-args", "Refund order 5.", shop_state())

    assert answer == "Sorry, I sent broken arguments."
    requested = next(e for e in evs if isinstance(e, ToolCallRequested))
    completed = next(e for e in evs if isinstance(e, ToolCallCompleted))
    assert requested.tool == "get_order" and requested.arguments.json_ == '{"order_id": 5'
    assert completed.is_error and completed.error_kind == "invalid_arguments"
    tool_msg = fake.bodies("bad-args")[1]["messages"][-1]
    assert tool_msg["tool_call_id"] == "b1"
    assert tool_msg["content"].startswith("Error: arguments of get_order are not valid JSON")
    assert ended(evs).outcome == "success"


# ---------------------------------------------------------------------------
# the HTTP client


async def test_http_500_is_retried_then_raises_llm_error(base_url: str, fake: FakeOpenAI) -> None:
    async with ChatClient(base_url, KEY, "always-500", max_retries=2, backoff_s=0) as llm:
        with pytest.raises(LLMError) as info:
            await llm.complete([{"role": "user", "content": "hi"}])
    assert info.value.status == 500
    assert "HTTP 500: boom" in str(info.value) and "after 3 attempts" in str(info.value)
    assert len(fake.bodies("always-500")) == 3


async def test_503_then_success_is_retried_transparently(base_url: str, fake: FakeOpenAI) -> None:
    async with ChatClient(base_url, KEY, "flaky", max_retries=3, backoff_s=0) as llm:
        reply = await llm.complete([{"role": "user", "content": "refund order 9"}], seed=42)
    assert len(fake.bodies("flaky")) == 3
    assert reply.tool_calls[0]["function"]["name"] == "get_order"
    assert reply.content == "Let me look up order 9."
    assert (reply.tokens_in, reply.tokens_out) == (10, 7)
    assert reply.raw["id"].startswith("chatcmpl-")
    assert fake.bodies("flaky")[-1]["seed"] == 42


async def test_client_errors_are_one_line_and_not_retried(base_url: str, fake: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": "hi"}]
    async with ChatClient(base_url, "wrong-key", "support", backoff_s=0) as llm:
        with pytest.raises(LLMError, match=r"HTTP 401: invalid api key provided$") as info:
            await llm.complete(messages)
    assert info.value.status == 401 and len(fake.requests) == 1

    async with ChatClient(base_url, KEY, "not-json", backoff_s=0) as llm:
        with pytest.raises(LLMError, match="not JSON: '<html>gateway</html>'"):
            await llm.complete(messages)
    async with ChatClient(base_url, KEY, "no-choices", backoff_s=0) as llm:
        with pytest.raises(LLMError, match="returned no choices"):
            await llm.complete(messages)


async def test_unreachable_server_raises_llm_error_after_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ChatClient(f"http://127.0.0.1:{port}/v1", None, "m", max_retries=1, backoff_s=0) as llm:
        with pytest.raises(LLMError, match="failed after 2 attempt") as info:
            await llm.complete([{"role": "user", "content": "hi"}])
    assert info.value.status is None and "\n" not in str(info.value)


def test_from_env_reads_the_openai_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("AGENTLAKE_LLM_MODEL", "env-model")
    client = ChatClient.from_env()
    assert (client.url, client.api_key, client.model) == (
        "http://127.0.0.1:9/v1/chat/completions",
        "sk-env",
        "env-model",
    )
    assert ChatClient.from_env(model="other").model == "other"
    monkeypatch.delenv("AGENTLAKE_LLM_MODEL")
    with pytest.raises(ValueError, match="AGENTLAKE_LLM_MODEL"):
        ChatClient.from_env()


async def test_an_llm_error_leaves_the_trajectory_to_its_context_manager(
    base_url: str, fake: FakeOpenAI
) -> None:
    em = MemoryEmitter()
    tracer = Tracer("llm-bot", "0.1", emitter=em, settings=SETTINGS)
    async with ChatClient(base_url, KEY, "always-500", max_retries=0) as llm, Client(shop_server()) as client:
        with pytest.raises(LLMError):
            async with tracer.trajectory("Refund order 5.") as t:
                await OpenAIChatAgent(llm)("Refund order 5.", TracedSession(client, t, "shop"), t)
    end = ended(events(em))
    assert end.outcome == "error" and end.error is not None and end.error.startswith("LLMError: ")


# ---------------------------------------------------------------------------
# simulated users


async def test_scripted_user_answers_the_agents_question(base_url: str, fake: FakeOpenAI) -> None:
    state = shop_state(seed=3, ensure={5: "delivered"})
    user = ScriptedUser(["It's order 5."])
    answer, evs, _ = await run_agent(
        base_url, "support", "I want a refund, it arrived broken.", state, user=user
    )

    assert answer == "Order 5 refunded."
    assert user.received == ["What is your order number?"]
    assert state["orders"]["5"]["status"] == "refunded"
    assert steps(evs) == [
        ("message", "What is your order number?"),
        ("user", "It's order 5."),
        ("thought", "Let me look up order 5."),
        ("thought", ""),
        ("final", "Order 5 refunded."),
    ]
    second = fake.bodies("support")[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[-1]["content"] == "It's order 5."


async def test_a_question_without_an_answer_is_the_final_answer(base_url: str, fake: FakeOpenAI) -> None:
    for user in (None, ScriptedUser([])):
        answer, evs, _ = await run_agent(base_url, "support", "I want a refund.", shop_state(), user=user)
        assert answer == "What is your order number?"
        assert steps(evs) == [("final", "What is your order number?")]
        assert (ended(evs).outcome, ended(evs).final_answer) == ("success", "What is your order number?")


async def test_persona_user_played_by_the_same_server(base_url: str, fake: FakeOpenAI) -> None:
    state = shop_state(seed=3, ensure={5: "delivered"})
    task = "I want a refund, my lamp arrived broken."
    async with ChatClient(base_url, KEY, "persona") as persona_llm:
        persona = PersonaUser(
            persona_llm,
            "You bought a lamp that arrived broken and want your money back.",
            hidden_info={"order_id": 5},
            opening=task,
        )
        answer, evs, _ = await run_agent(base_url, "support", task, state, user=persona)

        assert answer == "Order 5 refunded."
        assert state["orders"]["5"]["status"] == "refunded"
        assert ("user", "It's order 5.") in steps(evs)
        (request,) = fake.bodies("persona")
        system = request["messages"][0]
        assert system["role"] == "system" and "lamp that arrived broken" in system["content"]
        assert '"order_id": 5' in system["content"] and "DONE" in system["content"]
        # the conversation from the user's side: its own turns are "assistant"
        assert [(m["role"], m["content"]) for m in request["messages"][1:]] == [
            ("assistant", task),
            ("user", "What is your order number?"),
        ]
        assert persona.turns == 1

        assert await persona.reply("Order 5 refunded. Anything else?") is None  # the model said DONE
        assert persona.turns == 2


async def test_persona_stops_after_max_turns_without_calling_the_model(
    base_url: str, fake: FakeOpenAI
) -> None:
    async with ChatClient(base_url, KEY, "support") as llm:
        persona = PersonaUser(llm, "A customer.", max_turns=1, model="persona")
        assert await persona.reply("Can I help?") == "I just want my money back."
        assert await persona.reply("Anything else?") is None
    assert len(fake.bodies("persona")) == 1 and not fake.bodies("support")


async def test_persona_model_failure_is_a_user_simulation_error(base_url: str, fake: FakeOpenAI) -> None:
    em = MemoryEmitter()
    tracer = Tracer("llm-bot", "0.1", emitter=em, settings=SETTINGS)
    async with (
        ChatClient(base_url, KEY, "support", max_retries=0) as llm,
        ChatClient(base_url, KEY, "persona-broken", max_retries=0) as broken,
        Client(shop_server()) as client,
    ):
        t = tracer.trajectory("I want a refund.")
        user = PersonaUser(broken, "A customer.", hidden_info="order 5")
        with pytest.raises(UserSimulationError, match=r"simulated user.s model failed: .*HTTP 404") as info:
            await OpenAIChatAgent(llm)("I want a refund.", TracedSession(client, t, "shop"), t, user=user)
    assert isinstance(info.value.__cause__, LLMError)
    assert not t.ended  # the caller decides how a user failure ends the trajectory
    assert steps(events(em)) == [("message", "What is your order number?")]


# ---------------------------------------------------------------------------
# export of what the agent did


async def test_export_reproduces_the_conversation_the_model_saw(base_url: str, fake: FakeOpenAI) -> None:
    state = shop_state(seed=3, ensure={5: "delivered"})
    user = ScriptedUser(["It's order 5."])
    answer, evs, _ = await run_agent(
        base_url, "support", "I want a refund, it arrived broken.", state, user=user
    )
    rows = [ev.model_dump(by_alias=True) | {"record": ev.record} for ev in evs]
    last_request = fake.bodies("support")[-1]

    row = trajectory_to_chat(
        rows, system_prompt=last_request["messages"][0]["content"], tools=last_request["tools"]
    )

    seen = [*last_request["messages"], {"role": "assistant", "content": answer}]
    exported = row["messages"]
    assert [m["role"] for m in exported] == [m["role"] for m in seen]
    for got, sent in zip(exported, seen, strict=True):
        assert got.get("content") == sent.get("content")
        got_calls, sent_calls = got.get("tool_calls") or [], sent.get("tool_calls") or []
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got_calls] == [
            (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in sent_calls
        ]
    assert row["tools"] == tools_to_openai(SHOP_TOOLS)
    assert row["metadata"]["outcome"] == "success" and row["metadata"]["agent_id"] == "llm-bot"


# ---------------------------------------------------------------------------
# openai: agents run by the simulation runner


DOTTED = """
id: dotted
trials: 1
defaults: {server: orders}
scenarios:
  - id: refund
    task: "Refund order 5"
    initial_state: {orders: {"5": {"status": "delivered"}}}
    criteria:
      tool_calls: {mode: strict, calls: [{tool: orders.refund, args: {order_id: 5}}]}
      outcome: success
"""


def orders_factory() -> Any:
    from agentlake.sim.runner import StagingFactory
    from agentlake.sim.staging import FixtureBehaviour, ToolDef

    factory = StagingFactory.default()
    schema = {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}
    factory.servers["orders"] = [
        ToolDef(name="orders.refund", input_schema=schema, behaviour=FixtureBehaviour(default={"ok": True}))
    ]
    return factory


@pytest.fixture
def openai_env(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


async def test_an_openai_agent_maps_mcp_tool_names_providers_reject_and_sends_the_trial_seed(
    openai_env: None, fake: FakeOpenAI
) -> None:
    from agentlake.sim.runner import resolve_agent, run_trial
    from agentlake.sim.suite import expand, parse_suite

    trial = expand(parse_suite(DOTTED, "dotted.yaml"), 1)[0]
    em = MemoryEmitter()
    tracer = Tracer("openai-agent", "strict-names", emitter=em, settings=SETTINGS)
    result = await run_trial(trial, resolve_agent("openai:strict-names"), tracer, "r", orders_factory())
    assert result.verdict.success, result.verdict.reason
    first = fake.bodies("strict-names")[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["orders_refund"]
    assert all(body["seed"] == trial.seed for body in fake.bodies("strict-names"))
    assert calls(events(em)) == [("orders.refund", {"order_id": 5})]  # the real MCP name


async def test_a_provider_outage_is_blamed_on_infrastructure_not_the_agent(
    openai_env: None, fake: FakeOpenAI
) -> None:
    from agentlake.sim.runner import resolve_agent, run_trial
    from agentlake.sim.suite import expand, parse_suite

    trial = expand(parse_suite(DOTTED, "dotted.yaml"), 1)[0]
    tracer = Tracer("openai-agent", "always-500", emitter=MemoryEmitter(), settings=SETTINGS)
    target = resolve_agent("openai:always-500")
    result = await run_trial(trial, target, tracer, "r", orders_factory())
    assert not result.verdict.success and result.verdict.attribution == "infrastructure"
    bad_request = await run_trial(
        trial.model_copy(update={"task": "x"}),
        resolve_agent("openai:persona-broken"),  # 404: the agent's configuration, not an outage
        tracer,
        "r",
        orders_factory(),
    )
    assert bad_request.verdict.attribution == "agent"


PERSONA = """
id: persona
trials: 1
scenarios:
  - id: refund
    task: "My lamp arrived broken."
    user:
      persona: {instructions: "You want a refund for the lamp.", hidden_info: {order_id: 5}, model: persona}
    initial_state:
      $generator: "agentlake.sim.reference:shop_state"
      args: {seed: 3, ensure: {"5": delivered}}
    criteria:
      final_state: [{path: orders.5.status, equals: refunded}]
"""


async def test_a_persona_user_sees_the_task_and_gets_the_trial_seed(
    openai_env: None, fake: FakeOpenAI
) -> None:
    from agentlake.sim.runner import StagingFactory, resolve_agent, run_trial
    from agentlake.sim.suite import expand, parse_suite

    trial = expand(parse_suite(PERSONA, "p.yaml"), 1)[0]
    tracer = Tracer("openai-agent", "support", emitter=MemoryEmitter(), settings=SETTINGS)
    result = await run_trial(trial, resolve_agent("openai:support"), tracer, "r", StagingFactory.default())
    assert result.verdict.success, result.verdict.reason
    (asked,) = fake.bodies("persona")
    assert asked["messages"][1] == {"role": "assistant", "content": trial.task}  # it opened with the task
    assert asked["seed"] == trial.seed


def test_a_persona_without_a_model_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlake.sim.runner import RunnerError, StagingFactory, check_setup
    from agentlake.sim.suite import expand, parse_suite

    monkeypatch.delenv("AGENTLAKE_LLM_MODEL", raising=False)
    trials = expand(parse_suite(PERSONA.replace(", model: persona", ""), "p.yaml"), 1)
    with pytest.raises(RunnerError, match="the persona user has no model"):
        check_setup(trials, StagingFactory.default())
