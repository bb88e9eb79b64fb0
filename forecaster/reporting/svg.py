"""Charts as data, drawn to inline SVG: the one drawing code of the batch report, `forecaster
plot` and the replay's plot (a PNG of the same chart: `reporting/png.py`).

The API is small: a `Chart` holds `Line`s, `Band`s (a shaded range between two lines),
`Mark`s (a labelled point) and `Rule`s (a vertical or horizontal line); `fan_chart` builds the
chart of learning curves with their forecast fans (5-95% and 25-75% bands, the median dashed),
the budget line and stop marks; `render(chart)` gives an `<svg>` element with no external
reference (no fonts, scripts or stylesheets fetched), ready to inline in HTML.

Example:
    >>> fan = Fan(steps=(10, 20), q05=(1.0, 0.8), q25=(1.1, 0.9), q50=(1.2, 1.0),
    ...           q75=(1.3, 1.1), q95=(1.4, 1.2))
    >>> chart = fan_chart("run a", [Series("a", (1, 10), (2.0, 1.2))], [fan], budget=20)
    >>> render(chart).startswith("<svg")
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal

Scale = Literal["linear", "log", "symlog"]
Transform = Callable[[float], float]

# A palette readable on white and by the colour-blind (Okabe-Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
SYMLOG_LINTHRESH = 1e-3


@dataclass(frozen=True)
class Line:
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = PALETTE[0]
    width: float = 1.5
    dashed: bool = False
    label: str = ""
    markers: bool = False
    point_labels: Sequence[str] = ()  # one short text per point, drawn beside it
    opacity: float = 1.0


@dataclass(frozen=True)
class Band:
    xs: Sequence[float]
    lower: Sequence[float]
    upper: Sequence[float]
    color: str = PALETTE[0]
    opacity: float = 0.2
    label: str = ""


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    label: str = ""
    color: str = "#000000"
    shape: Literal["x", "dot"] = "x"


@dataclass(frozen=True)
class Rule:
    at: float
    vertical: bool = True
    label: str = ""
    color: str = "#777777"
    dashed: bool = True


@dataclass(frozen=True)
class Chart:
    title: str = ""
    x_label: str = ""
    y_label: str = ""
    lines: Sequence[Line] = ()
    bands: Sequence[Band] = ()
    marks: Sequence[Mark] = ()
    rules: Sequence[Rule] = ()
    x_scale: Scale = "linear"
    y_scale: Scale = "linear"
    width: int = 640
    height: int = 360
    legend: bool = True


# -- learning curves with forecast fans ---------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """An observed learning curve."""

    name: str
    steps: Sequence[float]
    values: Sequence[float]


@dataclass(frozen=True)
class Fan:
    """A forecast: quantiles at steps (from the last observed step to the horizon)."""

    steps: Sequence[float]
    q05: Sequence[float]
    q25: Sequence[float]
    q50: Sequence[float]
    q75: Sequence[float]
    q95: Sequence[float]


def fan_chart(
    title: str,
    curves: Sequence[Series],
    fans: Sequence[Fan | None],
    *,
    budget: float | None = None,
    stops: Sequence[tuple[float, float] | None] = (),
    cut_at: Sequence[float | None] = (),
    x_label: str = "step",
    y_label: str = "metric",
    width: int = 640,
    height: int = 360,
) -> Chart:
    """Curves (the i-th with fans[i], stops[i] = (step, value) where it could have stopped,
    cut_at[i] the step its forecast was made at), the budget as a vertical line."""
    lines: list[Line] = []
    bands: list[Band] = []
    marks: list[Mark] = []
    for i, curve in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        fan = fans[i] if i < len(fans) else None
        lines.append(Line(curve.steps, curve.values, color, 1.4, label=curve.name))
        if fan is not None and len(fan.steps):
            bands.append(Band(fan.steps, fan.q05, fan.q95, color, 0.14))
            bands.append(Band(fan.steps, fan.q25, fan.q75, color, 0.28))
            lines.append(Line(fan.steps, fan.q50, color, 1.2, dashed=True))
        cut = cut_at[i] if i < len(cut_at) else None
        if cut is not None:
            marks.append(Mark(cut, _value_at(curve, cut), "", color, "dot"))
        stop = stops[i] if i < len(stops) else None
        if stop is not None:
            marks.append(Mark(stop[0], stop[1], "", color, "x"))
    rules = [Rule(budget, label="budget")] if budget else []
    return Chart(title, x_label, y_label, lines, bands, marks, rules, width=width, height=height)


def _value_at(curve: Series, step: float) -> float:
    best = math.nan
    for s, v in zip(curve.steps, curve.values, strict=False):
        if s <= step:
            best = v
    return best


# -- drawing ------------------------------------------------------------------------------------

_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 64, 16, 30, 44


def _transform(scale: Scale) -> tuple[Transform, Transform]:
    """(forward, back) between data and the axis' linear space."""
    if scale == "log":
        return (lambda v: math.log10(v) if v > 0 else math.nan), (lambda t: float(10.0**t))
    if scale == "symlog":
        c = SYMLOG_LINTHRESH

        def fwd(v: float) -> float:
            return math.copysign(math.log10(1 + abs(v) / c), v)

        def back(t: float) -> float:
            return math.copysign(c * (10 ** abs(t) - 1), t)

        return fwd, back
    return (lambda v: v), (lambda t: t)


