"""The revocation follower without a broker: it folds what it reads, and a lost consumer resumes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from agentlake.auth.events import AuthEvents
from agentlake.auth.follow import AuthFollower
from agentlake.auth.verify import RevocationSet
from agentlake.sdk import MemoryEmitter
from agentlake.settings import Settings

SETTINGS = Settings(home="/tmp/agentlake-unit")  # type: ignore[arg-type]
TP = TopicPartition(SETTINGS.topic("auth.revocations"), 0)


def revocation(rid: str) -> bytes:
    em = MemoryEmitter()
    AuthEvents(em).revoked(rid, "test", None)
    return em.records[0][2]


class FakeConsumer:
    """Serves `batches` (lists of record values) from `start_offset`, then fails or stops the follower."""

    def __init__(self, log: list[Any], log_values: list[bytes], fail_after: int | None, stop: Any) -> None:
        self.calls = log
        self.values = log_values
        self.fail_after = fail_after
        self.stop_follower = stop
        self.next = 0
        self.served = 0
        self._client = SimpleNamespace(
            add_topic=lambda t: None,
            force_metadata_update=self._noop,
            cluster=SimpleNamespace(partitions_for_topic=lambda t: {0}),
        )

    async def _noop(self) -> None:
        return None

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    def assign(self, parts: list[Any]) -> None:
        self.calls.append(("assign", tuple(parts)))

    async def seek_to_beginning(self, *parts: Any) -> None:
        self.calls.append(("beginning", parts))
        self.next = 0

    def seek(self, tp: Any, offset: int) -> None:
        self.calls.append(("seek", tp, offset))
        self.next = offset

    async def end_offsets(self, parts: list[Any]) -> dict[Any, int]:
        return dict.fromkeys(parts, len(self.values))

    async def position(self, tp: Any) -> int:
        return self.next

    async def getmany(self, timeout_ms: int = 0) -> dict[Any, list[Any]]:
        if self.fail_after is not None and self.served >= self.fail_after:
            raise ConnectionError("broker went away")
        if self.next >= len(self.values):
            self.stop_follower()
            return {}
        msg = SimpleNamespace(offset=self.next, value=self.values[self.next])
        self.next += 1
        self.served += 1
        return {TP: [msg]}


async def test_a_lost_consumer_is_rebuilt_and_resumes_where_it_stopped() -> None:
    values = [revocation("a" * 128), revocation("b" * 128), revocation("c" * 128)]
    calls: list[Any] = []
    live = RevocationSet()
    consumers: list[FakeConsumer] = []

    def factory() -> FakeConsumer:
        # the first consumer reads one record and then loses the broker; the next one finishes
        c = FakeConsumer(calls, values, 1 if not consumers else None, follower._stop.set)
        consumers.append(c)
        return c

    follower = AuthFollower(SETTINGS, live, consumer_factory=factory)
    await follower._follow()
    assert all(rid * 128 in live for rid in "abc")
    assert follower.reconnects == 1 and len(consumers) == 2
    assert ("beginning", (TP,)) in calls and ("seek", TP, 1) in calls  # resumed, not re-read
    assert calls.count(("beginning", (TP,))) == 1
    assert follower.positions == {TP: 3} and follower._ready.is_set()
