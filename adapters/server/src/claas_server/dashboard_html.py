"""HTML building blocks of the dashboard: page shell, tables, inline SVG charts.

Every value that reaches the page goes through :func:`esc`; no script is ever
sent, and the Content-Security-Policy forbids any.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

__all__ = ["adapter_href", "chart", "esc", "page", "sparkline", "table", "when"]

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;
background:#f5f7fa}
header{background:#243b53;color:#fff;padding:12px 24px;display:flex;align-items:baseline;gap:16px}
header h1{font-size:18px;margin:0}header a{color:#bcccdc;text-decoration:none}
header .who{margin-left:auto;color:#9fb3c8;font-size:12px}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:12px 16px;
margin:0 0 16px}
h2{font-size:15px;margin:0 0 8px;color:#334e68}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{font-size:12px;text-transform:uppercase;color:#627d98;letter-spacing:.03em}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.time{white-space:nowrap}
a{color:#2680c2}.muted{color:#829ab1}.live{color:#0c6b58;font-weight:600}
.status-applied{color:#0c6b58}.status-failed{color:#ab091e}.status-running{color:#b44d12}.status-skipped{color:#52606d}
.stats{display:flex;gap:24px;flex-wrap:wrap}.stats div{min-width:110px}
.stats b{display:block;font-size:20px;color:#102a43}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:18px}
ul.tree li{position:relative}ul.tree li::before{content:"\\2514\\2500 ";color:#9fb3c8}
.charts{display:flex;gap:16px;flex-wrap:wrap}
form.login{display:flex;gap:8px;align-items:center}
input[type=password]{padding:6px;border:1px solid #bcccdc;border-radius:4px;min-width:260px}
button{padding:6px 12px;border:0;border-radius:4px;background:#2680c2;color:#fff}
"""


def esc(value: Any) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def when(timestamp: float | None) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def number(value: Any, digits: int = 4) -> str:
    """A metric for display (blank when missing or not finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return f"{value:.{digits}g}"


def adapter_href(adapter_id: str) -> str:
    """The dashboard page of an adapter."""
    namespace, _, name = adapter_id.partition("/")
    return f"/dashboard/adapters/{quote(namespace, safe='')}/{quote(name, safe='')}"


def page(title: str, body: str, *, who: str = "") -> str:
    """A complete HTML document."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>CLaaS</h1><a href="/dashboard">adapters</a>'
        f"<span class=who>{esc(who)}</span></header><main>{body}</main></body></html>"
    )


def table(
    table_id: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str
) -> str:
    """A table whose cells are already-escaped HTML; ``empty`` shows when there is no row."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    if not body:
        body = f"<tr><td colspan={len(headers)} class=muted>{esc(empty)}</td></tr>"
    return (
        f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def td(value: Any, *, numeric: bool = False, raw: bool = False, cls: str = "") -> str:
    """One cell (``raw`` cells hold HTML built by this module)."""
    classes = " ".join(c for c in ("num" if numeric else "", cls) if c)
    attr = f' class="{esc(classes)}"' if classes else ""
    return f"<td{attr}>{value if raw else esc(value)}</td>"


def _finite_points(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str = "version",
    width: int = 520,
    height: int = 220,
    color: str = "#2680c2",
) -> str:
    """An inline SVG line chart of ``(x, y)`` points, with axes and point tooltips."""
    data = _finite_points(points)
    label = esc(title)
    if not data:
        return (
            f'<svg class=chart role=img aria-label="{label}" width={width} height={height}>'
            f'<text x=12 y=22 font-size=13 fill="#334e68">{label}</text>'
            f'<text x=12 y=50 font-size=12 fill="#829ab1">no data yet</text></svg>'
        )
    left, right, top, bottom = 56, 16, 30, 36
    xs, ys = [p[0] for p in data], [p[1] for p in data]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        y0, y1 = y0 - abs(y0 or 1) * 0.1, y1 + abs(y1 or 1) * 0.1

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data)
    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r=3 fill="{color}">'
        f"<title>{esc(x_label)} {esc(number(x))}: {esc(number(y))}</title></circle>"
        for x, y in data
    )
    axes = (
        f"<line x1={left} y1={height - bottom} x2={width - right} y2={height - bottom} "
        f'stroke="#bcccdc"/><line x1={left} y1={top} x2={left} y2={height - bottom} '
        f'stroke="#bcccdc"/>'
    )
    ticks = (
        f'<text x={left - 6} y={sy(y1) + 4:.1f} font-size=11 text-anchor=end fill="#627d98">'
        f"{esc(number(y1, 3))}</text>"
        f'<text x={left - 6} y={sy(y0) + 4:.1f} font-size=11 text-anchor=end fill="#627d98">'
        f"{esc(number(y0, 3))}</text>"
        f"<text x={sx(x0):.1f} y={height - bottom + 16} font-size=11 text-anchor=middle "
        f'fill="#627d98">{esc(number(x0))}</text>'
        f"<text x={sx(x1):.1f} y={height - bottom + 16} font-size=11 text-anchor=middle "
        f'fill="#627d98">{esc(number(x1))}</text>'
        f"<text x={(left + width - right) / 2:.1f} y={height - 6} font-size=11 "
        f'text-anchor=middle fill="#627d98">{esc(x_label)}</text>'
    )
    return (
        f'<svg class=chart role=img aria-label="{label}" width={width} height={height} '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x=12 y=18 font-size=13 fill="#334e68">{label}</text>{axes}{ticks}'
        f'<polyline fill=none stroke="{color}" stroke-width=2 points="{line}"/>{dots}</svg>'
    )


def sparkline(values: Sequence[float], *, width: int = 120, height: int = 28) -> str:
    """A tiny SVG trend line (no axes)."""
    data = [v for v in values if math.isfinite(v)]
    if len(data) < 2:
        return "<span class=muted>&mdash;</span>"
    lo, hi = min(data), max(data)
    step = (width - 4) / (len(data) - 1)

    def y(value: float) -> float:
        if hi == lo:
            return height / 2
        return height - 3 - (value - lo) / (hi - lo) * (height - 6)

    line = " ".join(f"{2 + i * step:.1f},{y(v):.1f}" for i, v in enumerate(data))
    return (
        f'<svg class=spark width={width} height={height} role=img aria-label="trend">'
        f'<polyline fill=none stroke="#2680c2" stroke-width=1.5 points="{line}"/></svg>'
    )


def stats(items: Mapping[str, Any]) -> str:
    """A row of big numbers."""
    cells = "".join(f"<div><b>{esc(v)}</b>{esc(k)}</div>" for k, v in items.items())
    return f"<div class=stats>{cells}</div>"
