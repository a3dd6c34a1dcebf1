"""Plotly figures built from the aggregated rows of `_queries` (pure: rows in, figure JSON out).

The browser draws them with the plotly.js bundled in the installed `plotly` wheel, served
by the dashboard itself (no CDN).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

_LAYOUT: dict[str, Any] = {
    "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
    "height": 320,
    "legend": {"orientation": "h", "y": -0.2},
}


_TEMPLATE: dict[str, Any] = {}


def _fig(data: list[Any], **layout: Any) -> str:
    """Figure JSON via plotly's serializer. Traces are plain dicts and validation is skipped:
    building `go.Figure` objects validates every property and cost ~100 ms per chart here."""
    import plotly.io as pio

    if not _TEMPLATE:
        _TEMPLATE.update(pio.templates["plotly_white"].to_plotly_json())
    full = {**_LAYOUT, "template": _TEMPLATE, **layout}
    # plotly.js 3 only takes titles as {"text": ...} (go.Figure used to convert the short form)
    for key, value in list(full.items()):
        if key == "title" and isinstance(value, str):
            full[key] = {"text": value}
        elif (
            key.startswith(("xaxis", "yaxis"))
            and isinstance(value, dict)
            and isinstance(value.get("title"), str)
        ):
            full[key] = {**value, "title": {"text": value["title"]}}
    out: str = pio.to_json({"data": data, "layout": full}, validate=False)
    return out


def _scatter(**kw: Any) -> dict[str, Any]:
    return {"type": "scatter", **kw}


def _bar(**kw: Any) -> dict[str, Any]:
    return {"type": "bar", **kw}


def pass_curves(curves: dict[str, dict[str, Any]]) -> str:
    """pass^k against k, one line per run (label -> `_queries.pass_curve`), with its interval."""

    data = []
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, (label, c) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        if c["k"]:
            data.append(
                _scatter(
                    x=c["k"] + c["k"][::-1],
                    y=c["high"] + c["low"][::-1],
                    fill="toself",
                    line={"width": 0},
                    fillcolor=color,
                    opacity=0.15,
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
        data.append(
            _scatter(
                x=c["k"],
                y=c["pass_hat"],
                mode="lines+markers",
                name=label,
                line={"color": color},
                hovertemplate="k=%{x}<br>pass^k=%{y:.3f}<extra>" + label + "</extra>",
            )
        )
    return _fig(
        data,
        title="pass^k (95% bootstrap interval)",
        xaxis={"title": "k", "dtick": 1},
        yaxis={"title": "pass^k", "range": [0, 1.05]},
    )


def case_bars(cases: list[dict[str, Any]], link: str) -> str:
    """pass^1 per case; a click on a bar opens the case (its URL is the point's customdata)."""

    ids = [c["case_id"] for c in cases]
    vals = [int(c["c"]) / int(c["n"]) for c in cases]
    colors = ["#d62728" if v < 1 else "#2ca02c" for v in vals]
    from urllib.parse import quote

    bar = _bar(
        x=ids,
        y=vals,
        marker={"color": colors},
        customdata=[link + quote(i, safe="") for i in ids],
        hovertemplate="%{x}<br>pass^1=%{y:.2f}<extra>click to open</extra>",
    )
    return _fig(
        [bar], title="pass^1 per case (click a bar)", yaxis={"range": [0, 1.05]}, xaxis={"type": "category"}
    )


def component_series(series: dict[str, Any]) -> list[tuple[str, str]]:
    """One figure per reward component: its mean over time, one line per agent version."""

    by: dict[str, dict[str, list[tuple[str, float, int]]]] = defaultdict(lambda: defaultdict(list))
    for r in series["rows"]:
        by[r["component"]][r["agent_version"]].append((r["t"], float(r["value"]), int(r["n"])))
    figs = []
    for comp, versions in sorted(by.items()):
        data = [
            _scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="lines+markers",
                name=version,
                customdata=[p[2] for p in pts],
                hovertemplate="%{x}<br>%{y:.3f} (n=%{customdata})<extra>" + version + "</extra>",
            )
            for version, pts in sorted(versions.items())
        ]
        figs.append((comp, _fig(data, title=comp, yaxis={"range": [0, 1.05]}, height=260)))
    return figs


