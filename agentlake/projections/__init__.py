"""Read models rebuilt from the log: ClickHouse (evals, analytics) and Milvus (vectors)."""

from agentlake.projections.clickhouse import ClickHouseError, ClickHouseWriter, agent_summary, connect, query
from agentlake.projections.embeddings import Embedder, get_embedder
from agentlake.projections.milvus import Neighbor, TrajectoryIndex

__all__ = [
    "ClickHouseError",
    "ClickHouseWriter",
    "Embedder",
    "Neighbor",
    "TrajectoryIndex",
    "agent_summary",
    "connect",
    "get_embedder",
    "query",
]
