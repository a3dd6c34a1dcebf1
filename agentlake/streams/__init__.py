"""Stream processors (event -> event): final and live rewards, policy findings, dead letters."""

from agentlake.streams.engine import Engine
from agentlake.streams.processor import (
    AgentRules,
    Output,
    RewardProcessor,
    ToolPolicy,
    TrajState,
    check_record,
    event_rank,
    summarize,
)
from agentlake.streams.rewards import (
    BUILTIN_COMPONENTS,
    DEFAULT_SPEC,
    ComponentSpec,
    RewardSpec,
    RewardVector,
    TrajectorySummary,
    score,
)

__all__ = [
    "BUILTIN_COMPONENTS",
    "DEFAULT_SPEC",
    "AgentRules",
    "ComponentSpec",
    "Engine",
    "Output",
    "RewardProcessor",
    "RewardSpec",
    "RewardVector",
    "ToolPolicy",
    "TrajState",
    "TrajectorySummary",
    "check_record",
    "event_rank",
    "score",
    "summarize",
]
