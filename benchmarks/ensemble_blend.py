"""The ensemble's out-of-source blend with the power law, chosen leave-one-source-out.

The stacking weights of the ensemble are chosen on calibration tasks of the sources its members
trained on; on a source nobody trained on they trust the learned members too much. A served
forecast is therefore blended with the power-law member, level by level:
(1 - b) * stacked + b * power law (`models/ensemble.py` OUT_OF_SOURCE_BLEND). This script
chooses b among SHARES, leave-one-source-out twice over:

- each source S is forecast by the bank trained without S (`evaluation/loso.bank_for`, the
  banks and runs of benchmarks/generalization.py: the test tasks of the every-source bank),
  with `auto` as the service serves it, the ensemble's forecasts made with each share b;
- for each S, b is chosen on the *other* sources only: the least mean, over those sources and
  the cutoffs 0.1, 0.2 and 0.5, of auto's medae / last value's medae (on the same runs); S is
  then scored with that b (the fold's b).
- The choice is then tested as a procedure: the mean of those fold figures (each source scored
  with a b chosen without it) against b = 0's. Only if choosing beats not blending is the b
  chosen on every source shipped; otherwise b = 0 (no blend) is.

Prints per source the figures with b = 0 (no blend), with the fold's b, and with the b chosen
on every source; writes its section of docs/benchmarks.md.

    python benchmarks/ensemble_blend.py [--max-runs-per-task 8] [--loso-runs-per-task 8 ...]
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    add_loso_arguments,
    corpus_found,
    corpus_parser,
    loso_flags,
    loso_training,
    markdown_table,
    write_section,
)

from forecaster import models  # noqa: E402
from forecaster.evaluation import accuracy  # noqa: E402
from forecaster.evaluation.loso import bank_for  # noqa: E402
from forecaster.evaluation.pool import run_jobs  # noqa: E402
from forecaster.models import StudyHistory, calibration  # noqa: E402
from forecaster.models import ensemble as ensemble_module  # noqa: E402
from forecaster.models.artifacts import ModelBank  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
CUTOFFS = (0.1, 0.2, 0.5)
_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class _Job:
    inner: accuracy._Job
    folder: str


def _quantiles(prediction: object, run: object, lo: float, hi: float) -> list[float] | None:
    samples = prediction.samples([run.final_step])[:, 0]  # type: ignore[attr-defined]
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return None
    return [float(v) for v in np.quantile(np.clip(samples, lo, hi), _LEVELS)]


def _task(job: _Job) -> list[dict[str, object]]:
    """Per run and cutoff: the truth, the last value's and auto's quantiles, auto's with the
    ensemble at each share where auto serves the ensemble."""
    j = job.inner
    bank = ModelBank.load(job.folder)
    runs = j.source.load(list(j.run_ids) + list(j.history_ids))
    targets, others = runs[: len(j.run_ids)], runs[len(j.run_ids) :]
    lo, hi = accuracy._plausible_range(runs)
    history = StudyHistory(
        tuple(r.curve() for r in others if len(r.steps)), f"{j.source.name}/{j.task}/fold{j.fold}"
    )
    ens = bank.get("ensemble")
    out: list[dict[str, object]] = []
    for run in targets:
        if not np.isfinite(run.final_value) or not len(run.steps):
            continue
        truth = float(np.clip(run.final_value, lo, hi))
        for cutoff in j.cutoffs:
            curve = run.curve(until_step=int(math.floor(cutoff * run.final_step)))
            if not len(curve):
                continue
            choice = models.auto_choice(curve, bank)
            row: dict[str, object] = {
                "source": j.source.name,
                "run_id": run.run_id,
                "cutoff": cutoff,
                "choice": choice,
                "truth": truth,
            }
            lv = models.create("last_value")
            row["last_value"] = _quantiles(
                calibration.fit_calibrated(lv, curve, history, bank), run, lo, hi
            )
            if choice == "ensemble":
                for share in SHARES:
                    fc = replace(ens, blend=share)
                    row[share] = _quantiles(
                        calibration.fit_calibrated(fc, curve, history, bank), run, lo, hi
                    )
            else:
                auto = models.create("auto", curve, bank=bank)
                served = _quantiles(calibration.fit_calibrated(auto, curve, history, bank), run,
                                    lo, hi)  # fmt: skip
                for share in SHARES:
                    row[share] = served
            out.append(row)
    return out


def figures(rows: list[dict], share: float, source: str, cutoff: float) -> dict[str, float]:
    """auto's medae / last value's (same runs), cov50, cov90 and n with the share."""
    mine = [r for r in rows if r["source"] == source and r["cutoff"] == cutoff]
    scored = [r for r in mine if r[share] is not None and r["last_value"] is not None]
    err = [abs(r[share][2] - r["truth"]) for r in scored]
    base = [abs(r["last_value"][2] - r["truth"]) for r in scored]
    lv = float(np.median(base)) if base else math.nan
    return {
        "medae_lv": float(np.median(err)) / lv if lv > 0 else math.nan,
        "cov50": float(np.mean([r[share][1] <= r["truth"] <= r[share][3] for r in scored])),
        "cov90": float(np.mean([r[share][0] <= r["truth"] <= r[share][4] for r in scored])),
        "n": len(scored),
        "ensemble": sum(r["choice"] == "ensemble" for r in mine),
    }


def choose(rows: list[dict], keep: list[str]) -> float:
    """The share with the least mean medae/lv over the kept sources and the cutoffs."""

    def loss(share: float) -> float:
        return float(np.mean([figures(rows, share, s, c)["medae_lv"] for s in keep
                              for c in CUTOFFS]))  # fmt: skip

    return min(SHARES, key=loss)


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.set_defaults(max_runs_per_task=8)
    add_loso_arguments(parser)
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2
    training, cache = loso_training(args)
    started = time.time()
    everything = bank_for(args.corpus, [], training, cache, workers=args.workers)
    trained_on = frozenset(
        json.loads((everything / "ensemble" / "meta.json").read_text())["training_tasks"]
    )
    from forecaster.corpus.reader import sources

    srcs = [s.name for s in sources(args.corpus)]
    rows: list[dict] = []
    for source in srcs:
        folder = bank_for(args.corpus, [source], training, cache, workers=args.workers)
        jobs = [
            _Job(job, str(folder))
            for job in accuracy._jobs(
                args.corpus,
                [source],
                ("auto",),
                CUTOFFS,
                args.max_runs_per_task,
                0,
                trained_on,
                None,
            )  # fmt: skip
        ]
        for batch in run_jobs(_task, jobs, args.workers, True, f"blend {source}"):
            rows.extend(batch)
    on_every = choose(rows, srcs)
    table, per_fold = [], {}
    for source in srcs:
        fold = choose(rows, [s for s in srcs if s != source])
        per_fold[source] = fold
        for cutoff in CUTOFFS:
            cells = [figures(rows, b, source, cutoff) for b in (0.0, fold, on_every)]
            table.append(
                [source, f"{cutoff:g}", str(cells[0]["n"]), str(cells[0]["ensemble"]), f"{fold:g}"]
                + [f"{c['medae_lv']:.3f} / {c['cov50']:.2f} / {c['cov90']:.2f}" for c in cells]
            )  # fmt: skip

    def mean_of(share_of: object) -> float:
        return float(np.mean([figures(rows, share_of(s), s, c)["medae_lv"]  # type: ignore[operator]
                              for s in srcs for c in CUTOFFS]))  # fmt: skip

    nested, unblended = mean_of(per_fold.get), mean_of(lambda s: 0.0)
    shipped = on_every if nested < unblended else 0.0
    medians = []
    for cutoff in CUTOFFS:
        for label, share_of in (("no blend", lambda s: 0.0), ("fold's share", per_fold.get),
                                (f"{on_every:g} everywhere", lambda s: on_every)):  # fmt: skip
            f = [figures(rows, share_of(s), s, cutoff) for s in srcs]
            ratios = [x["medae_lv"] for x in f]
            medians.append([f"{cutoff:g}", label, f"{np.median(ratios):.3f}",
                            f"{max(ratios):.3f} ({srcs[int(np.argmax(ratios))]})"])  # fmt: skip
    agree = sum(v == on_every for v in per_fold.values())
    body = "\n\n".join(
        [
            "## Ensemble: the out-of-source blend with the power law (issue 16)",
            f"`python benchmarks/ensemble_blend.py --max-runs-per-task {args.max_runs_per_task} "
            + loso_flags(training)
            + f"` ({len(rows)} cut runs, {time.time() - started:.0f} s; the banks of "
            "benchmarks/generalization.py, from its cache).",
            "Each source is forecast by the bank trained without it, on the runs of "
            "benchmarks/generalization.py; `auto` as served, its ensemble forecasts blended "
            "level by level with the power-law member by a share b in "
            f"{', '.join(f'{b:g}' for b in SHARES)}. For each source, b is chosen on the "
            "*other* sources (the least mean of auto's medae/lv over them and the cutoffs 0.1, "
            "0.2, 0.5) and the source is scored with it (column `fold's b`). Cells: medae/lv / "
            "cov50 / cov90 of `auto` over all its forecasts (n; `ens`: how many the ensemble "
            "served, the only ones b changes). Intervals come from the bank's calibration "
            "tables, built with the shipped b (so the coverage of other shares is indicative).",
            markdown_table(
                [
                    "source",
                    "cutoff",
                    "n",
                    "ens",
                    "fold's b",
                    "b = 0",
                    "fold's b (LOSO)",
                    f"b chosen on every source = {on_every:g}",
                ],
                table,
            ),  # fmt: skip
            markdown_table(["cutoff", "share", "median over sources", "worst source"], medians),
            f"b chosen on every source: {on_every:g}, the choice of {agree} of {len(srcs)} "
            f"folds. Choosing, tested leave-one-source-out (each source scored with the b "
            f"chosen without it): mean medae/lv over sources and cutoffs {nested:.3f}, against "
            f"{unblended:.3f} with no blend, so the shipped b is **{shipped:g}** "
            "(`models/ensemble.py` OUT_OF_SOURCE_BLEND). These banks' tables were built by "
            f"code with OUT_OF_SOURCE_BLEND = {ensemble_module.OUT_OF_SOURCE_BLEND:g}.",
        ]
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('ensemble_blend', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
