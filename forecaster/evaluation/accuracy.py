"""Forecast accuracy over a corpus: cut each run at fractions of its final logged step,
forecast the value at that step, and score the forecasts against what the run reached.

Scoring stays meaningful on runs that diverge: runs whose final value is not finite are not
scored, and values (truth, forecast quantiles and samples) are clipped to the task's plausible
range (the 2-98% range of its logged values, widened by that width on each side), so one run
at 1e8 cannot decide a mean. A forecast that is NaN (the model declared the run diverged)
while the run ended finite scores the largest error, misses both intervals and gets the
largest CRPS. Every model is compared with the last value on the same runs.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from forecaster import models
from forecaster.corpus.reader import LoggedRun, Source
from forecaster.corpus.splits import task_key
from forecaster.errors import FailedPreconditionError, InvalidArgumentError
from forecaster.evaluation.pool import run_jobs, sample_tasks
from forecaster.models import StudyHistory, calibration
from forecaster.models.artifacts import ModelBank

DEFAULT_CUTOFFS = (0.1, 0.2, 0.3, 0.5)
DEFAULT_MODELS = ("last_value", "damped_trend", "pow3", "power_law", "annealing_law")
BASELINE = "last_value"
_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
_FOLDS = 2  # a run's study history comes from the other fold of its task


@dataclass(frozen=True)
class Score:
    """One forecast, scored."""

    source: str
    model: str
    cutoff: float
    run_id: str
    truth: float  # the final value (clipped to the task's plausible range)
    abs_error: float
    in_50: bool
    in_90: bool
    crps: float
    fit_ms: float
    # The model fell back to a simpler one (its first note says why): not its own forecast.
    fell_back: bool = False
    fallback_note: str = ""


@dataclass(frozen=True)
class _Job:
    source: Source
    task: str
    fold: int
    run_ids: tuple[str, ...]
    history_ids: tuple[str, ...]
    models: tuple[str, ...]
    cutoffs: tuple[float, ...]
    bank: ModelBank | None  # the learned models, when one is scored (a worker loads its own)


def crps_samples(samples: np.ndarray, truth: float) -> float:
    """CRPS of an empirical distribution: E|X - y| - E|X - X'| / 2, exact for the samples."""
    x = np.sort(samples)
    n = len(x)
    if n == 0:
        return math.nan
    first = float(np.mean(np.abs(x - truth)))
    # E|X - X'| = 2 / n^2 * sum_i (2i - n - 1) x_(i)
    i = np.arange(1, n + 1)
    spread = float(2.0 * np.sum((2 * i - n - 1) * x) / n**2)
    return first - 0.5 * spread


def _plausible_range(runs: list[LoggedRun]) -> tuple[float, float]:
    """The task's 2-98% range of logged values (and 5-95% of final values), widened by its
    width on each side: beyond it a value only says "diverged"."""
    finals = np.array([r.final_value for r in runs])
    finals = finals[np.isfinite(finals)]
    values = np.concatenate([r.values for r in runs]) if runs else np.zeros(0)
    values = values[np.isfinite(values)]
    if not len(values) and not len(finals):
        return -math.inf, math.inf
    pool = values if len(values) else finals
    lo, hi = (float(v) for v in np.quantile(pool, [0.02, 0.98]))
    if len(finals):
        lo, hi = (
            min(lo, float(np.quantile(finals, 0.05))),
            max(hi, float(np.quantile(finals, 0.95))),
        )
    width = max(float(hi - lo), 1e-9 * max(1.0, abs(float(hi))))
    return float(lo - width), float(hi + width)


