"""Auth events on the log: records, keys and topics (Avro single-object, the one codec).

| record | topic | key |
|---|---|---|
| `AuthKeyPublished` | ``registry.keys`` (compacted) | ``key:<key_id>`` or ``<kind>:<owner>`` |
| `AuthTokenIssued` | ``auth.delegations`` | the authority block's revocation id |
| `AuthTokenAttenuated` | ``auth.delegations`` | the new block's revocation id |
| `AuthApproval` | ``auth.delegations`` | the requesting token's last revocation id |
| `AuthDecision`, `AuthToolInvoked` | ``auth.delegations`` | the token's last revocation id |
| `AuthRevoked` | ``auth.revocations`` (compacted) | the revoked revocation id |

`AuthEvents` turns domain values into records and hands them to an emitter
(the SDK's `KafkaEmitter` or `MemoryEmitter`: anything with
``emit(topic, key, value)``), so domain code never talks to Kafka.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agentlake.schemas import codec, new_id, now_us
from agentlake.topics import AUTH_DELEGATIONS, AUTH_REVOCATIONS, REGISTRY_KEYS

ISSUED = "AuthTokenIssued"
ATTENUATED = "AuthTokenAttenuated"
APPROVAL = "AuthApproval"
DECISION = "AuthDecision"
INVOKED = "AuthToolInvoked"
REVOKED = "AuthRevoked"
KEY_PUBLISHED = "AuthKeyPublished"
AUTH_RECORDS = (ISSUED, ATTENUATED, APPROVAL, DECISION, INVOKED, REVOKED, KEY_PUBLISHED)


class RecordEmitter(Protocol):
    def emit(self, topic: str, key: bytes, value: bytes) -> None: ...


class RecordBuffer:
    """A `RecordEmitter` that keeps (topic, key, value) for the caller to publish itself,
    e.g. with an acknowledged send before telling the user a revocation is done."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def emit(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))


def encode(record: str, data: dict[str, Any], strict: bool = True) -> bytes:
    """Encode one auth record. `strict`: a missing or extra field raises ValueError first
    (the gateway's per-call records skip it: their shape is fixed by construction and tested)."""
    return codec().encode_record(record, data, strict=strict)


def decode(value: bytes) -> tuple[str, dict[str, Any]]:
    """(record name, fields) of an auth record. Raises `DecodeError`."""
    return codec().decode_dict(value)


class AuthEvents:
    """Builds and emits auth events.

    Args:
        emitter: where encoded records go (None: nowhere; the records are still kept
            in `sent` when `keep=True`, for tests and dry runs).
        topic: maps a logical topic name to the physical one (the topic prefix).
        keep: also keep (topic, key, record, data) of everything emitted.
    """

    def __init__(
        self,
        emitter: RecordEmitter | None = None,
        topic: Callable[[str], str] = lambda t: t,
        keep: bool = False,
    ) -> None:
        self.emitter = emitter
        self.topic = topic
        self.keep = keep
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def emit(self, logical_topic: str, key: str, record: str, data: dict[str, Any]) -> None:
        data = {"event_id": new_id(), **data}
        data.setdefault("ts_us", now_us())
        value = encode(record, data, strict=record not in (DECISION, INVOKED))
        if self.emitter is not None:
            self.emitter.emit(self.topic(logical_topic), key.encode(), value)
        if self.keep:
            self.sent.append((logical_topic, key, record, data))
        for listener in self.listeners:
            listener(record, data)

    def of(self, record: str) -> list[dict[str, Any]]:
        """The kept events of one record type, in emission order."""
        return [d for _, _, r, d in self.sent if r == record]

    # -- convenience builders ---------------------------------------------------------
    def key_published(self, key_id: int, owner: str, kind: str, public_key: str, created_us: int) -> None:
        self.emit(
            REGISTRY_KEYS,
            f"key:{key_id}" if kind == "authority" else f"{kind}:{owner}",
            KEY_PUBLISHED,
            {
                "key_id": key_id,
                "owner": owner,
                "kind": kind,
                "algorithm": "ed25519",
                "public_key": public_key,
                "created_us": created_us,
                "retired_us": None,
            },
        )

    def revoked(self, revocation_id: str, reason: str, by: str | None, token_id: str | None = None) -> None:
        self.emit(
            AUTH_REVOCATIONS,
            revocation_id,
            REVOKED,
            {"revocation_id": revocation_id, "token_id": token_id, "reason": reason, "revoked_by": by},
        )


def rights_json(rights: Sequence[tuple[str, str, str]]) -> str:
    return json.dumps([list(r) for r in rights], separators=(",", ":"))


__all__ = [
    "APPROVAL",
    "ATTENUATED",
    "AUTH_DELEGATIONS",
    "AUTH_RECORDS",
    "AUTH_REVOCATIONS",
    "DECISION",
    "INVOKED",
    "ISSUED",
    "KEY_PUBLISHED",
    "REGISTRY_KEYS",
    "REVOKED",
    "AuthEvents",
    "RecordBuffer",
    "RecordEmitter",
    "decode",
    "encode",
]
