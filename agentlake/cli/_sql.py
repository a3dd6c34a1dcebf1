"""Checks on SQL text a user gives the CLI, before ClickHouse sees it.

Pure functions over strings: a filter (``replay --where``) must be one boolean
expression, since it is spliced into AgentLake's own query; a statement
(``agentlake sql``) must not read the server's files.
"""

from __future__ import annotations

import re

# a keyword that ends an expression and starts a clause: outside parentheses, a filter that
# contains one reaches beyond its WHERE (e.g. "1=1) UNION SELECT ..." or "... SETTINGS x=1")
_CLAUSE_WORDS = (
    "SELECT",
    "FROM",
    "WHERE",
    "PREWHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "INTO",
    "WINDOW",
    "QUALIFY",
)
_ANYWHERE_WORDS = ("SETTINGS", "FORMAT")  # not even in a subquery: they change how we run


class SqlTextError(ValueError):
    """SQL text a command refuses; ``str(e)`` says why, in one line."""


def mask_literals(sql: str) -> str:
    """`sql` with the content of string literals ('...') and quoted identifiers ("...",
    `...`) replaced by ``_`` (same length, so positions still match), and comments kept.

    Raises:
        SqlTextError: a literal or quoted identifier is not closed.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch not in "'\"`":
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n:
            if sql[j] == "\\":
                j += 2
                continue
            if sql[j] == ch:
                if j + 1 < n and sql[j + 1] == ch:  # a doubled quote is one quote
                    j += 2
                    continue
                break
            j += 1
        if j >= n:
            what = "string literal" if ch == "'" else "quoted identifier"
            raise SqlTextError(f"an unterminated {what} at position {i + 1}: close it with {ch}")
        out.append(ch + "_" * (j - i - 1) + ch)
        i = j + 1
    return "".join(out)


def check_filter(where: str) -> None:
    """Refuse a filter that is not one boolean expression over the ``trajectories`` table.

    Refused (outside string literals): unbalanced parentheses, ``;``, comments
    (``--``, ``#``, ``/* */``), a clause keyword outside parentheses (SELECT, FROM, UNION,
    ORDER, LIMIT, ...) and SETTINGS or FORMAT anywhere.

    Raises:
        SqlTextError: why the filter is refused, and what to give instead.
    """
    if not where.strip():
        raise SqlTextError("empty filter: give an expression, e.g. --where \"outcome != 'success'\"")
    masked = mask_literals(where)
    if ";" in masked:
        raise SqlTextError("a filter is one expression: leave out ';'")
    if re.search(r"--|/\*|\*/|#", masked):
        raise SqlTextError("a filter is one expression: leave out comments (--, #, /* */)")
    depth = 0
    top: list[str] = []  # the text outside any parentheses
    for pos, ch in enumerate(masked, 1):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SqlTextError(
                    f"unbalanced parentheses in the filter: ')' at position {pos} closes nothing"
                )
        elif depth == 0:
            top.append(ch)
    if depth > 0:
        raise SqlTextError(f"unbalanced parentheses in the filter: {depth} '(' not closed")
    reader = reads_server_files(where)
    if reader is not None:
        raise SqlTextError(
            f"{reader} reads the server's files or other servers: refused in a filter over the "
            "trajectories table"
        )
    words = {w.upper() for w in re.findall(r"[A-Za-z_]+", masked)}
    found = [w for w in _ANYWHERE_WORDS if w in words]
    top_words = {w.upper() for w in re.findall(r"[A-Za-z_]+", "".join(top))}
    found += [w for w in _CLAUSE_WORDS if w in top_words]
    if found:
        raise SqlTextError(
            f"a filter is one boolean expression over the trajectories table: {found[0]} is refused "
            "(e.g. --where \"outcome != 'success' AND agent_version = '1.0'\")"
        )


def reads_server_files(statement: str) -> str | None:
    """What in `statement` would read the server's files or other servers, as it is
    named in a message: ``"table function file()"`` (any table function in FROM/JOIN but
    ``numbers``, ``zeros``, ...) or ``"file()"`` (the function); None when nothing does.
    String literals and quoted identifiers are not looked at."""
    try:
        masked = mask_literals(statement)
    except SqlTextError:
        return None  # ClickHouse reports the syntax error
    m = re.search(r"\b(?:FROM|JOIN)\s+([A-Za-z_]\w*)\s*\(", masked, re.IGNORECASE)
    if m and m.group(1).lower() not in ("numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series"):
        return f"table function {m.group(1)}()"
    if re.search(r"\bfile\s*\(", masked, re.IGNORECASE):
        return "file()"
    return None