@dataclass
class _Axes:
    chart: Chart
    x0: float = 0.0
    x1: float = 1.0
    y0: float = 0.0
    y1: float = 1.0
    fx: Transform = field(default=float)
    fy: Transform = field(default=float)

    def fit(self) -> None:
        fx, _ = _transform(self.chart.x_scale)
        fy, _ = _transform(self.chart.y_scale)
        self.fx, self.fy = fx, fy
        xs: list[float] = []
        ys: list[float] = []
        for line in self.chart.lines:
            xs += [fx(x) for x in line.xs]
            ys += [fy(y) for y in line.ys]
        for band in self.chart.bands:
            xs += [fx(x) for x in band.xs]
            ys += [fy(y) for y in (*band.lower, *band.upper)]
        for mark in self.chart.marks:
            xs.append(fx(mark.x))
            ys.append(fy(mark.y))
        for rule in self.chart.rules:
            (xs if rule.vertical else ys).append((fx if rule.vertical else fy)(rule.at))
        xs = [x for x in xs if math.isfinite(x)]
        ys = [y for y in ys if math.isfinite(y)]
        self.x0, self.x1 = _span(xs)
        self.y0, self.y1 = _span(_robust(ys))

    def px(self, x: float) -> float:
        t = self.fx(x)
        w = self.chart.width - _PAD_LEFT - _PAD_RIGHT
        return _PAD_LEFT + (t - self.x0) / (self.x1 - self.x0) * w

    def py(self, y: float) -> float:
        t = self.fy(y)
        h = self.chart.height - _PAD_TOP - _PAD_BOTTOM
        t = min(max(t, self.y0 - 0.05 * (self.y1 - self.y0)), self.y1 + 0.05 * (self.y1 - self.y0))
        return _PAD_TOP + (self.y1 - t) / (self.y1 - self.y0) * h


def _span(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.03 * (hi - lo)
    return lo - pad, hi + pad


def _robust(values: Sequence[float]) -> list[float]:
    """The values without far outliers (a diverged run at 1e8 must not flatten the others)."""
    if len(values) < 20:
        return list(values)
    ordered = sorted(values)
    lo, hi = ordered[int(0.01 * len(ordered))], ordered[int(0.99 * len(ordered)) - 1]
    span = hi - lo or 1.0
    return [v for v in values if lo - span <= v <= hi + span]


def _fmt(v: float) -> str:
    if abs(v) < 1e-12:
        return "0"
    if abs(v) >= 1e6:
        return f"{v:.3g}"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.4g}k"
    if abs(v) < 1e-2:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _ticks(
    lo: float, hi: float, back: Transform, linear: bool, n: int = 5
) -> list[tuple[float, str]]:
    """(position in axis space, label): round numbers on a linear axis, n even steps else."""
    if linear and hi > lo:
        raw = (hi - lo) / n
        base = 10 ** math.floor(math.log10(raw))
        step = next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)
        first = math.ceil(lo / step) * step
        count = int(math.floor((hi - first) / step + 1e-9)) + 1
        return [(first + i * step, _fmt(first + i * step)) for i in range(max(count, 0))]
    return [(lo + (hi - lo) * i / n, _fmt(back(lo + (hi - lo) * i / n))) for i in range(n + 1)]


def _path(points: Sequence[tuple[float, float]]) -> str:
    cmds = []
    pen_up = True
    for x, y in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            pen_up = True
            continue
        cmds.append(f"{'M' if pen_up else 'L'}{x:.1f},{y:.1f}")
        pen_up = False
    return " ".join(cmds)


