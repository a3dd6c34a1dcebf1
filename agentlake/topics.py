"""Topic names and their configuration: the log's layout in one place."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""


TRAJECTORIES = "agent.trajectories"
STEPS = "agent.steps"
TOOL_CALLS = "agent.tool_calls"
REWARDS = "rewards.scored"
POLICY = "policy.findings"
REGISTRY_AGENTS = "registry.agents"
REGISTRY_SERVERS = "registry.servers"
LAKE_CLUSTERS = "lake.clusters"
LAKE_DOCUMENTS = "lake.documents"
AUTH_DELEGATIONS = "auth.delegations"
AUTH_REVOCATIONS = "auth.revocations"
REGISTRY_KEYS = "registry.keys"  # agent auth: public keys by key id
SIM_RUNS = "sim.runs"
SCHEMAS = "registry.schemas"

STREAM_CHECKPOINTS = "streams.checkpoints"
LAKE_ENTRIES = "lake.entries"  # context lake: finished trajectories as cache entries
LAKE_CACHE = "lake.cache"  # context lake: lookups, reuse outcomes, freshness

TRAJECTORY_TOPICS = (TRAJECTORIES, STEPS, TOOL_CALLS)

# consumer groups (prefixed like topics)
STREAMS_GROUP = "agentlake-streams"  # the faust app id: the stream worker's group
SINK_GROUP = "agentlake-sink"
DOCUMENTS_GROUP = "agentlake-documents"  # projects lake.documents into Milvus
LAKE_GROUP = "agentlake-lake"  # the context lake ingester

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(TRAJECTORIES, doc="TrajectoryStarted / TrajectoryEnded, keyed by trajectory_id"),
    TopicSpec(STEPS, doc="AgentStep, keyed by trajectory_id"),
    TopicSpec(TOOL_CALLS, doc="ToolCallRequested / ToolCallCompleted, keyed by trajectory_id"),
    TopicSpec(REWARDS, doc="RewardScored from the stream processor (live and final)"),
    TopicSpec(POLICY, doc="PolicyViolation: tool calls outside an agent's declared tools or scopes"),
    TopicSpec(REGISTRY_AGENTS, compacted=True, doc="agent specs, keyed by agent@version"),
    TopicSpec(REGISTRY_SERVERS, compacted=True, doc="MCP server specs, keyed by server id"),
    TopicSpec(SIM_RUNS, compacted=True, doc="simulation run manifests, keyed by run id"),
    TopicSpec(SCHEMAS, compacted=True, doc="Avro writer schemas, keyed by fingerprint (hex)"),
    TopicSpec(LAKE_CLUSTERS, compacted=True, doc="context lake: ClusterCentroid / ClusterMembership"),
    TopicSpec(
        LAKE_DOCUMENTS, doc="context lake: DocumentUpserted / DocumentDeleted, keyed by tenant and doc_id"
    ),
    TopicSpec(AUTH_DELEGATIONS, doc="agent auth: issued and attenuated tokens"),
    TopicSpec(AUTH_REVOCATIONS, compacted=True, doc="agent auth: revoked token ids, fanned out to gateways"),
    TopicSpec(
        STREAM_CHECKPOINTS,
        compacted=True,
        # settings that make compaction actually run: small segments, a low dirty ratio, short tombstones
        config={
            "segment.ms": "60000",
            "segment.bytes": str(64 * 1024 * 1024),
            "min.cleanable.dirty.ratio": "0.1",
            "delete.retention.ms": "60000",
            "min.compaction.lag.ms": "0",
        },
        doc="stream worker state: open trajectories and done markers, keyed by trajectory_id",
    ),
    TopicSpec(REGISTRY_KEYS, compacted=True, doc="agent auth: authority and identity public keys, by key id"),
    TopicSpec(LAKE_ENTRIES, compacted=True, doc="context lake: LakeEntry, keyed by tenant/entry_id"),
    TopicSpec(LAKE_CACHE, doc="context lake: LakeLookup / LakeOutcome / LakeFreshness"),
)


def dlq(topic: str) -> str:
    """The dead-letter topic of `topic`: malformed records, with the reason in headers."""
    return f"{topic}.dlq"


def size_config(name: str, max_event_bytes: int) -> dict[str, str]:
    """Topic config that caps what producers may write to `name` (logical name).

    The trajectory topics take at most `max_event_bytes` (AGENTLAKE_MAX_MESSAGE_BYTES minus
    the headroom), the broker's `message.max.bytes` applies to the others: whatever the
    worker derives from an accepted event (a dead letter with its headers, a reward)
    still fits on its own topic. README: "Limits".
    """
    return {"max.message.bytes": str(max_event_bytes)} if name in TRAJECTORY_TOPICS else {}


def all_topics() -> list[TopicSpec]:
    out = list(TOPICS)
    for t in TOPICS:
        if not t.compacted:
            out.append(TopicSpec(dlq(t.name), doc=f"dead letters of {t.name}"))
    return out
