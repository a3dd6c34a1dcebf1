"""Logging shared by every process: repeated messages are rate-limited.

A worker whose broker is down gets the same connection error hundreds of times a
second from its Kafka client; a log that grows by megabytes hides everything else.
`RateLimitFilter` lets the first occurrence of a message through, then at most
one per `interval` seconds with the count of those suppressed in between.
"""

from __future__ import annotations

import logging
import threading
import time

# Loggers whose repeated errors flood a log while the broker is unreachable.
CHATTY_LOGGERS = (
    "aiokafka",
    "aiokafka.conn",
    "aiokafka.client",
    "aiokafka.cluster",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.sender",
    "aiokafka.producer.producer",
    "faust",
    "faust.transport.drivers.aiokafka",
    "faust.transport.consumer",
    "faust.transport.producer",
    "mode",
    "agentlake",
    "agentlake.sdk",
    "agentlake.streams",
    "agentlake.sink",
    "agentlake.reconcile",
    "agentlake.registry",
    "agentlake.schemas",
)


def _signature(record: logging.LogRecord) -> str:
    """A message's identity for rate limiting: its template, with digits dropped so that
    'node 1' / 'node 2' or changing counters count as one."""
    msg = str(record.msg)
    return f"{record.name}:{record.levelno}:" + "".join(c for c in msg if not c.isdigit())[:200]


class RateLimitFilter(logging.Filter):
    """Pass the first occurrence of each warning or error, then at most one per `interval`
    seconds (a broker outage makes the Kafka clients log hundreds per second). INFO and DEBUG
    lines always pass.

    Args:
        interval: seconds between two copies of the same message.
        max_keys: messages remembered (oldest forgotten first).
    """

    def __init__(self, interval: float = 10.0, max_keys: int = 1000) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            # informational lines (e.g. a worker's partition assignment after each rebalance)
            # are what operators and tests read: never dropped; only repeated trouble is
            return True
        key = _signature(record)
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            suppressed = last[1] if last is not None else 0
            if len(self._seen) >= self.max_keys:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = (now, 0)
        if suppressed:
            record.msg = f"{record.msg} (repeated {suppressed} more times in the last {self.interval:.0f}s)"
        return True


_pinned: dict[str, int] = {}


def pin_level(name: str, level: int) -> None:
    """Set logger `name` to `level` and remember it, so `reapply_pinned_levels` can restore it
    after a library resets its own loggers on import."""
    _pinned[name] = level
    logging.getLogger(name).setLevel(level)


def reapply_pinned_levels() -> None:
    """Restore every level set by `pin_level`. Call right after importing a library that
    configures its loggers at import time: pymilvus runs ``logging.config.dictConfig`` and
    sets its logger back to WARNING, so its "failed to get mvccTs" warnings (milvus-lite has
    no session timestamps) would reach a user's terminal."""
    for name, level in _pinned.items():
        logging.getLogger(name).setLevel(level)


def rate_limit_chatty_loggers(interval: float = 10.0) -> None:
    """Install one `RateLimitFilter` per chatty logger (idempotent).

    A logger's filter sees only records logged on that logger itself, so each is
    installed by name; it survives handler changes (e.g. faust's own logging setup).
    """
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter(interval))
