"""Generalization: in-distribution and leave-one-source-out (LOSO) figures side by side, per
source, and NNI's curve-fitting assessor (the published peer) on the same runs.

For each source and cutoff (0.1, 0.2, 0.5): medae / last value, 50% and 90% interval
coverage of `auto` (what the service uses), the best parametric model (chosen per source on
the figures themselves: an oracle, so an upper bound of what a parametric choice gets) and the
learned ensemble, scored

- in-distribution: by a bank trained on every source (the test tasks of each source's split,
  which it never trained on);
- LOSO: by the bank trained without the source (`forecaster eval --protocol loso`), on the
  same tasks and runs, so the two columns differ only by what the bank saw.

Both kinds of bank are trained with the same small settings (`LosoTraining`), so the
difference is the protocol, not the training budget. Then the median over sources, which of
issue 16's targets are met (LOSO, as the issue asks), NNI's `CurvefittingAssessor` model on a
sample of the same forecasts (its share of declines and its CPU per forecast beside ours), and
`auto`'s time on one 500-point curve, one core. Writes its section of docs/benchmarks.md.

    python benchmarks/generalization.py [--max-runs-per-task 15] [--nni-per-source 8]
        [--loso-runs-per-task 12 --loso-synthetic-tasks 40 --loso-pretrain-epochs 2
         --loso-finetune-epochs 4 --loso-gbm-rounds 120] [--cache DIR]
"""

from __future__ import annotations

import json
import math
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
from forecaster.corpus.reader import sources  # noqa: E402
from forecaster.curves import Curve  # noqa: E402
from forecaster.evaluation.accuracy import Score, _plausible_range, score_corpus  # noqa: E402
from forecaster.evaluation.loso import bank_for, score_loso  # noqa: E402
from forecaster.models.artifacts import ModelBank  # noqa: E402

PARAMETRIC = ["pow3", "power_law", "annealing_law", "multi_power_law"]
MODELS = ["last_value", *PARAMETRIC, "ensemble", "auto"]
CUTOFFS = (0.1, 0.2, 0.5)
SHOWN = ("auto", "best parametric", "ensemble")


def figures(scores: list[Score]) -> dict[tuple[str, str, float], dict[str, float]]:
    """(source, model, cutoff) -> medae/lv (on the same runs), cov50, cov90, n."""
    by: dict[tuple[str, str, float], dict[str, Score]] = defaultdict(dict)
    for s in scores:
        by[(s.source, s.model, s.cutoff)][s.run_id] = s
    out = {}
    for (source, model, cutoff), mine in by.items():
        base = by.get((source, "last_value", cutoff), {})
        common = [r for r in mine if r in base]
        lv = float(np.median([base[r].abs_error for r in common])) if common else math.nan
        med = float(np.median([mine[r].abs_error for r in common])) if common else math.nan
        out[(source, model, cutoff)] = {
            "medae_lv": med / lv if lv > 0 else (1.0 if med == 0 else math.inf),
            "cov50": float(np.mean([s.in_50 for s in mine.values()])),
            "cov90": float(np.mean([s.in_90 for s in mine.values()])),
            "n": len(mine),
        }
    return out


def shown(fig: dict, source: str, cutoff: float) -> dict[str, tuple[str, dict[str, float]]]:
    """auto, the best parametric model (by medae/lv, on these figures) and the ensemble."""
    para = [(m, fig[(source, m, cutoff)]) for m in PARAMETRIC if (source, m, cutoff) in fig]
    best = min(para, key=lambda p: p[1]["medae_lv"])
    return {
        "auto": ("auto", fig[(source, "auto", cutoff)]),
        "best parametric": best,
        "ensemble": ("ensemble", fig[(source, "ensemble", cutoff)]),
    }


