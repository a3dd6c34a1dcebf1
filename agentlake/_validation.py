"""One way to say what is wrong with user input: a pydantic error as `path: reason`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import ValidationError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREFIXES = ("Value error, ", "Assertion failed, ")


def field_path(loc: Sequence[int | str]) -> str:
    """``("agents", 0, "tools")`` -> ``agents[0].tools``; odd keys are quoted, ``[key]`` marks a key."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def first_error(error: ValidationError) -> tuple[str, str]:
    """(field path, reason) of the first error, the reason noting how many more there are."""
    errors = error.errors(include_url=False)
    first = errors[0]
    reason = str(first["msg"])
    for prefix in _PREFIXES:
        reason = reason.removeprefix(prefix)
    if len(errors) > 1:
        more = len(errors) - 1
        reason += f" (and {more} more error{'s' if more > 1 else ''})"
    return field_path(first["loc"]), reason
