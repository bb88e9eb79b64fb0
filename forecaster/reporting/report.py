"""`forecaster report`: a batch's results file as one self-contained HTML page.

What it says: how much compute the policy would have saved ("these 41 runs could have stopped
at 23% of their budget"), per study; each study's runs drawn with their forecast fans (5-95%
and 25-75%), the budget line and the step each could have stopped at; the worst forecasts
(where the run's logged end is known). The charts are inline SVG (or inline PNG with
`png=True`): the page fetches nothing.
"""

from __future__ import annotations

import base64
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from forecaster.errors import InvalidArgumentError
from forecaster.reporting import svg

RUNS_PER_CHART = 8
_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.summary { font-size: 15px; background: #f6f9fc; padding: 10px 14px;
           border-left: 4px solid #0072B2; }
.small { color: #666; font-size: 12px; }
"""


@dataclass(frozen=True)
class StudySavings:
    study: str
    runs: int
    stopped: int
    stop_fraction: float  # mean fraction of the budget at which the stopped runs stop
    steps_total: int
    steps_saved: int
    best_kept: bool | None  # the study's best run (by logged end) not stopped; None: unknown


def _frame(path: str | Path) -> Any:
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"{p}: no such results file (write one with forecaster batch).")
    try:
        lf = pl.scan_parquet(p)
        names = lf.collect_schema().names()
    except Exception as e:  # polars' error for a file that is not Parquet
        raise InvalidArgumentError(f"{p}: not a Parquet results file ({e}).") from None
    missing = [
        c for c in ("run_id", "task", "source", "action", "q50", "last_step") if c not in names
    ]
    if missing:
        raise InvalidArgumentError(
            f"{p}: missing column(s) {', '.join(missing)}; is it a forecaster batch results file?"
        )
    return lf


def stops(lf: Any) -> Any:
    """Per run: the first step it could have stopped at (null when never), its budget and its
    logged end."""
    import polars as pl

    return (
        lf.group_by("source", "task", "run_id")
        .agg(
            pl.col("last_step").filter(pl.col("action") == "stop").min().alias("stop_step"),
            pl.col("horizon").max().alias("budget"),
            pl.col("final_step").max().alias("final_step"),
            pl.col("final_value").first().alias("final_value"),
            pl.col("direction").first().alias("direction"),
        )
        .sort("source", "task", "run_id")
    )


def savings(lf: Any) -> list[StudySavings]:
    """What stopping where the policy said would have saved, per study."""
    import polars as pl

    per_run = stops(lf).collect()
    out = []
    for (source, task), frame in per_run.group_by("source", "task", maintain_order=True):
        ran = frame["final_step"].fill_null(frame["budget"]).cast(pl.Int64)
        stopped = frame.filter(pl.col("stop_step").is_not_null())
        stop_ran = stopped["final_step"].fill_null(stopped["budget"])
        saved = int((stop_ran - stopped["stop_step"]).clip(lower_bound=0).sum() or 0)
        fraction = (stopped["stop_step"] / stopped["budget"].cast(pl.Float64)).mean()
        best_kept = None
        finite = frame.filter(pl.col("final_value").is_finite())
        if finite.height:
            sign = 1.0 if finite["direction"][0] == "min" else -1.0
            best = finite.sort(pl.col("final_value") * sign).row(0, named=True)
            best_kept = best["stop_step"] is None
        out.append(
            StudySavings(
                study=f"{source}/{task}",
                runs=frame.height,
                stopped=stopped.height,
                stop_fraction=float(fraction) if fraction is not None else math.nan,
                steps_total=int(ran.sum() or 0),
                steps_saved=saved,
                best_kept=best_kept,
            )
        )
    return out


def worst_forecasts(lf: Any, n: int = 10) -> Any:
    """The rows whose median at the horizon is furthest from the run's logged end (relative),
    among rows judged before the end whose horizon is the logged end (within 2%)."""
    import polars as pl

    return (
        lf.filter(
            (pl.col("last_step") < pl.col("final_step"))
            & pl.col("final_value").is_finite()
            & pl.col("q50").is_not_null()
            & ((pl.col("horizon") - pl.col("final_step")).abs() <= 0.02 * pl.col("horizon"))
        )
        .with_columns(
            (
                (pl.col("q50") - pl.col("final_value")).abs()
                / pl.col("final_value").abs().clip(1e-9)
            ).alias("rel_error"),
            pl.col("final_value").is_between(pl.col("q05"), pl.col("q95")).alias("in_90"),
        )
        .sort("rel_error", descending=True, nulls_last=True)
        .head(n)
        .collect()
    )


def coverage(lf: Any) -> dict[str, float]:
    import polars as pl

    judged = lf.filter(
        (pl.col("last_step") < pl.col("final_step"))
        & pl.col("final_value").is_finite()
        & pl.col("q50").is_not_null()
        & ((pl.col("horizon") - pl.col("final_step")).abs() <= 0.02 * pl.col("horizon"))
    )
    row = judged.select(
        pl.len().alias("n"),
        pl.col("final_value").is_between(pl.col("q05"), pl.col("q95")).mean().alias("in_90"),
        pl.col("final_value").is_between(pl.col("q25"), pl.col("q75")).mean().alias("in_50"),
    ).collect()
    return {k: float(row[k][0]) if row[k][0] is not None else math.nan for k in row.columns}


def study_chart(rows: Any, study: str, *, width: int = 620, height: int = 340) -> svg.Chart:
    """One study's runs (rows of the results, the earliest cut of each) with their fans."""
    curves, fans, marks, cuts = [], [], [], []
    budget = None
    for r in rows:
        curves.append(
            svg.Series(r["run_id"].rsplit("/", 1)[-1], r["curve_steps"], r["curve_values"])
        )
        fans.append(fan_of(r))
        cuts.append(r["last_step"])
        stop = r.get("stop_step")
        marks.append(None if stop is None else (stop, _value_at(r, stop)))
        budget = max(budget or 0, r["horizon"] or 0)
    metric = "value" if not rows else ("loss" if rows[0]["direction"] == "min" else "score")
    return svg.fan_chart(study, curves, fans, budget=budget, stops=marks, cut_at=cuts,
                         y_label=metric, width=width, height=height)  # fmt: skip


def fan_of(row: dict[str, Any]) -> svg.Fan | None:
    """The forecast fan a results row holds (None when it has none)."""
    if not row.get("path_steps"):
        return None
    return svg.Fan(row["path_steps"], row["path_q05"], row["path_q25"], row["path_q50"],
                   row["path_q75"], row["path_q95"])  # fmt: skip


def _value_at(row: dict[str, Any], step: int) -> float:
    value = math.nan
    for s, v in zip(row["curve_steps"], row["curve_values"], strict=False):
        if s <= step:
            value = v
    return value


def _chart_html(chart: svg.Chart, png: bool) -> str:
    if not png:
        return svg.render(chart)
    from forecaster.reporting import png as png_backend

    with tempfile.TemporaryDirectory() as tmp:
        path = png_backend.save(chart, Path(tmp) / "chart.png")
        data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{escape(chart.title)}" src="data:image/png;base64,{data}"/>'


def _drawn_runs(lf: Any, study: tuple[str, str], n: int) -> list[dict[str, Any]]:
    """The runs drawn for a study: those that could have stopped and the best ones, each at
    its earliest cut (the fan a person would have seen first), with its stop step."""
    import polars as pl

    source, task = study
    mine = lf.filter((pl.col("source") == source) & (pl.col("task") == task))
    per_run = stops(mine).select("run_id", "stop_step")
    first = (
        mine.sort("run_id", "last_step")
        .group_by("run_id", maintain_order=True)
        .first()
        .join(per_run, on="run_id", how="left")
        .collect()
    )
    if not first.height:
        return []
    sign = 1.0 if first["direction"][0] == "min" else -1.0
    ranked = first.with_columns((pl.col("final_value").fill_nan(None) * sign).alias("_rank")).sort(
        "_rank", nulls_last=True
    )
    best = ranked.head(max(n // 2, 1))
    stopped = ranked.filter(pl.col("stop_step").is_not_null()).head(n - best.height)
    chosen = pl.concat([best, stopped]).unique("run_id", keep="first", maintain_order=True)
    return list(chosen.head(n).iter_rows(named=True))


def build(path: str | Path, *, png: bool = False, max_studies: int = 24) -> str:
    """The report of the results file at path, as HTML text."""
    import polars as pl

    lf = _frame(path)
    table = savings(lf)
    total_runs = sum(s.runs for s in table)
    stopped = sum(s.stopped for s in table)
    steps_total = sum(s.steps_total for s in table)
    steps_saved = sum(s.steps_saved for s in table)
    fractions = [s.stop_fraction * s.stopped for s in table if s.stopped]
    mean_fraction = sum(fractions) / stopped if stopped else math.nan
    n_rows = lf.select(pl.len()).collect().item()
    cover = coverage(lf)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>forecaster report: {escape(Path(path).name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Batch forecasts: {escape(Path(path).name)}</h1>",
        f'<p class="small">{n_rows:,} rows, {total_runs:,} runs in {len(table):,} studies.</p>',
    ]
    if stopped:
        parts.append(
            f'<p class="summary">These <b>{stopped:,}</b> runs of {total_runs:,} could have '
            f"stopped at <b>{mean_fraction:.0%}</b> of their budget on average: "
            f"<b>{_steps(steps_saved)}</b> steps of {_steps(steps_total)} "
            f"({steps_saved / max(steps_total, 1):.0%}) would not have run.</p>"
        )
    else:
        parts.append('<p class="summary">No run would have been stopped.</p>')
    if cover["n"]:
        parts.append(
            f'<p class="small">Where the runs\' logged ends are known ({int(cover["n"]):,} '
            f"forecasts made before them): {cover['in_90']:.0%} inside the 5-95% band, "
            f"{cover['in_50']:.0%} inside the 25-75% band.</p>"
        )
    parts.append("<h2>Savings per study</h2>")
    parts.append(_savings_table(table))
    parts.append("<h2>Runs and their forecasts</h2>")
    parts.append(
        '<p class="small">Solid: the logged curve; dots: where each forecast was made; '
        "dashed with bands: the forecast median, 25-75% and 5-95%; crosses: where the "
        "policy would have stopped the run; dotted vertical: the budget.</p>"
    )
    parts.append('<div class="charts">')
    ordered = sorted(table, key=lambda s: (-s.stopped, s.study))[:max_studies]
    for s in ordered:
        source, _, task = s.study.partition("/")
        rows = _drawn_runs(lf, (source, task), RUNS_PER_CHART)
        if rows:
            parts.append(f"<div>{_chart_html(study_chart(rows, s.study), png)}</div>")
    parts.append("</div>")
    worst = worst_forecasts(lf)
    if worst.height:
        parts.append("<h2>Worst forecasts</h2>")
        parts.append(_worst_table(worst))
        parts.append('<div class="charts">')
        for r in list(worst.iter_rows(named=True))[:3]:
            r = {**r, "stop_step": None}
            chart = study_chart([r], f"{r['run_id']} at step {r['last_step']}", width=460,
                                height=280)  # fmt: skip
            parts.append(f"<div>{_chart_html(chart, png)}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _steps(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:,.0f}"


def _savings_table(table: Sequence[StudySavings]) -> str:
    head = (
        "<tr><th>study</th><th>runs</th><th>could stop</th><th>at (of budget)</th>"
        "<th>steps saved</th><th>of</th><th>saved</th><th>best run kept</th></tr>"
    )
    body = []
    for s in sorted(table, key=lambda s: -s.steps_saved):
        kept = "" if s.best_kept is None else ("yes" if s.best_kept else "<b>no</b>")
        at = "" if not s.stopped else f"{s.stop_fraction:.0%}"
        body.append(
            f'<tr><td class="text">{escape(s.study)}</td><td>{s.runs}</td><td>{s.stopped}</td>'
            f"<td>{at}</td><td>{_steps(s.steps_saved)}</td><td>{_steps(s.steps_total)}</td>"
            f"<td>{s.steps_saved / max(s.steps_total, 1):.0%}</td><td>{kept}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _worst_table(worst: Any) -> str:
    head = (
        "<tr><th>run</th><th>judged at</th><th>horizon</th><th>model</th><th>median</th>"
        "<th>5-95%</th><th>logged end</th><th>error</th></tr>"
    )
    body = []
    for r in worst.iter_rows(named=True):
        body.append(
            f'<tr><td class="text">{escape(r["run_id"])}</td><td>{r["last_step"]}</td>'
            f"<td>{r['horizon']}</td><td>{escape(str(r['model']))}</td><td>{r['q50']:.4g}</td>"
            f"<td>{r['q05']:.4g} - {r['q95']:.4g}</td><td>{r['final_value']:.4g}</td>"
            f"<td>{r['rel_error']:.1%}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def write(path: str | Path, out: str | Path, *, png: bool = False, max_studies: int = 24) -> Path:
    """Writes the report of the results at path to out (HTML)."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build(path, png=png, max_studies=max_studies), encoding="utf-8")
    return target
