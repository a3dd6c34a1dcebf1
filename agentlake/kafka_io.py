"""Small Kafka reads shared by the registry, the run manifests, the sink and the benchmark."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentlake.settings import Settings
from agentlake.topics import dlq

DETAIL_MAX = 1000
"""Characters of a dead letter's `detail` header kept (longer details are cut)."""


DEAD_LETTER_REASONS: dict[str, str] = {
    "empty": "the record has no value",
    "too_short": "shorter than an Avro single-object header",
    "bad_magic": "not Avro single-object encoding (no c301 marker)",
    "unknown_fingerprint": "written with a schema this reader does not know (a newer SDK?)",
    "schema_violation": "does not decode with its writer schema, or breaks a field's rule",
    "wrong_topic": "an event type that does not belong on this topic",
    "null_key": "a trajectory event without a record key",
    "key_mismatch": "the record key is not the event's trajectory_id",
    "seq_out_of_range": "seq outside the accepted range",
    "after_end": "seq past its trajectory's TrajectoryEnded seq",
    "duplicate_seq": "a second event at an existing (trajectory_id, seq), the losing one",
    "seq_gap": "seq far ahead of its trajectory (written by earlier workers only)",
    "too_large": "an output over AGENTLAKE_MAX_MESSAGE_BYTES (a small stand-in is sent)",
    "invalid_document": "a document event the lake's store cannot take",
}
"""Every reason a dead letter's ``reason`` header can carry, with what it means."""

NOT_REDRIVABLE: frozenset[str] = frozenset(
    {"after_end", "duplicate_seq", "seq_gap", "too_large", "empty", "too_short", "bad_magic"}
)
"""Reasons a record sent again would be dead-lettered for again, so `dlq redrive` leaves them:
decided by the worker's state (the trajectory's end, the seqs it has seen), by a size limit,
or by bytes that are not an Avro event at all."""


def dead_letter_headers(
    reason: str, detail: str, source_topic: str, source_position: str
) -> list[tuple[str, bytes]]:
    """The headers every dead letter carries: `reason`, `detail` (cut to :data:`DETAIL_MAX`
    characters), `source_topic` (the physical topic read) and `source_position`
    (``"partition:offset"``, or ``""`` when unknown), each UTF-8 encoded."""
    return [
        ("reason", reason.encode()),
        ("detail", detail[:DETAIL_MAX].encode()),
        ("source_topic", source_topic.encode()),
        ("source_position", source_position.encode()),
    ]


async def send_dead_letter(producer: Any, msg: Any, reason: str, detail: str) -> None:
    """Send the record `msg` (an aiokafka ConsumerRecord) unchanged (key and value; ``b""`` for a
    missing value) to the dead-letter topic of ``msg.topic``, with :func:`dead_letter_headers`,
    and wait for the broker's acknowledgement.

    Raises:
        aiokafka.errors.KafkaError: the send failed.
    """
    await producer.send_and_wait(
        dlq(msg.topic),
        msg.value or b"",
        key=msg.key,
        headers=dead_letter_headers(reason, detail, msg.topic, f"{msg.partition}:{msg.offset}"),
    )


async def catch_up(
    consumer: Any,
    step: Callable[[int], Awaitable[Any]],
    timeout: float = 60.0,
    poll_ms: int = 200,
) -> bool:
    """Call ``step(200)`` (one poll of `consumer`, at most 200 ms) until `consumer` has partitions
    assigned, then ``step(poll_ms)`` until every assigned partition reaches the end offset seen
    once assigned.

    Returns:
        True when caught up, False when `timeout` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        await step(200)
    targets = await consumer.end_offsets(list(consumer.assignment()))
    while time.monotonic() < deadline:
        if all([await consumer.position(tp) >= off for tp, off in targets.items()]):
            return True
        await step(poll_ms)
    return False


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

    consumer = make_consumer(settings)
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
    settings: Settings, group: str, topics: set[str], *, every_partition: bool = False
) -> tuple[dict[Any, int], dict[Any, int]]:
    """(committed offset, end offset) per partition of `topics` that `group` has committed on;
    with `every_partition`, also the partitions it never committed on, at their beginning
    offset (where a consumer of the group, reading from the earliest, would start)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        listed = await admin.list_consumer_group_offsets(group)
        committed = {tp: meta.offset for tp, meta in listed.items() if tp.topic in topics}
        if every_partition:
            rest = [tp for tp in await partitions(consumer, sorted(topics)) if tp not in committed]
            if rest:
                committed.update(await consumer.beginning_offsets(rest))
        ends = await consumer.end_offsets(list(committed)) if committed else {}
        return committed, dict(ends)
    finally:
        await admin.close()
        await consumer.stop()


def make_consumer(settings: Settings, *topics: str, group_id: str | None = None, **options: Any) -> Any:
    """An aiokafka consumer (not started) of `settings`' brokers that reads from the earliest
    offset and never commits by itself (``enable_auto_commit=False``); subscribed to `topics`
    when any are given. `group_id` None: no group (assign partitions yourself). `options` are
    further ``AIOKafkaConsumer`` arguments (fetch sizes, timeouts)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )


def make_producer(settings: Settings, **options: Any) -> Any:
    """An aiokafka producer (not started) of `settings`' brokers that waits for every in-sync
    replica (``acks="all"``) and sends records up to ``settings.max_message_bytes`` bytes.
    `options` are further ``AIOKafkaProducer`` arguments (idempotence, linger, compression)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        max_request_size=settings.max_message_bytes,
        **options,
    )


async def produce_acked(
    settings: Settings, records: list[tuple[str, bytes, bytes]], timeout: float = 15.0
) -> None:
    """Produce `records` ((topic, key, value), topics already prefixed) and wait until the
    brokers acknowledged every one (acks=all, idempotent producer).

    For what a user is told is done (a revocation, a published key): nothing is spilled
    to disk for later. Raises the producer's error, or TimeoutError after `timeout` seconds.
    """
    import asyncio

    producer = make_producer(settings, enable_idempotence=True, request_timeout_ms=int(timeout * 1000))

    async def send_all() -> None:
        await producer.start()
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        await asyncio.gather(*futures)

    try:
        await asyncio.wait_for(send_all(), timeout)
    finally:
        await producer.stop()
