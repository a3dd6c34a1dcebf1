"""Live state for gateways, from the log: the revocation set and per-task budgets.

`AuthFollower` reads the compacted ``auth.revocations`` topic from the start
(the whole revocation set) and keeps following it; with ``budgets`` it also
folds allowed `AuthDecision` events from ``auth.delegations`` into per-task
call counts (once per call id), so several gateways share one budget. It runs
in a background thread with its own asyncio loop; `start()` returns once the
topics have been read up to their end at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from agentlake.auth.events import DECISION, REVOKED, decode
from agentlake.auth.verify import RevocationSet, TaskBudgets
from agentlake.kafka_io import make_consumer, partitions
from agentlake.schemas import DecodeError
from agentlake.settings import Settings
from agentlake.topics import AUTH_DELEGATIONS, AUTH_REVOCATIONS

log = logging.getLogger("agentlake.auth.follow")
RETRY_FIRST_S = 0.05  # a lost consumer is rebuilt after this, doubling per failure
RETRY_MAX_S = 2.0


def apply_record(value: bytes | None, revocations: RevocationSet, budgets: TaskBudgets | None) -> None:
    """Fold one auth record into the live state (unknown or malformed records are skipped)."""
    if value is None:
        return
    try:
        record, data = decode(value)
    except DecodeError as e:
        log.warning("skipping malformed auth record: %s", e)
        return
    if record == REVOKED:
        revocations.add(data["revocation_id"])
    elif record == DECISION and budgets is not None and data["allowed"]:
        budgets.record(data.get("task_id") or "", data["call_id"])


class AuthFollower:
    """Keeps a `RevocationSet` (and optionally `TaskBudgets`) current from Kafka.

    What bounds revoke → denied here (the broker's share is the producer's ack):

    - the fetch is a long poll (``fetch_max_wait_ms`` = `poll_ms`, at least one byte): a
      revocation ends the wait as soon as the broker has it, so `poll_ms` is the idle
      round-trip, not a floor on the latency;
    - a failed fetch is retried after ``retry_backoff_ms`` = `poll_ms` (aiokafka: 100 ms);
    - a dead connection is noticed after ``request_timeout_ms`` = `request_timeout_ms`
      (aiokafka: 40 s, during which no revocation would arrive);
    - a lost consumer is rebuilt after 0.05 s, doubling up to 2 s, and resumes where it
      stopped instead of re-reading the topics from the start.

    Args:
        settings: where Kafka is, and the topic prefix.
        revocations: the set to fill (shared with the gateway's verifier).
        budgets: per-task counts to fill from other gateways' decisions (None: revocations only).
        poll_ms: fetch wait and fetch retry backoff, in milliseconds.
        request_timeout_ms: how long a fetch may go unanswered before the connection is retried.
        consumer_factory: builds the (not started) consumer; tests pass a fake.
    """

    def __init__(
        self,
        settings: Settings,
        revocations: RevocationSet,
        budgets: TaskBudgets | None = None,
        poll_ms: int = 20,
        request_timeout_ms: int = 10_000,
        consumer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.revocations = revocations
        self.budgets = budgets
        self.poll_ms = poll_ms
        self.request_timeout_ms = request_timeout_ms
        self._factory = consumer_factory or self._consumer
        self.positions: dict[Any, int] = {}  # partition -> next offset to read
        self.reconnects = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agentlake-auth-follower", daemon=True)

    def _consumer(self) -> Any:
        return make_consumer(
            self.settings,
            fetch_max_wait_ms=self.poll_ms,
            retry_backoff_ms=self.poll_ms,
            request_timeout_ms=self.request_timeout_ms,
        )

    def start(self, timeout: float = 30.0) -> AuthFollower:
        self._thread.start()
        if not self._ready.wait(timeout):
            log.warning("revocations not loaded within %.0fs; following continues", timeout)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _main(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException:
            log.exception("auth follower stopped")
            self._ready.set()

    def topics(self) -> list[str]:
        topics = [self.settings.topic(AUTH_REVOCATIONS)]
        if self.budgets is not None:
            topics.append(self.settings.topic(AUTH_DELEGATIONS))
        return topics

    async def _follow(self) -> None:
        backoff = RETRY_FIRST_S
        while not self._stop.is_set():
            consumer: Any = self._factory()
            try:
                await consumer.start()
                parts = await partitions(consumer, self.topics())
                consumer.assign(parts)
                fresh = [tp for tp in parts if tp not in self.positions]
                if fresh:
                    await consumer.seek_to_beginning(*fresh)
                for tp in parts:
                    if tp in self.positions:  # resume: what was folded is not read again
                        consumer.seek(tp, self.positions[tp])
                ends = await consumer.end_offsets(parts)
                while not self._stop.is_set():
                    batch = await consumer.getmany(timeout_ms=self.poll_ms)
                    for tp, msgs in batch.items():
                        for m in msgs:
                            apply_record(m.value, self.revocations, self.budgets)
                        if msgs:
                            self.positions[tp] = msgs[-1].offset + 1
                    backoff = RETRY_FIRST_S
                    if not self._ready.is_set() and all(
                        [await consumer.position(tp) >= ends[tp] for tp in parts]
                    ):
                        self._ready.set()
            except Exception as e:
                self.reconnects += 1
                log.warning("auth follower lost Kafka (%s); retrying in %.2fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
            finally:
                await consumer.stop()
