"""Milvus read model: one vector per finished trajectory, upserted by trajectory_id.

The vector embeds the task text; scalars carry what a caller filters or ranks
on (tenant, agent, outcome, reward, tool sequence). milvus-lite file under the
data dir by default, any Milvus/Zilliz endpoint with ``MILVUS_URI``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from agentlake.projections.embeddings import Embedder
from agentlake.schemas import RewardScored
from agentlake.settings import Settings

log = logging.getLogger("agentlake.milvus")

os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # silence gRPC C-core chatter of milvus-lite

COLLECTION = "trajectories"
_clients: dict[str, Any] = {}


def open_client(target: str, token: str | None = None, attempts: int = 3) -> Any:
    """A new pymilvus ``MilvusClient`` for `target` (a server URI or a milvus-lite file path; the
    file's folder must exist), authenticated with `token` when one is set, that answered a first
    call. For a milvus-lite file, keepalive pings are slowed to what its server accepts, and
    a client that does not answer its first call is replaced, up to `attempts` times.

    Raises:
        pymilvus.exceptions.MilvusException: the server did not answer.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    from agentlake._logging import reapply_pinned_levels

    reapply_pinned_levels()  # importing pymilvus reset its loggers' levels
    kwargs: dict[str, Any] = {"token": token} if token else {}
    local = "://" not in target
    if local:
        # pymilvus pings every 10 s, even idle; milvus-lite's gRPC server allows one ping per
        # 5 min and answers more with GOAWAY "too many pings", after which every client of
        # the file in this process fails to connect (seen in CI after a few idle minutes)
        kwargs["grpc_options"] = {
            "grpc.keepalive_time_ms": 600_000,
            "grpc.keepalive_permit_without_calls": False,
        }
    for attempt in range(1, attempts + 1):
        # pymilvus shares one channel per address in a process: a retry takes a channel of its own
        client = MilvusClient(target, **kwargs, **({"dedicated": True} if attempt > 1 else {}))
        try:
            client.list_collections()
            return client
        except MilvusException:
            if not local or attempt == attempts:
                raise
            log.warning("milvus-lite at %s did not answer; starting a new client (%d)", target, attempt)
            with contextlib.suppress(Exception):
                client.close()
            time.sleep(1.0 * attempt)
    raise AssertionError("unreachable")


def milvus_client(settings: Settings) -> Any:
    """The process-wide client for ``settings.milvus_target`` (made on first use; the data dir is
    created for a milvus-lite file)."""
    target = settings.milvus_target
    if target not in _clients:
        if settings.milvus_uri is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        _clients[target] = open_client(target, settings.milvus_token)
    return _clients[target]


def vector_index_params(client: Any) -> Any:
    """`client`'s index params with the HNSW index (M 16, efConstruction 200, COSINE metric) on
    the ``vector`` field that every AgentLake collection uses; add scalar indexes to it as needed."""
    index = client.prepare_index_params()
    index.add_index(
        field_name="vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200}
    )
    return index


def collection_name(settings: Settings, collection: str | None = None) -> str:
    """The collection's name on the server: the topic prefix applied, as Milvus spells names."""
    return settings.topic(collection or COLLECTION).replace(".", "_").replace("-", "_")


@dataclass(frozen=True)
class Neighbor:
    trajectory_id: str
    score: float
    task: str
    agent_id: str
    agent_version: str
    tenant: str
    outcome: str
    success: bool
    reward: float
    tool_sequence: list[str]
    run_id: str
    scenario_id: str


_FIELDS = [
    "task",
    "agent_id",
    "agent_version",
    "tenant",
    "outcome",
    "success",
    "reward",
    "tool_sequence",
    "run_id",
    "scenario_id",
]


class TrajectoryIndex:
    """The Milvus collection of finished trajectories."""

    def __init__(self, settings: Settings, embedder: Embedder, collection: str | None = None) -> None:
        self.client = milvus_client(settings)
        self.embedder = embedder
        self.collection = collection_name(settings, collection)
        self._ensure()

    def _ensure(self) -> None:
        from pymilvus import DataType

        c = self.client
        if c.has_collection(self.collection):
            desc = c.describe_collection(self.collection)
            for f in desc.get("fields", []):
                if f.get("name") == "vector":
                    dim = int(f.get("params", {}).get("dim", self.embedder.dim))
                    if dim != self.embedder.dim:
                        raise RuntimeError(
                            f"Milvus collection {self.collection!r} holds {dim}-d vectors but the embedder "
                            f"{self.embedder.name} gives {self.embedder.dim}-d: "
                            "drop it and replay, or switch back"
                        )
            c.load_collection(self.collection)
            return
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("trajectory_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.embedder.dim)
        schema.add_field("task", DataType.VARCHAR, max_length=4096)
        for name in ("agent_id", "agent_version", "tenant", "outcome", "run_id", "scenario_id"):
            schema.add_field(name, DataType.VARCHAR, max_length=256)
        schema.add_field("success", DataType.BOOL)
        schema.add_field("reward", DataType.DOUBLE)
        schema.add_field("tool_sequence", DataType.VARCHAR, max_length=8192)
        schema.add_field("ended_us", DataType.INT64)
        c.create_collection(self.collection, schema=schema, index_params=vector_index_params(c))
        c.load_collection(self.collection)

    def upsert(self, rewards: list[RewardScored]) -> int:
        finals = {r.trajectory_id: r for r in rewards if r.is_final}
        if not finals:
            return 0
        items = list(finals.values())
        vectors = self.embedder.embed([r.task for r in items])
        rows = []
        for r, v in zip(items, vectors, strict=True):
            rows.append(
                {
                    "trajectory_id": r.trajectory_id,
                    "vector": v.tolist(),
                    "task": r.task[:4000],
                    "agent_id": r.agent_id[:255],
                    "agent_version": r.agent_version[:255],
                    "tenant": r.tenant[:255],
                    "outcome": (r.outcome or "")[:255],
                    "run_id": (r.run_id or "")[:255],
                    "scenario_id": (r.scenario_id or "")[:255],
                    "success": r.success,
                    "reward": float(r.total),
                    "tool_sequence": json.dumps(r.tool_sequence)[:8000],
                    "ended_us": r.ts_us,
                }
            )
        self.client.upsert(self.collection, rows)
        return len(rows)

    def nearest(self, task: str, k: int = 5, filter: str = "") -> list[Neighbor]:
        """The `k` past trajectories whose task is closest to `task` (cosine)."""
        vec = self.embedder.embed([task])[0].tolist()
        res = self.client.search(
            self.collection,
            [vec],
            limit=k,
            filter=filter,
            output_fields=_FIELDS,
            search_params={"metric_type": "COSINE", "params": {"ef": max(64, k)}},
        )
        out = []
        for hit in res[0]:
            e = hit["entity"]
            out.append(
                Neighbor(
                    trajectory_id=str(hit.get("trajectory_id", hit.get("id"))),
                    score=float(hit["distance"]),
                    task=e["task"],
                    agent_id=e["agent_id"],
                    agent_version=e["agent_version"],
                    tenant=e["tenant"],
                    outcome=e["outcome"],
                    success=bool(e["success"]),
                    reward=float(e["reward"]),
                    tool_sequence=json.loads(e["tool_sequence"] or "[]"),
                    run_id=e["run_id"],
                    scenario_id=e["scenario_id"],
                )
            )
        return out

    def count(self, filter: str = "") -> int:
        res = self.client.query(
            self.collection, filter=filter or 'trajectory_id != ""', output_fields=["count(*)"]
        )
        return int(res[0]["count(*)"])


# -- context lake ----------------------------------------------------------------
LAKE_ENTRIES = "lake_entries"
LAKE_CENTROIDS = "lake_centroids"


def _lake_collection(client: Any, name: str, dim: int, scalars: dict[str, int]) -> None:
    """Create `name` (primary key ``key``, ``tenant``, ``vector``, VARCHAR `scalars`) unless present;
    raise when it exists with another dimension."""
    from pymilvus import DataType

    if client.has_collection(name):
        for f in client.describe_collection(name).get("fields", []):
            if f.get("name") == "vector" and int(f.get("params", {}).get("dim", dim)) != dim:
                raise RuntimeError(
                    f"Milvus collection {name!r} holds {f['params']['dim']}-d vectors, the embedder gives "
                    f"{dim}-d: drop it (the lake rebuilds from lake.entries) or switch the embedder back"
                )
        client.load_collection(name)
        return
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("tenant", DataType.VARCHAR, max_length=256)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    for field_name, length in scalars.items():
        schema.add_field(field_name, DataType.VARCHAR, max_length=length)
    index = vector_index_params(client)
    index.add_index(field_name="tenant", index_type="INVERTED")
    client.create_collection(name, schema=schema, index_params=index)
    client.load_collection(name)


class LakeStore:
    """The context lake's durable store in Milvus: entries (vector + the entry as JSON) and
    each tenant's k-means centroids. The serving process rebuilds its hot tier from it on
    start; it is never on the lookup path.

    Args:
        client: a pymilvus ``MilvusClient``.
        dim: vector dimension (the embedder's).
        prefix: collection name prefix (the topic prefix, sanitized).
    """

    def __init__(self, client: Any, dim: int, prefix: str = "") -> None:
        self.client = client
        self.dim = dim
        safe = prefix.replace(".", "_").replace("-", "_")
        self.entries = f"{safe}{LAKE_ENTRIES}"
        self.centroids = f"{safe}{LAKE_CENTROIDS}"
        _lake_collection(client, self.entries, dim, {"entry_json": 65535})
        _lake_collection(client, self.centroids, dim, {"meta_json": 1024})

    def upsert_entries(self, rows: list[tuple[str, str, list[float], str]]) -> int:
        """Upsert ``(tenant, entry_id, vector, entry_json)`` rows; returns how many."""
        if not rows:
            return 0
        self.client.upsert(
            self.entries,
            [{"key": f"{t}/{e}", "tenant": t, "vector": v, "entry_json": j[:65000]} for t, e, v, j in rows],
        )
        return len(rows)

    def delete_entries(self, tenant: str, entry_ids: list[str]) -> None:
        if entry_ids:
            self.client.delete(self.entries, ids=[f"{tenant}/{e}" for e in entry_ids])

    def upsert_centroids(self, tenant: str, centroids: list[list[float]], meta: list[str]) -> None:
        """Replace `tenant`'s centroids (one row per cluster id)."""
        self.client.delete(self.centroids, filter=f'tenant == "{_quote(tenant)}"')
        if centroids:
            self.client.upsert(
                self.centroids,
                [
                    {"key": f"{tenant}/{i}", "tenant": tenant, "vector": c, "meta_json": m}
                    for i, (c, m) in enumerate(zip(centroids, meta, strict=True))
                ],
            )

    def scan_entries(self, batch_size: int = 2000) -> Any:
        """Every stored entry as ``(vector, entry_json)``, in batches (an iterator of lists)."""
        it = self.client.query_iterator(
            self.entries, batch_size=batch_size, filter='key != ""', output_fields=["vector", "entry_json"]
        )
        try:
            while True:
                batch = it.next()
                if not batch:
                    break
                yield [(row["vector"], row["entry_json"]) for row in batch]
        finally:
            it.close()

    def search(self, tenant: str, vector: list[float], k: int = 10) -> list[tuple[str, float]]:
        """Nearest entries of `tenant` straight from Milvus: ``(key, cosine)`` (the slow path the
        benchmark compares the hot tier with)."""
        res = self.client.search(
            self.entries,
            [vector],
            limit=k,
            filter=f'tenant == "{_quote(tenant)}"',
            output_fields=["key"],
            search_params={"metric_type": "COSINE", "params": {"ef": max(64, k)}},
        )
        return [(str(h.get("key", h.get("id"))), float(h["distance"])) for h in res[0]]

    def count(self) -> int:
        res = self.client.query(self.entries, filter='key != ""', output_fields=["count(*)"])
        return int(res[0]["count(*)"])


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
