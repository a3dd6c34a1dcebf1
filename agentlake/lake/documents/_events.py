"""`DocumentUpserted` / `DocumentDeleted`: documents on the log (``lake.documents``).

Both are keyed by ``tenant`` + unit separator + ``doc_id`` so every event of one document
lands on one partition, in order. Encoded with the one codec (Avro
single-object encoding, `agentlake.schemas`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentlake.lake.documents._domain import PUBLIC, Document
from agentlake.schemas import DecodeError, codec, new_id, now_us
from agentlake.topics import LAKE_DOCUMENTS

UPSERTED = "DocumentUpserted"
DELETED = "DocumentDeleted"
KEY_SEP = "\x1f"  # ASCII unit separator: cannot appear in a tenant typed on a command line


@dataclass(frozen=True)
class DocumentUpserted:
    """A document, or a new version of it (mirror of ``DocumentUpserted.v1.avsc``)."""

    tenant: str
    doc_id: str
    version: int
    source: str
    text: str
    fingerprint: str
    title: str | None = None
    content_type: str = "text/plain"
    metadata: dict[str, str] = field(default_factory=dict)
    access: list[str] = field(default_factory=lambda: [PUBLIC])
    event_id: str = field(default_factory=new_id)
    ts_us: int = field(default_factory=now_us)

    @classmethod
    def of(cls, doc: Document) -> DocumentUpserted:
        return cls(
            tenant=doc.tenant,
            doc_id=doc.doc_id,
            version=doc.version,
            source=doc.source,
            text=doc.text,
            fingerprint=doc.fingerprint(),
            title=doc.title,
            content_type=doc.content_type,
            metadata=dict(doc.metadata),
            access=sorted(set(doc.access)),
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "tenant": self.tenant,
            "doc_id": self.doc_id,
            "version": self.version,
            "source": self.source,
            "title": self.title,
            "content_type": self.content_type,
            "text": self.text,
            "metadata": dict(self.metadata),
            "access": list(self.access),
            "fingerprint": self.fingerprint,
            "ts_us": self.ts_us,
        }


@dataclass(frozen=True)
class DocumentDeleted:
    """A document removed from its source (mirror of ``DocumentDeleted.v1.avsc``)."""

    tenant: str
    doc_id: str
    source: str
    version: int | None = None
    reason: str | None = None
    event_id: str = field(default_factory=new_id)
    ts_us: int = field(default_factory=now_us)

    def to_avro(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "tenant": self.tenant,
            "doc_id": self.doc_id,
            "version": self.version,
            "source": self.source,
            "reason": self.reason,
            "ts_us": self.ts_us,
        }


DocumentEvent = DocumentUpserted | DocumentDeleted


def event_of(doc: Document, reason: str = "tombstone") -> DocumentEvent:
    """The event a connector's document becomes (a tombstone becomes `DocumentDeleted`)."""
    if doc.deleted:
        return DocumentDeleted(doc.tenant, doc.doc_id, doc.source, version=doc.version, reason=reason)
    return DocumentUpserted.of(doc)


def document_key(tenant: str, doc_id: str) -> bytes:
    """The Kafka key: per-document order within one partition."""
    return f"{tenant}{KEY_SEP}{doc_id}".encode()


def encode_document_event(event: DocumentEvent) -> tuple[str, bytes, bytes]:
    """(logical topic, key, value) of `event`. Raises ValueError if it does not fit the schema."""
    record = UPSERTED if isinstance(event, DocumentUpserted) else DELETED
    value = codec().encode_record(record, event.to_avro(), strict=True)
    return LAKE_DOCUMENTS, document_key(event.tenant, event.doc_id), value


def decode_document_event(value: bytes) -> DocumentEvent:
    """The event carried by a ``lake.documents`` record.

    Raises:
        DecodeError: not an AgentLake record, or a record of another type (``wrong_topic``).
    """
    record, data = codec().decode_dict(value)
    if record == UPSERTED:
        return DocumentUpserted(
            tenant=data["tenant"],
            doc_id=data["doc_id"],
            version=int(data["version"]),
            source=data["source"],
            text=data["text"],
            fingerprint=data["fingerprint"],
            title=data.get("title"),
            content_type=data.get("content_type") or "text/plain",
            metadata=dict(data.get("metadata") or {}),
            access=list(data.get("access") or []),
            event_id=data["event_id"],
            ts_us=int(data["ts_us"]),
        )
    if record == DELETED:
        return DocumentDeleted(
            tenant=data["tenant"],
            doc_id=data["doc_id"],
            source=data["source"],
            version=None if data.get("version") is None else int(data["version"]),
            reason=data.get("reason"),
            event_id=data["event_id"],
            ts_us=int(data["ts_us"]),
        )
    raise DecodeError("wrong_topic", f"{record} does not belong on {LAKE_DOCUMENTS}")
