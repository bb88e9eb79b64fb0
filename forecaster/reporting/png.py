"""A `svg.Chart` drawn to PNG with matplotlib: the same chart as the SVG, for files people
attach (the replay's plot, `forecaster report --png`, `forecaster plot --out x.png`)."""

from __future__ import annotations

from pathlib import Path

from forecaster.reporting.svg import SYMLOG_LINTHRESH, Chart


def save(chart: Chart, path: str | Path, dpi: int = 110) -> Path:
    """Draws chart to the PNG at path; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(chart.width / 80, chart.height / 80), dpi=dpi)
    for band in chart.bands:
        ax.fill_between(band.xs, band.lower, band.upper, color=band.color, alpha=band.opacity,
                        lw=0, label=band.label or None)  # fmt: skip
    for line in chart.lines:
        style = "--" if line.dashed else "-"
        ax.plot(line.xs, line.ys, style, color=line.color, lw=line.width, alpha=line.opacity,
                marker="o" if line.markers else None, markersize=3,
                label=line.label or None)  # fmt: skip
        for x, y, text in zip(line.xs, line.ys, line.point_labels, strict=False):
            if text:
                ax.annotate(text, (x, y), fontsize=6, color=line.color, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    for rule in chart.rules:
        draw = ax.axvline if rule.vertical else ax.axhline
        draw(rule.at, color=rule.color, lw=0.8, ls=":" if rule.dashed else "-")
    for mark in chart.marks:
        ax.plot([mark.x], [mark.y], "x" if mark.shape == "x" else "o", color=mark.color,
                markersize=7 if mark.shape == "x" else 4, mew=2)  # fmt: skip
    for axis, scale in ((ax.set_xscale, chart.x_scale), (ax.set_yscale, chart.y_scale)):
        if scale == "symlog":
            axis("symlog", linthresh=SYMLOG_LINTHRESH)
        elif scale == "log":
            axis("log")
    ax.set_title(chart.title, fontsize=10)
    ax.set_xlabel(chart.x_label)
    ax.set_ylabel(chart.y_label)
    if chart.legend and any(line.label for line in chart.lines):
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
