"""Trajectories recorded by the real SDK, exported as OpenAI chat fine-tuning rows."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from agentlake.schemas import codec
from agentlake.sdk import MemoryEmitter, Tracer, Trajectory
from agentlake.settings import Settings
from agentlake.sim.export import (
    NotExportable,
    provider_safe_names,
    tool_message_content,
    tools_to_openai,
    trajectory_to_chat,
    validate_chat_row,
    write_jsonl,
)
from agentlake.sim.reference import SHOP_TOOLS


def tracer(max_payload: int = 64 * 1024) -> tuple[Tracer, MemoryEmitter]:
    em = MemoryEmitter()
    settings = Settings(home="/tmp/agentlake-unit", max_payload_bytes=max_payload)  # type: ignore[arg-type]
    return Tracer("support-bot", "2.0", emitter=em, settings=settings), em


def rows(em: MemoryEmitter) -> list[dict[str, Any]]:
    """Decoded events as the export takes them: ``model_dump(by_alias=True)`` plus ``record``."""
    out = []
    for _, _, value in em.records:
        ev = codec().decode(value)
        out.append(ev.model_dump(by_alias=True) | {"record": ev.record})
    return out


def call_ids(em: MemoryEmitter) -> list[str]:
    return [r["call_id"] for r in rows(em) if r["record"] == "ToolCallRequested"]


def refund_story(t: Trajectory) -> None:
    t.step("plan", "look the order up, then refund it")
    with t.tool_call("shop", "get_order", {"order_id": 5}) as call:
        call.result({"order_id": 5, "status": "delivered"})
    with t.tool_call("shop", "refund_order", {"order_id": 5, "reason": "broken"}) as call:
        call.result({"status": "refunded", "amount": 12.5})
    t.step("final", "Order 5 refunded.")
    t.end("success", final_answer="Order 5 refunded.")


def test_a_trajectory_becomes_one_chat_row() -> None:
    tr, em = tracer()
    t = tr.trajectory("Refund order 5, it broke.")
    refund_story(t)
    get_id, refund_id = call_ids(em)
    tools = tools_to_openai(SHOP_TOOLS[:2])
    reward = {"total": 0.9, "components": {"success": 1.0}}

    row = trajectory_to_chat(rows(em), system_prompt="You are support.", tools=tools, reward=reward)

    assert row == {
        "messages": [
            {"role": "system", "content": "You are support."},
            {"role": "user", "content": "Refund order 5, it broke."},
            {
                "role": "assistant",
                "content": "look the order up, then refund it",
                "tool_calls": [
                    {
                        "id": get_id,
                        "type": "function",
                        "function": {"name": "get_order", "arguments": '{"order_id":5}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": get_id, "content": '{"order_id":5,"status":"delivered"}'},
            # the refund was requested after the lookup returned: a dependent call, its own turn
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": refund_id,
                        "type": "function",
                        "function": {"name": "refund_order", "arguments": '{"order_id":5,"reason":"broken"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": refund_id, "content": '{"status":"refunded","amount":12.5}'},
            {"role": "assistant", "content": "Order 5 refunded."},
        ],
        "tools": tools,
        "metadata": {
            "trajectory_id": t.trajectory_id,
            "agent_id": "support-bot",
            "agent_version": "2.0",
            "outcome": "success",
            "reward": reward,
            "truncated_payloads": 0,
            "missing_results": 0,
            "tool_names": {},
        },
    }
    assert validate_chat_row({k: v for k, v in row.items() if k != "metadata"}) == []


def test_steps_split_tool_calls_into_turns_and_parallel_calls_share_one() -> None:
    tr, em = tracer()
    t = tr.trajectory("Compare orders 5 and 6, then refund 5")
    t.step("thought", "look both up at once")
    a = t.tool_call("shop", "get_order", {"order_id": 5})
    b = t.tool_call("shop", "get_order", {"order_id": 6})
    b.result({"order_id": 6})  # completions arrive in any order
    a.result({"order_id": 5})
    t.step("thought", "")  # a turn with calls and no text
    with t.tool_call("shop", "refund_order", {"order_id": 5}) as c:
        c.result({"status": "refunded"})
    t.step("final", "Done.")
    t.end("success", final_answer="Done.")
    ida, idb, idc = call_ids(em)

    messages = trajectory_to_chat(rows(em))["messages"]

    assert [(m["role"], m.get("content")) for m in messages] == [
        ("user", "Compare orders 5 and 6, then refund 5"),
        ("assistant", "look both up at once"),
        ("tool", '{"order_id":5}'),
        ("tool", '{"order_id":6}'),
        ("assistant", None),
        ("tool", '{"status":"refunded"}'),
        ("assistant", "Done."),
    ]
    assert [c["id"] for c in messages[1]["tool_calls"]] == [ida, idb]
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == [ida, idb, idc]
    assert [c["id"] for c in messages[4]["tool_calls"]] == [idc]
    assert "tool_calls" not in messages[-1]


def test_user_turns_messages_and_lone_thoughts() -> None:
    tr, em = tracer()
    t = tr.trajectory("I want a refund")
    t.step("message", "What is your order number?")
    t.step("user", "It's order 5.")
    t.step("thought", "the user gave the number")  # no call follows: a message of its own
    t.step("thought", "")  # empty and no call: nothing to export
    with t.tool_call("shop", "get_order", {"order_id": 5}) as c:  # no step before it
        c.result({"order_id": 5})
    t.step("final", "Order 5 is fine.")
    t.end("success", final_answer="Order 5 is fine.")

    messages = trajectory_to_chat(rows(em))["messages"]

    assert [(m["role"], m.get("content")) for m in messages] == [
        ("user", "I want a refund"),
        ("assistant", "What is your order number?"),
        ("user", "It's order 5."),
        ("assistant", "the user gave the number"),
        ("assistant", None),
        ("tool", '{"order_id":5}'),
        ("assistant", "Order 5 is fine."),
    ]


def test_failed_calls_read_as_errors() -> None:
    tr, em = tracer()
    t = tr.trajectory("Refund order 99")
    with t.tool_call("shop", "get_order", {"order_id": 99}) as c:
        c.error("order 99 not found", "order 99 not found")
    with pytest.raises(RuntimeError), t.tool_call("shop", "get_order", {"order_id": 99}):
        raise RuntimeError("connection lost")
    with t.tool_call("shop", "get_order", {"order_id": 99}) as c:
        c.result("plain text answer")
    t.end("failure", final_answer="Order 99 does not exist.")

    row = trajectory_to_chat(rows(em))

    assert [m["content"] for m in row["messages"] if m["role"] == "tool"] == [
        "Error: order 99 not found",
        "Error: RuntimeError: connection lost",
        "plain text answer",
    ]
    # no final step: the recorded final answer closes the conversation
    assert row["messages"][-1] == {"role": "assistant", "content": "Order 99 does not exist."}
    assert row["metadata"]["outcome"] == "failure"


def test_a_final_step_is_not_repeated_by_the_final_answer() -> None:
    tr, em = tracer()
    t = tr.trajectory("Refund order 5")
    refund_story(t)
    messages = trajectory_to_chat(rows(em))["messages"]
    assert [m for m in messages if m["role"] == "assistant" and m["content"] == "Order 5 refunded."] == [
        {"role": "assistant", "content": "Order 5 refunded."}
    ]


def test_a_crashed_trajectory_never_ends_a_row_on_a_tool_message() -> None:
    tr, em = tracer()
    t = tr.trajectory("Refund order 5")
    t.tool_call("shop", "get_order", {"order_id": 5})  # no result, no answer: it crashed

    with pytest.raises(NotExportable, match="ends on a tool message"):
        trajectory_to_chat(rows(em))


def test_a_call_without_result_reads_as_an_error_and_is_counted() -> None:
    tr, em = tracer()
    t = tr.trajectory("Refund order 5")
    call = t.tool_call("shop", "get_order", {"order_id": 5})
    t.end("failure", final_answer="The shop did not answer.")

    row = trajectory_to_chat(rows(em))

    assert row["messages"][-2] == {
        "role": "tool",
        "tool_call_id": call.call_id,
        "content": "Error: the call has no recorded result",
    }
    assert row["metadata"]["outcome"] == "failure" and row["metadata"]["missing_results"] == 1
    assert row["tools"] == [
        {"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}
    ]
    assert row["metadata"]["reward"] is None


def test_truncated_arguments_are_never_exported_as_invalid_json() -> None:
    tr, em = tracer(max_payload=40)
    t = tr.trajectory("Show order 5")
    with t.tool_call("shop", "get_order", {"order_id": 5, "fields": ["x" * 50]}) as c:
        c.result({"order_id": 5})
    t.end("success", final_answer="ok")

    with pytest.raises(NotExportable, match="truncated"):
        trajectory_to_chat(rows(em))


def test_truncated_results_and_steps_are_exported_as_recorded_and_counted() -> None:
    tr, em = tracer(max_payload=40)
    t = tr.trajectory("Show order 5")
    with t.tool_call("shop", "get_order", {"order_id": 5}) as c:
        c.result({"order_id": 5, "notes": "n" * 100})
    t.step("final", "é" * 30)  # 60 bytes of UTF-8: cut on a character boundary
    t.end("success")
    events = rows(em)
    completed = next(e for e in events if e["record"] == "ToolCallCompleted")

    row = trajectory_to_chat(events)

    assistant, tool, final = row["messages"][1:]
    assert assistant["tool_calls"][0]["function"]["arguments"] == '{"order_id":5}'
    assert tool["content"] == completed["result"]["json"] and len(tool["content"]) == 40
    assert final["content"] == "é" * 20
    assert row["metadata"]["truncated_payloads"] == 2


def test_dotted_tool_names_are_mapped_in_tools_and_calls_alike() -> None:
    tr, em = tracer()
    t = tr.trajectory("Find blenders")
    with t.tool_call("shop", "shop.search", {"q": "blender"}) as c:
        c.result(["b1"])
    t.end("success", final_answer="b1")
    tools = tools_to_openai([{"name": "shop.search", "input_schema": {"type": "object"}}])

    row = trajectory_to_chat(rows(em), tools=tools)

    name = row["tools"][0]["function"]["name"]
    assert name == "shop_search" and row["messages"][1]["tool_calls"][0]["function"]["name"] == name
    assert row["metadata"]["tool_names"] == {"shop_search": "shop.search"}
    assert validate_chat_row({k: v for k, v in row.items() if k != "metadata"}) == []


def test_provider_safe_names_are_reversible_and_valid() -> None:
    names = ["orders.refund", "orders_refund", "a" * 80, "a" * 81, "ok-name", "名前", "x y"]
    m = provider_safe_names(names)
    assert len(set(m.values())) == len(names)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", v) for v in m.values())
    assert m["orders_refund"] == "orders_refund" and m["ok-name"] == "ok-name"
    assert m == provider_safe_names(names)  # deterministic


def test_order_duplicates_and_clickhouse_bodies_do_not_matter() -> None:
    tr, em = tracer()
    refund_story(tr.trajectory("Refund order 5"))
    expected = trajectory_to_chat(rows(em))

    bodies = []
    for _, _, value in em.records:  # what the events table holds: body JSON + record column
        ev = codec().decode(value)
        bodies.append(json.loads(ev.model_dump_json(by_alias=True)) | {"record": ev.record})
    shuffled = bodies + bodies[:3]  # at-least-once delivery repeats events
    random.Random(1).shuffle(shuffled)

    assert trajectory_to_chat(shuffled) == expected


def test_malformed_input_is_rejected_with_one_clear_line() -> None:
    tr, em = tracer()
    refund_story(tr.trajectory("Refund order 5"))
    refund_story(tr.trajectory("Refund order 6"))
    events = rows(em)
    first = [e for e in events if e["trajectory_id"] == events[0]["trajectory_id"]]

    with pytest.raises(ValueError, match=r"has no .record. key: add the events\.record column"):
        trajectory_to_chat([{k: v for k, v in e.items() if k != "record"} for e in first])
    with pytest.raises(ValueError, match="events of 2 trajectories"):
        trajectory_to_chat(events)
    with pytest.raises(ValueError, match="no TrajectoryStarted"):
        trajectory_to_chat([e for e in first if e["record"] != "TrajectoryStarted"])
    others = [{"record": "RewardScored", "seq": 99, "trajectory_id": "x"}]  # ignored, not a trajectory event
    assert trajectory_to_chat(first + others) == trajectory_to_chat(first)


def test_jsonl_round_trip_with_a_metadata_sidecar(tmp_path: Path) -> None:
    tr, em = tracer()
    refund_story(tr.trajectory("Rembourse la commande 5 — cassée"))
    refund_story(tr.trajectory("Refund order 6"))
    events = rows(em)
    by_trajectory: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_trajectory.setdefault(e["trajectory_id"], []).append(e)
    exported = [trajectory_to_chat(evs, tools=tools_to_openai(SHOP_TOOLS)) for evs in by_trajectory.values()]

    path, side = tmp_path / "train.jsonl", tmp_path / "train.meta.jsonl"
    assert write_jsonl(exported, path, metadata=side) == 2
    text = path.read_text("utf-8")
    assert "cassée" in text and text.count("\n") == 2
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == [{k: v for k, v in r.items() if k != "metadata"} for r in exported]
    assert all(validate_chat_row(line) == [] for line in lines)
    meta = [json.loads(line) for line in side.read_text("utf-8").splitlines()]
    assert [m["trajectory_id"] for m in meta] == [r["metadata"]["trajectory_id"] for r in exported]
    assert [m["line"] for m in meta] == [1, 2]

    buffer = io.StringIO()
    assert write_jsonl(iter(exported), buffer, inline_metadata=True) == 2
    assert [json.loads(line) for line in buffer.getvalue().splitlines()] == exported


def test_line_separators_and_lone_surrogates_keep_one_row_per_line(tmp_path: Path) -> None:
    tr, em = tracer()
    t = tr.trajectory("a\u2028b\u2029c\u0085d")
    t.end("success", final_answer="fine")
    row = trajectory_to_chat(rows(em))
    row["messages"].append({"role": "assistant", "content": "lone \ud800 surrogate"})
    path = tmp_path / "x.jsonl"

    assert write_jsonl([row, row], path) == 2

    text = path.read_text("utf-8")
    assert len(text.splitlines()) == 2  # str.splitlines breaks at U+2028/U+2029/NEL: none are raw
    first = json.loads(text.splitlines()[0])
    assert first["messages"][0]["content"] == "a\u2028b\u2029c\u0085d"
    assert first["messages"][-1]["content"] == "lone \ufffd surrogate"


def test_the_format_validator_rejects_what_trainers_reject() -> None:
    good: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "done"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    assert validate_chat_row(good) == []
    bad_cases = {
        "metadata": {**good, "metadata": {}},
        "ends on tool": {**good, "messages": good["messages"][:3]},
        "bad name": {
            **good,
            "tools": [{"type": "function", "function": {"name": "shop.f", "parameters": {"type": "object"}}}],
        },
        "bad args": {
            **good,
            "messages": [
                good["messages"][0],
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": '}}
                    ],
                },
                *good["messages"][2:],
            ],
        },
        "no tools": {"messages": good["messages"]},
        "unanswered": {**good, "messages": [*good["messages"][:2], good["messages"][3]]},
    }
    for label, row in bad_cases.items():
        assert validate_chat_row(row), label


def test_tools_to_openai() -> None:
    converted = tools_to_openai(
        [
            SHOP_TOOLS[0],
            {"name": "ping", "inputSchema": {"type": "object", "properties": {"x": {"type": "string"}}}},
            {"name": "noop", "description": ""},
        ]
    )
    assert converted == [
        {
            "type": "function",
            "function": {
                "name": "get_order",
                "description": "Look an order up by id.",
                "parameters": SHOP_TOOLS[0]["input_schema"],
            },
        },
        {
            "type": "function",
            "function": {
                "name": "ping",
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
        },
        {
            "type": "function",
            "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    with pytest.raises(ValueError, match="without a name"):
        tools_to_openai([{"description": "nameless"}])


def test_tool_message_content_matches_what_the_sdk_records() -> None:
    tr, em = tracer()
    t = tr.trajectory("x")
    for value in ({"a": [1, 2], "b": "é"}, "text", [1, None], None, 3.5):
        with t.tool_call("s", "tool", {}) as c:
            c.result(value)
        recorded = codec().decode(em.records[-1][2])
        assert tool_message_content(value) == recorded.result.json_  # type: ignore[attr-defined]
    assert tool_message_content("order 9 not found", is_error=True) == "Error: order 9 not found"
    assert (
        tool_message_content(None, is_error=True, error="TimeoutError: slow") == "Error: TimeoutError: slow"
    )
    assert tool_message_content("", is_error=True) == "Error: the tool call failed"
