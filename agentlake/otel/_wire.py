"""OTLP/HTTP trace payloads -> plain `Span` values (protobuf and JSON encodings).

OTLP/JSON is the proto3 JSON mapping with two exceptions the spec makes:
``traceId``/``spanId``/``parentSpanId`` are hex strings (not base64), and enums
are integers. Both encodings end up as the same `Span` list.

Source: https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class PayloadError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP code (4xx), the message the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Span:
    """The parts of an OTLP span that AgentLake reads. Ids are lowercase hex; times in µs."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_us: int
    end_us: int
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    status_error: bool = False
    status_message: str = ""
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def attr(self, *names: str) -> Any:
        """The first attribute (span, then resource) set among `names`, else None."""
        for n in names:
            if n in self.attributes:
                return self.attributes[n]
        for n in names:
            if n in self.resource:
                return self.resource[n]
        return None

    @property
    def operation(self) -> str:
        """`gen_ai.operation.name`, or the span name's first word (`invoke_agent shop-bot`)."""
        op = self.attributes.get("gen_ai.operation.name")
        return str(op) if op else self.name.split(" ", 1)[0]


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo `Content-Encoding` (gzip, deflate, identity), refusing output above `limit` bytes.

    Raises:
        PayloadError: 415 for an unknown encoding, 400 for corrupt data, 413 when too large.
    """
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "deflate"):
        raise PayloadError(415, f"unsupported Content-Encoding {enc!r}: use gzip, deflate or none")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as e:
        raise PayloadError(400, f"corrupt {enc} body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadError(413, f"decompressed body exceeds {limit} bytes (AGENTLAKE_OTEL_MAX_BODY_BYTES)")
    return out


def parse_traces(body: bytes, content_type: str | None) -> list[Span]:
    """Decode an `ExportTraceServiceRequest` body into spans.

    Args:
        body: the (decompressed) HTTP body.
        content_type: ``application/x-protobuf`` or ``application/json`` (parameters ignored).

    Raises:
        PayloadError: 415 for another content type, 400 when the body does not decode.
    """
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    req = ExportTraceServiceRequest()
    if ctype == PROTOBUF:
        try:
            req.ParseFromString(body)
        except DecodeError as e:
            raise PayloadError(
                400, f"body is not an OTLP ExportTraceServiceRequest (protobuf): {e}"
            ) from None
    elif ctype == JSON:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PayloadError(400, f"body is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise PayloadError(400, "OTLP/JSON body must be an object with resourceSpans")
        try:
            json_format.ParseDict(_hex_ids_to_base64(doc), req, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError) as e:
            raise PayloadError(400, f"body is not an OTLP ExportTraceServiceRequest (JSON): {e}") from None
    else:
        raise PayloadError(415, f"unsupported Content-Type {ctype!r}: use {PROTOBUF} or {JSON}")
    return spans_of(req)


_ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON ids are hex; protobuf's JSON parser expects base64 for bytes fields."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in _ID_FIELDS and isinstance(v, str):
            if v == "":
                out[k] = v
                continue
            try:
                raw = bytes.fromhex(v)
            except ValueError:
                raise PayloadError(400, f"{k} {v[:40]!r} is not hex (OTLP/JSON ids are hex)") from None
            if len(raw) != _ID_FIELDS[k]:
                raise PayloadError(400, f"{k} {v[:40]!r} must be {_ID_FIELDS[k]} bytes")
            out[k] = base64.b64encode(raw).decode()
        else:
            out[k] = _hex_ids_to_base64(v)
    return out


def any_value(v: Any) -> Any:
    """An OTLP `AnyValue` as a Python value (arrays and kvlists recursively)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def spans_of(req: Any) -> list[Span]:
    """Flatten an `ExportTraceServiceRequest` into spans carrying their resource attributes.

    Raises:
        PayloadError: 400 for a span without a valid trace or span id.
    """
    out: list[Span] = []
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                if len(sp.trace_id) != 16 or len(sp.span_id) != 8 or not any(sp.trace_id):
                    raise PayloadError(400, f"span {sp.name!r} has no valid traceId/spanId")
                out.append(
                    Span(
                        trace_id=sp.trace_id.hex(),
                        span_id=sp.span_id.hex(),
                        parent_span_id=sp.parent_span_id.hex() if sp.parent_span_id else None,
                        name=sp.name,
                        start_us=sp.start_time_unix_nano // 1000,
                        end_us=max(sp.end_time_unix_nano, sp.start_time_unix_nano) // 1000,
                        attributes=_attrs(sp.attributes),
                        resource=resource,
                        status_error=sp.status.code == 2,  # STATUS_CODE_ERROR
                        status_message=sp.status.message,
                        events=[(e.name, e.time_unix_nano // 1000, _attrs(e.attributes)) for e in sp.events],
                    )
                )
    return out


def response_body(content_type: str, *, rejected: int = 0, message: str = "") -> bytes:
    """An `ExportTraceServiceResponse` (with `partial_success` when spans were rejected)."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    resp = ExportTraceServiceResponse()
    if rejected or message:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    if content_type == JSON:
        return json.dumps(json_format.MessageToDict(resp)).encode()
    return bytes(resp.SerializeToString())


def error_body(content_type: str, status: int, message: str) -> bytes:
    """A `google.rpc.Status` body, as the OTLP/HTTP spec asks for failed requests."""
    code = {400: 3, 413: 8, 415: 3, 429: 8, 503: 14}.get(status, 2)  # gRPC codes
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    try:
        from google.rpc.status_pb2 import Status
    except ImportError:  # googleapis-common-protos is optional: fall back to text
        return message.encode()
    return bytes(Status(code=code, message=message).SerializeToString())