def side_by_side(ind: dict, loso: dict, srcs: list[str]) -> tuple[str, list[list[str]]]:
    """The per-source table and the median-over-sources rows."""
    rows, med_rows = [], []
    for cutoff in CUTOFFS:
        per_model: dict[tuple[str, str], list[float]] = defaultdict(list)
        for source in srcs:
            a, b = shown(ind, source, cutoff), shown(loso, source, cutoff)
            for which in SHOWN:
                (ma, fa), (mb, fb) = a[which], b[which]
                name = which if which != "best parametric" else f"best parametric ({ma} / {mb})"
                rows.append(
                    [f"{cutoff:g}", source, name, str(fb["n"]),
                     f"{fa['medae_lv']:.3f}", f"{fb['medae_lv']:.3f}",
                     f"{fa['cov50']:.2f}", f"{fb['cov50']:.2f}",
                     f"{fa['cov90']:.2f}", f"{fb['cov90']:.2f}"]
                )  # fmt: skip
                for key, f in (("in-dist", fa), ("loso", fb)):
                    for k in ("medae_lv", "cov50", "cov90"):
                        per_model[(which, f"{key} {k}")].append(f[k])
        for which in SHOWN:
            med = {k: float(np.median(v)) for (w, k), v in per_model.items() if w == which}
            med_rows.append(
                [f"{cutoff:g}", which]
                + [f"{med[f'{p} {k}']:.3f}" for k in ("medae_lv", "cov50", "cov90")
                   for p in ("in-dist", "loso")]
            )  # fmt: skip
    table = markdown_table(
        ["cutoff", "source", "model", "n", "medae/lv in-dist", "medae/lv LOSO", "cov50 in-dist",
         "cov50 LOSO", "cov90 in-dist", "cov90 LOSO"],
        rows,
    )  # fmt: skip
    return table, med_rows


def targets(ind: dict, loso: dict, srcs: list[str], model: str) -> list[list[str]]:
    """Issue 16's targets on LOSO figures of one model: met or not, with the figures."""

    def check(cutoff: float, slack: float) -> list[list[str]]:
        f = {s: loso[(s, model, cutoff)] for s in srcs}
        worst = max(srcs, key=lambda s: f[s]["medae_lv"])
        med = float(np.median([f[s]["medae_lv"] for s in srcs]))
        bad90 = [s for s in srcs if not 0.85 - slack <= f[s]["cov90"] <= 0.95 + slack]
        bad50 = [s for s in srcs if not 0.45 - slack <= f[s]["cov50"] <= 0.55 + slack]
        worse = [s for s in srcs if f[s]["medae_lv"] > ind[(s, model, cutoff)]["medae_lv"]]
        c = f"{cutoff:g}"
        out = [
            [c, f"medae/lv <= {0.6 + slack:g} on every source",
             _yes(f[worst]["medae_lv"] <= 0.6 + slack),
             f"worst {worst} {f[worst]['medae_lv']:.3f}"],
            [c, f"median over sources <= {0.5 + slack:g}", _yes(med <= 0.5 + slack), f"{med:.3f}"],
            [c, f"cov90 in [{0.85 - slack:.2f}, {0.95 + slack:.2f}] on every source",
             _yes(not bad90), "outside: " + (", ".join(f"{s} {f[s]['cov90']:.2f}"
                                                      for s in bad90) or "none")],
            [c, f"cov50 in [{0.45 - slack:.2f}, {0.55 + slack:.2f}] on every source",
             _yes(not bad50), "outside: " + (", ".join(f"{s} {f[s]['cov50']:.2f}"
                                                      for s in bad50) or "none")],
        ]  # fmt: skip
        if cutoff == 0.2:
            out.append(
                [c, "no source worse than in-distribution (medae/lv)", _yes(not worse),
                 "worse: " + (", ".join(worse) or "none")]
            )  # fmt: skip
        return out

    return [r for cutoff in CUTOFFS for r in check(cutoff, 0.0 if cutoff == 0.2 else 0.1)]


def _yes(ok: bool) -> str:
    return "**met**" if ok else "not met"


