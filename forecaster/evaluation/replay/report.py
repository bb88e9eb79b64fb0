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
    """A markdown table of summarize()'s rows."""
    head = "| " + " | ".join(h for h, _ in _COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in _COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(row[k]) for _, k in _COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *body])


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

    mine = [r for r in rows if r["source"] == source]
    if not mine:
        raise InvalidArgumentError(f"no replay results for source {source!r} to plot.")
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    families = sorted({r["policy"] for r in mine}, key=lambda f: list(SWEEPS).index(f))
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
                ax.annotate(_fmt(r["params"][key]), (x, y), fontsize=6, color=line.get_color(),
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.axvline(0.4, color="grey", lw=0.6, ls=":")
    ax.axhline(0.005, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("compute fraction (steps run / steps of running everything)")
    ax.set_ylabel("mean relative regret of the best result kept")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(f"Replay over the corpus ({source}): lower left is better")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
