"""One settings object for the whole product, read from environment variables.

Every embedded default (local Kafka broker, in-process ClickHouse via chdb, a
milvus-lite file) is switched to a server by setting one variable; no code
changes. Names follow the conventions of the systems they point at.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Every field has an environment variable."""

    model_config = SettingsConfigDict(env_prefix="AGENTLAKE_", extra="ignore", frozen=True)

    home: Path | None = Field(
        default=None,
        description="data dir for the embedded stack; unset: found as described in `data_dir`",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "agentlake",
        description="downloaded artifacts shared by every data dir (Kafka jars)",
    )

    # --- Kafka -------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "AGENTLAKE_KAFKA_BOOTSTRAP_SERVERS"),
        description="external cluster; when unset `agentlake up` starts a local broker",
    )
    kafka_port: int = Field(default=19092, ge=1, le=65535)
    kafka_version: str = Field(default="4.1.0", pattern=r"^\d+\.\d+\.\d+$")
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[kKmMgG]?$")  # java -Xmx
    topic_partitions: int = Field(default=4, ge=1)
    topic_prefix: str = ""

    # --- ClickHouse --------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLICKHOUSE_URL", "AGENTLAKE_CLICKHOUSE_URL"),
        description="http(s)://user:pass@host:port/db; when unset chdb runs in-process under home",
    )

    # --- running on clusters (README "Running on clusters") -------------------
    # Copies of every topic AgentLake or faust creates; None: the cluster's
    # `default.replication.factor` (1 for the embedded single broker).
    topic_replication_factor: int | None = Field(default=None, ge=1)
    # `min.insync.replicas` set on every topic created; None: the cluster's default.
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    # ClickHouse cluster name (remote_servers): DDL ON CLUSTER, Replicated* engines and
    # Distributed tables sharded by cityHash64(trajectory_id). None: one server (or chdb).
    clickhouse_cluster: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        validation_alias=AliasChoices("CLICKHOUSE_CLUSTER", "AGENTLAKE_CLICKHOUSE_CLUSTER"),
    )

    # --- Milvus ------------------------------------------------------------
    milvus_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MILVUS_URI", "AGENTLAKE_MILVUS_URI"),
        description="Milvus/Zilliz endpoint; when unset a milvus-lite file under home",
    )
    milvus_token: str | None = Field(
        default=None, validation_alias=AliasChoices("MILVUS_TOKEN", "AGENTLAKE_MILVUS_TOKEN")
    )

    # --- Embeddings --------------------------------------------------------
    embedder: str = Field(
        default="wordllama",
        min_length=1,
        description="wordllama[:<dim ≤ 256>] | sentence-transformers:<model> | openai:<model>",
    )
    embeddings_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "AGENTLAKE_EMBEDDINGS_URL"),
    )
    embeddings_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "AGENTLAKE_EMBEDDINGS_API_KEY")
    )

    # --- context lake: semantic cache and serving (agentlake/lake) -------------
    lake_threshold: float = Field(
        default=0.45, ge=-1.0, le=1.0, description="cosine floor of a hit before per-cluster calibration"
    )
    lake_min_reward: float = Field(
        default=0.7, ge=0.0, le=1.0, description="reward a cached trajectory needs to be served"
    )
    lake_cross_version: str = Field(
        default="same-agent",
        pattern=r"^(any|same-agent|same-version)$",
        description="which agents may hit an entry: any | same-agent | same-version",
    )
    lake_ttl_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="entry lifetime from production; hits do not extend it"
    )
    lake_nprobe: int = Field(default=16, ge=1, description="IVF clusters searched per lookup")
    lake_ivf_min: int = Field(
        default=4096, ge=1, description="entries per tenant above which the hot index is IVF"
    )
    lake_milvus_uri: str | None = Field(
        default=None,
        description="the lake's durable store; default: MILVUS_URI, else lake-milvus.db under home "
        "(milvus-lite allows one process per file)",
    )
    lake_host: str = "127.0.0.1"
    lake_port: int = Field(default=8765, ge=0, le=65535)  # 0: any free port
    lake_url: str | None = Field(
        default=None, description="where `agentlake lake query` finds a running server"
    )

    # --- SDK ---------------------------------------------------------------
    # size limits (boundary): see `check_limits` and the README's "Limits"
    max_payload_bytes: int = Field(default=64 * 1024, ge=16)
    max_message_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    sdk_queue_size: int = Field(default=100_000, ge=1)
    sdk_linger_ms: int = Field(default=5, ge=0)

    # --- workers -----------------------------------------------------------
    sink_batch_size: int = Field(default=5000, ge=1)
    sink_batch_ms: int = Field(default=200, ge=1)
    live_scores: bool = True
    # the sink scores ended trajectories the stream worker missed (0 disables)
    reconcile_every_s: float = Field(default=10.0, ge=0)
    reconcile_after_s: float = Field(default=30.0, ge=0)
    worker_session_timeout_s: float = Field(default=10.0, gt=0)
    # --- stream worker (agentlake/streams: engine.py, app.py) ---------------
    stream_batch_size: int = Field(default=2000, ge=1)  # at most this many events per fetch round (batch)
    stream_batch_ms: int = Field(default=50, ge=1)  # a fetch is answered after this long (or at 64 KiB)
    stream_checkpoint_every_s: float = Field(
        default=1.0, gt=0
    )  # changed open trajectories are checkpointed this often
    stream_idle_timeout_s: float = Field(
        default=600.0, gt=0
    )  # an open trajectory idle this long is scored as `timeout`
    stream_done_retention_s: float = Field(
        default=600.0, gt=0
    )  # done markers (idempotent re-delivery) are kept this long
    live_score_every_s: float = Field(default=1.0, ge=0)  # at most one live score per trajectory per interval

    @field_validator("embedder")
    @classmethod
    def check_embedder(cls, v: str) -> str:
        """``wordllama`` takes a dimension of at most 256 (its bundled weights, truncated)."""
        kind, _, arg = v.partition(":")
        if kind == "wordllama":
            if arg and not (arg.isdigit() and 1 <= int(arg) <= 256):
                raise ValueError(
                    "wordllama ships 256-d weights only: use wordllama or wordllama:<d>, d ≤ 256"
                )
        elif kind not in ("sentence-transformers", "openai"):
            raise ValueError("use wordllama[:<d>], sentence-transformers:<model> or openai:<model>")
        return v

    @model_validator(mode="after")
    def check_limits(self) -> Settings:
        """Every limit in the chain must leave room for what is derived from an event.

        An SDK event carries at most four capped text fields (e.g. final answer, error,
        checks, attributes) plus bounded identifiers; the worker's outputs (rewards, dead
        letters) add at most `MESSAGE_HEADROOM_BYTES` to what they are derived from.
        """
        if self.lake_chunk_overlap >= self.lake_chunk_chars:
            raise ValueError(
                f"AGENTLAKE_LAKE_CHUNK_OVERLAP={self.lake_chunk_overlap} must be smaller than "
                f"AGENTLAKE_LAKE_CHUNK_CHARS={self.lake_chunk_chars}"
            )
        need = 4 * self.max_payload_bytes + 2 * MESSAGE_HEADROOM_BYTES
        if self.max_message_bytes < need:
            raise ValueError(
                f"AGENTLAKE_MAX_MESSAGE_BYTES={self.max_message_bytes} is too small for "
                f"AGENTLAKE_MAX_PAYLOAD_BYTES={self.max_payload_bytes}: it needs at least {need} "
                f"(4 payloads + {2 * MESSAGE_HEADROOM_BYTES} bytes of headroom)"
            )
        return self

    @property
    def max_event_bytes(self) -> int:
        """Largest encoded event the SDK sends: the broker limit minus the headroom the
        worker needs to re-publish something derived from it (a dead letter, a reward)."""
        return self.max_message_bytes - MESSAGE_HEADROOM_BYTES

    # --- OpenTelemetry ingest (agentlake/otel) and the dashboard (agentlake/dashboard) ---
    otel_host: str = "127.0.0.1"
    otel_port: int = Field(default=4318, ge=0, le=65535)  # the OTLP/HTTP default port
    otel_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1)  # per request, after decompression
    otel_end_grace_s: float = Field(
        default=5.0, ge=0
    )  # quiet time after the root invoke_agent span before emitting
    otel_idle_timeout_s: float = Field(
        default=120.0, gt=0
    )  # a trace without a root span ends as `timeout` after this
    otel_max_spans_per_trace: int = Field(default=20_000, ge=1)
    otel_max_traces: int = Field(default=10_000, ge=1)  # pending traces; beyond: 503, retry later
    otel_tenant: str = Field(
        default="default", min_length=1
    )  # when spans carry no agentlake.tenant / tenant.id
    # write-ahead log of accepted spans (agentlake/otel/_spool.py); default <home>/otel/spool
    otel_spool_dir: Path | None = None
    otel_spool_fsync: bool = False  # fsync each request's spans: survives power loss, not only a kill
    otel_spool_segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8050, ge=0, le=65535)
    dashboard_token: str | None = None  # required to bind anywhere but loopback
    dashboard_follow_s: float = Field(
        default=2.0, ge=0
    )  # embedded chdb: project new events this often (0: never)

    # --- agent auth (agentlake/auth) ---------------------------------------
    # authority key from the environment instead of a 0600 file: "<key id>:<ed25519 private key>"
    auth_root_key: SecretStr | None = None
    auth_keys_dir: Path | None = None  # default: <home>/auth/keys
    auth_token_ttl_s: int = Field(default=900, ge=1)  # default lifetime of minted tokens
    auth_max_time_ms: float = Field(
        default=200.0, gt=0
    )  # authorizer Datalog time backstop per decision (library default: 1 ms)
    auth_gateway_id: str | None = None  # names the gateway in its events (default: gw-<hostname>)
    # the caller's token and task for a local stdio gateway (`auth gateway serve --stdio`)
    auth_token: SecretStr | None = None
    auth_task: str | None = None

    @property
    def auth_keys_path(self) -> Path:
        return self.auth_keys_dir or self.data_dir / "auth" / "keys"

    # --- context lake: enterprise documents (agentlake/lake/documents) ------
    lake_doc_max_bytes: int = Field(
        default=512 * 1024,
        ge=1,
        description="largest document text accepted (UTF-8 bytes; Kafka caps records at 1 MiB)",
    )
    lake_chunk_chars: int = Field(default=1000, ge=1, description="target chunk size in characters")
    lake_chunk_overlap: int = Field(
        default=150, ge=0, description="characters repeated between consecutive chunks"
    )

    @cached_property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @cached_property
    def data_dir(self) -> Path:
        """The data dir, absolute, independent of where a command runs when it can be.

        1. ``AGENTLAKE_HOME`` (a relative value is taken from the working directory);
        2. the nearest ``.agentlake`` folder in the working directory or a parent (like git);
        3. the data dir of the local stack that `agentlake up` registered for this Kafka
           port (``<cache_dir>/stacks/``), so that commands run from any folder reach it;
        4. ``./.agentlake`` (created by `agentlake up`).
        """
        if self.home is not None:
            return self.home.expanduser().resolve()
        cwd = Path.cwd().resolve()
        for d in (cwd, *cwd.parents):
            if (d / ".agentlake").is_dir():
                return d / ".agentlake"
        if self.embedded_kafka:
            registered = registered_home(self)
            if registered is not None:
                return registered
        return cwd / ".agentlake"

    @property
    def stack_record(self) -> Path:
        """Where `agentlake up` records which data dir the local broker on this port serves."""
        return self.cache_dir / "stacks" / f"127.0.0.1-{self.kafka_port}.json"

    @cached_property
    def store_id(self) -> str:
        """Identity of the projection store (12 hex chars).

        The sink's consumer group includes it, so two stores never share offsets: a
        second store (e.g. a command run with another data dir) projects the whole log
        for itself instead of taking events away from the first. For chdb it is a random
        id kept in ``<data_dir>/store-id``; for a ClickHouse server, a hash of its
        address and database (several sinks writing one server share the group).
        """
        if self.clickhouse_url:
            from urllib.parse import urlsplit

            u = urlsplit(self.clickhouse_url)
            where = f"{u.scheme}://{u.hostname}:{u.port}{u.path}"
            return hashlib.sha256(where.encode()).hexdigest()[:12]
        path = self.data_dir / "store-id"
        try:
            return path.read_text().strip()[:12]
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"store-id.{os.getpid()}.tmp")
        tmp.write_text(uuid.uuid4().hex[:12])
        try:
            os.link(tmp, path)  # atomic create-if-absent: concurrent first users agree
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()[:12]

    @property
    def sink_group(self) -> str:
        """The sink's consumer group (unprefixed): bound to this projection store."""
        from agentlake.topics import SINK_GROUP

        return f"{SINK_GROUP}-{self.store_id}"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def milvus_target(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def otel_spool_path(self) -> Path:
        """Where the OTLP endpoint logs accepted spans: `otel_spool_dir`, else <home>/otel/spool."""
        return (self.otel_spool_dir or self.data_dir / "otel" / "spool").expanduser()

    @property
    def spill_dir(self) -> Path:
        return self.data_dir / "spill"

    @property
    def lake_milvus_target(self) -> str:
        return self.lake_milvus_uri or self.milvus_uri or str(self.data_dir / "lake-milvus.db")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


# Bytes a worker may add to an event when it re-publishes something derived from it
# (dead-letter headers, reward fields, record-batch overhead).
MESSAGE_HEADROOM_BYTES = 64 * 1024


def registered_home(s: Settings) -> Path | None:
    """The data dir `agentlake up` recorded for the local broker on `s.kafka_port`, if it
    still exists."""
    try:
        rec = json.loads(s.stack_record.read_text())
        home = Path(rec["home"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return home if home.is_dir() else None


def get_settings() -> Settings:
    return Settings()
