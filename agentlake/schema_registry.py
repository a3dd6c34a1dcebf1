"""Writer schemas on the log, so that an older worker can read a newer SDK's events.

Every producer announces the schemas it writes with on the compacted topic
``registry.schemas``: key = the 8-byte CRC-64-AVRO fingerprint in hex, value =
the schema's JSON. `agentlake up` publishes those of the installed version and
the SDK publishes its own when it connects (best effort: an older stack without
the topic only loses forward compatibility). A decoder that meets an unknown
fingerprint asks `SchemaTopicLookup`, which reads the topic up to its end (only
what is new) and hands the codec the schema to learn. Events that arrived before
their schema was announced (e.g. from an SDK that could not announce it) are
dead-lettered as ``unknown_fingerprint``; `agentlake dlq redrive` sends them back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agentlake.kafka_io import make_consumer
from agentlake.schemas import Codec, codec
from agentlake.settings import Settings, get_settings
from agentlake.topics import SCHEMAS

log = logging.getLogger("agentlake.schemas")


def announcements(s: Settings, the_codec: Codec | None = None) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) records announcing every schema version `the_codec` knows."""
    c = the_codec or codec()
    return [(s.topic(SCHEMAS), key, value) for key, value in c.publishable()]


async def publish(s: Settings, producer: Any = None, timeout: float = 5.0) -> int:
    """Announce the installed schemas on the schema topic; returns how many were sent."""
    from aiokafka import AIOKafkaProducer

    own = producer is None
    if own:
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
        await producer.start()
    try:
        futs = [await producer.send(t, v, key=k) for t, k, v in announcements(s)]
        await asyncio.wait_for(asyncio.gather(*futs), timeout)
        return len(futs)
    finally:
        if own:
            await producer.stop()


class SchemaTopicLookup:
    """Fingerprint -> writer schema JSON, read from the schema topic.

    A producer announces a schema (acknowledged) before it sends any event written
    with it, so an unknown fingerprint is looked up by reading the topic up to its
    end offsets *now*: if the schema was announced, it is found. Each lookup of an
    unknown fingerprint costs one end-offsets request (a new record is fetched only
    when the topic grew), so a stream of garbage fingerprints cannot make a reader
    skip a schema announced a moment ago. A reader keeps one consumer on its own
    thread and event loop, because decoding is synchronous and may run inside a loop;
    after a failure (Kafka unreachable) lookups answer None for `retry_after` seconds.
    """

    def __init__(
        self,
        settings: Callable[[], Settings] = get_settings,
        *,
        timeout: float = 5.0,
        retry_after: float = 2.0,
    ) -> None:
        self._settings = settings
        self.timeout = timeout
        self.retry_after = retry_after
        self._known: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Any = None
        self._parts: list[Any] = []
        self._failed_at = -1e9
        self.reads = 0

    def __call__(self, fp: bytes) -> bytes | None:
        with self._lock:
            if fp not in self._known and time.monotonic() - self._failed_at >= self.retry_after:
                try:
                    fut = asyncio.run_coroutine_threadsafe(self._catch_up(), self._ensure_loop())
                    fut.result(timeout=self.timeout)
                except Exception as e:
                    self._failed_at = time.monotonic()
                    log.warning("could not read the schema topic (%s)", e)
                    self._consumer = None
            return self._known.get(fp)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="agentlake-schemas", daemon=True).start()
            self._loop = loop
            # a CLI command ends without closing the process-wide codec: stop the consumer then,
            # or asyncio reports an unclosed AIOKafkaConsumer on the user's terminal
            atexit.register(self.close)
        return self._loop

    async def _catch_up(self) -> None:
        from agentlake.kafka_io import partitions

        if self._consumer is None:
            s = self._settings()
            consumer = make_consumer(s, request_timeout_ms=int(self.timeout * 1000))
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._parts = await partitions(consumer, [s.topic(SCHEMAS)])
            if self._parts:
                consumer.assign(self._parts)
                await consumer.seek_to_beginning(*self._parts)
            self._consumer = consumer
        consumer = self._consumer
        if not self._parts:
            return
        ends = await consumer.end_offsets(self._parts)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= ends[tp] for tp in self._parts]):
                return
            self.reads += 1
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for r in msgs:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        if r.key is not None and r.value is not None:
                            self._known[bytes.fromhex(r.key.decode())] = r.value

    def close(self) -> None:
        """Stop the consumer and the lookup's event loop (a later lookup starts them again)."""
        with self._lock:
            loop, consumer = self._loop, self._consumer
            self._loop = self._consumer = None
            if loop is None:
                return
            if consumer is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(consumer.stop(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)


def uninstall() -> None:
    """Remove the lookup `install` added to the process-wide codec, closing it."""
    c = codec()
    if isinstance(c.lookup, SchemaTopicLookup):
        c.lookup.close()
    c.lookup = None


def install(settings: Callable[[], Settings] = get_settings) -> SchemaTopicLookup:
    """Make the process-wide codec look unknown fingerprints up on the schema topic."""
    c = codec()
    if isinstance(c.lookup, SchemaTopicLookup):
        return c.lookup
    lookup = SchemaTopicLookup(settings)
    c.lookup = lookup
    return lookup
