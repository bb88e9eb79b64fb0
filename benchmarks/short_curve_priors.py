"""Learns the short-curve law's priors from the corpus, leave-one-source-out, and scores them.

For every source of ../shared/datasets (a sample of runs per task), the runs are cut at
fractions of their final step, keeping the prefixes with 3-8 finite points (the short curves
real evaluation schedules give). The priors of `forecaster/models/short_curve.py`:

- log exponent: the exponent of the law fitted to each whole run (x = step / final step),
  robust mean and sd (median, MAD) over runs;
- log remaining drop: (the prefix's newest value - the final value) / the prefix's range, on
  the prefixes that still improve, robust mean and sd;
- noise share: the median residual sd of the law fitted to a prefix, in units of its range;
- inflation: how much wider than its Laplace posterior the interval is drawn, the value on a
  grid whose 90% intervals cover closest to 90% on average over the sources used.

Each source is scored with the priors learned on the other sources only (LOSO): medae / the
last value's, and the 50% / 90% interval coverage, per number of points. The table written to
forecaster/models/short_curve_priors.json is the one learned on every source; the LOSO figures
go into it (meta) and into docs/benchmarks.md.

    python benchmarks/short_curve_priors.py [--corpus ../shared/datasets] [--max-runs-per-task 20]
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.curves import Curve, to_loss  # noqa: E402
from forecaster.evaluation.pool import sample_tasks  # noqa: E402
from forecaster.models.power_law import FAMILIES, PowerLawForecaster  # noqa: E402
from forecaster.models.short_curve import ShortCurvePriors, fit_short, unit_points  # noqa: E402

CUTOFFS = (0.1, 0.2, 0.3, 0.5)
MAX_SHORT = 8
INFLATIONS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
TABLE = Path(__file__).resolve().parents[1] / "forecaster" / "models" / "short_curve_priors.json"


@dataclass(frozen=True)
class Prefix:
    source: str
    curve: Curve
    n: int
    final_step: int
    truth: float  # loss view
    last: float  # loss view
    log_remaining: float  # NaN when the run got worse after the prefix
    ensemble_error: float  # |power-law ensemble's median - truth| (NaN below its 5 points)


def _robust(values: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if math.isfinite(v)])
    med = float(np.median(a))
    return med, max(1.4826 * float(np.median(np.abs(a - med))), 0.1)


def collect(corpus: str, max_runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]],
                                                   list[Prefix]]:  # fmt: skip
    """Per source: the whole runs' log exponents, the prefixes' noise shares; every prefix."""
    exponents: dict[str, list[float]] = {}
    noise: dict[str, list[float]] = {}
    prefixes: list[Prefix] = []
    pow3 = FAMILIES["pow3"]
    ensemble = PowerLawForecaster()
    for source, _task, _order, chosen in sample_tasks(corpus, None, max_runs, 0):
        for run in source.load(chosen):
            full = run.curve().loss_view().finite()
            if len(full) < 5 or not math.isfinite(run.final_value):
                continue
            offset = 1.0 if full.steps[0] == 0 else 0.0
            x = (full.steps.astype(float) + offset) / (float(full.steps[-1]) + offset)
            fit = pow3.fit(x, full.values, np.ones(len(x)))
            if fit.coef[fit.best, 1] > 0:
                exponents.setdefault(source.name, []).append(math.log(fit.theta[fit.best, 0]))
            truth = float(full.values[-1])
            for cutoff in CUTOFFS:
                curve = run.curve(until_step=int(math.floor(cutoff * run.final_step)))
                loss = curve.loss_view().finite()
                n = len(loss)
                if not 3 <= n <= MAX_SHORT:
                    continue
                y = loss.values
                span = max(float(y.max() - y.min()), 1e-12)
                last = float(y[-1])
                drop = (last - truth) / span
                ens = math.nan
                if n >= 5:
                    q = ensemble.fit(curve).quantiles([0.5], [run.final_step])[0, 0]
                    ens = abs(float(to_loss(q, curve.direction)) - truth)
                prefixes.append(Prefix(source.name, curve, n, run.final_step, truth, last,
                                       math.log(drop) if drop > 0 else math.nan, ens))  # fmt: skip
                if n >= 5:  # the residual sd of the law fitted to the prefix, in its range
                    px = (loss.steps.astype(float) + offset) / (float(loss.steps[-1]) + offset)
                    pfit = pow3.fit(px, y, np.ones(n))
                    point = math.sqrt(float(pfit.sigma2[pfit.best]))
                    noise.setdefault(source.name, []).append(point / span)
    return exponents, noise, prefixes


def learn(exponents: dict[str, list[float]], noise: dict[str, list[float]],
          prefixes: list[Prefix], sources: set[str]) -> ShortCurvePriors:  # fmt: skip
    """Moments from the named sources only, each source weighted alike (one value each: the
    median over its runs, the spread pooled)."""
    mean_c = float(np.median([np.median(exponents[s]) for s in sources if exponents.get(s)]))
    sd_c = _robust([v for s in sources for v in exponents.get(s, [])])[1]
    rem = {s: [p.log_remaining for p in prefixes if p.source == s] for s in sources}
    rem = {s: [v for v in vs if math.isfinite(v)] for s, vs in rem.items()}
    mean_r = float(np.median([np.median(v) for v in rem.values() if v]))
    sd_r = _robust([v for vs in rem.values() for v in vs])[1]
    share = float(np.median([np.median(noise[s]) for s in sources if noise.get(s)]))
    return ShortCurvePriors(mean_c, sd_c, mean_r, sd_r, max(share, 1e-3), 1.0)


def score(prefixes: list[Prefix], priors: ShortCurvePriors) -> dict[float, np.ndarray]:
    """Per inflation: rows (abs error, abs error of the last value, in 50%, in 90%). One fit
    per prefix: the inflation only widens the draws."""
    out: dict[float, list[tuple[float, float, float, float]]] = {k: [] for k in INFLATIONS}
    for p in prefixes:
        x, y, offset, scale = unit_points(p.curve.loss_view().finite(), 100)
        fitted = fit_short(x, y, priors)
        xs = np.array([(p.final_step + offset) / scale])
        for k in INFLATIONS:
            theta, noise = fitted.draws(k, 200, 0)
            s = fitted.curve_at(theta, xs)[:, 0] + noise
            q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95])
            in50, in90 = q[1] <= p.truth <= q[3], q[0] <= p.truth <= q[4]
            out[k].append((abs(q[2] - p.truth), abs(p.last - p.truth), in50, in90))
    return {k: np.asarray(v) for k, v in out.items()}


def figures(rows: np.ndarray) -> tuple[float, float, float]:
    ratio = float(np.median(rows[:, 0]) / max(np.median(rows[:, 1]), 1e-300))
    return ratio, float(rows[:, 2].mean()), float(rows[:, 3].mean())


def choose_inflation(scored: dict[str, dict[float, np.ndarray]]) -> float:
    """The inflation whose 90% coverage, averaged over these sources, is closest to 0.9."""

    def gap(k: float) -> float:
        return abs(float(np.mean([figures(v[k])[2] for v in scored.values()])) - 0.9)

    return min(INFLATIONS, key=gap)


def main() -> None:
    parser = corpus_parser(__doc__ or "")
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        sys.exit(1)
    exponents, noise, prefixes = collect(args.corpus, args.max_runs_per_task)
    names = sorted({p.source for p in prefixes})
    print(f"{len(prefixes)} short prefixes from {len(names)} sources", file=sys.stderr)
    rows: list[list[object]] = []
    loso: dict[str, dict[str, float]] = {}
    for held in names:
        train = set(names) - {held}
        priors = learn(exponents, noise, prefixes, train)
        scored = {s: score([p for p in prefixes if p.source == s], priors) for s in train}
        k = choose_inflation(scored)
        held_rows = score([p for p in prefixes if p.source == held], priors)[k]
        ratio, c50, c90 = figures(held_rows)
        loso[held] = {"medae_over_last": ratio, "cov50": c50, "cov90": c90,
                      "prefixes": len(held_rows), "inflation": k}  # fmt: skip
        by_n = []
        for lo, hi in ((3, 4), (5, 8)):
            sel = np.array([lo <= p.n <= hi for p in prefixes if p.source == held])
            by_n.append(f"{figures(held_rows[sel])[0]:.2f}" if sel.any() else "-")
        ens = np.array([p.ensemble_error for p in prefixes if p.source == held])
        five = np.isfinite(ens)
        vs = float(np.median(held_rows[five, 0]) / max(np.median(ens[five]), 1e-300))
        loso[held]["medae_over_power_law_5_8_points"] = vs
        rows.append([held, len(held_rows), f"{ratio:.2f}", *by_n, f"{vs:.2f}", f"{c50:.2f}",
                     f"{c90:.2f}", k])  # fmt: skip
        print(rows[-1], file=sys.stderr)
    priors = learn(exponents, noise, prefixes, set(names))
    scored = {s: score([p for p in prefixes if p.source == s], priors) for s in names}
    priors = replace(priors, inflation=choose_inflation(scored), meta={
        "learned_on": names, "max_runs_per_task": args.max_runs_per_task,
        "cutoffs": list(CUTOFFS), "points": [3, MAX_SHORT], "loso": loso,
        "script": "benchmarks/short_curve_priors.py",
    })  # fmt: skip
    headers = ["held-out source", "prefixes", "medae / last value", "3-4 points", "5-8 points",
               "5-8 points: medae / power_law's", "cov50", "cov90", "inflation chosen"]  # fmt: skip
    table = markdown_table(headers, rows)
    print(table)
    print(json.dumps(priors.to_dict(), indent=1))
    if not args.no_write:
        TABLE.write_text(json.dumps(priors.to_dict(), indent=1, sort_keys=True) + "\n")
        body = (
            "## Short-curve priors (leave-one-source-out)\n\n"
            f"`python benchmarks/short_curve_priors.py --max-runs-per-task "
            f"{args.max_runs_per_task}`: prefixes of 3-{MAX_SHORT} finite points at cutoffs "
            f"{', '.join(map(str, CUTOFFS))}; each source scored with the priors (and the "
            "interval inflation) learned on the other sources only. The shipped table "
            "(`forecaster/models/short_curve_priors.json`) is learned on every source: log "
            f"exponent {priors.log_exponent_mean:.2f} +- {priors.log_exponent_sd:.2f}, log "
            f"remaining drop {priors.log_remaining_mean:.2f} +- {priors.log_remaining_sd:.2f}, "
            f"noise share {priors.noise_share:.3f}, inflation {priors.inflation}.\n\n" + table
        )
        write_section("short-curve-priors", body)


if __name__ == "__main__":
    main()