def _score_task(job: _Job) -> list[Score]:
    runs = job.source.load(list(job.run_ids) + list(job.history_ids))
    targets = runs[: len(job.run_ids)]
    history_runs = runs[len(job.run_ids) :]
    lo, hi = _plausible_range(runs)
    cap = hi - lo
    history = StudyHistory(
        tuple(r.curve() for r in history_runs if len(r.steps)),
        f"{job.source.name}/{job.task}/fold{job.fold}",
    )
    forecasters = {
        name: models.create(name, bank=job.bank) for name in job.models if name != models.AUTO
    }
    out: list[Score] = []
    for run in targets:
        if not np.isfinite(run.final_value) or not len(run.steps):
            continue
        truth = float(np.clip(run.final_value, lo, hi))
        for cutoff in job.cutoffs:
            until = int(math.floor(cutoff * run.final_step))
            curve = run.curve(until_step=until)
            if not len(curve):
                continue
            for name in job.models:
                forecaster = forecasters.get(name) or models.create(name, curve, bank=job.bank)
                t0 = time.perf_counter()
                prediction = calibration.fit_calibrated(forecaster, curve, history, job.bank)
                samples = prediction.samples([run.final_step])[:, 0]
                fit_ms = (time.perf_counter() - t0) * 1e3
                finite = samples[np.isfinite(samples)]
                fell_back = not prediction.converged
                note = prediction.notes[0] if fell_back and prediction.notes else ""
                if not len(finite):
                    out.append(Score(job.source.name, name, cutoff, run.run_id, truth, cap,
                                     False, False, cap, fit_ms, fell_back, note))  # fmt: skip
                    continue
                clipped = np.clip(finite, lo, hi)
                q = np.quantile(clipped, _LEVELS)
                out.append(
                    Score(
                        job.source.name,
                        name,
                        cutoff,
                        run.run_id,
                        truth,
                        float(abs(q[2] - truth)),
                        bool(q[1] <= truth <= q[3]),
                        bool(q[0] <= truth <= q[4]),
                        crps_samples(clipped, truth),
                        fit_ms,
                        fell_back,
                        note,
                    )
                )
    return out


def _jobs(
    corpus: str,
    source_names: Sequence[str] | None,
    model_names: tuple[str, ...],
    cutoffs: tuple[float, ...],
    max_runs_per_task: int,
    seed: int,
    skip_tasks: frozenset[str],
    bank: ModelBank | None,
) -> Iterator[_Job]:
    for source, task, order, chosen in sample_tasks(corpus, source_names, max_runs_per_task, seed):
        if task_key(source.name, task) in skip_tasks:
            continue
        for fold in range(_FOLDS):
            mine = tuple(chosen[fold::_FOLDS])
            # History: completed runs of the same task outside this fold (not scored).
            others = [r for r in order if r not in set(mine)][:24]
            if mine:
                yield _Job(source, task, fold, mine, tuple(others), model_names, cutoffs, bank)


def evaluate(
    corpus: str,
    **kwargs: object,
) -> list[dict[str, float | int | str]]:
    """Scores each model on each source and cutoff; one dict per (source, model, cutoff).
    Arguments as for `score_corpus`."""
    scores, names = score_corpus(corpus, **kwargs)  # type: ignore[arg-type]
    return aggregate(scores, names)


def score_corpus(
    corpus: str,
    *,
    source_names: Sequence[str] | None = None,
    model_names: Sequence[str] = DEFAULT_MODELS,
    cutoffs: Sequence[float] = DEFAULT_CUTOFFS,
    max_runs_per_task: int = 50,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    models_dir: str = "",
    heldout: bool | None = None,
    skip_tasks: Collection[str] = (),
) -> tuple[list[Score], list[str]]:
    """Every forecast of every model on every sampled run and cutoff, scored; and the model
    names in report order (the last-value baseline first).

    models_dir: the learned models' artifacts and calibration tables, as the service's setting
    ("": the shipped ones; "none": none, and the forecasters' own intervals).
    heldout: score only tasks no loaded learned model trained on (default: when a learned
    model, or auto with learned models loaded, is among the models), so every model is
    compared on the same, unseen tasks.
    skip_tasks: task keys ("source/task") not to score besides those.

    The scores come in one order (source, run, model, cutoff) whatever order the workers
    finish in, so the same arguments give the same figures to the last bit.
    """
    names = tuple(dict.fromkeys([BASELINE, *[models.check_name(m) for m in model_names]]))
    cuts = tuple(float(c) for c in cutoffs)
    if not cuts or any(not 0 < c < 1 for c in cuts):
        raise InvalidArgumentError(f"cutoffs must be fractions in (0, 1); got {list(cutoffs)}.")
    learned = [n for n in names if models.is_learned(n)]
    skip: frozenset[str] = frozenset(skip_tasks)
    # Always the bank of models_dir: its calibration tables apply to every forecaster, as in
    # the service ("none": the forecasters' own intervals).
    bank = ModelBank.load(models_dir)
    if bank is not None and learned:
        missing = [n for n in learned if bank.get(n) is None]
        if missing:
            why = "; ".join(bank.refused.get(n, f"no artifact in {bank.folder}") for n in missing)
            raise FailedPreconditionError(
                f"learned model(s) {', '.join(missing)} not loaded: {why}. Train them with "
                "`forecaster train --corpus DIR --out MODEL_DIR` and pass --models-dir."
            )
    # auto serves the bank's ensemble where it applies: its tasks are held out as well.
    used = [*learned, *(bank.names() if bank is not None and models.AUTO in names else [])]
    if bank is not None and used and (heldout is None or heldout):
        skip = skip.union(*(bank.meta_of(n).get("training_tasks", ()) for n in used))
    jobs = list(_jobs(corpus, source_names, names, cuts, max_runs_per_task, seed, skip, bank))
    if not jobs:
        raise InvalidArgumentError(
            "no task left to score: every task of the corpus was used to train the learned "
            "models. Evaluate them on another corpus, or retrain holding tasks out."
        )
    scores: list[Score] = []
    for batch in run_jobs(_score_task, jobs, workers, progress, "eval"):
        scores.extend(batch)
    order = {m: i for i, m in enumerate(names)}
    scores.sort(key=lambda s: (s.source, s.run_id, order[s.model], s.cutoff))
    return scores, list(names)


