"""Documents as values: the document, who may read it, how it is chunked, and what an event does.

Pure: no I/O. The store (`store.py`) and the connectors (`_connectors.py`) are
the adapters around it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

PUBLIC = "*"
"""Access rule that lets anyone of the document's tenant read it (the default)."""
MAX_DOC_ID_BYTES = 1024
MAX_TENANT_BYTES = 256
MAX_RULE_BYTES = 256


class DocumentError(ValueError):
    """A document that cannot enter the lake (empty id, too large, bad access rule): one line."""


@dataclass(frozen=True)
class Document:
    """One enterprise document as a connector yields it.

    Attributes:
        doc_id: stable id within the tenant (a relative file path, a primary key).
        tenant: isolation scope; every read filters on it.
        text: the full text.
        version: monotonic per document (a file's mtime in µs, a Delta table
            version, a ``version`` column); an event with an older version than
            the stored one is ignored.
        source: connector URI, e.g. ``files:/srv/kb`` (pruning is scoped to it).
        title: optional title (a Markdown heading, a ``title`` column).
        metadata: string key/values carried to every hit.
        access: who may read it: ``*`` (anyone in the tenant), ``user:<id>``,
            ``group:<id>`` (any literal token a `Principal` presents).
        content_type: MIME type of `text`.
        deleted: a tombstone (a row flagged deleted): becomes `DocumentDeleted`.
    """

    doc_id: str
    tenant: str
    text: str
    version: int
    source: str = ""
    title: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    access: tuple[str, ...] = (PUBLIC,)
    content_type: str = "text/plain"
    deleted: bool = False

    def fingerprint(self) -> str:
        """sha256 (hex) over text, title, metadata and access: equal means nothing to re-index."""
        return fingerprint(self.text, self.title, self.metadata, self.access)

    def validate(self, max_bytes: int) -> None:
        """Raises `DocumentError` for an empty id or tenant, an id over `MAX_DOC_ID_BYTES` or a
        tenant over `MAX_TENANT_BYTES` (UTF-8; what the store's fields hold), a text over
        `max_bytes`, or a bad rule (also one over `MAX_RULE_BYTES`)."""
        if not self.doc_id.strip():
            raise DocumentError("document without an id")
        if len(self.doc_id.encode("utf-8", "surrogatepass")) > MAX_DOC_ID_BYTES:
            raise DocumentError(
                f"document {self.doc_id[:60]!r}…: id over {MAX_DOC_ID_BYTES} bytes; use a shorter stable id"
            )
        if not self.tenant.strip():
            raise DocumentError(f"document {self.doc_id!r}: empty tenant")
        if len(self.tenant.encode("utf-8", "surrogatepass")) > MAX_TENANT_BYTES:
            raise DocumentError(f"document {self.doc_id!r}: tenant over {MAX_TENANT_BYTES} bytes")
        size = len(self.text.encode("utf-8"))
        if size > max_bytes:
            raise DocumentError(
                f"document {self.doc_id!r} is {size} bytes, over AGENTLAKE_LAKE_DOC_MAX_BYTES={max_bytes}: "
                "split it at the source or raise the limit (below the broker's message.max.bytes)"
            )
        for rule in self.access:
            if not valid_rule(rule) or len(rule.encode("utf-8", "surrogatepass")) > MAX_RULE_BYTES:
                raise DocumentError(
                    f"document {self.doc_id!r}: bad access rule {rule[:80]!r} "
                    f"(use *, user:<id> or group:<id>, at most {MAX_RULE_BYTES} bytes)"
                )


