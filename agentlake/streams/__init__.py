"""Stream processors (event -> event): live rewards, policy findings, dead letters."""

from agentlake.streams.processor import (
    AgentRules,
    Output,
    RewardProcessor,
    ToolPolicy,
    apply,
    new_state,
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
    "Output",
    "RewardProcessor",
    "RewardSpec",
    "RewardVector",
    "ToolPolicy",
    "TrajectorySummary",
    "apply",
    "new_state",
    "score",
    "summarize",
]
