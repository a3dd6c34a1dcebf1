"""Documents as values: chunking, access rules, what an event does to stored state."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentlake.lake.documents import (
    PUBLIC,
    Document,
    DocumentError,
    Principal,
    can_read,
    chunk_text,
    principal_tokens,
)
from agentlake.lake.documents._domain import StoredVersion, decide_delete, decide_upsert


def test_chunks_prefer_paragraph_then_sentence_boundaries() -> None:
    para1 = "Refunds are paid within 30 days. " * 10  # ~330 chars
    para2 = "Damaged goods need a photo. " * 10
    chunks = chunk_text(para1 + "\n\n" + para2, max_chars=400, overlap=0)
    assert [c.text for c in chunks] == [para1.strip(), para2.strip()]
    long_sentences = "One sentence here. " * 40
    for c in chunk_text(long_sentences, max_chars=100, overlap=0):
        assert c.text.endswith("here.")


def test_chunk_positions_point_into_the_text_and_overlap() -> None:
    text = " ".join(f"word{i}" for i in range(400))
    chunks = chunk_text(text, max_chars=200, overlap=50)
    assert len(chunks) > 5
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(c.text) <= 200
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # consecutive chunks share words
        assert b.start > a.start


def test_no_chunks_for_blank_text_and_bad_sizes_raise() -> None:
    assert chunk_text("   \n\n  ") == []
    with pytest.raises(ValueError, match="max_chars"):
        chunk_text("x", max_chars=5)
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", max_chars=100, overlap=80)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab .\n\t?"), max_size=3000),
    max_chars=st.integers(20, 400),
    overlap_frac=st.floats(0, 0.5),
)
def test_chunks_cover_every_word_within_bounds(text: str, max_chars: int, overlap_frac: float) -> None:
    overlap = int(max_chars * overlap_frac)
    chunks = chunk_text(text, max_chars, overlap)
    covered = [False] * len(text)
    for i, c in enumerate(chunks):
        assert c.index == i
        assert 0 < len(c.text) <= max_chars
        assert text[c.start : c.end] == c.text
        for j in range(c.start, c.end):
            covered[j] = True
    assert all(covered[j] for j, ch in enumerate(text) if not ch.isspace())


def test_access_tokens_of_principals() -> None:
    assert principal_tokens(None) == {PUBLIC}
    assert principal_tokens("alice") == {PUBLIC, "user:alice"}
    assert principal_tokens("group:hr") == {PUBLIC, "group:hr"}
    assert principal_tokens(["user:bob", "group:hr"]) == {PUBLIC, "user:bob", "group:hr"}
    assert Principal("bob", ("hr", "eng")).tokens() == {PUBLIC, "user:bob", "group:hr", "group:eng"}
    assert can_read(("group:hr",), Principal("bob", ("hr",)).tokens())
    assert not can_read(("group:hr",), principal_tokens("user:alice"))
    assert not can_read((), principal_tokens(["user:alice", "group:hr"]))  # no rules: fail closed
    assert can_read((PUBLIC,), principal_tokens(None))


def test_document_validation() -> None:
    ok = Document("a.md", "acme", "hello", 1)
    ok.validate(100)
    with pytest.raises(DocumentError, match="over AGENTLAKE_LAKE_DOC_MAX_BYTES"):
        Document("a.md", "acme", "é" * 60, 1).validate(100)
    with pytest.raises(DocumentError, match="bad access rule"):
        Document("a.md", "acme", "x", 1, access=("finance",)).validate(100)
    with pytest.raises(DocumentError, match="without an id"):
        Document(" ", "acme", "x", 1).validate(100)


def test_ids_tenants_and_rules_are_validated_in_the_bytes_the_store_holds() -> None:
    """The Milvus fields count UTF-8 bytes: doc_id 1024, tenant 256, an access rule 256."""
    Document("é" * 512, "é" * 128, "x", 1, access=("user:" + "é" * 125,)).validate(100)  # at the limits
    with pytest.raises(DocumentError, match="id over 1024 bytes"):
        Document("é" * 513, "acme", "x", 1).validate(100)
    with pytest.raises(DocumentError, match="tenant over 256 bytes"):
        Document("a.md", "é" * 129, "x", 1).validate(100)
    with pytest.raises(DocumentError, match="bad access rule"):
        Document("a.md", "acme", "x", 1, access=("user:" + "é" * 126,)).validate(100)


def test_fingerprint_covers_text_title_metadata_access() -> None:
    base = Document("a", "t", "text", 1, title="T", metadata={"k": "v"}, access=("*",))
    fps = {
        base.fingerprint(),
        Document("a", "t", "text!", 1, title="T", metadata={"k": "v"}).fingerprint(),
        Document("a", "t", "text", 1, title="U", metadata={"k": "v"}).fingerprint(),
        Document("a", "t", "text", 1, title="T", metadata={"k": "w"}).fingerprint(),
        Document("a", "t", "text", 1, title="T", metadata={"k": "v"}, access=("group:x",)).fingerprint(),
    }
    assert len(fps) == 5
    assert Document("a", "t", "text", 9, title="T", metadata={"k": "v"}).fingerprint() == base.fingerprint()


def test_what_an_upsert_or_delete_does() -> None:
    stored = StoredVersion(5, "fp")
    assert decide_upsert(None, 1, "fp") == "insert"
    assert decide_upsert(stored, 4, "other") == "stale"
    assert decide_upsert(stored, 6, "fp") == "unchanged"
    assert decide_upsert(stored, 5, "fp") == "unchanged"
    assert decide_upsert(stored, 6, "other") == "replace"
    assert decide_upsert(stored, 5, "other") == "replace"
    assert decide_delete(None, None) == "absent"
    assert decide_delete(stored, 4) == "stale"
    assert decide_delete(stored, 5) == "delete"
    assert decide_delete(stored, None) == "delete"
