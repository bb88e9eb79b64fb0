"""Charts as data, drawn to inline SVG: the one drawing code of the live dashboard, the batch
report, `forecaster plot` and the replay's plot (a PNG of the same chart: `reporting/png.py`).

The API is small: a `Chart` holds `Line`s, `Band`s (a shaded range between two lines), `Fan`s
(a forecast: 5-95% and 25-75% bands and the dashed median), `Mark`s (a labelled point) and
`Rule`s (a vertical or horizontal line with a label: the budget, the incumbent, a target);
`fan_chart` builds the chart of learning curves with their fans, the budget line and stop
marks; `strip` a small chart under another on the same x axis (the learning-rate schedule
under a curve); `render(chart)` gives an `<svg>` element with no external reference (no fonts,
scripts or stylesheets fetched), ready to inline in HTML. Nothing here knows studies or runs
beyond a `run` name written as `data-run`, so pages and tests find a run's elements.

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
from dataclasses import dataclass, field, replace
from html import escape
from typing import Literal

from matplotlib.ticker import LogLocator, MaxNLocator

Scale = Literal["linear", "log", "symlog"]
Transform = Callable[[float], float]

# Colours that stay apart on a white page and for the colour-blind (Okabe-Ito without its
# yellow and black, then Tableau): a run keeps its colour by its position.
PALETTE = (
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c564b", "#7f7f7f",
    "#bcbd22", "#17becf", "#1f77b4", "#9467bd",
)  # fmt: skip
SYMLOG_LINTHRESH = 1e-3
FAN_OPACITY = (0.14, 0.28)  # the 5-95% band, the 25-75% band


def color_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Line:
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = PALETTE[0]
    width: float = 1.5  # 0: no line, only its markers
    dashed: bool = False
    label: str = ""
    markers: bool = False
    point_labels: Sequence[str] = ()  # one short text per point, drawn beside it
    opacity: float = 1.0
    kind: str = ""  # the CSS class of what it draws (its path, else its markers)
    run: str = ""  # the run it shows (data-run)


@dataclass(frozen=True)
class Band:
    xs: Sequence[float]
    lower: Sequence[float]
    upper: Sequence[float]
    color: str = PALETTE[0]
    opacity: float = 0.2
    label: str = ""


@dataclass(frozen=True)
class Fan:
    """A forecast: quantiles at steps (from the last observed step to the horizon)."""

    steps: Sequence[float]
    q05: Sequence[float]
    q25: Sequence[float]
    q50: Sequence[float]
    q75: Sequence[float]
    q95: Sequence[float]
    color: str = PALETTE[0]
    label: str = ""
    run: str = ""  # the run it forecasts (data-run)


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    label: str = ""
    color: str = "#000000"
    shape: Literal["x", "dot"] = "x"
    kind: str = "mark"  # the CSS class of its group


@dataclass(frozen=True)
class Rule:
    at: float
    vertical: bool = True
    label: str = ""
    color: str = "#777777"
    dash: str = "3,3"  # SVG stroke-dasharray; "" draws it solid
    kind: str = ""  # the CSS class of the line


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
    fans: Sequence[Fan] = ()
    x_range: tuple[float, float] | None = None  # default: what is drawn


# -- learning curves with forecast fans ---------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """An observed learning curve."""

    name: str
    steps: Sequence[float]
    values: Sequence[float]


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
    drawn: list[Fan] = []
    marks: list[Mark] = []
    for i, curve in enumerate(curves):
        color = color_of(i)
        fan = fans[i] if i < len(fans) else None
        lines.append(Line(curve.steps, curve.values, color, 1.4, label=curve.name, run=curve.name))
        if fan is not None and len(fan.steps):
            drawn.append(replace(fan, color=color, run=fan.run or curve.name))
        cut = cut_at[i] if i < len(cut_at) else None
        if cut is not None:
            marks.append(Mark(cut, _value_at(curve, cut), "", color, "dot"))
        stop = stops[i] if i < len(stops) else None
        if stop is not None:
            marks.append(Mark(stop[0], stop[1], "", color, "x"))
    rules = [Rule(budget, label="budget")] if budget else []
    return Chart(title, x_label, y_label, lines, (), marks, rules, width=width, height=height,
                 fans=drawn)  # fmt: skip


def strip(chart: Chart, lines: Sequence[Line], *, y_label: str, height: int = 120) -> Chart:
    """A small chart of lines to draw under chart, on its x axis (scale, range, width): the
    learning-rate schedule under a learning curve."""
    return Chart(
        x_label=chart.x_label,
        y_label=y_label,
        lines=lines,
        x_scale=chart.x_scale,
        width=chart.width,
        height=height,
        legend=False,
        x_range=x_range_of(chart),
    )


def _value_at(curve: Series, step: float) -> float:
    best = math.nan
    for s, v in zip(curve.steps, curve.values, strict=False):
        if s <= step:
            best = v
    return best


def format_number(v: float) -> str:
    """Short text for a tick or a table cell: 1500 -> "1.5k", 2e6 -> "2M", 0.0012 -> "0.0012"."""
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a < 1e-12:
        return "0"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= size:
            return f"{v / size:.4g}{unit}"
    if a < 1e-2:
        return f"{v:.2g}"
    return f"{v:.4g}"


# -- drawing ------------------------------------------------------------------------------------

_PAD_LEFT, _PAD_RIGHT, _PAD_BOTTOM = 64, 16, 44


def _pad_top(chart: Chart) -> int:
    return 30 if chart.title else 12


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
        for fan in self.chart.fans:
            xs += [fx(x) for x in fan.steps]
            ys += [fy(y) for y in (*fan.q05, *fan.q95)]
        for mark in self.chart.marks:
            xs.append(fx(mark.x))
            ys.append(fy(mark.y))
        for rule in self.chart.rules:
            (xs if rule.vertical else ys).append((fx if rule.vertical else fy)(rule.at))
        xs = [x for x in xs if math.isfinite(x)]
        ys = [y for y in ys if math.isfinite(y)]
        self.x0, self.x1 = _span(xs)
        if self.chart.x_range is not None:
            lo, hi = (fx(v) for v in self.chart.x_range)
            if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
                self.x0, self.x1 = lo, hi
        self.y0, self.y1 = _span(_robust(ys))

    @property
    def top(self) -> int:
        return _pad_top(self.chart)

    @property
    def bottom(self) -> int:
        return self.chart.height - _PAD_BOTTOM

    def px(self, x: float) -> float:
        t = self.fx(x)
        w = self.chart.width - _PAD_LEFT - _PAD_RIGHT
        return _PAD_LEFT + (t - self.x0) / (self.x1 - self.x0) * w

    def py(self, y: float) -> float:
        t = self.fy(y)
        t = min(max(t, self.y0 - 0.05 * (self.y1 - self.y0)), self.y1 + 0.05 * (self.y1 - self.y0))
        return self.top + (self.y1 - t) / (self.y1 - self.y0) * (self.bottom - self.top)


def x_range_of(chart: Chart) -> tuple[float, float]:
    """The x range (in data units) the chart spans: its own, or what it draws."""
    if chart.x_range is not None:
        return chart.x_range
    ax = _Axes(chart)
    ax.fit()
    _, back = _transform(chart.x_scale)
    return back(ax.x0), back(ax.x1)


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


def _ticks(lo: float, hi: float, scale: Scale, n: int) -> list[tuple[float, str]]:
    """(position in axis space, label): round numbers on a linear axis, powers of ten on a log
    one (matplotlib's locators), n even steps else."""
    fwd, back = _transform(scale)
    if hi > lo and scale == "linear":
        at = [float(t) for t in MaxNLocator(nbins=n).tick_values(lo, hi)]
    elif hi > lo and scale == "log":
        at = [fwd(float(t)) for t in LogLocator(base=10).tick_values(back(lo), back(hi))]
    else:
        at = []
    at = [t for t in at if lo - 1e-9 <= t <= hi + 1e-9]
    if len(at) < 2:
        at = [lo + (hi - lo) * i / n for i in range(n + 1)]
    return [(t, format_number(back(t))) for t in at]


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


def _attrs(kind: str, run: str) -> str:
    return (f' class="{escape(kind)}"' if kind else "") + (
        f' data-run="{escape(run)}"' if run else ""
    )


def _polygon(ax: _Axes, xs: Sequence[float], lower: Sequence[float], upper: Sequence[float],
             color: str, opacity: float, kind: str = "") -> str:  # fmt: skip
    up = [(ax.px(x), ax.py(y)) for x, y in zip(xs, upper, strict=True)]
    low = [(ax.px(x), ax.py(y)) for x, y in zip(xs, lower, strict=True)]
    pts = [p for p in up + low[::-1] if all(math.isfinite(c) for c in p)]
    if len(pts) < 3:
        return ""
    poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return (f'<polygon{_attrs(kind, "")} points="{poly}" fill="{color}" '
            f'fill-opacity="{opacity}" stroke="none"/>')  # fmt: skip


def _line(ax: _Axes, line: Line) -> list[str]:
    out = []
    pts = [(ax.px(x), ax.py(y)) for x, y in zip(line.xs, line.ys, strict=True)]
    d = _path(pts)
    drawn = bool(d) and line.width > 0
    if drawn:
        dash = ' stroke-dasharray="5,3"' if line.dashed else ""
        out.append(
            f'<path{_attrs(line.kind, line.run)} d="{d}" fill="none" stroke="{line.color}" '
            f'stroke-width="{line.width}" stroke-opacity="{line.opacity}"{dash}>'
            f"<title>{escape(line.label)}</title></path>"
        )
    if line.markers:
        cls = "" if drawn else _attrs(line.kind, line.run)
        r = 2.5 if drawn else 1.6
        for x, y in pts:
            if math.isfinite(x) and math.isfinite(y):
                out.append(f'<circle{cls} cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{line.color}"/>')
    for (x, y), text in zip(pts, line.point_labels, strict=False):
        if text and math.isfinite(x) and math.isfinite(y):
            out.append(
                f'<text x="{x + 3:.1f}" y="{y - 3:.1f}" font-size="8" fill="{line.color}">'
                f"{escape(text)}</text>"
            )
    return out


def _fan(ax: _Axes, fan: Fan) -> list[str]:
    title = escape(fan.label or (f"{fan.run}: forecast" if fan.run else "forecast"))
    out = [f'<g class="fan"{_attrs("", fan.run)}><title>{title}</title>']
    for kind, lo, hi, opacity in (("fan-90", fan.q05, fan.q95, FAN_OPACITY[0]),
                                  ("fan-50", fan.q25, fan.q75, FAN_OPACITY[1])):  # fmt: skip
        out.append(_polygon(ax, fan.steps, lo, hi, fan.color, opacity, kind))
    median = Line(fan.steps, fan.q50, fan.color, 1.2, dashed=True, kind="fan-median")
    out += _line(ax, median)
    out.append("</g>")
    return out


def _rules(ax: _Axes, rules: Sequence[Rule], left: float, right: float) -> tuple[list[str], ...]:
    """The lines (drawn clipped) and their labels: a vertical one's at its top, a horizontal
    one's at the left end, moved down where it would overlap the one above."""
    lines, labels = [], []
    placed: list[float] = []
    for rule in sorted(rules, key=lambda r: (r.vertical, -r.at)):
        dash = f' stroke-dasharray="{rule.dash}"' if rule.dash else ""
        cls = _attrs(rule.kind, "")
        if rule.vertical:
            x = ax.px(rule.at)
            if not math.isfinite(x):
                continue
            lines.append(f'<line{cls} x1="{x:.1f}" y1="{ax.top}" x2="{x:.1f}" y2="{ax.bottom}" '
                         f'stroke="{rule.color}"{dash}/>')  # fmt: skip
            xy, anchor = (x - 3.0, ax.top + 11.0), "end"
        else:
            y = ax.py(rule.at)
            if not math.isfinite(y):
                continue
            lines.append(f'<line{cls} x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                         f'stroke="{rule.color}" stroke-width="1.2"{dash}>'
                         f"<title>{escape(rule.label)}</title></line>")  # fmt: skip
            ly = y - 4
            while any(abs(ly - p) < 12 for p in placed):
                ly += 12
            placed.append(ly)
            xy, anchor = (left + 6, ly), "start"
        if rule.label:
            labels.append(f'<text class="rule-label" x="{xy[0]:.1f}" y="{xy[1]:.1f}" '
                          f'text-anchor="{anchor}" fill="{rule.color}">{escape(rule.label)}'
                          "</text>")  # fmt: skip
    return lines, labels


def _marks(ax: _Axes, marks: Sequence[Mark], right: float) -> list[str]:
    """A cross (or a dot) at each mark, its label beside it: left of it near the right edge,
    moved down a line where it would overlap a label placed before."""
    out: list[str] = []
    placed: list[tuple[float, float]] = []
    for mark in sorted(marks, key=lambda m: (m.x, m.y)):
        x, y = ax.px(mark.x), ax.py(mark.y)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if mark.shape == "x":
            shape = (f'<path d="M{x - 5:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 5:.1f} M{x - 5:.1f},'
                     f'{y + 5:.1f} L{x + 5:.1f},{y - 5:.1f}" stroke="{mark.color}" '
                     'stroke-width="2.2"/>')  # fmt: skip
        else:
            shape = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#ffffff" '
                     f'stroke="{mark.color}" stroke-width="1.5"/>')  # fmt: skip
        text = ""
        if mark.label:
            ly = y - 8
            while any(abs(ly - py) < 12 and abs(x - px) < 120 for px, py in placed):
                ly += 13
            placed.append((x, ly))
            anchor, dx = ("end", -7) if x > _PAD_LEFT + (right - _PAD_LEFT) * 0.8 else ("start", 7)
            text = (f'<text x="{x + dx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" '
                    f'fill="{mark.color}">{escape(mark.label)}</text>')  # fmt: skip
        out.append(f"<g{_attrs(mark.kind, '')}>{shape}{text}</g>")
    return out


