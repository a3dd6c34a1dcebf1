"""What may enter an event: text made encodable, numbers made finite, sizes capped.

Policy (stated in the README, "Limits and unencodable data"):

- **Lone surrogates** (``"\\ud83d"``: not encodable as UTF-8) become U+FFFD, the
  Unicode replacement character; a well-formed surrogate pair written as two code
  points becomes the character it encodes.
- **Non-finite numbers** (NaN, +/-Infinity) become ``null``: in JSON payloads and in
  numeric fields (`cost_usd`). Stored JSON is always strict JSON (RFC 8259).
- **Free text** (task, final answer, error, step content, verdict) is cut at the
  payload limit on a UTF-8 boundary and marked with a trailing ``…[+N bytes]``;
  payloads keep `size` and `sha256` of the full value.
- **Identifiers** longer than `MAX_ID_BYTES` keep a readable prefix and a hash of
  the whole, so distinct ids stay distinct.
- A value that cannot be serialized at all is recorded as its ``repr``.

Pure functions, no I/O: the SDK calls them on every event it builds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

MAX_ID_BYTES = 256
_LONE_ESCAPE = re.compile(
    r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)


def encodable(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (and split pairs joined)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def cap_text(value: Any, limit: int) -> tuple[str, int]:
    """(text cut to at most `limit` UTF-8 bytes, full size in bytes). Never raises."""
    text = encodable(_as_str(value))
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, len(raw)
    return raw[:limit].decode("utf-8", "ignore"), len(raw)


def capped_text(value: Any, limit: int) -> str:
    """Free text for a plain string field: cut to `limit` bytes, marked ``…[+N bytes]``
    when cut (the marker is inside the limit)."""
    text, size = cap_text(value, limit)
    if size <= limit:
        return text
    marker = f"…[+{size} bytes]"
    room = max(0, limit - len(marker.encode()))
    head = text.encode("utf-8")[:room].decode("utf-8", "ignore")
    cut = size - len(head.encode())
    return f"{head}…[+{cut} bytes]"


def opt_text(value: Any, limit: int) -> str | None:
    return None if value is None else capped_text(value, limit)


def ident(value: Any) -> str:
    """An identifier (ids, names, versions): at most `MAX_ID_BYTES`, distinct stays distinct."""
    text = encodable(_as_str(value))
    raw = text.encode("utf-8")
    if len(raw) <= MAX_ID_BYTES:
        return text
    digest = hashlib.sha256(raw).hexdigest()[:32]
    return raw[: MAX_ID_BYTES - 33].decode("utf-8", "ignore") + "#" + digest


def opt_ident(value: Any) -> str | None:
    return None if value is None else ident(value)


def finite(value: Any) -> float | None:
    """A float for a numeric field, or None for None, NaN, +/-Infinity and non-numbers."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def long_or_none(value: Any, bits: int = 64) -> int | None:
    """An int for an Avro long (or, with ``bits=32``, int) field, or None when absent,
    not integral or out of range."""
    if value is None:
        return None
    try:
        i = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return i if lo <= i <= hi else None


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: non-finite floats -> None, strings encodable, keys strings."""
    if depth > 100:
        return _as_str(value)
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, dict):
        return {encodable(_as_str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return encodable(_as_str(value))


def to_json(value: Any) -> str:
    """`value` as strict JSON text (a `str` is kept as the text itself). Never raises."""
    if isinstance(value, str):
        return encodable(value)
    try:
        text = json.dumps(value, default=str, separators=(",", ":"), allow_nan=False)
        if "\\ud" not in text or not _LONE_ESCAPE.search(text):
            return text
    except Exception:
        pass
    try:
        return json.dumps(_clean(value), default=str, separators=(",", ":"), allow_nan=False)
    except Exception:
        return json.dumps(encodable(_as_str(value)))


def bounded(value: Any, limit: int) -> dict[str, Any]:
    """The Avro form of a `Payload`: strict JSON cut at `limit` bytes; `size` and
    `sha256` describe the full serialization. Never raises."""
    raw = to_json(value).encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) <= limit:
        return {"json": raw.decode("utf-8"), "truncated": False, "size": len(raw), "sha256": digest}
    cut = raw[:limit].decode("utf-8", errors="ignore")
    return {"json": cut, "truncated": True, "size": len(raw), "sha256": digest}


def string_map(value: Any, limit: int, cast: Any = str) -> dict[str, Any]:
    """A map field (attributes, checks): keys are identifiers, string values capped, and
    entries kept in order while the whole stays within `limit` bytes; when entries are
    dropped, the key ``agentlake.dropped`` says how many (string maps only)."""
    if not value:
        return {}
    try:
        items = list(dict(value).items())
    except Exception:
        return {}
    out: dict[str, Any] = {}
    used = 0
    dropped = 0
    for k, v in items:
        key = ident(k)
        room = limit - used - len(key.encode()) - 8
        if cast is str:
            if room < 32:
                dropped += 1
                continue
            val: Any = capped_text(v, room)
            size = len(key.encode()) + len(val.encode()) + 8
        else:
            try:
                val = cast(v)
            except Exception:
                dropped += 1
                continue
            size = len(key.encode()) + 16
            if size > limit - used:
                dropped += 1
                continue
        out[key] = val
        used += size
    if dropped and cast is str:
        out["agentlake.dropped"] = str(dropped)
    return out
