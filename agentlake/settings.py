"""One settings object for the whole product, read from environment variables.

Every embedded default (local Kafka broker, in-process ClickHouse via chdb, a
milvus-lite file) is switched to a server by setting one variable; no code
changes. Names follow the conventions of the systems they point at.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Every field has an environment variable."""

    model_config = SettingsConfigDict(env_prefix="AGENTLAKE_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(".agentlake"), description="data dir for the embedded stack")
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
    kafka_port: int = 19092
    kafka_version: str = "4.1.0"
    kafka_heap: str = "512m"
    topic_partitions: int = 4
    topic_prefix: str = ""

    # --- ClickHouse --------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLICKHOUSE_URL", "AGENTLAKE_CLICKHOUSE_URL"),
        description="http(s)://user:pass@host:port/db; when unset chdb runs in-process under home",
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
        description="wordllama | sentence-transformers:<model> | openai:<model>",
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
        default=0.45, description="cosine floor of a hit before per-cluster calibration"
    )
    lake_min_reward: float = Field(default=0.7, description="reward a cached trajectory needs to be served")
    lake_cross_version: str = Field(
        default="same-agent", description="which agents may hit an entry: any | same-agent | same-version"
    )
    lake_ttl_s: float = Field(
        default=7 * 24 * 3600.0, description="entry lifetime from production; hits do not extend it"
    )
    lake_nprobe: int = Field(default=16, description="IVF clusters searched per lookup")
    lake_ivf_min: int = Field(default=4096, description="entries per tenant above which the hot index is IVF")
    lake_milvus_uri: str | None = Field(
        default=None,
        description="the lake's durable store; default: MILVUS_URI, else lake-milvus.db under home "
        "(milvus-lite allows one process per file)",
    )
    lake_host: str = "127.0.0.1"
    lake_port: int = 8765
    lake_url: str | None = Field(
        default=None, description="where `agentlake lake query` finds a running server"
    )

    # --- SDK ---------------------------------------------------------------
    max_payload_bytes: int = 64 * 1024
    sdk_queue_size: int = 100_000
    sdk_linger_ms: int = 5

    # --- workers -----------------------------------------------------------
    sink_batch_size: int = 5000
    sink_batch_ms: int = 200
    live_scores: bool = True
    # the sink scores ended trajectories the stream worker missed (0 disables)
    reconcile_every_s: float = 10.0
    reconcile_after_s: float = 30.0
    worker_session_timeout_s: float = 10.0
    stream_batch_size: int = 1  # >1: opt-in batched stream agent (see streams/app.py)
    stream_batch_ms: int = 50

    # --- context lake: enterprise documents (agentlake/lake/documents) ------
    lake_doc_max_bytes: int = Field(
        default=512 * 1024,
        description="largest document text accepted (UTF-8 bytes; Kafka caps records at 1 MiB)",
    )
    lake_chunk_chars: int = Field(default=1000, description="target chunk size in characters")
    lake_chunk_overlap: int = Field(default=150, description="characters repeated between consecutive chunks")

    @cached_property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def data_dir(self) -> Path:
        return self.home.resolve()

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def milvus_target(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def spill_dir(self) -> Path:
        return self.data_dir / "spill"

    @property
    def lake_milvus_target(self) -> str:
        return self.lake_milvus_uri or self.milvus_uri or str(self.data_dir / "lake-milvus.db")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def get_settings() -> Settings:
    return Settings()