def peer_section(corpus: str, scores: list[Score], banks: dict[str, Path], per_source: int) -> str:
    """NNI's curve model beside ours on a sample of the LOSO forecasts (the same runs and
    cutoffs), with its declines and CPU per forecast; ours timed on the same curves."""
    from _nni_peer import NniCurvePeer, available, version

    why = available()
    if why:
        return f"NNI's curve model could not be imported here ({why}); `pip install nni==3.0`."
    peer = NniCurvePeer()
    picked: dict[tuple[str, float], list[Score]] = defaultdict(list)
    for s in scores:
        if s.model == "auto" and len(picked[(s.source, s.cutoff)]) < per_source:
            picked[(s.source, s.cutoff)].append(s)
    by_run = {(s.source, s.run_id, s.model, s.cutoff): s for s in scores}
    rows, ratios = [], []
    srcs = {s.name: s for s in sources(corpus)}
    for (source, cutoff), chosen in sorted(picked.items()):
        bank = ModelBank.load(str(banks[source]))
        src = srcs[source]
        runs = {r.run_id: r for r in src.load([s.run_id for s in chosen])}
        task_runs: dict[str, list] = defaultdict(list)
        for r in runs.values():
            task_runs[r.task].append(r)
        declined, err, err_lv, cpu_peer, cpu_ours = 0, [], [], [], []
        for s in chosen:
            run = runs[s.run_id]
            lo, hi = _plausible_range(task_runs[run.task])
            curve = run.curve(until_step=int(math.floor(cutoff * run.final_step)))
            f = peer.forecast(
                curve.steps, curve.values, run.direction.sign > 0, int(run.final_step)
            )
            cpu_peer.append(f.cpu_ms)
            cpu_ours.append(_our_cpu_ms(curve, bank))
            if not math.isfinite(f.value):
                declined += 1
                continue
            err.append(abs(float(np.clip(f.value, lo, hi)) - s.truth))
            err_lv.append(by_run[(source, s.run_id, "last_value", cutoff)].abs_error)
        ours = [by_run[(source, s.run_id, "auto", cutoff)].abs_error for s in chosen]
        ours_lv = [by_run[(source, s.run_id, "last_value", cutoff)].abs_error for s in chosen]
        ratio = _ratio(err, err_lv)
        ratios.append(ratio)
        rows.append(
            [f"{cutoff:g}", source, len(chosen), f"{declined / len(chosen):.0%}",
             f"{ratio:.3f}" if err else "-", f"{_ratio(ours, ours_lv):.3f}",
             f"{np.median(cpu_peer):.0f}", f"{np.median(cpu_ours):.1f}",
             f"{np.median(cpu_peer) / max(np.median(cpu_ours), 1e-9):.0f}x"]
        )  # fmt: skip
    table = markdown_table(
        ["cutoff", "source", "forecasts", "NNI declines", "NNI medae/lv (answered)",
         "auto medae/lv (all)", "NNI CPU ms", "auto CPU ms", "CPU ratio"],
        rows,
    )  # fmt: skip
    return (
        f"NNI {version()}'s `CurvefittingAssessor` curve model (`CurveModel.predict`, 12 "
        f"families, MCMC weights), on the first {per_source} LOSO forecasts of each source and "
        "cutoff. Losses go in as y = 1 - loss / (the prefix's largest |value|) and come back "
        "by the inverse; the steps as min(n, 25) evenly spaced positions "
        "(benchmarks/_nni_peer.py). "
        "It gives a point only (no interval); its medae/lv is over the forecasts it answered, "
        "against the last value on those same runs. CPU is process time per forecast, ours "
        "being `auto` with the LOSO bank on the same curve.\n\n" + table
    )


def _ratio(err: list[float], base: list[float]) -> float:
    if not err:
        return math.nan
    b = float(np.median(base))
    return float(np.median(err)) / b if b > 0 else math.inf


def _our_cpu_ms(curve: Curve, bank: ModelBank) -> float:
    t0 = time.process_time()
    forecaster = models.create("auto", curve, bank=bank)
    forecaster.fit(curve).quantiles([0.05, 0.5, 0.95], [curve.max_step or curve.last_step])
    return (time.process_time() - t0) * 1e3


