"""The replay's figures as a markdown table and as the compute-vs-regret plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forecaster.errors import InvalidArgumentError
from forecaster.evaluation.replay.settings import OPTUNA, SWEEPS

_COLUMNS = (  # (header, key)
    ("source", "source"),
    ("policy", "policy"),
    ("params", "params"),
    ("tasks", "n_tasks"),
    ("compute", "compute_fraction"),
    ("rel_regret", "mean_rel_regret"),
    ("top1_kept", "top1_kept"),
    ("top3_kept", "top3_kept"),
    ("converged", "n_converged"),
    ("given_up", "converged_given_up"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of summarize()'s rows, then why each setting that never stopped a run
    did not (one line each)."""
    head = "| " + " | ".join(h for h, _ in _COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in _COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(row[k]) for _, k in _COLUMNS) + " |" for row in rows]
    notes = [
        f"- {row['policy']}({_fmt(row['params'])}) on {row['source']}: {row['note']}"
        for row in rows
        if row.get("note")
    ]
    return "\n".join([head, rule, *body, *([""] + notes if notes else [])])


def _fmt(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.3g}"
    return str(v)


def plot(rows: Sequence[dict[str, Any]], path: str | Path, source: str = "all") -> Path:
    """The compute-vs-regret curve of each policy over its main parameter, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    mine = [r for r in rows if r["source"] == source]
    if not mine:
        raise InvalidArgumentError(f"no replay results for source {source!r} to plot.")
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    families = sorted({r["policy"] for r in mine}, key=lambda f: list(SWEEPS).index(f))
    labels: list[tuple[str, float, float, str]] = []
    for family in families:
        key = SWEEPS[family][0]
        pts = sorted(
            (r for r in mine if r["policy"] == family), key=lambda r: r["compute_fraction"]
        )
        xs = [r["compute_fraction"] for r in pts]
        ys = [r["mean_rel_regret"] for r in pts]
        style = "--s" if family in OPTUNA else "-o"
        (line,) = ax.plot(xs, ys, style, label=family, markersize=4)
        for r, x, y in zip(pts, xs, ys, strict=True):
            if key and key in r["params"]:
                labels.append((_fmt(r["params"][key]), x, y, to_hex(line.get_color())))
    ax.axvline(0.4, color="grey", lw=0.6, ls=":")
    ax.axhline(0.005, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("compute fraction (steps run / steps of running everything)")
    ax.set_ylabel("mean relative regret of the best result kept")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(f"Replay over the corpus ({source}): lower left is better")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    place_labels(ax, labels)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


# Where a point's label may go, in points from it: right-up first, then around the point and
# further out; the first that overlaps no label placed before (nor the legend) is taken.
_OFFSETS = tuple(
    (dx * r, dy * r) for r in (1, 2, 3) for dx, dy in ((4, 3), (4, -9), (-14, 3), (-14, -9))
)


def place_labels(ax: Any, labels: Sequence[tuple[str, float, float, str]]) -> list[Any]:
    """Annotates each (text, x, y, colour) where it overlaps no other label; returns the
    annotations (a label that fits nowhere keeps its last try)."""
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
