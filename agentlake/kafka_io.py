"""Small Kafka reads shared by the registry, the run manifests, the sink and the benchmark."""

from __future__ import annotations

import time
from typing import Any

from agentlake.settings import Settings


async def partitions(consumer: Any, topics: list[str]) -> list[Any]:
    """Every partition of `topics` (metadata fetched for exactly these topics)."""
    from aiokafka import TopicPartition

    client = consumer._client  # aiokafka exposes no public per-topic metadata refresh
    for t in topics:
        client.add_topic(t)
    await client.force_metadata_update()
    return [
        TopicPartition(t, p) for t in topics for p in sorted(client.cluster.partitions_for_topic(t) or set())
    ]


async def read_to_end(settings: Settings, topics: list[str], timeout: float = 15.0) -> list[Any]:
    """Every record of `topics` from the start up to their end offsets at call time
    (a compacted topic read as a table). Stops early after `timeout` seconds."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        parts = await partitions(consumer, topics)
        if not parts:
            return records
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                break
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(msgs)
    finally:
        await consumer.stop()
    return records


async def group_offsets(
    settings: Settings, group: str, topics: set[str]
) -> tuple[dict[Any, int], dict[Any, int]]:
    """(committed offset, end offset) per partition of `topics` that `group` has committed on."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        listed = await admin.list_consumer_group_offsets(group)
        committed = {tp: meta.offset for tp, meta in listed.items() if tp.topic in topics}
        ends = await consumer.end_offsets(list(committed)) if committed else {}
        return committed, dict(ends)
    finally:
        await admin.close()
        await consumer.stop()


async def produce_acked(
    settings: Settings, records: list[tuple[str, bytes, bytes]], timeout: float = 15.0
) -> None:
    """Produce `records` ((topic, key, value), topics already prefixed) and wait until the
    brokers acknowledged every one (acks=all, idempotent producer).

    For what a user is told is done (a revocation, a published key): nothing is spilled
    to disk for later. Raises the producer's error, or TimeoutError after `timeout` seconds.
    """
    import asyncio

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(timeout * 1000),
    )

    async def send_all() -> None:
        await producer.start()
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        await asyncio.gather(*futures)

    try:
        await asyncio.wait_for(send_all(), timeout)
    finally:
        await producer.stop()
