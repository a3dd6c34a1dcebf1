"""Writer schemas on the log, so that an older worker can read a newer SDK's events.

Every producer announces the schemas it writes with on the compacted topic
``registry.schemas``: key = the 8-byte CRC-64-AVRO fingerprint in hex, value =
the schema's JSON. `agentlake up` publishes those of the installed version and
the SDK publishes its own when it connects (best effort: an older stack without
the topic only loses forward compatibility). A decoder that meets an unknown
fingerprint asks `SchemaTopicLookup`, which re-reads the topic (at most once per
`min_interval` seconds) and hands the codec the schema to learn; events
dead-lettered as ``unknown_fingerprint`` before that are re-driven with
`agentlake dlq redrive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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

    Called from synchronous decoding (possibly inside a running event loop), so the
    read runs on its own thread and loop; it blocks the caller for at most `timeout`.
    """

    def __init__(
        self,
        settings: Callable[[], Settings] = get_settings,
        *,
        min_interval: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self._settings = settings
        self.min_interval = min_interval
        self.timeout = timeout
        self._known: dict[bytes, bytes] = {}
        self._asked: dict[bytes, float] = {}  # fingerprint -> when it last caused a read
        self._last = -1e9
        self._lock = threading.Lock()
        self.refreshes = 0

    def __call__(self, fp: bytes) -> bytes | None:
        """The schema JSON for `fp`, re-reading the topic when `fp` has not caused a read in
        the last `min_interval` seconds (and no read at all ran in the last 0.25 s)."""
        with self._lock:
            now = time.monotonic()
            if (
                fp not in self._known
                and now - self._asked.get(fp, -1e9) >= self.min_interval
                and now - self._last >= 0.25
            ):
                if len(self._asked) > 10_000:  # random fingerprints must not grow this forever
                    self._asked.clear()
                self._asked[fp] = self._last = now
                self._refresh()
            return self._known.get(fp)

    def _refresh(self) -> None:
        from agentlake.kafka_io import read_to_end

        self.refreshes += 1
        try:
            s = self._settings()
            with ThreadPoolExecutor(1) as pool:
                records = pool.submit(
                    asyncio.run, read_to_end(s, [s.topic(SCHEMAS)], timeout=self.timeout)
                ).result(timeout=self.timeout + 5)
        except Exception as e:
            log.warning("could not read the schema topic (%s)", e)
            return
        for r in records:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if r.key is not None and r.value is not None:
                    self._known[bytes.fromhex(r.key.decode())] = r.value


def install(settings: Callable[[], Settings] = get_settings) -> SchemaTopicLookup:
    """Make the process-wide codec look unknown fingerprints up on the schema topic."""
    c = codec()
    if isinstance(c.lookup, SchemaTopicLookup):
        return c.lookup
    lookup = SchemaTopicLookup(settings)
    c.lookup = lookup
    return lookup