def _legend(chart: Chart, right: float, top: float) -> list[str]:
    entries = [(line.label, line.color, False) for line in chart.lines if line.label][:10]
    entries += [("forecast 25-75% / 5-95%", fan.color, True) for fan in chart.fans[:1]]
    out = []
    for i, (label, color, fan) in enumerate(entries):
        y = top + 10 + 13 * i
        if fan:
            out.append(f'<rect x="{right - 150}" y="{y - 5}" width="15" height="9" '
                       f'fill="{color}" fill-opacity="0.3"/>')  # fmt: skip
        else:
            out.append(f'<line x1="{right - 150}" y1="{y}" x2="{right - 135}" y2="{y}" '
                       f'stroke="{color}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{right - 131}" y="{y + 4}" font-size="9">'
                   f"{escape(_short(label))}</text>")  # fmt: skip
    return out


def render(chart: Chart) -> str:
    """The chart as one `<svg>` element (width x height pixels, system fonts only)."""
    ax = _Axes(chart)
    ax.fit()
    w, h = chart.width, chart.height
    left, right, top, bottom = _PAD_LEFT, w - _PAD_RIGHT, ax.top, ax.bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" role="img">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
    ]
    y_ticks = max(2, min(5, (bottom - top) // 45))
    for t, text in _ticks(ax.y0, ax.y1, chart.y_scale, y_ticks):
        y = top + (ax.y1 - t) / (ax.y1 - ax.y0) * (bottom - top)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eeeeee"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>')
    for t, text in _ticks(ax.x0, ax.x1, chart.x_scale, 6):
        x = left + (t - ax.x0) / (ax.x1 - ax.x0) * (right - left)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eeeeee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{escape(text)}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#999999"/>'
    )
    # What is drawn in data space is clipped to the plot area by a nested <svg> (no ids to
    # keep unique when several charts share a page); marks and labels may reach beyond it.
    plot_w, plot_h = right - left, bottom - top
    out.append(f'<svg x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
               f'viewBox="{left} {top} {plot_w} {plot_h}" overflow="hidden">')  # fmt: skip
    for band in chart.bands:
        out.append(_polygon(ax, band.xs, band.lower, band.upper, band.color, band.opacity))
    for fan in chart.fans:
        out += _fan(ax, fan)
    for line in chart.lines:
        out += _line(ax, line)
    rule_lines, rule_labels = _rules(ax, chart.rules, left, right)
    out += rule_lines
    out.append("</svg>")
    out += rule_labels
    out += _marks(ax, chart.marks, right)
    if chart.title:
        out.append(f'<text x="{w / 2:.0f}" y="18" text-anchor="middle" font-size="13" '
                   f'font-weight="bold">{escape(chart.title)}</text>')  # fmt: skip
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{h - 8}" text-anchor="middle">'
               f"{escape(chart.x_label)}</text>")  # fmt: skip
    out.append(
        f'<text x="14" y="{(top + bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + bottom) / 2:.0f})">{escape(chart.y_label)}</text>'
    )
    if chart.legend:
        out += _legend(chart, right, top)
    out.append("</svg>")
    return "\n".join(o for o in out if o)


def _short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]
