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
from typing import Any

from agentlake.auth.events import DECISION, REVOKED, decode
from agentlake.auth.verify import RevocationSet, TaskBudgets
from agentlake.kafka_io import make_consumer, partitions
from agentlake.schemas import DecodeError
from agentlake.settings import Settings
from agentlake.topics import AUTH_DELEGATIONS, AUTH_REVOCATIONS

log = logging.getLogger("agentlake.auth.follow")


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

    Args:
        settings: where Kafka is, and the topic prefix.
        revocations: the set to fill (shared with the gateway's verifier).
        budgets: per-task counts to fill from other gateways' decisions (None: revocations only).
        poll_ms: fetch wait; a revocation reaches the set within about this long after it is on the log.
    """

    def __init__(
        self,
        settings: Settings,
        revocations: RevocationSet,
        budgets: TaskBudgets | None = None,
        poll_ms: int = 20,
    ) -> None:
        self.settings = settings
        self.revocations = revocations
        self.budgets = budgets
        self.poll_ms = poll_ms
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agentlake-auth-follower", daemon=True)

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

    async def _follow(self) -> None:
        topics = [self.settings.topic(AUTH_REVOCATIONS)]
        if self.budgets is not None:
            topics.append(self.settings.topic(AUTH_DELEGATIONS))
        while not self._stop.is_set():
            consumer: Any = make_consumer(self.settings, fetch_max_wait_ms=self.poll_ms)
            try:
                await consumer.start()
                parts = await partitions(consumer, topics)
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                ends = await consumer.end_offsets(parts)
                while not self._stop.is_set():
                    batch = await consumer.getmany(timeout_ms=self.poll_ms)
                    for msgs in batch.values():
                        for m in msgs:
                            apply_record(m.value, self.revocations, self.budgets)
                    if not self._ready.is_set() and all(
                        [await consumer.position(tp) >= ends[tp] for tp in parts]
                    ):
                        self._ready.set()
            except Exception as e:
                log.warning("auth follower lost Kafka (%s); retrying", e)
                await asyncio.sleep(1)
            finally:
                await consumer.stop()