def auto_speed(bank_folder: Path, repeats: int = 30) -> float:
    """Median ms of `auto` (fit + quantiles at the budget) on 500-point curves, one core."""
    import torch

    torch.set_num_threads(1)
    bank = ModelBank.load(str(bank_folder))
    rng = np.random.default_rng(0)
    steps = np.arange(1, 501)
    times = []
    for i in range(repeats):
        values = 1.0 + 2.0 * steps ** -(0.3 + 0.01 * i) + rng.normal(0, 0.01, len(steps))
        curve = Curve(steps, values, max_step=2500)
        t0 = time.perf_counter()
        models.create("auto", curve, bank=bank).fit(curve).quantiles([0.05, 0.5, 0.95], [2500])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[5:]))


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.set_defaults(max_runs_per_task=15)
    parser.add_argument(
        "--nni-per-source", type=int, default=8, help="NNI forecasts per source and cutoff"
    )
    add_loso_arguments(parser)
    args = parser.parse_args()
    if not corpus_found(args.corpus):
        return 2
    training, cache = loso_training(args)
    started = time.time()
    everything = bank_for(args.corpus, [], training, cache, workers=args.workers)
    trained_on = json.loads((everything / "ensemble" / "meta.json").read_text())["training_tasks"]
    common = {
        "model_names": MODELS,
        "cutoffs": CUTOFFS,
        "max_runs_per_task": args.max_runs_per_task,
        "workers": args.workers,
    }
    ind_scores, _ = score_corpus(args.corpus, models_dir=str(everything), heldout=True,
                                 **common)  # fmt: skip
    # LOSO on the same tasks: those the every-source bank held out (its test tasks).
    loso_scores, _, banks = score_loso(
        args.corpus, training=training, cache=cache, skip_tasks=trained_on, **common
    )
    scored = time.time() - started
    ind, los = figures(ind_scores), figures(loso_scores)
    srcs = sorted({s.source for s in loso_scores})
    table, med_rows = side_by_side(ind, los, srcs)
    medians = markdown_table(
        ["cutoff", "model", "medae/lv in-dist", "medae/lv LOSO", "cov50 in-dist", "cov50 LOSO",
         "cov90 in-dist", "cov90 LOSO"],
        med_rows,
    )  # fmt: skip
    goal = {
        m: markdown_table(["cutoff", "target (LOSO)", m, "figures"], targets(ind, los, srcs, m))
        for m in ("auto", "ensemble")
    }
    t_peer = time.time()
    peer = peer_section(args.corpus, loso_scores, banks, args.nni_per_source)
    t_peer = time.time() - t_peer
    speed = auto_speed(everything)
    body = "\n\n".join(
        [
            "## Generalization: in-distribution and leave-one-source-out, side by side",
            f"`python benchmarks/generalization.py --max-runs-per-task {args.max_runs_per_task} "
            f"--nni-per-source {args.nni_per_source} "
            + loso_flags(training)
            + f"` on {platform.machine()} "
            f"({os.cpu_count()} cores, shared): {len(ind_scores) + len(loso_scores)} forecasts "
            f"and {len(banks) + 1} banks in {scored:.0f} s (banks trained now or reused from "
            f"the cache), the peer in {t_peer:.0f} s.",
            "Each bank (gbm, sequence, the ensemble's stacking weights and interval deltas, and "
            "what else `train_all` trains) is trained with the LOSO settings "
            f"(`LosoTraining`: {training.max_runs_per_task} runs per task, "
            f"{training.synthetic_tasks} synthetic tasks, {training.pretrain_epochs}+"
            f"{training.finetune_epochs} epochs, {training.gbm_rounds} gbm rounds), smaller than "
            "the shipped one's. **in-dist**: the bank trained on every source, scored on each "
            "source's test tasks (20% of its tasks, never trained on). **LOSO**: the bank "
            "trained without the source, on the same tasks and runs. `best parametric` is "
            "chosen per source on these very figures (named: in-dist / LOSO), an oracle. "
            "medae/lv: median absolute error over the last value's, on the same runs.",
            table,
            "### Median over sources",
            medians,
            "### Issue 16's targets, LOSO (cutoff 0.2 as stated; 0.1 and 0.5 within 0.1)",
            "`auto` (what the service answers with):",
            goal["auto"],
            "The ensemble:",
            goal["ensemble"],
            "### The published peer: NNI's curve-fitting assessor",
            peer,
            "LC-PFN (Adriaensen et al. 2023), the other published learning-curve forecaster, "
            "downloads its weights at run time from a university server; nothing here may "
            "download at run time, so it is not run. Our learned forecasters ship in the wheel "
            "(`forecaster/models/default_artifacts`) and are rebuilt with `forecaster train`.",
            f"### Speed: `auto` on one 500-point curve, one core: **{speed:.1f} ms** (median; "
            "target <= 20 ms)",
        ]
    )
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('generalization', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
