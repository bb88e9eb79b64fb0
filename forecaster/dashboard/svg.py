"""Inline SVG charts: learning curves, forecast fans, reference levels, stop marks.

One small API, `Chart` (what to draw) and `render(chart)` (the SVG text), plus `strip()` for a
second series drawn under a chart on the same step axis (the planned learning-rate schedule).
Nothing here knows studies or runs: the pages build a Chart from the engine's values, so the
offline report can draw with the same module. No scripts, no external resources: the SVG is
part of the page's HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.ticker import LogLocator, MaxNLocator

# Colours that stay apart on a white page (Okabe-Ito, then Tableau): a run keeps its colour
# by its position in the study.
PALETTE = (
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c564b", "#7f7f7f",
    "#bcbd22", "#17becf", "#1f77b4", "#9467bd",
)  # fmt: skip


def color_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Line:
    """An observed curve."""

    steps: Sequence[float]
    values: Sequence[float]
    label: str
    color: str
    width: float = 1.6
    faded: bool = False  # a finished or stopped run, drawn behind the running ones


@dataclass(frozen=True)
class Fan:
    """A forecast: the 5-95% and 25-75% bands and the median, over steps still to come."""

    steps: Sequence[float]
    q05: Sequence[float]
    q25: Sequence[float]
    q50: Sequence[float]
    q75: Sequence[float]
    q95: Sequence[float]
    label: str
    color: str


@dataclass(frozen=True)
class Level:
    """A horizontal reference line (the incumbent, the target)."""

    value: float
    label: str
    color: str
    kind: str  # the CSS class: "incumbent", "target"
    dash: str = "6 4"


@dataclass(frozen=True)
class Mark:
    """A point on the chart with a label: where a run was stopped, and why."""

    step: float
    value: float
    label: str
    color: str


@dataclass(frozen=True)
class Chart:
    lines: Sequence[Line] = ()
    fans: Sequence[Fan] = ()
    levels: Sequence[Level] = ()
    marks: Sequence[Mark] = ()
    log_steps: bool = False
    x_label: str = "step"
    y_label: str = ""
    width: int = 960
    height: int = 380
    x_range: tuple[float, float] | None = None  # default: what is drawn
    legend: bool = False
    name: str = "chart"  # unique on its page: names the chart's clip path
    margins: tuple[int, int, int, int] = field(default=(16, 20, 44, 64))  # top right bottom left


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return a[np.isfinite(a)]


def x_range_of(chart: Chart) -> tuple[float, float]:
    """The step range a chart spans: its own, or what its lines and fans reach."""
    if chart.x_range is not None:
        return chart.x_range
    steps = [s for line in chart.lines for s in line.steps] + [
        s for fan in chart.fans for s in fan.steps
    ]
    if not steps:
        return (1.0, 10.0) if chart.log_steps else (0.0, 1.0)
    lo, hi = float(min(steps)), float(max(steps))
    if chart.log_steps:
        lo = max(lo, 1.0)
    return (lo, hi if hi > lo else lo + 1.0)


def _y_range(chart: Chart) -> tuple[float, float]:
    """What the values span; a diverged run's spike (beyond the 98th percentile of the
    curves by 3x their spread) is clipped rather than flattening every other curve."""
    observed = np.concatenate([_finite(line.values) for line in chart.lines] or [np.zeros(0)])
    bands = [_finite(v) for fan in chart.fans for v in (fan.q05, fan.q95)]
    levels = [np.array([lv.value]) for lv in chart.levels if math.isfinite(lv.value)]
    if len(observed) > 20:
        lo_q, hi_q = np.quantile(observed, [0.02, 0.98])
        spread = max(hi_q - lo_q, 1e-12)
        observed = observed[(observed >= lo_q - 3 * spread) & (observed <= hi_q + 3 * spread)]
    values = np.concatenate([observed, *bands, *levels])
    if not len(values):
        return (0.0, 1.0)
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * 0.05 or max(abs(lo) * 0.05, 1e-6)
    return (lo - pad, hi + pad)


class _Axes:
    """Data -> pixel for one chart."""

    def __init__(self, chart: Chart, x_range: tuple[float, float], y_range: tuple[float, float]):
        top, right, bottom, left = chart.margins
        self.left, self.top = left, top
        self.w = chart.width - left - right
        self.h = chart.height - top - bottom
        self.log = chart.log_steps
        self.x0, self.x1 = (self._fx(x_range[0]), self._fx(x_range[1]))
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        self.y0, self.y1 = y_range

    def _fx(self, step: float) -> float:
        return math.log10(max(step, 1.0)) if self.log else float(step)

    def x(self, step: float) -> float:
        return self.left + (self._fx(step) - self.x0) / (self.x1 - self.x0) * self.w

    def y(self, value: float) -> float:
        span = self.y1 - self.y0 or 1.0
        v = min(max(value, self.y0 - span), self.y1 + span)  # off-scale: drawn at the edge
        return self.top + (1.0 - (v - self.y0) / span) * self.h


def format_step(step: float) -> str:
    """1500 -> "1.5k", 2000000 -> "2M": axis ticks stay short."""
    a = abs(step)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= size:
            return f"{step / size:.3g}{unit}"
    return f"{step:.4g}"


def format_value(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _path(axes: _Axes, steps: Sequence[float], values: Sequence[float]) -> str:
    """An SVG path through the finite points; a NaN/inf breaks the line."""
    parts, pen_down = [], False
    for s, v in zip(steps, values, strict=True):
        if not math.isfinite(v):
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{axes.x(s):.1f},{axes.y(v):.1f}")
        pen_down = True
    return "".join(parts)


def _band(axes: _Axes, steps: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> str:
    pts = [(s, a, b) for s, a, b in zip(steps, lo, hi, strict=True) if math.isfinite(a + b)]
    if not pts:
        return ""
    upper = [f"{axes.x(s):.1f},{axes.y(b):.1f}" for s, _, b in pts]
    lower = [f"{axes.x(s):.1f},{axes.y(a):.1f}" for s, a, _ in reversed(pts)]
    return " ".join(upper + lower)


def _x_ticks(axes: _Axes, x_range: tuple[float, float]) -> list[float]:
    lo, hi = x_range
    if axes.log:
        ticks = LogLocator(base=10).tick_values(max(lo, 1.0), hi)
    else:
        ticks = MaxNLocator(nbins=7).tick_values(lo, hi)
    return [float(t) for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]


def _frame(chart: Chart, axes: _Axes, x_range: tuple[float, float], *, y_ticks: int) -> list[str]:
    """Axes, grid, ticks and labels."""
    out = [
        f'<rect x="{axes.left}" y="{axes.top}" width="{axes.w}" height="{axes.h}" '
        'fill="#fff" stroke="#ccc"/>'
    ]
    bottom = axes.top + axes.h
    for t in _x_ticks(axes, x_range):
        x = axes.x(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{axes.top}" x2="{x:.1f}" y2="{bottom}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" class="tick">'
            f"{format_step(t)}</text>"
        )
    if y_ticks:
        for t in MaxNLocator(nbins=y_ticks).tick_values(axes.y0, axes.y1):
            if not axes.y0 <= t <= axes.y1:
                continue
            y = axes.y(float(t))
            out.append(
                f'<line x1="{axes.left}" y1="{y:.1f}" x2="{axes.left + axes.w}" y2="{y:.1f}" '
                f'stroke="#eee"/><text x="{axes.left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                f'class="tick">{format_value(float(t))}</text>'
            )
    out.append(
        f'<text x="{axes.left + axes.w / 2:.1f}" y="{chart.height - 6}" text-anchor="middle" '
        f'class="axis-label">{html.escape(chart.x_label)}'
        f"{' (log scale)' if chart.log_steps else ''}</text>"
    )
    if chart.y_label:
        cy = axes.top + axes.h / 2
        out.append(
            f'<text x="14" y="{cy:.1f}" text-anchor="middle" class="axis-label" '
            f'transform="rotate(-90 14 {cy:.1f})">{html.escape(chart.y_label)}</text>'
        )
    return out


_STYLE = (
    "<style>.tick{font:11px sans-serif;fill:#555}.axis-label{font:12px sans-serif;fill:#333}"
    ".mark-label,.level-label,.legend{font:11px sans-serif}</style>"
)


def render(chart: Chart) -> str:
    """The chart as an <svg> element."""
    x_range = x_range_of(chart)
    axes = _Axes(chart, x_range, _y_range(chart))
    clip = f"clip-{chart.name}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{chart.width}" '
        f'height="{chart.height}" viewBox="0 0 {chart.width} {chart.height}" role="img">',
        _STYLE,
        f'<defs><clipPath id="{clip}"><rect x="{axes.left}" y="{axes.top}" width="{axes.w}" '
        f'height="{axes.h}"/></clipPath></defs>',
        *_frame(chart, axes, x_range, y_ticks=6),
        f'<g clip-path="url(#{clip})">',
    ]
    for fan in chart.fans:
        label = html.escape(fan.label)
        out.append(f'<g class="fan" data-run="{label}"><title>{label}: forecast</title>')
        for cls, lo, hi, opacity in (
            ("fan-90", fan.q05, fan.q95, 0.14),
            ("fan-50", fan.q25, fan.q75, 0.30),
        ):
            points = _band(axes, fan.steps, lo, hi)
            if points:
                out.append(
                    f'<polygon class="{cls}" points="{points}" fill="{fan.color}" '
                    f'fill-opacity="{opacity}" stroke="none"/>'
                )
        out.append(
            f'<path class="fan-median" d="{_path(axes, fan.steps, fan.q50)}" fill="none" '
            f'stroke="{fan.color}" stroke-width="1.3" stroke-dasharray="5 3"/></g>'
        )
    for line in sorted(chart.lines, key=lambda ln: not ln.faded):
        label = html.escape(line.label)
        opacity = 0.45 if line.faded else 1.0
        out.append(
            f'<path class="curve" data-run="{label}" d="{_path(axes, line.steps, line.values)}" '
            f'fill="none" stroke="{line.color}" stroke-width="{line.width}" '
            f'stroke-opacity="{opacity}"><title>{label}</title></path>'
        )
    for level in chart.levels:
        if not math.isfinite(level.value):
            continue
        y = axes.y(level.value)
        out.append(
            f'<line class="{level.kind}" x1="{axes.left}" y1="{y:.1f}" x2="{axes.left + axes.w}" '
            f'y2="{y:.1f}" stroke="{level.color}" stroke-width="1.2" '
            f'stroke-dasharray="{level.dash}"><title>{html.escape(level.label)}</title></line>'
        )
    out.append("</g>")
    placed: list[float] = []
    for level in sorted(chart.levels, key=lambda lv: -lv.value):  # labels at the left end,
        if not math.isfinite(level.value):  # moved down where they would overlap
            continue
        y = axes.y(level.value) - 4
        while any(abs(y - p) < 12 for p in placed):
            y += 12
        placed.append(y)
        out.append(
            f'<text class="level-label" x="{axes.left + 6}" y="{y:.1f}" text-anchor="start" '
            f'fill="{level.color}">{html.escape(level.label)}</text>'
        )
    out.extend(_marks(axes, chart.marks))
    if chart.legend:
        out.extend(_legend(axes, chart))
    out.append("</svg>")
    return "".join(out)


def _marks(axes: _Axes, marks: Sequence[Mark]) -> list[str]:
    """A cross where each run stopped, its label beside it; labels that would overlap the one
    before are moved down a line."""
    out: list[str] = []
    placed: list[tuple[float, float]] = []
    for mark in sorted(marks, key=lambda m: (m.step, m.value)):
        if not math.isfinite(mark.value):
            continue
        x, y = axes.x(mark.step), axes.y(mark.value)
        ly = y - 8
        while any(abs(ly - py) < 12 and abs(x - px) < 120 for px, py in placed):
            ly += 13
        placed.append((x, ly))
        anchor = "end" if x > axes.left + axes.w * 0.8 else "start"
        dx = -6 if anchor == "end" else 6
        label = html.escape(mark.label)
        out.append(
            f'<g class="stop-mark"><path d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}'
            f'M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},{y - 4:.1f}" stroke="{mark.color}" '
            f'stroke-width="2"/><text class="mark-label" x="{x + dx:.1f}" y="{ly:.1f}" '
            f'text-anchor="{anchor}" fill="{mark.color}">{label}</text></g>'
        )
    return out


def _legend(axes: _Axes, chart: Chart) -> list[str]:
    entries = [(ln.label, ln.color, "") for ln in chart.lines] + [
        ("forecast 25-75% / 5-95%", f.color, "fan") for f in chart.fans[:1]
    ]
    out = []
    for i, (label, color, kind) in enumerate(entries):
        y = axes.top + 14 + 15 * i
        x = axes.left + 10
        swatch = (
            f'<rect x="{x}" y="{y - 8}" width="16" height="9" fill="{color}" fill-opacity="0.3"/>'
            if kind == "fan"
            else f'<line x1="{x}" y1="{y - 4}" x2="{x + 16}" y2="{y - 4}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        out.append(f'{swatch}<text class="legend" x="{x + 22}" y="{y}">{html.escape(label)}</text>')
    return out


def strip(
    steps: Sequence[float],
    values: Sequence[float],
    *,
    like: Chart,
    label: str,
    color: str = "#555",
    height: int = 110,
    observed: tuple[Sequence[float], Sequence[float]] | None = None,
) -> str:
    """A small chart under `like`, on its step axis: the planned schedule (a line) and, when
    given, what was observed of it (dots)."""
    chart = Chart(
        lines=[Line(steps, values, label, color)],
        log_steps=like.log_steps,
        x_label=like.x_label,
        y_label=label,
        width=like.width,
        height=height,
        x_range=x_range_of(like),
        margins=(8, like.margins[1], 34, like.margins[3]),
    )
    x_range = x_range_of(chart)
    seen = _finite(values)
    if observed is not None:
        seen = np.concatenate([seen, _finite(observed[1])])
    lo, hi = (float(seen.min()), float(seen.max())) if len(seen) else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.08, 1e-9)
    axes = _Axes(chart, x_range, (lo - pad, hi + pad))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="strip" width="{chart.width}" '
        f'height="{height}" viewBox="0 0 {chart.width} {height}" role="img">',
        _STYLE,
        *_frame(chart, axes, x_range, y_ticks=3),
        f'<path class="schedule" d="{_path(axes, steps, values)}" fill="none" stroke="{color}" '
        f'stroke-width="1.5"><title>{html.escape(label)}</title></path>',
    ]
    if observed is not None:
        for s, v in zip(*observed, strict=True):
            if math.isfinite(v):
                out.append(
                    f'<circle class="observed-lr" cx="{axes.x(s):.1f}" cy="{axes.y(v):.1f}" '
                    f'r="1.6" fill="{color}"/>'
                )
    out.append("</svg>")
    return "".join(out)
