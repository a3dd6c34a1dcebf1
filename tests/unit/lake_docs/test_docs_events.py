"""DocumentUpserted / DocumentDeleted on the wire, and planning events from a source snapshot."""

from __future__ import annotations

import pytest

from agentlake.lake.documents import (
    Document,
    DocumentDeleted,
    DocumentUpserted,
    decode_document_event,
    encode_document_event,
    event_of,
    plan_events,
)
from agentlake.lake.documents._domain import StoredVersion
from agentlake.schemas import DecodeError, codec, new_id, now_us
from agentlake.topics import LAKE_DOCUMENTS, all_topics


def test_upserted_round_trips_with_the_registered_schema() -> None:
    doc = Document(
        "kb/refunds.md",
        "acme",
        "Refunds within 30 days.",
        17,
        source="files:/kb",
        title="Refunds",
        metadata={"owner": "support"},
        access=("group:support", "user:ada"),
        content_type="text/markdown",
    )
    ev = event_of(doc)
    assert isinstance(ev, DocumentUpserted)
    topic, key, value = encode_document_event(ev)
    assert topic == LAKE_DOCUMENTS == "lake.documents"
    assert key == b"acme\x1fkb/refunds.md"
    assert value[:2] == b"\xc3\x01"
    back = decode_document_event(value)
    assert back == ev
    assert back.fingerprint == doc.fingerprint()
    assert back.access == ["group:support", "user:ada"]


def test_tombstone_becomes_deleted_and_round_trips() -> None:
    ev = event_of(Document("k", "t", "", 3, source="delta:/x", deleted=True))
    assert isinstance(ev, DocumentDeleted)
    assert decode_document_event(encode_document_event(ev)[2]) == ev
    anon = DocumentDeleted("t", "k", "files:/x")
    assert decode_document_event(encode_document_event(anon)[2]).version is None


def test_other_records_and_garbage_are_decode_errors() -> None:
    spec = codec().encode_record(
        "SpecRegistered",
        {
            "event_id": new_id(),
            "kind": "agent",
            "spec_id": "a",
            "version": "1",
            "spec_json": "{}",
            "source": None,
            "applied_by": None,
            "ts_us": now_us(),
        },
    )
    with pytest.raises(DecodeError) as e:
        decode_document_event(spec)
    assert e.value.reason == "wrong_topic"
    with pytest.raises(DecodeError):
        decode_document_event(b"not avro at all")


def test_topic_and_its_dead_letters_are_created() -> None:
    names = {t.name for t in all_topics()}
    assert {"lake.documents", "lake.documents.dlq"} <= names


def test_plan_prunes_documents_gone_from_the_source_only_in_scope() -> None:
    docs = [
        Document("a", "acme", "x", 1, source="files:/kb"),
        Document("b", "acme", "y", 1, source="files:/kb"),
    ]
    events = plan_events(docs, {"a", "b", "c", "d"})
    assert [type(e).__name__ for e in events] == [
        "DocumentUpserted",
        "DocumentUpserted",
        "DocumentDeleted",
        "DocumentDeleted",
    ]
    gone = [e for e in events if isinstance(e, DocumentDeleted)]
    assert [(e.doc_id, e.reason, e.source) for e in gone] == [
        ("c", "gone from source", "files:/kb"),
        ("d", "gone from source", "files:/kb"),
    ]
    assert len(plan_events(docs, {"c"}, prune=False)) == 2
    # an empty snapshot prunes only when told its scope
    assert plan_events([], {"c"}) == []
    emptied = plan_events([], {"c"}, tenant="acme", source="files:/kb")
    assert [e.doc_id for e in emptied] == ["c"]


def test_plan_skips_what_the_lake_already_holds() -> None:
    a = Document("a", "acme", "same", 5, source="files:/kb")
    b = Document("b", "acme", "changed", 5, source="files:/kb")
    gone_tombstone = Document("z", "acme", "", 5, source="files:/kb", deleted=True)
    stored = {
        "a": StoredVersion(4, a.fingerprint()),
        "b": StoredVersion(4, "old"),
        "c": StoredVersion(1, "x"),
    }
    events = plan_events([a, b, gone_tombstone], stored)
    assert [(type(e).__name__, e.doc_id) for e in events] == [
        ("DocumentUpserted", "b"),
        ("DocumentDeleted", "c"),
    ]
