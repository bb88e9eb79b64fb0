"""Forecast accuracy of the parametric and learned forecasters over the public corpus, and speed.

Runs `forecaster eval` over ../shared/datasets (every source), then checks the targets of the
parametric-forecasters issue: the power-law ensemble's fit + predict time on one 500-point
curve (one core), the best parametric model's medae ratio to the last value at cutoff 0.2 per
source, its 90% interval coverage, and the mean relative error of the final loss from cutoff
0.3 on the sources with a known schedule. Prints the tables and writes them to
docs/benchmarks.md.

Then the learned forecasters (gbm, sequence, ensemble: the shipped artifacts, or
FORECASTER_MODELS_DIR) beside the parametric ones, on the tasks the artifacts never trained
on: per source, over cutoffs 0.1-0.3, the ensemble's medae, mae and crps against the best
parametric model's, its interval coverage, and the learned models' speed on one core.

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

from forecaster.config import Settings  # noqa: E402
from forecaster.curves import Curve  # noqa: E402
from forecaster.evaluation.accuracy import aggregate, format_table, score_corpus  # noqa: E402
from forecaster.models import create  # noqa: E402
from forecaster.models.artifacts import ModelBank  # noqa: E402
from forecaster.models.base import AUTO_LAW  # noqa: E402

MODELS_DIR = Settings.from_env().models_dir  # FORECASTER_MODELS_DIR, else the shipped models

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


LEARNED = ["gbm", "sequence", "ensemble"]
EARLY = (0.1, 0.2, 0.3)


def time_learned(n_curves: int = 1000) -> list[list[str]]:
    """Per-curve ms (fit + quantiles at the budget, median of 200) and 1,000 curves in one
    batch call (fit_many), one core."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    curves = []
    for _ in range(n_curves):
        n = int(rng.integers(20, 500))
        s = np.arange(1, n + 1)
        v = 1 + 2 * s ** -rng.uniform(0.2, 0.8) + rng.normal(0, 0.01, n)
        curves.append(Curve(s, v, max_step=5 * n))
    rows = []
    bank = ModelBank.load(MODELS_DIR)
    for name in LEARNED:
        model = create(name, bank=bank)
        model.fit(curves[0])
        times = []
        for c in curves[:200]:
            t0 = time.perf_counter()
            model.fit(c).quantiles([0.05, 0.5, 0.95], [c.max_step])
            times.append((time.perf_counter() - t0) * 1e3)
        batch = "-"
        if hasattr(model, "fit_many"):
            t0 = time.perf_counter()
            for c, p in zip(curves, model.fit_many(curves), strict=True):
                p.quantiles([0.05, 0.5, 0.95], [c.max_step])
            batch = f"{time.perf_counter() - t0:.2f}"
        rows.append([name, f"{np.median(times):.2f}", f"{np.percentile(times, 95):.2f}", batch])
    return rows


def learned_section(args) -> str:
    """The learned models beside the parametric ones on held-out tasks."""
    t0 = time.time()
    scores, names = score_corpus(
        args.corpus,
        model_names=MODELS + LEARNED,
        cutoffs=EARLY,
        max_runs_per_task=args.max_runs_per_task,
        workers=args.workers,
        heldout=True,
        models_dir=MODELS_DIR,
    )
    elapsed = time.time() - t0
    by: dict[tuple[str, str], list] = defaultdict(list)
    for sc in scores:
        by[(sc.source, sc.model)].append(sc)

    def stats(rows: list) -> dict[str, float]:
        err = np.array([r.abs_error for r in rows])
        return {
            "n": len(rows),
            "medae": float(np.median(err)),
            "mae": float(err.mean()),
            "crps": float(np.mean([r.crps for r in rows])),
            "cov50": float(np.mean([r.in_50 for r in rows])),
            "cov90": float(np.mean([r.in_90 for r in rows])),
        }

    table = []
    for source in sorted({k[0] for k in by}):
        para = {m: stats(by[(source, m)]) for m in PARAMETRIC if by.get((source, m))}
        best = min(para, key=lambda m: para[m]["medae"])
        best_mae = min(para, key=lambda m: para[m]["mae"])
        best_crps = min(para, key=lambda m: para[m]["crps"])
        ens = stats(by[(source, "ensemble")])
        gbm_s = stats(by[(source, "gbm")])
        table.append(
            [source, ens["n"], best, f"{ens['medae'] / para[best]['medae']:.3f}",
             f"{ens['mae'] / para[best_mae]['mae']:.3f}",
             f"{ens['crps'] / para[best_crps]['crps']:.3f}",
             f"{gbm_s['medae'] / para[best]['medae']:.3f}",
             f"{ens['cov50']:.2f}", f"{ens['cov90']:.2f}",
             f"{para[best]['cov50']:.2f}", f"{para[best]['cov90']:.2f}"]
        )  # fmt: skip
    per_model = []
    for model in names:
        for source in sorted({k[0] for k in by}):
            if by.get((source, model)):
                st = stats(by[(source, model)])
                per_model.append(
                    [source, model, st["n"], f"{st['medae']:.4g}", f"{st['mae']:.4g}",
                     f"{st['crps']:.4g}", f"{st['cov50']:.2f}", f"{st['cov90']:.2f}"]
                )  # fmt: skip
    speed = time_learned()
    return "\n\n".join(
        [
            "## Learned forecasters beside the parametric ones (held-out tasks)",
            f"`python benchmarks/forecast_accuracy.py --max-runs-per-task "
            f"{args.max_runs_per_task}`: the tasks no shipped artifact trained on (20% of each "
            f"source's tasks), cutoffs 0.1, 0.2 and 0.3 pooled; {len(scores)} forecasts in "
            f"{elapsed:.0f} s. Ratios are the ensemble's figure over the best parametric "
            "model's (pow3, power_law, annealing_law, multi_power_law; the best chosen per "
            "source and per figure). Targets: medae and mae ratios <= 0.75, crps ratio < 1, "
            "cov50 and cov90 within 0.03 of 0.50 and 0.90.",
            markdown_table(
                [
                    "source",
                    "n",
                    "best parametric (medae)",
                    "ens medae ratio",
                    "ens mae ratio",
                    "ens crps ratio",
                    "gbm medae ratio",
                    "ens cov50",
                    "ens cov90",
                    "best cov50",
                    "best cov90",
                ],
                table,
            ),  # fmt: skip
            "### Learned models' speed, one core",
            markdown_table(
                ["model", "ms per curve (median)", "p95", "1,000 curves, batch (s)"], speed
            ),  # fmt: skip
            "### Every model on the held-out tasks (cutoffs 0.1-0.3 pooled)",
            markdown_table(
                ["source", "model", "n", "medae", "mae", "crps", "cov50", "cov90"], per_model
            ),
        ]
    )


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.add_argument("--cutoffs", default="0.1,0.2,0.3,0.5")
    parser.add_argument("--learned-only", action="store_true", help="the learned section only")
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2
    if args.learned_only:
        learned = learned_section(args)
        print(learned)
        if not args.no_write:
            print(f"wrote {write_section('learned_accuracy', learned)}")
        return 0

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
        auto = AUTO_LAW if source in SCHEDULE_SOURCES else "power_law"
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
    learned = learned_section(args)
    print(learned)
    if not args.no_write:
        print(f"wrote {write_section('learned_accuracy', learned)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
