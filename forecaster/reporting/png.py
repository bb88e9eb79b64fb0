"""A `svg.Chart` drawn to PNG with matplotlib: the same chart as the SVG, for files people
attach (the replay's plot, `forecaster report --png`, `forecaster plot --out x.png`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forecaster.reporting.svg import FAN_OPACITY, SYMLOG_LINTHRESH, Chart


def save(chart: Chart, path: str | Path, dpi: int = 110) -> Path:
    """Draws chart to the PNG at path; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(chart.width / 80, chart.height / 80), dpi=dpi)
    for band in chart.bands:
        ax.fill_between(band.xs, band.lower, band.upper, color=band.color, alpha=band.opacity,
                        lw=0, label=band.label or None)  # fmt: skip
    for i, fan in enumerate(chart.fans):
        ax.fill_between(fan.steps, fan.q05, fan.q95, color=fan.color, alpha=FAN_OPACITY[0], lw=0,
                        label="forecast 5-95%" if i == 0 else None)  # fmt: skip
        ax.fill_between(fan.steps, fan.q25, fan.q75, color=fan.color, alpha=FAN_OPACITY[1], lw=0,
                        label="forecast 25-75%" if i == 0 else None)  # fmt: skip
        ax.plot(fan.steps, fan.q50, "--", color=fan.color, lw=1.2)
    labels: list[tuple[str, float, float, str]] = []
    for line in chart.lines:
        style = ("--" if line.dashed else "-") if line.width > 0 else ""
        ax.plot(line.xs, line.ys, style, color=line.color, lw=line.width, alpha=line.opacity,
                marker="o" if line.markers else None, markersize=3,
                label=line.label or None)  # fmt: skip
        for x, y, text in zip(line.xs, line.ys, line.point_labels, strict=False):
            if text:
                labels.append((text, x, y, line.color))
    for rule in chart.rules:
        draw = ax.axvline if rule.vertical else ax.axhline
        draw(rule.at, color=rule.color, lw=0.8, ls=_dashes(rule.dash))
        if rule.label and rule.vertical:
            ax.annotate(rule.label, (rule.at, 1), xycoords=("data", "axes fraction"),
                        xytext=(-3, -10), textcoords="offset points", ha="right", fontsize=7,
                        color=rule.color)  # fmt: skip
        elif rule.label:
            ax.annotate(rule.label, (0, rule.at), xycoords=("axes fraction", "data"),
                        xytext=(4, 3), textcoords="offset points", fontsize=7,
                        color=rule.color)  # fmt: skip
    for mark in chart.marks:
        ax.plot([mark.x], [mark.y], "x" if mark.shape == "x" else "o", color=mark.color,
                markersize=7 if mark.shape == "x" else 4, mew=2)  # fmt: skip
        if mark.label:
            labels.append((mark.label, mark.x, mark.y, mark.color))
    for axis, scale in ((ax.set_xscale, chart.x_scale), (ax.set_yscale, chart.y_scale)):
        if scale == "symlog":
            axis("symlog", linthresh=SYMLOG_LINTHRESH)
        elif scale == "log":
            axis("log")
    if chart.x_range is not None:
        ax.set_xlim(*chart.x_range)
    ax.set_title(chart.title, fontsize=10)
    ax.set_xlabel(chart.x_label)
    ax.set_ylabel(chart.y_label)
    if chart.legend and (chart.fans or any(line.label for line in chart.lines)):
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    place_labels(ax, labels)  # after the layout: the boxes it compares are final
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _dashes(dash: str) -> Any:
    """An SVG stroke-dasharray ("3,3") as matplotlib's line style."""
    on_off = tuple(float(v) for v in dash.replace(",", " ").split())
    return (0, on_off) if on_off else "-"


# Where a point's label may go, in points from it: right-up first, then around the point and
# further out; the first that overlaps no label placed before (nor the legend) is taken.
_OFFSETS = tuple(
    (dx * r, dy * r) for r in (1, 2, 3) for dx, dy in ((4, 3), (4, -9), (-14, 3), (-14, -9))
)


def place_labels(ax: Any, labels: Sequence[tuple[str, float, float, str]]) -> list[Any]:
    """Annotates each (text, x, y, colour) where it overlaps no other label nor the legend;
    returns the annotations (a label that fits nowhere keeps its last try)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend is not None else []
    placed = []
    for text, x, y, color in labels:
        annotation = None
        for dx, dy in _OFFSETS:
            if annotation is not None:
                annotation.remove()
            annotation = ax.annotate(text, (x, y), fontsize=6, color=color, xytext=(dx, dy),
                                     textcoords="offset points")  # fmt: skip
            box = annotation.get_window_extent(renderer)
            if not any(box.overlaps(t) for t in taken):
                break
        if annotation is not None:
            taken.append(annotation.get_window_extent(renderer))
            placed.append(annotation)
    return placed
