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


def _point_label(params: dict[str, Any], key: str) -> str:
    """A sweep point's label on the chart: its main parameter's value, then any other setting
    it has (a sweep's extra settings, e.g. "0.5, hysteresis=1")."""
    if not key or key not in params:
        return ""
    others = {k: v for k, v in params.items() if k != key}
    return ", ".join([_fmt(params[key])] + ([_fmt(others)] if others else []))


def plot(rows: Sequence[dict[str, Any]], path: str | Path, source: str = "all") -> Path:
    """The compute-vs-regret curve of each policy over its main parameter, drawn by the
    report's drawing code (reporting/svg.py): a PNG, or an SVG when path ends in .svg."""
    from forecaster.reporting import png, svg

    chart = replay_chart(rows, source)
    out = Path(path)
    if out.suffix.lower() == ".svg":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(svg.render(chart) + "\n")
        return out
    return png.save(chart, out)


def replay_chart(rows: Sequence[dict[str, Any]], source: str = "all") -> Any:
    """The compute-vs-regret chart of a source (svg.Chart)."""
    from forecaster.reporting import svg

    mine = [r for r in rows if r["source"] == source]
    if not mine:
        raise InvalidArgumentError(f"no replay results for source {source!r} to plot.")
    families = sorted({r["policy"] for r in mine}, key=lambda f: list(SWEEPS).index(f))
    lines = []
    for i, family in enumerate(families):
        key = SWEEPS[family][0]
        pts = sorted(
            (r for r in mine if r["policy"] == family), key=lambda r: r["compute_fraction"]
        )
        labels = [_point_label(r["params"], key) for r in pts]
        lines.append(
            svg.Line(
                [r["compute_fraction"] for r in pts],
                [r["mean_rel_regret"] for r in pts],
                svg.PALETTE[i % len(svg.PALETTE)],
                1.5,
                dashed=family in OPTUNA,
                label=family,
                markers=True,
                point_labels=labels,
            )
        )
    return svg.Chart(
        title=f"Replay over the corpus ({source}): lower left is better",
        x_label="compute fraction (steps run / steps of running everything)",
        y_label="mean relative regret of the best result kept",
        lines=lines,
        rules=[svg.Rule(0.4, vertical=True), svg.Rule(0.005, vertical=False)],
        y_scale="symlog",
        width=880,
        height=600,
    )
