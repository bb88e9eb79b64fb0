"""Short, noisy and bounded curves (issue 16): accuracy per source at cutoffs 0.1/0.2/0.5 for
`auto` and the parametric models, and `auto`'s speed on one core.

Runs the accuracy evaluation of `forecaster eval` (the same scoring: medae over the last
value's on the same runs, 50% / 90% interval coverage; every forecast bounded by its metric's
kind) for auto, power_law, pow3, annealing_law and short_curve, then times `auto` (fit +
quantiles at the budget) on 500-point noisy curves with and without a logged lr, and on
3-point curves. Prints the tables and writes them to docs/benchmarks.md.

    python benchmarks/short_noisy_bounded.py [--corpus ../shared/datasets] [--max-runs-per-task 10]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # "one core" for the timing
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.config import Settings  # noqa: E402
from forecaster.curves import Curve  # noqa: E402
from forecaster.evaluation.accuracy import aggregate, score_corpus  # noqa: E402
from forecaster.metric_kinds import KINDS  # noqa: E402
from forecaster.models import create  # noqa: E402
from forecaster.models.artifacts import ModelBank  # noqa: E402
from forecaster.models.prediction import within_bounds  # noqa: E402

MODELS = ["auto", "power_law", "pow3", "annealing_law", "short_curve"]
CUTOFFS = (0.1, 0.2, 0.5)


def time_auto(bank: ModelBank | None, repeats: int = 40) -> list[list[str]]:
    """Median and p95 ms of auto's fit + quantiles at the budget, one core."""
    rng = np.random.default_rng(0)
    rows = []
    for label, n, with_lr in (("500 points", 500, False), ("500 points, lr logged", 500, True),
                              ("3 points", 3, False)):  # fmt: skip
        steps = np.arange(1, n + 1) * (1 if n > 10 else 50)
        times, chosen = [], set()
        for i in range(repeats):
            values = 1.0 + 2.0 * steps ** -(0.3 + 0.01 * i) + rng.normal(0, 0.01, n)
            lr = np.full(n, 1e-3) if with_lr else None
            curve = Curve(steps, values, max_step=int(steps[-1]) * 5, lr=lr, kind=KINDS["loss"])
            t0 = time.perf_counter()
            model = create("auto", curve, bank=bank)
            within_bounds(model.fit(curve), curve).quantiles([0.05, 0.5, 0.95], [curve.max_step])
            times.append((time.perf_counter() - t0) * 1e3)
            chosen.add(model.name)
        t = np.array(times[5:])
        rows.append([label, ", ".join(sorted(chosen)), f"{np.median(t):.1f}",
                     f"{np.percentile(t, 95):.1f}"])  # fmt: skip
    return rows


def main() -> int:
    parser = corpus_parser(__doc__ or "")
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 1
    models_dir = Settings.from_env().models_dir
    t0 = time.time()
    scores, names = score_corpus(
        args.corpus, model_names=MODELS, cutoffs=CUTOFFS, max_runs_per_task=args.max_runs_per_task,
        workers=args.workers, heldout=False, models_dir=models_dir,
    )  # fmt: skip
    elapsed = time.time() - t0
    rows = [
        [r["source"], r["model"], r["cutoff"], r["n_runs"],
         f"{float(r['medae_ratio_vs_last_value']):.3g}", f"{float(r['coverage_50']):.2f}",
         f"{float(r['coverage_90']):.2f}", f"{float(r['fit_ms_median']):.1f}"]
        for r in aggregate(scores, names) if r["model"] != "last_value"
    ]  # fmt: skip
    accuracy = markdown_table(
        ["source", "model", "cutoff", "runs", "medae / last value", "cov50", "cov90", "fit ms"],
        rows,
    )
    speed = markdown_table(
        ["curve", "auto answered with", "ms (median)", "p95"], time_auto(ModelBank.load(models_dir))
    )
    print(accuracy)
    print(speed)
    if not args.no_write:
        body = "\n\n".join([
            "## Short, noisy and bounded curves (issue 16)",
            f"`python benchmarks/short_noisy_bounded.py --max-runs-per-task "
            f"{args.max_runs_per_task}`: every task of every source (not only held-out ones; "
            f"the learned models inside `auto` saw the others), cutoffs "
            f"{', '.join(map(str, CUTOFFS))}, {len(scores)} forecasts in {elapsed:.0f} s. "
            "Forecasts bounded by their metric's kind (inferred from the corpus's metric names).",
            accuracy,
            "### auto's speed, one core (fit + quantiles at the budget)",
            speed,
        ])  # fmt: skip
        write_section("short-noisy-bounded", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
