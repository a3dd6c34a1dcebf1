"""Sink workers (event -> store): batched, idempotent, offsets committed after the write."""

from agentlake.consumers.sink import SINK_TOPICS, Projector, SinkStats, run_sink

__all__ = ["SINK_TOPICS", "Projector", "SinkStats", "run_sink"]
