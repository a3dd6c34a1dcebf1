"""Milvus read model: one vector per finished trajectory, upserted by trajectory_id.

The vector embeds the task text; scalars carry what a caller filters or ranks
on (tenant, agent, outcome, reward, tool sequence). milvus-lite file under the
data dir by default, any Milvus/Zilliz endpoint with ``MILVUS_URI``.

VARCHAR capacities are UTF-8 bytes (what Milvus counts) and admit every value the
SDK emits (ids up to `MAX_ID_BYTES`). Free text is cut on a character boundary, the
tool sequence drops whole trailing names (never cut JSON). A row Milvus still
refuses (a value from another producer, a collection created with smaller limits) is
logged with its id, counted (`agentlake status`: ``milvus_refused``) and skipped: one
bad row never stops the sink.
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
from agentlake.schemas._bounds import MAX_ID_BYTES, capped_text
from agentlake.settings import Settings

log = logging.getLogger("agentlake.milvus")

os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # silence gRPC C-core chatter of milvus-lite

COLLECTION = "trajectories"
_clients: dict[str, Any] = {}

# VARCHAR max_length, in UTF-8 bytes, of the collections created here
ID_BYTES = MAX_ID_BYTES  # trajectory, agent, tenant, run and scenario ids (the SDK's cap)
TASK_BYTES = 4096
TOOL_SEQUENCE_BYTES = 8192
LAKE_KEY_BYTES = 2 * MAX_ID_BYTES + 1  # tenant/entry_id
LAKE_ENTRY_BYTES = 65535  # Milvus's largest VARCHAR
LAKE_META_BYTES = 1024
TRAJECTORY_LIMITS: dict[str, int] = {
    "trajectory_id": ID_BYTES,
    "task": TASK_BYTES,
    **dict.fromkeys(("agent_id", "agent_version", "tenant", "outcome", "run_id", "scenario_id"), ID_BYTES),
    "tool_sequence": TOOL_SEQUENCE_BYTES,
}
REBUILD_HINT = "agentlake projections rebuild --target milvus --recreate"


def utf8_len(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def json_list(items: list[str], limit: int) -> str:
    """`items` as a JSON list of at most `limit` UTF-8 bytes: whole trailing items are dropped
    and replaced by one marker item ``"…(+N more)"``; always valid JSON. Items are strings."""
    text = json.dumps(items, ensure_ascii=False)
    if utf8_len(text) <= limit:
        return text
    lo, hi = 0, len(items)  # the longest prefix that fits with its marker
    while lo < hi:
        mid = (lo + hi + 1) // 2
        marked = [*items[:mid], f"…(+{len(items) - mid} more)"]
        if utf8_len(json.dumps(marked, ensure_ascii=False)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return json.dumps([*items[:lo], f"…(+{len(items) - lo} more)"], ensure_ascii=False)


def parse_list(raw: Any) -> list[str]:
    """A stored JSON list of strings; ``[]`` for anything else (e.g. a row an older version cut
    mid-JSON). Never raises."""
    try:
        value = json.loads(raw or "[]")
    except (TypeError, ValueError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def oversized(row: dict[str, Any], limits: dict[str, int]) -> list[str]:
    """The VARCHAR fields of `row` longer (UTF-8 bytes) than `limits` allows, as ``name (n > max)``."""
    return [
        f"{name} ({utf8_len(row[name])} > {limit} bytes)"
        for name, limit in limits.items()
        if isinstance(row.get(name), str) and utf8_len(row[name]) > limit
    ]


def varchar_limits(client: Any, collection: str) -> dict[str, int]:
    """Field name -> VARCHAR max_length of an existing collection."""
    out = {}
    for f in client.describe_collection(collection).get("fields", []):
        length = (f.get("params") or {}).get("max_length")
        if length is not None:
            out[str(f["name"])] = int(length)
    return out


def warn_if_smaller(collection: str, found: dict[str, int], wanted: dict[str, int], how: str) -> None:
    """One warning line when an existing collection's VARCHARs are smaller than this version
    creates (rows over them are refused, see `upsert_refusing`)."""
    small = [f"{n} {found[n]} < {w}" for n, w in wanted.items() if n in found and found[n] < w]
    if small:
        log.warning(
            "Milvus collection %r was created with smaller VARCHAR limits (%s, bytes): rows over them "
            "are skipped; rebuild it: %s",
            collection,
            ", ".join(small),
            how,
        )


def upsert_refusing(
    client: Any, collection: str, rows: list[dict[str, Any]], limits: dict[str, int], id_field: str
) -> tuple[int, list[str]]:
    """Upsert `rows`, skipping the ones Milvus refuses: over `limits` (checked first), or
    refused on their own when the batch is. Returns (rows written, ids of the refused rows);
    each refusal is logged as an error with the row's `id_field`.

    Raises:
        pymilvus.exceptions.MilvusException: Milvus does not answer (the caller retries the batch).
    """
    from pymilvus.exceptions import MilvusException

    refused: list[str] = []
    good = []
    for row in rows:
        bad = oversized(row, limits)
        if bad:
            log.error("Milvus %s: skipped %s %r: %s", collection, id_field, row[id_field], ", ".join(bad))
            refused.append(str(row[id_field]))
        else:
            good.append(row)
    if not good:
        return 0, refused
    try:
        client.upsert(collection, good)
        return len(good), refused
    except MilvusException as batch_error:
        written = 0
        for row in good:
            try:
                client.upsert(collection, [row])
                written += 1
            except MilvusException as e:
                log.error("Milvus %s: skipped %s %r: %s", collection, id_field, row[id_field], e)
                refused.append(str(row[id_field]))
        if not written:
            try:
                client.has_collection(collection)  # a refusal, or is Milvus gone?
            except MilvusException:
                raise batch_error from None
        return written, refused


def refused_file(settings: Settings) -> Any:
    return settings.data_dir / "milvus-refused.json"


def record_refused(settings: Settings, ids: list[str]) -> None:
    """Add `ids` to the count of rows Milvus refused (`agentlake status`), under the data dir."""
    from agentlake._alarms import add_to_count

    with contextlib.suppress(OSError):  # a count for status: never worth failing the sink
        add_to_count(refused_file(settings), "refused", ids, keep=10)


def refused_count(settings: Settings) -> int:
    """How many rows Milvus refused since the data dir was made (0 when none)."""
    from agentlake._alarms import read_count

    return read_count(refused_file(settings), "refused")


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


def trajectory_row(r: RewardScored, vector: list[float]) -> dict[str, Any]:
    """The Milvus row of a final reward: free text cut to its field on a character boundary, the
    tool sequence bounded by whole names; ids as they are (`upsert_refusing` refuses an id over
    its field rather than cut it into another trajectory's id)."""
    return {
        "trajectory_id": r.trajectory_id,
        "vector": vector,
        "task": capped_text(r.task, TASK_BYTES),
        "agent_id": r.agent_id,
        "agent_version": r.agent_version,
        "tenant": r.tenant,
        "outcome": r.outcome or "",
        "run_id": r.run_id or "",
        "scenario_id": r.scenario_id or "",
        "success": r.success,
        "reward": float(r.total),
        "tool_sequence": json_list(list(r.tool_sequence), TOOL_SEQUENCE_BYTES),
        "ended_us": r.ts_us,
    }


class TrajectoryIndex:
    """The Milvus collection of finished trajectories."""

    def __init__(self, settings: Settings, embedder: Embedder, collection: str | None = None) -> None:
        self.settings = settings
        self.client = milvus_client(settings)
        self.embedder = embedder
        self.collection = collection_name(settings, collection)
        self.refused = 0  # rows Milvus refused in this process (logged and skipped)
        self._ensure()
        self.limits = varchar_limits(self.client, self.collection)
        warn_if_smaller(self.collection, self.limits, TRAJECTORY_LIMITS, REBUILD_HINT)

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
        lim = TRAJECTORY_LIMITS
        schema.add_field("trajectory_id", DataType.VARCHAR, is_primary=True, max_length=lim["trajectory_id"])
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.embedder.dim)
        schema.add_field("task", DataType.VARCHAR, max_length=lim["task"])
        for name in ("agent_id", "agent_version", "tenant", "outcome", "run_id", "scenario_id"):
            schema.add_field(name, DataType.VARCHAR, max_length=lim[name])
        schema.add_field("success", DataType.BOOL)
        schema.add_field("reward", DataType.DOUBLE)
        schema.add_field("tool_sequence", DataType.VARCHAR, max_length=lim["tool_sequence"])
        schema.add_field("ended_us", DataType.INT64)
        c.create_collection(self.collection, schema=schema, index_params=vector_index_params(c))
        c.load_collection(self.collection)

    def upsert(self, rewards: list[RewardScored]) -> int:
        """Upsert the final rewards of `rewards` (one row per trajectory); returns rows written.
        Rows Milvus refuses are logged, counted (`refused`, `refused_count`) and skipped.

        Raises:
            pymilvus.exceptions.MilvusException: Milvus does not answer.
        """
        finals = {r.trajectory_id: r for r in rewards if r.is_final}
        if not finals:
            return 0
        items = list(finals.values())
        vectors = self.embedder.embed([r.task for r in items])
        rows = [trajectory_row(r, v.tolist()) for r, v in zip(items, vectors, strict=True)]
        written, refused = upsert_refusing(self.client, self.collection, rows, self.limits, "trajectory_id")
        if refused:
            self.refused += len(refused)
            record_refused(self.settings, refused)
        return written

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
                    tool_sequence=parse_list(e["tool_sequence"]),
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
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=LAKE_KEY_BYTES)
    schema.add_field("tenant", DataType.VARCHAR, max_length=ID_BYTES)
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
        self.refused = 0  # entries Milvus refused (logged and skipped; lake.entries keeps them)
        entry_limits = {"key": LAKE_KEY_BYTES, "tenant": ID_BYTES, "entry_json": LAKE_ENTRY_BYTES}
        _lake_collection(client, self.entries, dim, {"entry_json": LAKE_ENTRY_BYTES})
        _lake_collection(client, self.centroids, dim, {"meta_json": LAKE_META_BYTES})
        self.entry_limits = varchar_limits(client, self.entries)
        warn_if_smaller(
            self.entries, self.entry_limits, entry_limits, "drop it; the lake rebuilds it from lake.entries"
        )

    def upsert_entries(self, rows: list[tuple[str, str, list[float], str]]) -> int:
        """Upsert ``(tenant, entry_id, vector, entry_json)`` rows; returns how many were written.
        An entry over a field's limit (never cut: cut JSON does not parse) or otherwise refused
        by Milvus is logged and skipped; the hot tier and ``lake.entries`` still hold it.

        Raises:
            pymilvus.exceptions.MilvusException: Milvus does not answer.
        """
        if not rows:
            return 0
        written, refused = upsert_refusing(
            self.client,
            self.entries,
            [{"key": f"{t}/{e}", "tenant": t, "vector": v, "entry_json": j} for t, e, v, j in rows],
            self.entry_limits,
            "key",
        )
        self.refused += len(refused)
        return written

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
