"""How the CLI prints data: as text, never as Rich markup or emoji codes, and ids whole.

A value from the log, ClickHouse or the user (an agent version, a SQL result, a case id)
can contain ``[/]``, ``[link=...]`` or ``:x:``; printed through Rich's markup it would
crash the command (MarkupError) or print something else than the data. Tables built
with :class:`DataTable` and rows printed with :func:`render_rows` show such values as
they are; the CLI's consoles are created with ``emoji=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text


def plain(value: Any) -> Text:
    """`value` as literal text (``str(value)``): no markup, no emoji codes."""
    return value if isinstance(value, Text) else Text(str(value))


def _as_text(value: Any) -> Any:
    return plain(value) if isinstance(value, str) else value


class DataTable(Table):
    """A `rich.table.Table` whose string title, caption, headers and cells are literal text.

    Styled cells are given as `rich.text.Text` (e.g. ``Text("FAIL", style="red")``);
    other renderables pass through unchanged.
    """

    def __init__(self, *headers: Any, **kwargs: Any) -> None:
        for key in ("title", "caption"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = plain(kwargs[key])
        super().__init__(*[_as_text(h) for h in headers], **kwargs)

    def add_column(self, header: RenderableType = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(_as_text(header), *args, **kwargs)

    def add_row(self, *renderables: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*[_as_text(r) for r in renderables], **kwargs)


def render_rows(
    console: Console,
    rows: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
    caption: str | None = None,
    wrap: Iterable[str] = (),
    wrap_min: int = 12,
) -> None:
    """Print `rows` (dicts with the same keys) as a table when it fits the console, else one
    record per block (``column: value`` lines, like ClickHouse's ``Vertical`` format).

    No value is ever cut: the columns not in `wrap` (ids, numbers) keep their whole width;
    the columns in `wrap` (prose: descriptions, tool lists) may wrap down to `wrap_min`
    characters. When the unwrappable columns and `wrap_min` per wrappable one do not fit,
    the vertical layout is used. Values are printed as text (no markup, no emoji codes).

    Args:
        console: where to print (its width decides the layout).
        rows: the records; ``str(value)`` is shown (``None`` as ``–``).
        title: a line above (table title, or a first line before the blocks).
        caption: a line below (not cut to the table's width); by default "N rows".
        wrap: names of the columns that may wrap.
        wrap_min: the narrowest a wrappable column may get (characters).
    """
    if not rows:
        return
    wrappable = set(wrap)
    caption = caption if caption is not None else f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
    names = list(rows[0])
    cells = [["–" if r.get(n) is None else str(r.get(n)) for n in names] for r in rows]

    def width(i: int, n: str) -> int:
        natural = max([len(n), *(max((len(x) for x in c[i].splitlines()), default=0) for c in cells)])
        return min(natural, wrap_min) if n in wrappable else natural  # its header wraps too

    widths = [width(i, n) for i, n in enumerate(names)]
    if sum(widths) + 3 * len(widths) + 1 <= console.width:
        t = DataTable(title=title)
        for n in names:
            t.add_column(n, no_wrap=n not in wrappable, overflow="fold")
        for row in cells:
            t.add_row(*row)
        console.print(t)
        console.print(plain(caption), style="dim")
        return
    if title:
        console.print(plain(title), style="bold")
    pad = max(len(n) for n in names)
    for i, row in enumerate(cells, 1):
        console.print(Text(f"── row {i} ──", style="bold"))
        for n, v in zip(names, row, strict=True):
            console.print(Text.assemble((n.rjust(pad), "cyan"), ": ", v), soft_wrap=True)
    console.print(plain(caption), style="dim")
