"""OpenAPI 3 parameter and request-body serialization: what goes on the wire for a value.

Pure functions (no I/O) implementing the OpenAPI 3.0/3.1 "style" rules
(https://spec.openapis.org/oas/v3.1.0#style-values) so that a forwarded tool call
sends the request its OpenAPI document specifies:

===============  =========  ================  =====================  ===========================
style            in         primitive 5       array [3, 4]           object {"r": 1, "g": 2}
===============  =========  ================  =====================  ===========================
simple           path,hdr   ``5``             ``3,4``                ``r,1,g,2`` / ``r=1,g=2`` (x)
label            path       ``.5``            ``.3,4`` / ``.3.4``    ``.r,1,g,2`` / ``.r=1.g=2``
matrix           path       ``;id=5``         ``;id=3,4`` / ``;id=3;id=4``  ``;id=r,1,g,2`` / ``;r=1;g=2``
form             query,ck   ``id=5``          ``id=3,4`` / ``id=3&id=4``    ``id=r,1,g,2`` / ``r=1&g=2``
spaceDelimited   query      –                 ``id=3%204``           –
pipeDelimited    query      –                 ``id=3|4`` (``%7C``)   –
deepObject       query      –                 –                      ``id[r]=1&id[g]=2``
===============  =========  ================  =====================  ===========================

(x) = ``explode: true``. Defaults: ``form`` + explode for query and cookie,
``simple`` without explode for path and header. Values are percent-encoded
(RFC 3986 unreserved characters kept; ``allowReserved`` keeps reserved ones in
query values). A path value made only of dots (``.``, ``..``) is sent as
``%2E`` / ``%2E%2E`` so that no client or proxy normalises it into another
endpoint (RFC 3986 §6.2.2.3 removes only literal dot segments). A parameter
described by ``content`` instead of ``schema`` is serialized as JSON text.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["cookie_pairs", "default_style", "header_value", "path_value", "query_pairs", "scalar_text"]

_RESERVED = ":/?#[]@!$&'()*+,;="


def default_style(location: str) -> tuple[str, bool]:
    """(style, explode) OpenAPI assumes for a parameter at `location`."""
    return ("form", True) if location in ("query", "cookie") else ("simple", False)


def scalar_text(value: Any) -> str:
    """The text of a primitive: ``true``/``false`` for booleans, empty for null, JSON for containers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def _enc(text: str, allow_reserved: bool = False) -> str:
    return urllib.parse.quote(text, safe=_RESERVED if allow_reserved else "")


def _items(value: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), scalar_text(v)) for k, v in value.items()]


def path_value(name: str, value: Any, style: str = "simple", explode: bool = False) -> str:
    """The text replacing ``{name}`` in a path template (percent-encoded).

    Raises:
        ValueError: a style OpenAPI does not allow in a path.
    """
    if style not in ("simple", "label", "matrix"):
        raise ValueError(f"style {style!r} is not allowed for path parameter {name!r}")
    if isinstance(value, list | tuple):
        parts = [_enc(scalar_text(v)) for v in value]
        if style == "simple":
            return ",".join(parts)
        if style == "label":
            return "." + ("." if explode else ",").join(parts)
        if explode:
            return "".join(f";{_enc(name)}={p}" for p in parts)
        return f";{_enc(name)}=" + ",".join(parts)
    if isinstance(value, Mapping):
        kv = [(_enc(k), _enc(v)) for k, v in _items(value)]
        if style == "matrix":
            if explode:
                return "".join(f";{k}={v}" for k, v in kv)
            return f";{_enc(name)}=" + ",".join(f"{k},{v}" for k, v in kv)
        sep = "." if style == "label" and explode else ","
        text = sep.join(f"{k}={v}" if explode else f"{k},{v}" for k, v in kv)
        return ("." if style == "label" else "") + text
    text = _enc(scalar_text(value))
    if style == "simple" and text and set(text) == {"."}:
        text = "%2E" * len(text)  # a dot segment would be normalised away by the client
    if style == "label":
        return "." + text
    if style == "matrix":
        return f";{_enc(name)}" + (f"={text}" if text else "")
    return text


def query_pairs(
    name: str, value: Any, style: str = "form", explode: bool = True, allow_reserved: bool = False
) -> list[str]:
    """The ``key=value`` pieces of a query parameter, each percent-encoded.

    Raises:
        ValueError: a style OpenAPI does not allow in a query, or for that value's type.
    """
    key = _enc(name)

    def enc(text: str) -> str:
        return _enc(text, allow_reserved)

    if style == "deepObject":
        if not isinstance(value, Mapping):
            raise ValueError(f"deepObject query parameter {name!r} needs an object")
        out = []
        for k, v in value.items():
            if isinstance(v, Mapping):  # nested objects are not defined by OpenAPI; common practice
                out.extend(query_pairs(f"{name}[{k}]", v, "deepObject", True, allow_reserved))
            elif isinstance(v, list | tuple):
                out.extend(f"{_enc(f'{name}[{k}]')}={enc(scalar_text(x))}" for x in v)
            else:
                out.append(f"{_enc(f'{name}[{k}]')}={enc(scalar_text(v))}")
        return out
    if style in ("spaceDelimited", "pipeDelimited"):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{style} query parameter {name!r} needs an array")
        if explode:
            return [f"{key}={enc(scalar_text(v))}" for v in value]
        sep = "%20" if style == "spaceDelimited" else "%7C"
        return [f"{key}=" + sep.join(enc(scalar_text(v)) for v in value)]
    if style != "form":
        raise ValueError(f"style {style!r} is not allowed for query parameter {name!r}")
    if isinstance(value, list | tuple):
        if explode:
            return [f"{key}={enc(scalar_text(v))}" for v in value]
        return [f"{key}=" + ",".join(enc(scalar_text(v)) for v in value)]
    if isinstance(value, Mapping):
        if explode:
            return [f"{_enc(k)}={enc(v)}" for k, v in _items(value)]
        return [f"{key}=" + ",".join(f"{enc(k)},{enc(v)}" for k, v in _items(value))]
    return [f"{key}={enc(scalar_text(value))}"]


def header_value(value: Any, explode: bool = False) -> str:
    """A header parameter's value (style ``simple``; not percent-encoded)."""
    if isinstance(value, list | tuple):
        return ",".join(scalar_text(v) for v in value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" if explode else f"{k},{v}" for k, v in _items(value))
    return scalar_text(value)


def cookie_pairs(name: str, value: Any, explode: bool = True) -> list[str]:
    """The ``name=value`` pieces of a cookie parameter (style ``form``)."""
    return query_pairs(name, value, "form", explode)
