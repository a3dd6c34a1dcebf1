"""A small shop MCP server and two deterministic reference agents.

Used by `agentlake demo`, the tests and the benchmarks: ``support-bot@1.0`` does
the job with the fewest calls; ``support-bot@1.1-beta`` is the deliberately worse
version (a redundant lookup, a wrong argument type now and then) so that
regressions show up in the rewards and in the CI gate.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import jsonschema
import mcp_types as types
from mcp.server.lowlevel.server import Server
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentlake.sdk import TracedSession, Trajectory
from agentlake.sim.suite import state_generator

SHOP_TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_order",
        "description": "Look an order up by id.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "refund_order",
        "description": "Refund a delivered order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}, "reason": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "cancel_order",
        "description": "Cancel an order that has not shipped.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "search_orders",
        "description": "List the orders of a customer.",
        "input_schema": {
            "type": "object",
            "properties": {"customer": {"type": "string"}},
            "required": ["customer"],
            "additionalProperties": False,
        },
    },
]

CUSTOMERS = ["ada", "grace", "linus", "barbara", "ken", "margaret"]


MAX_ORDERS = 100_000
"""Most orders `shop_state` generates: a state is built per trial and kept in memory."""


class ShopStateArgs(BaseModel):
    """The ``args`` of the `shop_state` generator, checked when a suite loads."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    n_orders: int = Field(default=60, ge=0, le=MAX_ORDERS, description="orders 1..n_orders")
    ensure: dict[int, str] | None = Field(default=None, description="order id -> pinned status")

    @model_validator(mode="after")
    def _ensured_orders_exist(self) -> ShopStateArgs:
        for oid in self.ensure or {}:
            if not 1 <= oid <= self.n_orders:
                raise ValueError(f"ensure: order {oid} is not among orders 1..{self.n_orders} (n_orders)")
        return self


@state_generator(ShopStateArgs)
def shop_state(seed: int = 0, n_orders: int = 60, ensure: dict[int, str] | None = None) -> dict[str, Any]:
    """A seeded shop of orders 1..`n_orders`; `ensure` pins the status of some orders (so a
    task is feasible).

    Raises:
        ValueError: args outside `ShopStateArgs` (n_orders not in 0..`MAX_ORDERS`, an
            ensured order that does not exist); a suite reports these at load.
    """
    ShopStateArgs(seed=seed, n_orders=n_orders, ensure=ensure)
    rng = random.Random(seed)
    orders = {}
    for i in range(1, n_orders + 1):
        orders[str(i)] = {
            "order_id": i,
            "customer": CUSTOMERS[i % len(CUSTOMERS)],
            "status": rng.choice(["delivered", "processing", "shipped"]),
            "total": round(rng.uniform(5, 500), 2),
        }
    for oid, status in (ensure or {}).items():
        orders[str(oid)]["status"] = status
    return {"orders": orders}


def shop_handler(state: dict[str, Any], tool: str, args: dict[str, Any]) -> Any:
    """The shop's behaviour over its state. Raises ValueError for business errors."""
    orders = state["orders"]
    if tool == "search_orders":
        return {"orders": [o for o in orders.values() if o["customer"] == args["customer"]]}
    order = orders.get(str(args.get("order_id")))
    if order is None:
        raise ValueError(f"order {args.get('order_id')} not found")
    if tool == "get_order":
        return order
    if tool == "refund_order":
        if order["status"] != "delivered":
            raise ValueError(
                f"order {order['order_id']} is {order['status']}, only delivered orders are refunded"
            )
        order["status"] = "refunded"
        return {"order_id": order["order_id"], "status": "refunded", "amount": order["total"]}
    if tool == "cancel_order":
        if order["status"] != "processing":
            raise ValueError(
                f"order {order['order_id']} is {order['status']}, only processing orders are cancelled"
            )
        order["status"] = "cancelled"
        return {"order_id": order["order_id"], "status": "cancelled"}
    raise ValueError(f"unknown tool {tool}")


def shop_server(state: dict[str, Any] | None = None) -> Server[Any]:
    """An MCP server (real protocol; connect in memory with `mcp.Client(server)`)."""
    st = state if state is not None else shop_state()
    tools = {t["name"]: t for t in SHOP_TOOLS}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=t["name"], description=t["description"], input_schema=t["input_schema"])
                for t in SHOP_TOOLS
            ]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = tools.get(params.name)
        args = params.arguments or {}
        if spec is None:
            return _error(f"unknown tool {params.name}", "invalid_arguments")
        try:
            jsonschema.validate(args, spec["input_schema"])
        except jsonschema.ValidationError as e:
            return _error(f"invalid arguments: {e.message}", "invalid_arguments")
        try:
            value = shop_handler(st, params.name, args)
        except ValueError as e:
            return _error(str(e), "tool_error")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(value))], structured_content=value
        )

    return Server("shop", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


def _error(message: str, kind: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)],
        is_error=True,
        _meta={"agentlake/error_kind": kind},
    )


