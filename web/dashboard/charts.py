"""Server-rendered SVG charts: no script, no CDN; every data point is a <circle class="point"> with a <title>."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from html import escape

from markupsafe import Markup

COLORS = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#65a30d")
H, LEFT, RIGHT, TOP, BOTTOM = 190, 46, 12, 12, 26
NARROW, WIDE = 560, 1160  # viewBox widths of a half-width and a full-width panel (the text keeps one size)

Point = tuple[datetime | date | float, float]


def _x(value: datetime | date | float) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()
    return float(value)


def _label(value: datetime | date | float) -> str:
    if isinstance(value, datetime):
        return value.strftime("%b %d %H:%M")
    if isinstance(value, date):
        return value.strftime("%b %d")
    return f"{value:g}"


def _number(value: float, percent: bool) -> str:
    return f"{value:.1%}" if percent else f"{value:,.4g}"


def _empty(title: str) -> Markup:
    return Markup(f'<p class="nodata">{escape(title)}: no data yet</p>')


def line_chart(series: Mapping[str, Sequence[Point]], title: str, percent: bool = False, bars: bool = False,
               wide: bool = False, span: tuple[Point | datetime, datetime] | None = None) -> Markup:
    """One line (or bars, for one series of counts) per named series over a shared x axis: the data's own
    range, or `span` (first, last) so charts of one time window line up."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _empty(title)
    W = WIDE if wide else NARROW  # noqa: N806
    xs = [_x(x) for x, _ in points] + ([_x(span[0]), _x(span[1])] if span else [])
    x0, x1 = min(xs), max(xs)
    top = max(max(y for _, y in points), 1e-9) * 1.1
    bottom = min(0.0, min(y for _, y in points))

    def px(x: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * ((x - x0) / (x1 - x0) if x1 > x0 else 0.5)

    def py(y: float) -> float:
        return TOP + (H - TOP - BOTTOM) * (1 - (y - bottom) / (top - bottom))

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
             f'data-points="{len(points)}">']
    for i in range(3):  # grid and y ticks at 0, 1/2 and the top
        y = bottom + (top - bottom) * i / 2
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">'
                     f'{_number(y, percent)}</text>')
    first, last = (span if span else (min(points, key=lambda p: _x(p[0]))[0], max(points, key=lambda p: _x(p[0]))[0]))
    parts.append(f'<text class="tick" x="{LEFT}" y="{H - 6}">{escape(_label(first))}</text>')
    if x1 > x0:
        parts.append(f'<text class="tick" x="{W - RIGHT}" y="{H - 6}" text-anchor="end">{escape(_label(last))}</text>')
    slot = (W - LEFT - RIGHT) / max(len({_x(x) for x, _ in points}), (x1 - x0) / 3600 if span else 1, 1)
    for n, (name, values) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        ordered = sorted(values, key=lambda p: _x(p[0]))
        if bars:
            width = max(min(slot * 0.7, 24), 2)
            parts += [f'<rect class="bar" x="{px(_x(x)) - width / 2:.1f}" y="{py(y):.1f}" width="{width:.1f}" '
                      f'height="{py(bottom) - py(y):.1f}" fill="{color}"/>' for x, y in ordered]
        elif len(ordered) > 1:
            line = " ".join(f"{px(_x(x)):.1f},{py(y):.1f}" for x, y in ordered)
            parts.append(f'<polyline class="line" points="{line}" stroke="{color}"/>')
        for x, y in ordered:
            parts.append(f'<circle class="point" cx="{px(_x(x)):.1f}" cy="{py(y):.1f}" r="{2 if bars else 3}" '
                         f'fill="{color}"><title>{escape(name)} {escape(_label(x))}: {_number(y, percent)}'
                         '</title></circle>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{COLORS[n % len(COLORS)]}"></i>{escape(name)}</span>'
                     for n, name in enumerate(series)) if not bars else ""
    return Markup(f'<figure><figcaption>{escape(title)}</figcaption>{"".join(parts)}'
                  f'<div class="legend">{legend}</div></figure>')
