"""AgentLake: event-sourced infrastructure for reliable AI agents.

The public surface for agent code is the SDK::

    from agentlake import Tracer, TracedSession
"""

from agentlake.sdk import KafkaEmitter, MemoryEmitter, TracedSession, Tracer, Trajectory
from agentlake.settings import Settings, get_settings

__all__ = [
    "KafkaEmitter",
    "MemoryEmitter",
    "Settings",
    "TracedSession",
    "Tracer",
    "Trajectory",
    "get_settings",
]
__version__ = "0.1.0"
