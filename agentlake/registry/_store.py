"""The registry on the log: apply specs as events, fold them back into a `Registry`.

Specs travel as `SpecRegistered` records on two compacted topics
(``registry.agents``, ``registry.servers``) keyed by ``kind:id@version``, so the
topic always holds the latest spec of every version and any process rebuilds
the read model by reading it from the start. `RegistryFollower` keeps a
`Registry` current in a background thread; the stream worker asks it for each
agent's reward spec and tool policy (`rules_lookup`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

from agentlake.kafka_io import make_consumer, partitions, read_to_end
from agentlake.registry._load import dump_spec, spec_from_dict, spec_kind
from agentlake.registry._models import Spec
from agentlake.registry._registry import Registry
from agentlake.schemas import DecodeError, codec, new_id, now_us
from agentlake.settings import Settings
from agentlake.topics import REGISTRY_AGENTS, REGISTRY_SERVERS

log = logging.getLogger("agentlake.registry")

RECORD = "SpecRegistered"


def _topic(settings: Settings, kind: str) -> str:
    return settings.topic(REGISTRY_AGENTS if kind == "agent" else REGISTRY_SERVERS)


def encode_spec(spec: Spec, source: str | None = None) -> tuple[str, bytes, bytes]:
    """(logical topic, key, value) of the event that registers `spec`."""
    kind = spec_kind(spec)
    key = f"{kind}:{spec.id}@{spec.version}".encode()
    value = codec().encode_record(
        RECORD,
        {
            "event_id": new_id(),
            "kind": kind,
            "spec_id": spec.id,
            "version": spec.version,
            "spec_json": json.dumps(dump_spec(spec), sort_keys=True),
            "source": source,
            "applied_by": os.environ.get("USER"),
            "ts_us": now_us(),
        },
        strict=True,
    )
    return (REGISTRY_AGENTS if kind == "agent" else REGISTRY_SERVERS), key, value


def decode_spec(value: bytes) -> Spec:
    """The spec carried by a `SpecRegistered` record. Raises `DecodeError`."""
    record, data = codec().decode_dict(value)
    if record != RECORD:
        raise DecodeError("wrong_topic", f"{record} is not a {RECORD}")
    try:
        spec: Spec = spec_from_dict(data["kind"], json.loads(data["spec_json"]), source="registry topic")
        return spec
    except Exception as e:
        raise DecodeError("schema_violation", f"invalid spec in registry: {e}") from e


async def apply_specs(settings: Settings, specs: Iterable[Spec], source: str | None = None) -> int:
    """Publish specs (acks=all) so every reader of the registry sees them. Returns the count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    n = 0
    try:
        for spec in specs:
            topic, key, value = encode_spec(spec, source)
            await producer.send_and_wait(settings.topic(topic), value, key=key)
            n += 1
    finally:
        await producer.stop()
    return n


async def read_registry(settings: Settings, timeout: float = 15.0) -> Registry:
    """Read both registry topics from the start to their current end."""
    registry = Registry()
    topics = [_topic(settings, "server"), _topic(settings, "agent")]
    for m in await read_to_end(settings, topics, timeout):
        _apply_record(registry, m.value, f"{m.topic}@{m.partition}:{m.offset}")
    return registry


def _apply_record(registry: Registry, value: bytes | None, where: str) -> None:
    if value is None:
        return
    try:
        registry.apply(decode_spec(value))
    except DecodeError as e:
        log.warning("skipping malformed registry record %s: %s", where, e)


class RegistryFollower:
    """A `Registry` kept current from the log by a background thread.

    `start()` blocks until what the topics held at start-up is applied, so the
    first lookups already see it; later specs arrive within ~`poll_ms`.
    """

    def __init__(self, settings: Settings, poll_ms: int = 100) -> None:
        self.settings = settings
        self.poll_ms = poll_ms
        self.registry = Registry()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agentlake-registry", daemon=True)
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> RegistryFollower:
        self._thread.start()
        if not self._ready.wait(timeout):
            log.warning("registry not loaded within %.0fs; agents get the default rules until it is", timeout)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def rules(self, agent_id: str, version: str) -> Any:
        return self.registry.rules(agent_id, version)

    def _main(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException as e:  # keep serving the last known registry
            self._error = e
            log.exception("registry follower stopped")
            self._ready.set()

    async def _follow(self) -> None:
        while not self._stop.is_set():
            consumer = make_consumer(self.settings)
            try:
                await consumer.start()
                parts = await partitions(
                    consumer, [_topic(self.settings, "server"), _topic(self.settings, "agent")]
                )
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                ends = await consumer.end_offsets(parts)
                while not self._stop.is_set():
                    batch = await consumer.getmany(timeout_ms=self.poll_ms)
                    for msgs in batch.values():
                        for m in msgs:
                            _apply_record(self.registry, m.value, f"{m.topic}@{m.partition}:{m.offset}")
                    if not self._ready.is_set() and all(
                        [await consumer.position(tp) >= ends[tp] for tp in parts]
                    ):
                        self._ready.set()
            except Exception as e:
                log.warning("registry follower lost Kafka (%s); retrying", e)
                await asyncio.sleep(1)
            finally:
                await consumer.stop()


def rules_lookup(settings: Settings) -> Any:
    """The stream worker's `RulesLookup`: reward spec and tool policy per agent version, live."""
    return RegistryFollower(settings).start().rules
