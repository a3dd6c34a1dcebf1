"""Suite templating: ``{name}`` placeholders rendered from a variable binding, and stable seeds.

See :mod:`agentlake.sim.suite` for the templating rules; this module has no I/O.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

Scalar = str | int | float | bool


class SuiteError(ValueError):
    """A suite that cannot be loaded or rendered; the message is one line naming file and field."""


# --- templating ------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _placeholders(text: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(text) if m.group(1)]


def render_text(
    text: str, binding: Mapping[str, Scalar], *, escape: Callable[[str], str] | None = None
) -> str:
    """Fill ``{name}`` placeholders of a template (``{{``/``}}`` are literal braces).

    Args:
        text: The template.
        binding: Variable values.
        escape: Applied to each substituted value (e.g. ``re.escape`` for a regex).

    Returns:
        The rendered string.

    Raises:
        SuiteError: If a placeholder names a variable missing from ``binding``.
    """

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok in ("{{", "}}"):
            return tok[0]
        name = m.group(1)
        if name not in binding:
            raise SuiteError(f"unknown variable {{{name}}} in {text!r}")
        value = str(binding[name])
        return escape(value) if escape else value

    return _TOKEN.sub(sub, text)


def render_value(value: Any, binding: Mapping[str, Scalar]) -> Any:
    """Render every string inside a JSON-like value; returns a new (deep) copy.

    A string that is exactly one placeholder becomes the variable's value with
    its own type (``"{oid}"`` -> ``12``); mapping keys are rendered as strings.

    Args:
        value: Scalars, lists and mappings.
        binding: Variable values.

    Returns:
        The rendered copy.

    Raises:
        SuiteError: If a placeholder names a variable missing from ``binding``.
    """
    if isinstance(value, str):
        m = _WHOLE.fullmatch(value)
        if m:
            if m.group(1) not in binding:
                raise SuiteError(f"unknown variable {value} in {value!r}")
            return binding[m.group(1)]
        return render_text(value, binding)
    if isinstance(value, Mapping):
        return {render_text(str(k), binding): render_value(v, binding) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, binding) for v in value]
    return copy.deepcopy(value)


def _unknown_variable(value: Any, declared: set[str], where: str = "") -> str | None:
    """A one-line complaint about the first placeholder in ``value`` naming no declared variable."""
    if isinstance(value, str):
        for name in _placeholders(value):
            if name not in declared:
                at = f" at {where}" if where else ""
                known = ", ".join(sorted(declared)) or "none"
                return f"unknown variable {{{name}}}{at} (declared variables: {known})"
        return None
    if isinstance(value, BaseModel):
        return _unknown_variable(value.model_dump(by_alias=True, exclude_unset=True), declared, where)
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{where}.{k}" if where else str(k)
            err = _unknown_variable(str(k), declared, sub) or _unknown_variable(v, declared, sub)
            if err:
                return err
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            err = _unknown_variable(v, declared, f"{where}[{i}]")
            if err:
                return err
    return None


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from JSON-serialisable parts, stable across processes and machines.

    SHA-256 of the canonical JSON (sorted keys), not Python's randomised ``hash()``.
    """
    blob = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big") >> 1


# --- models ----------------------------------------------------------------------
