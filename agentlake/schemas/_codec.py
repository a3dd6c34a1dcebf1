"""The one codec: Avro single-object encoding.

Wire format (Avro spec, "Single object encoding"): ``C3 01`` + the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's canonical form +
the Avro binary body. Every committed version of every schema is known to the
codec, so an event written with any of them decodes into the newest mirror.

Forward compatibility: an event written by a *newer* SDK carries a fingerprint
this codec has never seen. With a `lookup` installed (the schema topic, see
`agentlake.schema_registry`), the codec fetches that writer schema, checks its
fingerprint, and resolves the event into its own newest version of the record
(Avro schema resolution: fields it does not know are skipped, fields it has that
the writer lacks take their defaults).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from agentlake.schemas._events import EVENT_TYPES, Event

try:  # fastavro's compiled writer: ~2x faster than schemaless_writer's per-call set-up
    from fastavro._write import write_data as _write_data  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - pure-python fastavro builds
    _write_data = None
try:  # and its compiled reader: schemaless_reader re-parses the schema on every call (~2.5x slower)
    from fastavro._read import _read_data  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    _read_data = None
_READ_OPTIONS: dict[str, Any] = {
    "return_record_name": False,
    "return_record_name_override": False,
    "handle_unicode_errors": "strict",
    "return_named_type": False,
    "return_named_type_override": False,
}

MAGIC = b"\xc3\x01"
HEADER_LEN = 10


class DecodeError(ValueError):
    """Bytes that are not a valid AgentLake event. `reason` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SchemaVersion:
    record: str
    version: int
    fingerprint: bytes
    raw: dict[str, Any]
    parsed: Any
    named: dict[str, Any]


def parse_schema(raw: dict[str, Any], record: str, version: int) -> SchemaVersion:
    """Parse a schema once; its fingerprint is the CRC-64-AVRO of its canonical form."""
    named: dict[str, Any] = {}
    parsed = fastavro.parse_schema(raw, named_schemas=named, _write_hint=False)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return SchemaVersion(record, version, fp, raw, parsed, named)


def _load_versions() -> dict[str, list[SchemaVersion]]:
    versions: dict[str, list[SchemaVersion]] = {}
    folder = resources.files("agentlake.schemas") / "avro"
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".avsc"):
            continue
        record, _, rest = name.partition(".v")
        raw = json.loads(entry.read_text("utf-8"))
        versions.setdefault(record, []).append(parse_schema(raw, record, int(rest.removesuffix(".avsc"))))
    for vs in versions.values():
        vs.sort(key=lambda v: v.version)
    return versions


SchemaLookup = Callable[[bytes], "dict[str, Any] | str | bytes | None"]


