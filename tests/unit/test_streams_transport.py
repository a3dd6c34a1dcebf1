"""The batch path of the worker's faust consumer, without a broker: what one fetch round hands on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.types import TP, Message

from agentlake.streams.transport import BatchApp, BatchConsumer


class Fetcher:
    """Stands in for faust's Fetcher service: the drain loop runs until it is stopped."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


def message(topic: str, partition: int, offset: int) -> Message:
    return Message(topic, partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=1)


async def test_each_fetch_round_reaches_the_sink_as_one_batch_in_fetch_order() -> None:
    app = BatchApp("unit-batch-app", broker="kafka://127.0.0.1:9")
    app.batch_topics = frozenset({"steps", "calls"})
    fetcher = Fetcher()
    rounds = [
        [("steps", 0, 5), ("other", 0, 1), ("calls", 1, 0), ("steps", 0, 6)],
        [("steps", 0, 4), ("steps", 0, 7), ("calls", 1, 1)],  # offset 4: re-fetched below the read offset
    ]
    batches: list[list[tuple[str, int, int]]] = []
    elsewhere: list[tuple[str, int]] = []

    async def sink(batch: list[Message]) -> None:
        batches.append([(m.topic, m.partition, m.offset) for m in batch])
        if len(batches) == len(rounds):
            fetcher._stopped.set()

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        for topic, partition, offset in rounds[len(batches)]:
            yield TP(topic, partition), message(topic, partition, offset)

    async def callback(m: Message) -> None:
        elsewhere.append((m.topic, m.offset))

    app.batch_sink = sink
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    consumer.getmany = getmany  # type: ignore[method-assign,assignment]
    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(fetcher), 10)

    assert batches == [
        [("steps", 0, 5), ("calls", 1, 0), ("steps", 0, 6)],
        [("steps", 0, 7), ("calls", 1, 1)],
    ]
    assert elsewhere == [("other", 1)]  # a topic outside the batch path takes faust's own path


async def test_the_worker_consumer_asks_the_broker_for_larger_fetches() -> None:
    app = BatchApp("unit-batch-app-2", broker="kafka://127.0.0.1:9")
    app.fetch_min_bytes, app.fetch_max_wait_ms = 1234, 77
    consumer: Any = app.consumer
    thread = consumer._new_consumer_thread()
    client = thread._create_worker_consumer(app.transport)
    try:
        assert (client._fetch_min_bytes, client._fetch_max_wait_ms) == (1234, 77)
    finally:
        await client.stop()
