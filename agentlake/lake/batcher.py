"""Micro-batching of concurrent lookups inside the serving process.

Lookups that arrive together (in the same turn of the event loop, or while the previous
batch was being searched) are answered by one :meth:`Lake.lookup_many`: one embedder call
for their new task texts, one faiss search per tenant for all of them, then each request's
candidates are checked in arrival order. Nothing waits for a batch to fill: a lone request
is searched as soon as the event loop turns, and requests queue only while a batch is
being searched.

Everything runs on the event loop's thread, like the rest of the lake. Searching the batch
on a worker thread instead (faiss and numpy release the GIL) was measured slower on two
shared cores: 1,761 and 1,568 lookups/s at 8 and 32 clients against 2,196 and 2,538 on the
loop (``bench/lake.py``, 100k entries, load average ≈ 3).
"""

from __future__ import annotations

import asyncio

from agentlake.lake.cache import Lake, LookupRequest, LookupResult

MAX_BATCH = 64  # lookups per batch; more wait for the next one


class LookupBatcher:
    """Answers :meth:`lookup` calls made on one event loop in batches.

    Args:
        lake: the lake, used from the event loop's thread only.
        max_batch: at most this many lookups per batch.

    Counters: :attr:`batches` and :attr:`lookups` answered (their ratio is the mean batch size).
    """

    def __init__(self, lake: Lake, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.lake = lake
        self.max_batch = max_batch
        self.batches = 0
        self.lookups = 0
        self._queue: list[tuple[LookupRequest, asyncio.Future[LookupResult]]] = []
        self._scheduled = False

    async def lookup(self, req: LookupRequest) -> LookupResult:
        """The answer :meth:`Lake.lookup` gives for `req`. Raises what the lookup raised."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[LookupResult] = loop.create_future()
        self._queue.append((req, fut))
        if not self._scheduled:
            # after the callbacks already due: the requests read in this turn of the loop join
            self._scheduled = True
            loop.call_soon(self._drain)
        return await fut

    def _drain(self) -> None:
        """Answer everything queued, `max_batch` at a time (an event-loop callback)."""
        self._scheduled = False
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                results = self.lake.lookup_many([req for req, _ in batch])
            except Exception as e:  # every waiting request gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.lookups += len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():  # a cancelled request (client gone) is still recorded
                    fut.set_result(res)