class Codec:
    """Encodes events with the newest schema; decodes any known version into the newest.

    Args:
        max_versions: keep only versions up to these, per record (an older codec, for
            compatibility tests).
        lookup: fingerprint -> writer schema (JSON text or dict), or None when unknown;
            asked when an event's fingerprint is not a committed version.
    """

    def __init__(
        self, max_versions: dict[str, int] | None = None, lookup: SchemaLookup | None = None
    ) -> None:
        self.versions = _load_versions()
        if max_versions:
            self.versions = {
                r: [v for v in vs if v.version <= max_versions.get(r, v.version)]
                for r, vs in self.versions.items()
            }
        self.latest = {name: vs[-1] for name, vs in self.versions.items()}
        self.by_fingerprint = {v.fingerprint: v for vs in self.versions.values() for v in vs}
        self.lookup = lookup
        self._learn_lock = threading.Lock()
        missing = set(EVENT_TYPES) - set(self.latest)
        if missing:
            raise RuntimeError(f"no .avsc for event types {sorted(missing)}")

    def learn(self, schema: dict[str, Any] | str | bytes, expected: bytes | None = None) -> SchemaVersion:
        """Add a writer schema (e.g. from a newer SDK) so that its events decode.

        Raises:
            ValueError: not a record schema we have a reader for, or its fingerprint is
                not `expected`.
        """
        raw = json.loads(schema) if isinstance(schema, str | bytes) else dict(schema)
        name = str(raw.get("name", "")).rsplit(".", 1)[-1]
        if raw.get("type") != "record" or name not in self.latest:
            raise ValueError(f"not a schema of a known record: {name or raw.get('type')!r}")
        version = parse_schema(raw, name, 0)  # version 0: learned, not committed here
        if expected is not None and version.fingerprint != expected:
            raise ValueError(f"fingerprint {version.fingerprint.hex()} != {expected.hex()}")
        with self._learn_lock:
            return self.by_fingerprint.setdefault(version.fingerprint, version)

    def publishable(self) -> list[tuple[bytes, bytes]]:
        """(fingerprint hex, schema JSON) of every version this codec knows: what a
        producer announces on the schema topic."""
        return [
            (v.fingerprint.hex().encode(), json.dumps(v.raw, separators=(",", ":")).encode())
            for vs in self.versions.values()
            for v in vs
        ]

    def encode(self, event: Event) -> bytes:
        return self.encode_record(event.record, event.to_avro())

    def encode_record(
        self, record: str, data: dict[str, Any], version: int | None = None, strict: bool = False
    ) -> bytes:
        """Encode a plain dict with the newest schema, or with `version`.

        The fast path trusts the dict's shape (the SDK and the pydantic mirrors build
        it); `strict=True` rejects missing or extra fields first.
        """
        schema = self.latest[record] if version is None else self._version(record, version)
        if _write_data is not None and not strict:
            out = bytearray(MAGIC)
            out += schema.fingerprint
            try:
                _write_data(out, data, schema.parsed, schema.named, "", {})
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise ValueError(f"{record} does not match schema v{schema.version}: {e!r}") from e
            return bytes(out)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, data, strict=True)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{record} does not match schema v{schema.version}: {e}") from e
        return buf.getvalue()

    def header(self, data: bytes) -> SchemaVersion:
        if not data:  # checked first: an empty value is not a short one
            raise DecodeError("empty", "record has no value")
        if len(data) < HEADER_LEN:
            raise DecodeError("too_short", f"{len(data)} bytes, a single-object header needs {HEADER_LEN}")
        if data[:2] != MAGIC:
            raise DecodeError("bad_magic", f"starts with {data[:2].hex()}, expected c301")
        fp = data[2:HEADER_LEN]
        writer = self.by_fingerprint.get(fp)
        if writer is None and self.lookup is not None:
            writer = self._look_up(fp)
        if writer is None:
            raise DecodeError("unknown_fingerprint", fp.hex())
        return writer

    def _look_up(self, fp: bytes) -> SchemaVersion | None:
        try:
            found = self.lookup(fp) if self.lookup is not None else None
            return self.learn(found, expected=fp) if found is not None else None
        except Exception:  # an unreachable registry or a bad entry: the event stays undecodable
            return None

    def decode_dict(self, data: bytes) -> tuple[str, dict[str, Any]]:
        writer = self.header(data)
        reader = self.latest[writer.record]
        try:
            fo = io.BytesIO(data)
            fo.seek(HEADER_LEN)
            # same version: no schema resolution (the common case, and much faster)
            if writer is reader and _read_data is not None:
                value = _read_data(
                    fo, writer.parsed, {"writer": writer.named, "reader": {}}, None, _READ_OPTIONS
                )
            else:
                value = fastavro.schemaless_reader(
                    fo, writer.parsed, None if writer is reader else reader.parsed
                )
            if fo.tell() != len(data):
                raise DecodeError("schema_violation", f"{len(data) - fo.tell()} trailing bytes")
        except DecodeError:
            raise
        except Exception as e:  # fastavro raises many types on corrupt bodies
            raise DecodeError("schema_violation", f"{writer.record} v{writer.version}: {e!r}") from e
        if not isinstance(value, dict):
            raise DecodeError("schema_violation", "body is not a record")
        return writer.record, value

    def decode(self, data: bytes) -> Event:
        record, value = self.decode_dict(data)
        try:
            return EVENT_TYPES[record].from_avro(value)
        except Exception as e:
            raise DecodeError("schema_violation", f"{record}: {e}") from e

    def _version(self, record: str, version: int) -> SchemaVersion:
        for v in self.versions[record]:
            if v.version == version:
                return v
        raise KeyError(f"{record} has no v{version}")


_codec: Codec | None = None


def codec() -> Codec:
    """The process-wide codec (schemas are parsed once)."""
    global _codec
    if _codec is None:
        _codec = Codec()
    return _codec


def encode(event: Event) -> bytes:
    return codec().encode(event)


def decode(data: bytes) -> Event:
    return codec().decode(data)