_ORDER = re.compile(r"order\s*#?\s*(\d+)", re.I)


def task_intent(task: str) -> tuple[str, int | None]:
    low = task.lower()
    m = _ORDER.search(task)
    oid = int(m.group(1)) if m else None
    if "refund" in low or "money back" in low:
        return "refund", oid
    if "cancel" in low:
        return "cancel", oid
    return "status", oid


async def support_bot_v1(task: str, shop: TracedSession, trajectory: Trajectory, user: Any = None) -> str:
    """The good reference agent: one lookup, one action, a clear answer. Asks the
    user for the order number when the task has none (multi-turn)."""
    intent, oid = task_intent(task)
    if oid is None and user is not None:
        question = "Which order number is it?"
        trajectory.step("message", question)
        reply = await user.reply(question)
        if reply:
            trajectory.step("user", reply)
            _, oid = task_intent(reply)
            if oid is None:
                m = re.search(r"\b(\d+)\b", reply)
                oid = int(m.group(1)) if m else None
    trajectory.step("plan", f"intent={intent} order={oid}")
    if oid is None:
        trajectory.step("final", "I need an order number.")
        trajectory.end("failure", final_answer="missing order number")
        return "missing order number"
    order = await shop.call_tool("get_order", {"order_id": oid})
    if order.is_error:
        trajectory.end("failure", final_answer=f"order {oid} not found")
        return "not found"
    status = (order.structured_content or {}).get("status")
    if intent == "status":
        answer = f"Order {oid} is {status}."
    else:
        tool = "refund_order" if intent == "refund" else "cancel_order"
        res = await shop.call_tool(tool, {"order_id": oid})
        if res.is_error:
            answer = f"Cannot {intent} order {oid}: it is {status}."
            trajectory.step("final", answer)
            trajectory.end("failure", final_answer=answer)
            return answer
        answer = f"Order {oid}: {intent} done."
    trajectory.step("final", answer, tokens_in=120, tokens_out=20)
    trajectory.end("success", final_answer=answer)
    return answer


async def support_bot_v1_1_beta(task: str, shop: TracedSession, trajectory: Trajectory) -> str:
    """The deliberately worse version: searches first, looks the order up twice, and
    sends the order id as a string for cancellations (rejected by the input schema)."""
    intent, oid = task_intent(task)
    trajectory.step("thought", "let me look around first")
    if oid is None:
        trajectory.end("failure", final_answer="missing order number")
        return "missing order number"
    await shop.call_tool("search_orders", {"customer": CUSTOMERS[oid % len(CUSTOMERS)]})
    order = await shop.call_tool("get_order", {"order_id": oid})
    order = await shop.call_tool("get_order", {"order_id": oid})
    if order.is_error:
        trajectory.end("failure", final_answer="not found")
        return "not found"
    status = (order.structured_content or {}).get("status")
    if intent == "status":
        answer = f"Order {oid} is {status}."
    else:
        tool = "refund_order" if intent == "refund" else "cancel_order"
        arg: Any = str(oid) if intent == "cancel" else oid
        res = await shop.call_tool(tool, {"order_id": arg})
        if res.is_error:
            answer = f"Something went wrong with order {oid}."
            trajectory.step("final", answer)
            trajectory.end("failure", final_answer=answer)
            return answer
        answer = f"Done with order {oid}."
    trajectory.step("final", answer, tokens_in=400, tokens_out=60)
    trajectory.end("success", final_answer=answer)
    return answer


REFERENCE_AGENTS = {
    ("support-bot", "1.0"): support_bot_v1,
    ("support-bot", "1.1-beta"): support_bot_v1_1_beta,
}

TASK_TEMPLATES = [
    "Please refund order {oid}, the item arrived broken.",
    "What is the status of order {oid}?",
    "Cancel order {oid}, I changed my mind.",
    "I want my money back for order #{oid}.",
]


def demo_tasks(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(TASK_TEMPLATES).format(oid=rng.randint(1, 60)) for _ in range(n)]


FEASIBLE = {"refund": "delivered", "cancel": "processing"}


def demo_cases(n: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """`n` (task, initial shop state) pairs where the task can be done (refunds hit
    delivered orders, cancellations processing ones), so failures are the agent's."""
    cases = []
    for i, task in enumerate(demo_tasks(n, seed)):
        intent, oid = task_intent(task)
        pin = {oid: FEASIBLE[intent]} if oid is not None and intent in FEASIBLE else {}
        cases.append((task, shop_state(seed=seed * 1000 + i, ensure=pin)))
    return cases
