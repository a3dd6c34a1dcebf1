"""Helpers for the integration tests."""

from __future__ import annotations

import asyncio
from typing import Any

from agentlake.consumers import Projector
from agentlake.projections.clickhouse import query
from agentlake.sdk import KafkaEmitter, MemoryEmitter


class TeeEmitter:
    """Sends to Kafka and keeps a copy, so a test knows exactly what was emitted."""

    def __init__(self, kafka: KafkaEmitter) -> None:
        self.kafka = kafka
        self.copy = MemoryEmitter()

    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        self.copy.emit(topic, key, value)
        self.kafka.emit(topic, key, value)

    def flush(self, timeout: float = 30.0) -> bool:
        return self.kafka.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self.kafka.close(timeout)

    @property
    def records(self) -> list[tuple[str, bytes, bytes]]:
        return self.copy.records


def sql(p: Projector, statement: str, **params: Any) -> list[dict[str, Any]]:
    return query(p.clickhouse, statement, params)


async def project_until_final(p: Projector, run_id: str, expected: int, timeout: float = 120.0) -> int:
    """Run the sink until `expected` final rewards of `run_id` are visible; returns the count."""

    async def done() -> bool:
        return await asyncio.to_thread(count_final, p, run_id) >= expected

    await p.run_until(done, timeout=timeout)
    return await asyncio.to_thread(count_final, p, run_id)


def count_final(p: Projector, run_id: str) -> int:
    rows = sql(
        p, "SELECT count() AS n FROM rewards FINAL WHERE is_final = 1 AND run_id = {r:String}", r=run_id
    )
    return int(rows[0]["n"])
