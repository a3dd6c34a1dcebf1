"""The Milvus read model (milvus-lite file): tenant and access filters, versions, lineage."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from agentlake.lake.documents import (
    Document,
    DocumentDeleted,
    DocumentStore,
    DocumentUse,
    Principal,
    dependents,
    event_of,
    record_usage,
    search_documents,
)
from agentlake.settings import Settings


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocumentStore]:
    home = tmp_path_factory.mktemp("docs-home")
    yield DocumentStore(Settings(home=home, lake_chunk_chars=200, lake_chunk_overlap=20))


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


REFUNDS = "Damaged goods are refunded within 30 days of delivery. Send a photo of the damage."
SALARIES = "Salary bands for engineering: L3 to L7, reviewed every April."


def test_tenants_never_see_each_other(store: DocumentStore) -> None:
    acme, globex = _tenant(), _tenant()
    store.apply(event_of(Document("refunds", acme, REFUNDS, 1, source="s")))
    store.apply(event_of(Document("refunds", globex, "Globex never refunds anything at all.", 1, source="s")))
    for tenant in (acme, globex):
        hits = search_documents(store, tenant, "refund damaged goods", k=10)
        assert hits and {h.tenant for h in hits} == {tenant}
    assert search_documents(store, _tenant(), "refund damaged goods", k=10) == []


def test_a_principal_without_access_never_sees_a_chunk(store: DocumentStore) -> None:
    t = _tenant()
    store.apply(event_of(Document("salaries", t, SALARIES, 1, source="s", access=("group:hr", "user:ceo"))))
    store.apply(event_of(Document("refunds", t, REFUNDS, 1, source="s")))
    for reader in (None, "user:alice", Principal("bob", ("eng",))):
        hits = search_documents(store, t, "salary bands engineering", k=10, principal=reader)
        assert [h.doc_id for h in hits] == ["refunds"], reader
    for reader in ("user:ceo", Principal("bob", ("hr",)), ["group:hr"]):
        hits = search_documents(store, t, "salary bands engineering", k=10, principal=reader)
        assert hits[0].doc_id == "salaries"
        assert hits[0].access == ("group:hr", "user:ceo")  # the rules travel with the hit


def test_new_version_replaces_old_chunks_and_invalidates_dependents(store: DocumentStore) -> None:
    t = _tenant()
    long_text = " ".join([REFUNDS] * 8)  # several chunks at 200 characters
    v1 = Document("refunds", t, long_text, 1, source="s")
    r = store.apply(event_of(v1))
    assert r.action == "insert" and r.chunks > 2
    assert store.count(t) == r.chunks
    hits = search_documents(store, t, "refund", k=1)
    assert record_usage(store, "traj-A", hits) == 1
    record_usage(store, "traj-B", [(t, "refunds", 1)])
    assert dependents(store, t, "refunds") == ["traj-A", "traj-B"]
    assert store.apply(event_of(v1)).action == "unchanged"  # re-delivery: a no-op
    v2 = dataclasses.replace(v1, text="Refunds now take 60 days.", version=2)
    r2 = store.apply(event_of(v2))
    assert (r2.action, r2.chunks, r2.invalidated) == ("replace", 1, ["traj-A", "traj-B"])
    assert store.count(t) == 1
    [hit] = search_documents(store, t, "refund", k=5)
    assert (hit.version, hit.text) == (2, "Refunds now take 60 days.")
    record_usage(store, "traj-C", [hit])
    assert dependents(store, t, "refunds", except_version=2) == ["traj-A", "traj-B"]
    assert store.uses_of("traj-C") == [DocumentUse("traj-C", t, "refunds", 2)]
    # an older version arriving late changes nothing
    assert store.apply(event_of(v1)).action == "stale"
    assert search_documents(store, t, "refund", k=5)[0].version == 2


def test_access_change_is_a_change(store: DocumentStore) -> None:
    t = _tenant()
    doc = Document("refunds", t, REFUNDS, 1, source="s")
    store.apply(event_of(doc))
    record_usage(store, "traj-X", [(t, "refunds", 1)])
    r = store.apply(event_of(dataclasses.replace(doc, access=("group:support",))))
    assert (r.action, r.invalidated) == ("replace", ["traj-X"])
    assert search_documents(store, t, "refund", k=5) == []
    assert len(search_documents(store, t, "refund", k=5, principal="group:support")) == 1


def test_delete_removes_chunks_and_invalidates(store: DocumentStore) -> None:
    t = _tenant()
    store.apply(event_of(Document("refunds", t, REFUNDS, 5, source="files:/kb")))
    store.apply(event_of(Document("faq", t, "Shipping takes three days.", 5, source="files:/kb")))
    record_usage(store, "traj-D", [(t, "refunds", 5)])
    assert store.doc_ids(t, "files:/kb") == {"refunds", "faq"}
    assert store.apply(DocumentDeleted(t, "refunds", "files:/kb", version=4)).action == "stale"
    r = store.apply(DocumentDeleted(t, "refunds", "files:/kb"))
    assert (r.action, r.invalidated) == ("delete", ["traj-D"])
    assert store.doc_ids(t) == {"faq"}
    assert {h.doc_id for h in search_documents(store, t, "refund", k=5)} == {"faq"}
    assert store.apply(DocumentDeleted(t, "refunds", "files:/kb")).action == "absent"


def test_same_version_with_less_text_leaves_no_orphan_chunks(store: DocumentStore) -> None:
    t = _tenant()
    doc = Document("refunds", t, " ".join([REFUNDS] * 8), 3, source="s")
    assert store.apply(event_of(doc)).chunks > 2
    r = store.apply(event_of(dataclasses.replace(doc, text="Short now.")))
    assert (r.action, r.chunks) == ("replace", 1)
    assert store.count(t) == 1


def test_search_needs_k(store: DocumentStore) -> None:
    with pytest.raises(ValueError, match="at least one"):
        store.search("t", "q", k=0)


def test_hot_tier_and_milvus_agree_and_reload_sees_other_writers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("docs-hot")
    settings = Settings(home=home, lake_chunk_chars=200, lake_chunk_overlap=20)
    writer = DocumentStore(settings)
    t = _tenant()
    writer.apply(event_of(Document("refunds", t, " ".join([REFUNDS] * 4), 1, source="s")))
    writer.apply(event_of(Document("salaries", t, SALARIES, 1, source="s", access=("group:hr",))))
    reader = DocumentStore(settings, client=writer.client)  # another process, as far as the hot tier knows
    for who in (None, "group:hr"):
        hot = [(h.doc_id, h.chunk_index) for h in reader.search(t, "salary bands and refunds", 10, who)]
        cold = [
            (h.doc_id, h.chunk_index) for h in reader.search_milvus(t, "salary bands and refunds", 10, who)
        ]
        assert hot == cold and hot
    writer.apply(event_of(Document("faq", t, "Shipping takes three days.", 1, source="s")))
    assert "faq" not in {h.doc_id for h in reader.search(t, "shipping days", 10)}  # its own copy
    assert reader.reload() == writer.count(t)
    assert reader.search(t, "shipping days", 1)[0].doc_id == "faq"
    writer.apply(DocumentDeleted(t, "faq", "s"))
    assert "faq" not in {h.doc_id for h in writer.search(t, "shipping days", 10)}


def test_non_ascii_title_source_and_metadata_fit_their_fields(store: DocumentStore) -> None:
    """Milvus counts UTF-8 bytes: a 1,000-character CJK title is 3,000 bytes, over its 1,024."""
    t = _tenant()
    doc = Document(
        "cjk", t, REFUNDS, 1, source="files:/" + "目" * 1000, title="退款" * 500, metadata={"k": "値" * 6000}
    )
    store.apply(event_of(doc))
    hits = search_documents(store, t, "refund damaged goods", k=10)
    assert hits and hits[0].doc_id == "cjk"
    assert len(hits[0].title.encode()) <= 1024 and hits[0].title.startswith("退款")
    assert hits[0].metadata == {}  # over its field: dropped whole, never cut into bad JSON