def fingerprint(text: str, title: str | None, metadata: Mapping[str, str], access: Iterable[str]) -> str:
    """sha256 (hex) of a document's content and access rules (canonical JSON)."""
    body = json.dumps(
        [text, title, sorted(metadata.items()), sorted(set(access))],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def valid_rule(rule: str) -> bool:
    """``*`` or ``kind:value`` with a non-empty kind and value."""
    if rule == PUBLIC:
        return True
    kind, sep, value = rule.partition(":")
    return bool(sep and kind.strip() and value.strip())


# -- access ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who reads: a user and the groups it belongs to, presented as access tokens.

    ``Principal("alice", ("finance",)).tokens()`` is ``{"*", "user:alice", "group:finance"}``.
    """

    user: str | None = None
    groups: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def tokens(self) -> frozenset[str]:
        out = {PUBLIC, *self.extra}
        if self.user:
            out.add(f"user:{self.user}")
        out.update(f"group:{g}" for g in self.groups)
        return frozenset(out)


PrincipalLike = Principal | str | Iterable[str] | None


def principal_tokens(principal: PrincipalLike) -> frozenset[str]:
    """The access tokens a caller presents.

    None is an anonymous caller of the tenant: it reads only ``*`` documents. A
    string is one token (``user:alice``; a bare name means ``user:<name>``); an
    iterable is a set of tokens, to which ``*`` is always added.
    """
    if principal is None:
        return frozenset({PUBLIC})
    if isinstance(principal, Principal):
        return principal.tokens()
    if isinstance(principal, str):
        token = principal if ":" in principal or principal == PUBLIC else f"user:{principal}"
        return frozenset({PUBLIC, token})
    return frozenset({PUBLIC, *principal})


def can_read(access: Iterable[str], tokens: frozenset[str]) -> bool:
    """Whether a caller presenting `tokens` may read a chunk with these access rules.

    A chunk with no rules at all is readable by no one (fail closed).
    """
    return any(rule in tokens for rule in access)


# -- chunking -----------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """A span of a document's text: ``text == document.text[start:end].strip()``."""

    index: int
    text: str
    start: int
    end: int


_SENTENCE_ENDS = (". ", "? ", "! ", ".\n", "?\n", "!\n", "\n")


def chunk_text(text: str, max_chars: int = 1000, overlap: int = 150) -> list[Chunk]:
    """Split `text` into chunks of at most `max_chars` characters.

    Boundaries prefer, in order, a paragraph break, a sentence end, then
    whitespace, searched in the second half of the window; a run without any is
    cut hard. Consecutive chunks share up to `overlap` characters (started on a
    word boundary). Whitespace-only text gives no chunks.

    Raises:
        ValueError: `max_chars` < 20 or `overlap` not in [0, max_chars / 2].
    """
    if max_chars < 20:
        raise ValueError(f"max_chars={max_chars}: chunks need at least 20 characters")
    if not 0 <= overlap <= max_chars // 2:
        raise ValueError(f"overlap={overlap}: must be between 0 and max_chars/2")
    n = len(text)
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    while start < n:
        end = min(start + max_chars, n)
        if end < n:
            end = _boundary(text, start + max_chars // 2, end)
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            chunks.append(Chunk(len(chunks), stripped, start + lead, start + lead + len(stripped)))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        if nxt < end:  # start the overlap on a word boundary
            space = text.find(" ", nxt, end)
            nxt = space + 1 if space != -1 else end
        start = _skip_space(text, nxt)
    return chunks


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _boundary(text: str, lo: int, hi: int) -> int:
    """The best cut in text[lo:hi]: the end of a paragraph break, sentence, or whitespace."""
    i = text.rfind("\n\n", lo, hi)
    if i != -1:
        return i + 2
    best = max(text.rfind(s, lo, hi) + len(s) if text.rfind(s, lo, hi) != -1 else -1 for s in _SENTENCE_ENDS)
    if best > lo:
        return best
    i = max(text.rfind(" ", lo, hi), text.rfind("\t", lo, hi))
    return i + 1 if i != -1 else hi


# -- what an event does to the stored state -------------------------------------------
@dataclass(frozen=True)
class StoredVersion:
    """What the store holds for one document."""

    version: int
    fingerprint: str


Action = Literal["insert", "replace", "unchanged", "stale", "delete", "absent"]


def decide_upsert(stored: StoredVersion | None, version: int, fp: str) -> Action:
    """What a `DocumentUpserted` of (`version`, fingerprint `fp`) does.

    - nothing stored: ``insert``;
    - an older version than the stored one: ``stale`` (ignored: events may be re-delivered);
    - same content and access (fingerprint) at the same or a newer version: ``unchanged``;
    - otherwise ``replace`` (new chunks in, old chunks out, dependents invalidated).
    """
    if stored is None:
        return "insert"
    if version < stored.version:
        return "stale"
    if fp == stored.fingerprint:
        return "unchanged"
    return "replace"


def decide_delete(stored: StoredVersion | None, version: int | None) -> Action:
    """What a `DocumentDeleted` of `version` (None: whatever is stored) does."""
    if stored is None:
        return "absent"
    if version is not None and version < stored.version:
        return "stale"
    return "delete"
