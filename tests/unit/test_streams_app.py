"""The faust agent itself, driven through `test_context()`: no broker involved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import Message

from agentlake.schemas import RewardScored, codec
from agentlake.sdk import MemoryEmitter, Tracer
from agentlake.settings import Settings
from agentlake.streams.app import create_app
from agentlake.streams.processor import Output
from agentlake.streams.state import decode as decode_checkpoint

SETTINGS = Settings(home="/tmp/agentlake-unit", topic_prefix="unit-")  # type: ignore[arg-type]


class FakeIO:
    """Stands in for the worker's Kafka side: records what is sent, serves a checkpoint."""

    def __init__(self) -> None:
        self.sent: list[Output] = []
        self.restored: list[int] = []

    async def send_all(self, outputs: list[Output]) -> None:
        self.sent.extend(outputs)

    async def send(self, outputs: list[Output]) -> asyncio.Future[Any]:
        self.sent.extend(outputs)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def committed(self, group: str, tps: list[Any]) -> dict[Any, int]:
        return {}

    async def read_checkpoints(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        self.restored.append(partition)
        return []


@pytest.mark.parametrize("batch", [1, 100])
async def test_the_score_agent_turns_events_into_rewards_and_dead_letters(batch: int) -> None:
    settings = SETTINGS.model_copy(update={"stream_batch_size": batch})
    app = create_app(settings, broker="kafka://127.0.0.1:9", app_id=f"unit-test-app-{batch}")
    app.finalize()
    app.conf.store = "memory://"
    io = FakeIO()
    commits: list[dict[Any, int]] = []

    async def commit(offsets: dict[Any, int]) -> bool:
        commits.append(dict(offsets))
        return True

    app.io = io  # type: ignore[attr-defined]
    app.commit_offsets = commit  # type: ignore[attr-defined]
    app.is_assigned = lambda tp: True  # type: ignore[attr-defined]

    em = MemoryEmitter()
    tracer = Tracer("bot", "2.0", emitter=em, settings=SETTINGS)
    with tracer.trajectory("status of order 3") as t:
        with t.tool_call("shop", "get_order", {"order_id": 3}) as c:
            c.result({"status": "shipped"})
        t.step("final", "it shipped")
        t.end("success", final_answer="it shipped")

    records = [*em.records, (em.records[0][0], b"x", b"not an avro event")]
    offsets: dict[str, int] = {}
    messages = []
    for topic, key, value in records:
        assert topic.startswith("unit-")
        offsets[topic] = offsets.get(topic, -1) + 1
        messages.append(Message(topic, 0, offsets[topic], 0.0, 0, None, key, value, None, generation_id=0))
    async with app.score_agent.test_context() as agent:  # type: ignore[attr-defined]
        for i in range(0, len(messages), batch):  # as fetch rounds deliver them
            await agent.put(value=messages[i : i + batch])

    rewards = [codec().decode(o.value) for o in io.sent if o.topic == "unit-rewards.scored" and o.value]
    finals = [r for r in rewards if isinstance(r, RewardScored) and r.is_final]
    assert len(finals) == 1 and finals[0].agent_version == "2.0"
    assert finals[0].components["task_success"] == 1.0
    dead = [o for o in io.sent if o.topic.endswith(".dlq")]
    assert len(dead) == 1 and dict(dead[0].headers)["reason"] == b"bad_magic"
    # the finished trajectory left a done marker, not its state; partition 0 was restored first
    markers = [o for o in io.sent if o.topic == "unit-streams.checkpoints"]
    assert {m.key for m in markers} == {finals[0].trajectory_id.encode()} and io.restored == [0]
    assert markers[-1].value is not None and decode_checkpoint(markers[-1].value)[1] == len(em.records) - 1
    # offsets were committed only after the outputs were handed over, up to each topic's last record
    last: dict[Any, int] = {}
    for c in commits:
        last.update(c)
    assert last == {(t, 0): n + 1 for t, n in offsets.items()}


class FlakyIO(FakeIO):
    """The broker away for the first read of a checkpoint and the first offsets question."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def read_checkpoints(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        if self.failures == 0:
            self.failures += 1
            raise ConnectionError("broker away")
        return await super().read_checkpoints(partition)

    async def committed(self, group: str, tps: list[Any]) -> dict[Any, int]:
        if self.failures == 1:
            self.failures += 1
            raise ConnectionError("broker away")
        return {}


async def test_a_batch_waits_for_a_broker_that_is_briefly_away_instead_of_being_dropped() -> None:
    app = create_app(SETTINGS, broker="kafka://127.0.0.1:9", app_id="unit-test-app-flaky")
    app.finalize()
    app.conf.store = "memory://"
    io = FlakyIO()
    app.io = io  # type: ignore[attr-defined]
    app.is_assigned = lambda tp: True  # type: ignore[attr-defined]

    async def commit(offsets: dict[Any, int]) -> bool:
        return True

    app.commit_offsets = commit  # type: ignore[attr-defined]
    em = MemoryEmitter()
    with Tracer("bot", "2.0", emitter=em, settings=SETTINGS).trajectory("one step") as t:
        t.step("final", "done")
        t.end("success", final_answer="done")
    offsets: dict[str, int] = {}
    messages = []
    for topic, key, value in em.records:  # offsets per topic, as the broker numbers them
        offsets[topic] = offsets.get(topic, -1) + 1
        messages.append(Message(topic, 0, offsets[topic], 0.0, 0, None, key, value, None, generation_id=0))
    async with app.score_agent.test_context() as agent:  # type: ignore[attr-defined]
        await agent.put(value=messages)

    assert io.failures == 2 and io.restored == [0]
    rewards = [codec().decode(o.value) for o in io.sent if o.topic == "unit-rewards.scored" and o.value]
    assert [r.is_final for r in rewards if isinstance(r, RewardScored)] == [True]
