"""One way to say what is wrong with user input: a pydantic error as `path: reason`."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from difflib import get_close_matches

from pydantic import ValidationError
from pydantic_core import ErrorDetails

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


def _misspelling(errors: list[ErrorDetails]) -> tuple[int, str] | None:
    """(index of an ``extra_forbidden`` error, the required field it is a near miss of) when
    a field is missing and an unknown key next to it is spelled almost like it: the typo is
    the cause, "Field required" only its consequence."""
    missing: dict[tuple[int | str, ...], list[str]] = {}
    for e in errors:
        if e["type"] == "missing" and e["loc"] and isinstance(e["loc"][-1], str):
            missing.setdefault(tuple(e["loc"][:-1]), []).append(e["loc"][-1])
    for i, e in enumerate(errors):
        if e["type"] == "extra_forbidden" and e["loc"] and isinstance(e["loc"][-1], str):
            near = get_close_matches(e["loc"][-1], missing.get(tuple(e["loc"][:-1]), []), n=1, cutoff=0.6)
            if near:
                return i, near[0]
    return None


def first_error(error: ValidationError) -> tuple[str, str]:
    """(field path, reason) of the first error, the reason noting how many more there are.

    A misspelled required key (``scenarioz:``) is reported as itself, with the field it
    resembles, before the "Field required" it causes."""
    errors = error.errors(include_url=False)
    typo = _misspelling(errors)
    if typo is not None:
        i, name = typo
        rest = len(errors) - 2  # the typo and the missing field it causes are one mistake
        tail = f" (and {rest} more error{'s' if rest > 1 else ''})" if rest > 0 else ""
        return field_path(errors[i]["loc"]), f"unknown field: did you mean {name!r}?{tail}"
    first = errors[0]
    reason = str(first["msg"])
    for prefix in _PREFIXES:
        reason = reason.removeprefix(prefix)
    if len(errors) > 1:
        more = len(errors) - 1
        reason += f" (and {more} more error{'s' if more > 1 else ''})"
    return field_path(first["loc"]), reason