def aggregate(
    scores: list[Score], model_order: Sequence[str]
) -> list[dict[str, float | int | str]]:
    """Per (source, model, cutoff): errors, ratios to the last value on the same runs,
    interval coverage, CRPS and median fit time."""
    grouped: dict[tuple[str, str, float], dict[str, Score]] = defaultdict(dict)
    for s in scores:
        grouped[(s.source, s.model, s.cutoff)][s.run_id] = s
    rows: list[dict[str, float | int | str]] = []
    order = {m: i for i, m in enumerate(model_order)}
    for source, model, cutoff in sorted(grouped, key=lambda k: (k[0], order.get(k[1], 99), k[2])):
        mine = grouped[(source, model, cutoff)]
        base = grouped.get((source, BASELINE, cutoff), {})
        common = [r for r in mine if r in base]
        err = np.array([mine[r].abs_error for r in mine])
        err_c = np.array([mine[r].abs_error for r in common])
        base_c = np.array([base[r].abs_error for r in common])
        rows.append(
            {
                "source": source,
                "model": model,
                "cutoff": cutoff,
                "n_runs": len(mine),
                "mae": float(err.mean()),
                "medae": float(np.median(err)),
                "mae_ratio_vs_last_value": _ratio(err_c.mean(), base_c.mean())
                if common
                else math.nan,
                "medae_ratio_vs_last_value": _ratio(np.median(err_c), np.median(base_c))
                if common
                else math.nan,
                "coverage_50": float(np.mean([s.in_50 for s in mine.values()])),
                "coverage_90": float(np.mean([s.in_90 for s in mine.values()])),
                "crps": float(np.mean([s.crps for s in mine.values()])),
                "fit_ms_median": float(np.median([s.fit_ms for s in mine.values()])),
                "n_fallback": sum(s.fell_back for s in mine.values()),
                "fallback_why": next((s.fallback_note for s in mine.values() if s.fell_back), ""),
            }
        )
    return rows


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return float(a / b)
    return 1.0 if a == 0 else math.inf


_COLUMNS = (  # (header, key)
    ("source", "source"),
    ("model", "model"),
    ("cutoff", "cutoff"),
    ("n_runs", "n_runs"),
    ("mae", "mae"),
    ("medae", "medae"),
    ("mae/lv", "mae_ratio_vs_last_value"),
    ("medae/lv", "medae_ratio_vs_last_value"),
    ("cov50", "coverage_50"),
    ("cov90", "coverage_90"),
    ("crps", "crps"),
    ("fit_ms", "fit_ms_median"),
    ("fallback", "n_fallback"),
)


def format_table(rows: list[dict[str, float | int | str]]) -> str:
    """The results as an aligned text table (text columns left, numbers right)."""
    table = [[h for h, _ in _COLUMNS]] + [
        [_fmt(r[k]) if k != "n_fallback" else _fallback(r) for _, k in _COLUMNS] for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    out = "\n".join(line.rstrip() for line in lines)
    why = sorted({str(r.get("fallback_why", "")) for r in rows if r.get("n_fallback")})
    if why:
        out += (
            "\n* fallback: forecasts in the row where the model fell back to a simpler one, "
            "not its own forecast; e.g. " + " | ".join(w for w in why[:3] if w)
        )
    return out


def _fallback(row: dict[str, float | int | str]) -> str:
    """ "-" when none fell back, else the count marked with *."""
    n = int(row.get("n_fallback", 0))
    return f"{n} of {row['n_runs']} *" if n else "-"


def _fmt(v: float | int | str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
