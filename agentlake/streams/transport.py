"""faust's aiokafka transport with a batch path for the trajectory topics.

faust hands every fetched record to its streams one at a time: a `Message`,
an `Event`, two tasks to wait for the hand-over, a channel queue, the stream
iterator, the sensors, the ``take_events`` buffer and a per-event ack. At
3,000 events/s that per-record path cost more CPU than scoring itself. The
worker needs none of it per record, so `BatchApp` keeps faust for what it is
sound at (group membership, partition assignment, rebalance callbacks, flow
control, the agent) and changes two things:

- `BatchConsumer` hands each fetch round's records of `BatchApp.batch_topics`
  to `BatchApp.batch_sink` as **one list** of faust `Message` objects (``tp``,
  ``offset``, ``key``, ``value``, ``generation_id``), in fetch order, and
  waits for the sink as faust waits for a record (the wait ends early when
  faust suspends the flow for a rebalance). Records of any other topic take
  faust's usual path. Offsets faust itself would drop (re-fetched below its
  read offset after a seek) are dropped the same way.
- its aiokafka consumer asks the broker to answer a fetch once
  `BatchApp.fetch_min_bytes` are there or after `BatchApp.fetch_max_wait_ms`
  (faust's are 1 byte and 1.5 s): one fetch request per record batch the
  clients produce cost more CPU than everything else in the consumer thread.

Nothing here commits: the source topics are not acked, the app commits what
its engine allows (see `agentlake.streams.app`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import Message
from mode import Service

BatchSink = Callable[[list[Message]], Awaitable[None]]


class BatchApp(faust.App):
    """A faust app whose consumer delivers `batch_topics` in batches to `batch_sink`.

    Set `batch_topics` (physical names) and `batch_sink` before the app starts;
    `fetch_min_bytes` / `fetch_max_wait_ms` before its consumer is created.
    """

    batch_topics: frozenset[str] = frozenset()
    batch_sink: BatchSink | None = None
    fetch_min_bytes: int = 64 * 1024
    fetch_max_wait_ms: int = 50

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = cast(BatchApp, self.app)
        # aiokafka reads these when it starts its fetcher (after this returns); faust passes
        # no fetch_min_bytes and a fixed fetch_max_wait_ms, so they are set here.
        for name, value in (
            ("_fetch_min_bytes", app.fetch_min_bytes),
            ("_fetch_max_wait_ms", app.fetch_max_wait_ms),
        ):
            if not hasattr(consumer, name):
                raise RuntimeError(f"aiokafka's consumer has no {name}: update agentlake.streams.transport")
            setattr(consumer, name, value)
        return consumer


class BatchConsumer(driver.Consumer):
    """faust's aiokafka consumer, draining `BatchApp.batch_topics` one fetch round at a time."""

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # the loop of faust's own, batched
        app = cast(BatchApp, self.app)
        sink, topics, callback = app.batch_sink, app.batch_topics, self.callback
        if sink is None:
            raise RuntimeError("BatchApp.batch_sink is not set")
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = self.getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    batch: list[Message] = []
                    async for tp, message in ait:
                        r_offset = read_offset[tp]
                        if r_offset is not None and message.offset < r_offset:
                            continue  # re-fetched after a seek: faust drops it too
                        read_offset[tp] = message.offset
                        if tp.topic in topics:
                            batch.append(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                    if batch:
                        await self.wait_first(sink(batch), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class BatchTransport(driver.Transport):
    Consumer = BatchConsumer


__all__ = ["BatchApp", "BatchConsumer", "BatchSink", "BatchTransport"]
