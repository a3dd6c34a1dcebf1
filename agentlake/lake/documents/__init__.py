"""Enterprise data in the context lake: connectors, document events, chunks in Milvus, access rules, lineage.

    from agentlake.lake.documents import search_documents, dependents, record_usage

    hits = search_documents(settings, "acme", "refund policy for damaged goods", k=5, principal="user:alice")
    record_usage(settings, "traj-123", hits)          # the lake entry traj-123 used these versions
    dependents(settings, "acme", "policies/refunds.md")  # -> ["traj-123"] until the document changes

Sources (`FilesConnector`, `ParquetConnector`, `DeltaConnector`,
`SqlConnector` for any DB-API warehouse, or any `Connector`) become
`DocumentUpserted` / `DocumentDeleted` events on ``lake.documents``;
`DocumentProjector` chunks, embeds and stores them (`DocumentStore`).
"""

from __future__ import annotations

from collections.abc import Iterable

from agentlake.lake.documents._connectors import (
    Connector,
    ConnectorError,
    DeltaConnector,
    FilesConnector,
    ParquetConnector,
    SqlConnector,
    connector_for,
    document_from_mapping,
    read_all,
    rows_to_documents,
)
from agentlake.lake.documents._domain import (
    PUBLIC,
    Chunk,
    Document,
    DocumentError,
    Principal,
    PrincipalLike,
    can_read,
    chunk_text,
    principal_tokens,
)
from agentlake.lake.documents._events import (
    DocumentDeleted,
    DocumentEvent,
    DocumentUpserted,
    decode_document_event,
    encode_document_event,
    event_of,
)
from agentlake.lake.documents._log import (
    DocumentProjector,
    ProjectionStats,
    plan_events,
    project_documents,
    publish_events,
)
from agentlake.lake.documents.store import (
    ApplyResult,
    DocumentHit,
    DocumentStore,
    DocumentUse,
    document_store,
)
from agentlake.settings import Settings

__all__ = [
    "PUBLIC",
    "ApplyResult",
    "Chunk",
    "Connector",
    "ConnectorError",
    "DeltaConnector",
    "Document",
    "DocumentDeleted",
    "DocumentError",
    "DocumentEvent",
    "DocumentHit",
    "DocumentProjector",
    "DocumentStore",
    "DocumentUpserted",
    "DocumentUse",
    "FilesConnector",
    "ParquetConnector",
    "Principal",
    "PrincipalLike",
    "ProjectionStats",
    "SqlConnector",
    "can_read",
    "chunk_text",
    "connector_for",
    "decode_document_event",
    "dependents",
    "document_from_mapping",
    "document_store",
    "encode_document_event",
    "event_of",
    "plan_events",
    "principal_tokens",
    "project_documents",
    "publish_events",
    "read_all",
    "record_usage",
    "rows_to_documents",
    "search_documents",
]


def _store(settings_or_store: Settings | DocumentStore) -> DocumentStore:
    if isinstance(settings_or_store, DocumentStore):
        return settings_or_store
    return document_store(settings_or_store)


def search_documents(
    settings_or_store: Settings | DocumentStore,
    tenant: str,
    query: str,
    k: int = 5,
    principal: PrincipalLike = None,
) -> list[DocumentHit]:
    """The `k` document chunks of `tenant` nearest to `query` that `principal` may read.

    Args:
        settings_or_store: a `DocumentStore`, or settings to open the process-wide one.
        tenant: the tenant whose documents are searched (a Milvus filter; other
            tenants' chunks are never candidates).
        query: free text.
        k: at most this many hits, best (highest cosine) first.
        principal: a `Principal`, a token string (``user:alice``, ``group:finance``;
            a bare name is a user) or an iterable of tokens. None is anonymous: it
            sees only documents whose access rules include ``*``.

    Returns:
        `DocumentHit` values; each carries its document's version (for lineage)
        and access rules (to carry on to whatever is derived from it).

    Raises:
        ValueError: k < 1.
    """
    return _store(settings_or_store).search(tenant, query, k, principal)


def record_usage(
    settings_or_store: Settings | DocumentStore,
    entry_id: str,
    used: Iterable[DocumentHit | DocumentUse | tuple[str, str, int]],
) -> int:
    """Record that the lake entry `entry_id` (a trajectory id) used these document versions.

    Args:
        used: hits it was given, `DocumentUse` rows, or (tenant, doc_id, version) tuples.

    Returns:
        Lineage rows written (recording the same use twice is a no-op).
    """
    uses = []
    for u in used:
        if isinstance(u, DocumentHit | DocumentUse):
            uses.append(DocumentUse(entry_id, u.tenant, u.doc_id, u.version))
        else:
            tenant, doc_id, version = u
            uses.append(DocumentUse(entry_id, tenant, doc_id, int(version)))
    return _store(settings_or_store).record_usage(uses)


def dependents(
    settings_or_store: Settings | DocumentStore, tenant: str, doc_id: str, except_version: int | None = None
) -> list[str]:
    """Ids of the lake entries that used document `doc_id` of `tenant`, sorted.

    Args:
        except_version: leave out entries that used exactly this version (the
            current one): what remains is stale after an update.
    """
    return _store(settings_or_store).dependents(tenant, doc_id, except_version)