def render(chart: Chart) -> str:
    """The chart as one `<svg>` element (width x height pixels, system fonts only)."""
    ax = _Axes(chart)
    ax.fit()
    w, h = chart.width, chart.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
    ]
    left, right, top, bottom = _PAD_LEFT, w - _PAD_RIGHT, _PAD_TOP, h - _PAD_BOTTOM
    _, bx = _transform(chart.x_scale)
    _, by = _transform(chart.y_scale)
    for t, text in _ticks(ax.y0, ax.y1, by, chart.y_scale == "linear"):
        y = top + (ax.y1 - t) / (ax.y1 - ax.y0) * (bottom - top)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eeeeee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>')
    for t, text in _ticks(ax.x0, ax.x1, bx, chart.x_scale == "linear"):
        x = left + (t - ax.x0) / (ax.x1 - ax.x0) * (right - left)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eeeeee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{escape(text)}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#999999"/>'
    )
    for band in chart.bands:
        upper = [(ax.px(x), ax.py(y)) for x, y in zip(band.xs, band.upper, strict=True)]
        lower = [(ax.px(x), ax.py(y)) for x, y in zip(band.xs, band.lower, strict=True)]
        pts = [p for p in upper + lower[::-1] if all(math.isfinite(c) for c in p)]
        if len(pts) >= 3:
            poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(
                f'<polygon points="{poly}" fill="{band.color}" fill-opacity="{band.opacity}" '
                'stroke="none"/>'
            )
    for line in chart.lines:
        pts = [(ax.px(x), ax.py(y)) for x, y in zip(line.xs, line.ys, strict=True)]
        d = _path(pts)
        if d:
            dash = ' stroke-dasharray="5,3"' if line.dashed else ""
            out.append(
                f'<path d="{d}" fill="none" stroke="{line.color}" stroke-width="{line.width}" '
                f'stroke-opacity="{line.opacity}"{dash}><title>{escape(line.label)}</title></path>'
            )
        if line.markers:
            for x, y in pts:
                if math.isfinite(x) and math.isfinite(y):
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{line.color}"/>')
        for (x, y), text in zip(pts, line.point_labels, strict=False):
            if text and math.isfinite(x) and math.isfinite(y):
                out.append(
                    f'<text x="{x + 3:.1f}" y="{y - 3:.1f}" font-size="8" fill="{line.color}">'
                    f"{escape(text)}</text>"
                )
    for rule in chart.rules:
        dash = ' stroke-dasharray="3,3"' if rule.dashed else ""
        if rule.vertical:
            x = ax.px(rule.at)
            out.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" '
                f'stroke="{rule.color}"{dash}/>'
            )
            out.append(
                f'<text x="{x - 3:.1f}" y="{top + 11}" text-anchor="end" '
                f'fill="{rule.color}">{escape(rule.label)}</text>'
            )
        else:
            y = ax.py(rule.at)
            out.append(
                f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                f'stroke="{rule.color}"{dash}/>'
            )
    for mark in chart.marks:
        x, y = ax.px(mark.x), ax.py(mark.y)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if mark.shape == "x":
            out.append(
                f'<path d="M{x - 5:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 5:.1f} M{x - 5:.1f},'
                f'{y + 5:.1f} L{x + 5:.1f},{y - 5:.1f}" stroke="{mark.color}" stroke-width="2.2"/>'
            )
        else:
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#ffffff" '
                f'stroke="{mark.color}" stroke-width="1.5"/>'
            )
        if mark.label:
            out.append(f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" fill="{mark.color}">'
                       f"{escape(mark.label)}</text>")  # fmt: skip
    out.append(f'<text x="{w / 2:.0f}" y="18" text-anchor="middle" font-size="13" '
               f'font-weight="bold">{escape(chart.title)}</text>')  # fmt: skip
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{h - 8}" text-anchor="middle">'
               f"{escape(chart.x_label)}</text>")  # fmt: skip
    out.append(
        f'<text x="14" y="{(top + bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + bottom) / 2:.0f})">{escape(chart.y_label)}</text>'
    )
    if chart.legend:
        labelled = [line for line in chart.lines if line.label][:10]
        for i, line in enumerate(labelled):
            y = top + 10 + 13 * i
            out.append(f'<line x1="{right - 150}" y1="{y}" x2="{right - 135}" y2="{y}" '
                       f'stroke="{line.color}" stroke-width="2"/>')  # fmt: skip
            out.append(f'<text x="{right - 131}" y="{y + 4}" font-size="9">'
                       f"{escape(_short(line.label))}</text>")  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)


def _short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]
