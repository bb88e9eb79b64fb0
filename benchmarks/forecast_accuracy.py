"""Forecast accuracy of the parametric forecasters over the public corpus, and their speed.

Runs `forecaster eval` over ../shared/datasets (every source), then checks the targets of the
parametric-forecasters issue: the power-law ensemble's fit + predict time on one 500-point
curve (one core), the best parametric model's medae ratio to the last value at cutoff 0.2 per
source, its 90% interval coverage, and the mean relative error of the final loss from cutoff
0.3 on the sources with a known schedule. Prints the tables and writes them to
docs/benchmarks.md.

    python benchmarks/forecast_accuracy.py [--corpus ../shared/datasets] [--max-runs-per-task 20]
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # "one core" for the timing
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.curves import Curve  # noqa: E402
from forecaster.evaluation.accuracy import aggregate, format_table, score_corpus  # noqa: E402
from forecaster.models import create  # noqa: E402

MODELS = ["last_value", "damped_trend", "pow3", "power_law", "annealing_law", "multi_power_law"]
PARAMETRIC = ["pow3", "power_law", "annealing_law", "multi_power_law"]
SCHEDULE_SOURCES = ["lr_scheduling_llm", "nanogpt_speedrun"]


def time_fit(repeats: int = 50) -> dict[str, float]:
    """Median ms of fit + quantiles at the budget, on 500-point noisy power-law curves."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 501)
    out = {}
    for name in ["power_law", "pow3", "damped_trend", "annealing_law"]:
        forecaster = create(name)
        times = []
        for i in range(repeats):
            values = 1.0 + 2.0 * steps ** -(0.3 + 0.01 * i) + rng.normal(0, 0.01, len(steps))
            lr = np.full(len(steps), 1e-3) if name == "annealing_law" else None
            curve = Curve(steps, values, max_step=2500, lr=lr)
            t0 = time.perf_counter()
            forecaster.fit(curve).quantiles([0.05, 0.5, 0.95], [2500])
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = float(np.median(times[5:]))
    return out


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.add_argument("--cutoffs", default="0.1,0.2,0.3,0.5")
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2

    speed = time_fit()
    t0 = time.time()
    scores, names = score_corpus(
        args.corpus,
        model_names=MODELS,
        cutoffs=[float(c) for c in args.cutoffs.split(",")],
        max_runs_per_task=args.max_runs_per_task,
        workers=args.workers,
    )
    elapsed = time.time() - t0
    rows = aggregate(scores, names)
    print(format_table(rows))

    # Target 2: at cutoff 0.2, the best parametric model per source.
    at02 = [r for r in rows if r["cutoff"] == 0.2]
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in at02:
        by_source[str(r["source"])].append(r)
    best_rows = []
    for source, rs in sorted(by_source.items()):
        para = [r for r in rs if r["model"] in PARAMETRIC]
        best = min(para, key=lambda r: float(r["medae_ratio_vs_last_value"]))
        damped = next(r for r in rs if r["model"] == "damped_trend")
        auto = "annealing_law" if source in SCHEDULE_SOURCES else "power_law"
        auto_row = next(r for r in rs if r["model"] == auto)
        best_rows.append(
            [source, best["model"], f"{best['medae_ratio_vs_last_value']:.3f}",
             f"{damped['medae_ratio_vs_last_value']:.3f}", f"{best['coverage_90']:.3f}",
             f"{auto_row['medae_ratio_vs_last_value']:.3f}", f"{auto_row['coverage_90']:.3f}"]
        )  # fmt: skip
    median_best = float(np.median([float(r[2]) for r in best_rows]))

    # Target 3: mean relative error of the final loss from cutoff 0.3, known schedule.
    rel: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in scores:
        if s.source in SCHEDULE_SOURCES and s.cutoff == 0.3 and s.truth:
            rel[(s.source, s.model)].append(s.abs_error / abs(s.truth))
    mre_rows = [
        [src, m, len(rel[(src, m)]), f"{100 * np.mean(rel[(src, m)]):.2f}%",
         f"{100 * np.median(rel[(src, m)]):.2f}%"]
        for src in SCHEDULE_SOURCES for m in names if (src, m) in rel
    ]  # fmt: skip

    body = "\n\n".join(
        [
            "## Forecast accuracy (parametric forecasters)",
            f"`python benchmarks/forecast_accuracy.py --max-runs-per-task "
            f"{args.max_runs_per_task}` on {platform.machine()} ({os.cpu_count()} cores), "
            f"{len(scores)} forecasts in {elapsed:.0f} s. Each run is cut at a fraction of its "
            "final logged step and its final value is forecast; ratios are to the last value "
            "on the same runs.",
            "### Speed: fit + predict on one 500-point curve, one core (median ms)",
            markdown_table(["model", "ms"], [[k, f"{v:.1f}"] for k, v in speed.items()]),
            "### Cutoff 0.2: best parametric model per source",
            markdown_table(
                [
                    "source",
                    "best",
                    "medae/lv",
                    "damped_trend medae/lv",
                    "best cov90",
                    "auto medae/lv",
                    "auto cov90",
                ],
                best_rows,
            ),  # fmt: skip
            f"Median over sources of the best medae/lv: **{median_best:.3f}**.",
            "### Final loss from cutoff 0.3, known schedule, study's other runs available",
            markdown_table(
                ["source", "model", "runs", "mean rel. error", "median rel. error"], mre_rows
            ),  # fmt: skip
            "### All results",
            markdown_table(
                [
                    "source",
                    "model",
                    "cutoff",
                    "n_runs",
                    "mae",
                    "medae",
                    "mae/lv",
                    "medae/lv",
                    "cov50",
                    "cov90",
                    "crps",
                    "fit_ms",
                ],
                [
                    [
                        r["source"],
                        r["model"],
                        r["cutoff"],
                        r["n_runs"],
                        f"{r['mae']:.4g}",
                        f"{r['medae']:.4g}",
                        f"{r['mae_ratio_vs_last_value']:.3f}",
                        f"{r['medae_ratio_vs_last_value']:.3f}",
                        f"{r['coverage_50']:.2f}",
                        f"{r['coverage_90']:.2f}",
                        f"{r['crps']:.4g}",
                        f"{r['fit_ms_median']:.1f}",
                    ]
                    for r in rows
                ],
            ),  # fmt: skip
        ]
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('forecast_accuracy', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