def comparison_bars(rows: list[dict[str, Any]], key: str, title: str) -> str:
    """Candidate vs baseline per case or component; regressions drawn in red."""

    names = [r[key] for r in rows]
    return _fig(
        [
            _bar(x=names, y=[r.get("baseline") for r in rows], name="baseline", marker={"color": "#9e9e9e"}),
            _bar(
                x=names,
                y=[r.get("candidate") for r in rows],
                name="candidate",
                marker={"color": ["#d62728" if r.get("regression") else "#1f77b4" for r in rows]},
            ),
        ],
        title=title,
        barmode="group",
        yaxis={"range": [0, 1.05]},
        xaxis={"type": "category"},
    )


def density(d: dict[str, Any]) -> str:
    """Steps, tool calls and failed calls per seq bucket; a click jumps the table to that seq."""

    xs = [int(r["start"]) for r in d["rows"]]
    traces = [
        ("steps", "steps", "#1f77b4"),
        ("tool calls", "tool_calls", "#2ca02c"),
        ("failed calls", "errors", "#d62728"),
    ]
    data = [
        _bar(x=xs, y=[int(r[k]) for r in d["rows"]], name=name, marker={"color": color}, customdata=xs)
        for name, k, color in traces
    ]
    return _fig(
        data,
        title=f"timeline (events per {d['width']} seq; click to jump)",
        barmode="stack",
        height=220,
        xaxis={"title": "seq"},
    )


def graph(nodes: list[dict[str, Any]], edges: list[tuple[str, str]], title: str) -> str:
    """A directed tree/DAG drawn with a layered layout (depth = x, order within depth = y)."""

    depth: dict[str, int] = {}
    children: dict[str, list[str]] = defaultdict(list)
    parents = {b for _, b in edges}
    for a, b in edges:
        children[a].append(b)
    roots = [n["id"] for n in nodes if n["id"] not in parents] or [n["id"] for n in nodes[:1]]
    stack = [(r, 0) for r in roots]
    while stack:
        nid, d = stack.pop()
        if nid in depth and depth[nid] >= d:
            continue
        depth[nid] = d
        stack.extend((c, d + 1) for c in children.get(nid, []) if d < len(nodes))
    rows: dict[int, int] = defaultdict(int)
    pos = {}
    for n in nodes:
        d = depth.get(n["id"], 0)
        pos[n["id"]] = (d, -rows[d])
        rows[d] += 1
    ex: list[float | None] = []
    ey: list[float | None] = []
    for a, b in edges:
        if a in pos and b in pos:
            ex += [pos[a][0], pos[b][0], None]
            ey += [pos[a][1], pos[b][1], None]
    data = [
        _scatter(x=ex, y=ey, mode="lines", line={"color": "#999"}, hoverinfo="skip", showlegend=False),
        _scatter(
            x=[pos[n["id"]][0] for n in nodes],
            y=[pos[n["id"]][1] for n in nodes],
            mode="markers+text",
            text=[n.get("label", n["id"]) for n in nodes],
            textposition="top center",
            hovertext=[n.get("hover", n["id"]) for n in nodes],
            hoverinfo="text",
            marker={"size": 14, "color": [n.get("color", "#1f77b4") for n in nodes]},
            showlegend=False,
        ),
    ]
    return _fig(
        data,
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        height=max(300, 60 * max(rows.values(), default=1)),
    )


def simple_bars(x: list[Any], y: list[Any], title: str, **layout: Any) -> str:

    return _fig([_bar(x=x, y=y)], title=title, **layout)


def simple_lines(series: dict[str, tuple[list[Any], list[Any]]], title: str, **layout: Any) -> str:

    return _fig(
        [_scatter(x=x, y=y, mode="lines+markers", name=name) for name, (x, y) in series.items()],
        title=title,
        **layout,
    )
