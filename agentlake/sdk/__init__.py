"""What agent code imports: the tracer, the MCP wrapper and the emitters."""

from agentlake.sdk._emitter import Emitter, EmitterStats, KafkaEmitter, MemoryEmitter
from agentlake.sdk._mcp import TracedSession, result_text, result_value
from agentlake.sdk._spill import SpillBuffer
from agentlake.sdk._tracer import ToolCall, Tracer, Trajectory

__all__ = [
    "Emitter",
    "EmitterStats",
    "KafkaEmitter",
    "MemoryEmitter",
    "SpillBuffer",
    "ToolCall",
    "TracedSession",
    "Tracer",
    "Trajectory",
    "result_text",
    "result_value",
]
