"""Small HTML builders: every value is escaped here, pages only compose them."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlencode

NAV = (
    ("/", "Runs"),
    ("/trajectories", "Trajectories"),
    ("/rewards", "Rewards"),
    ("/lake", "Context lake"),
    ("/delegations", "Delegations"),
)


def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def q(v: str) -> str:
    """A path segment."""
    return quote(v, safe="")


def page(title: str, body: str, banner: str | None = None) -> str:
    nav = "".join(f'<a href="{href}">{e(label)}</a>' for href, label in NAV)
    note = f'<div class="banner">{e(banner)}</div>' if banner else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)} · AgentLake</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/plotly.min.js"></script>
<script src="/static/dashboard.js" defer></script></head>
<body><header><b>AgentLake</b>{nav}</header><main>{note}<h1>{e(title)}</h1>{body}</main></body></html>"""


_chart_ids = iter(range(1, 1 << 62))


def chart(fig_json: str, *, jump: bool = False) -> str:
    """A div plotly.js draws into; the figure travels as inert JSON next to it."""
    cid = f"chart-{next(_chart_ids)}"
    data = fig_json.replace("</", "<\\/")
    attr = ' data-jump="1"' if jump else ""
    return (
        f'<div class="chart" id="{cid}"{attr}></div>'
        f'<script type="application/json" id="{cid}-data">{data}</script>'
    )


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(
    table_id: str,
    columns: list[str],
    rows: Iterable[Any],
    render: Callable[[Any], list[str]],
    row_class: Callable[[Any], str] | None = None,
) -> str:
    """`render(row)` returns already-escaped cell HTML."""
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(f"<td>{c}</td>" for c in render(r))
        body.append(f'<tr class="{e(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}" class="muted">nothing yet</td></tr>')
    return f'<table id="{e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def link(href: str, text: Any, cls: str = "") -> str:
    c = f' class="{e(cls)}"' if cls else ""
    return f'<a href="{e(href)}"{c}>{e(text)}</a>'


def pager(base: str, page_no: int, size: int, total: int, params: dict[str, Any] | None = None) -> str:
    pages = max(1, -(-total // size))
    parts = [f"page {page_no + 1} of {pages} ({total} in all)"]
    keep = {k: v for k, v in (params or {}).items() if v not in (None, "")}
    if page_no > 0:
        parts.insert(0, link(f"{base}?{urlencode({**keep, 'page': page_no - 1})}", "‹ previous"))
    if page_no + 1 < pages:
        parts.append(link(f"{base}?{urlencode({**keep, 'page': page_no + 1})}", "next ›", "next"))
    return f'<div class="pager">{" · ".join(parts)}</div>'


def kv(items: Iterable[tuple[str, Any]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def empty(message: str) -> str:
    return f'<div class="empty">{e(message)}</div>'


def verdict(ok: Any) -> str:
    if ok is None:
        return '<span class="muted">no gate</span>'
    return '<span class="pass">passed</span>' if ok else '<span class="fail">FAILED</span>'


def to_json(v: Any) -> str:
    return json.dumps(v, default=str)
