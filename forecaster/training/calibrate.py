"""The calibration step: cut the corpus's runs, forecast, collect scale-free residuals, and
write the tables (models/calibration.py) into a model folder as its `calibration/` artifact.

Which residuals a forecaster's table is built from (TABLE_PARTS): power_law learned nothing
from the corpus, so every task of the sources given counts;
the ensemble stacked on the calib tasks and its members trained on the train tasks, so only
its calib tasks count (its test tasks stay unseen, for `forecaster eval`). A forecaster's
residuals are collected where `auto` would serve it (its schedule law: a loss whose lr is known;
short_curve: 3-4 points; plateau: a metric on its starting plateau; ensemble: a run with a
budget), and power_law's everywhere; each row names what auto serves there (`served`). The
sources are the caller's: a leave-one-source-out training that removes a source removes it
from the tables too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecaster import models
from forecaster.corpus import splits
from forecaster.corpus.reader import Source, sources
from forecaster.evaluation.pool import run_jobs, sample_tasks
from forecaster.models import StudyHistory, features
from forecaster.models import calibration as cal
from forecaster.models.artifacts import ModelBank
from forecaster.models.base import AUTO_LAW

CUTOFFS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
RAW_LEVELS = (0.05, 0.25, 0.75, 0.95)  # the model's own 90% and 50% intervals, for comparison
_FOLDS = 2  # a run's study history comes from the other fold of its task (as in eval)
# Where each forecaster's residuals may come from, by task part (see the module doc). No table
# for the schedule laws (annealing_law, multi_power_law): their residuals come from 3-4
# sources of the corpus (the losses with a known lr), too few for a table that holds on a new
# one; measured leave-one-source-out the annealing law's tables did no better than its own
# intervals (docs/benchmarks.md, section calibration) and widened the intervals of clean
# curves absurdly (its own interval can be of width 0). The residuals of the law auto serves
# are still collected, for the benchmark.
# Besides power_law everywhere and the ensemble on its parts: the forecasters whose residuals are
# collected where auto serves them (for the benchmark's auto, and a table if TABLE_PARTS has one).
COLLECTED_WHERE_SERVED: tuple[str, ...] = (AUTO_LAW, "short_curve", "plateau")
TABLE_PARTS: Mapping[str, tuple[str, ...]] = {
    "power_law": ("train", "calib", "test"),
    "ensemble": ("calib",),
}


@dataclass(frozen=True)
class _Job:
    source: Source
    task: str
    part: str
    run_ids: tuple[str, ...]
    history_ids: tuple[str, ...]
    fold: int
    cutoffs: tuple[float, ...]
    ensemble_parts: tuple[str, ...]
    bank: ModelBank | None


def _task_residuals(job: _Job) -> list[dict[str, Any]]:
    runs = job.source.load(list(job.run_ids) + list(job.history_ids))
    targets, history_runs = runs[: len(job.run_ids)], runs[len(job.run_ids) :]
    history = StudyHistory(
        tuple(r.curve() for r in history_runs if len(r.steps)),
        f"calibrate/{job.source.name}/{job.task}/fold{job.fold}",
    )
    rows: list[dict[str, Any]] = []
    for run in targets:
        if not len(run.steps) or not math.isfinite(run.final_value):
            continue
        truth = float(run.final_value) * run.direction.sign  # loss view
        for cutoff in job.cutoffs:
            curve = run.curve(until_step=int(math.floor(cutoff * run.final_step)))
            scale, n_points = cal.unit_of(curve)
            if not n_points or not (scale > 0) or curve.last_step >= run.final_step:
                continue
            wanted = ["power_law"]
            choice = models.auto_choice(curve, job.bank)
            if choice in COLLECTED_WHERE_SERVED or (
                choice == "ensemble" and job.part in job.ensemble_parts
            ):
                wanted.append(choice)
            for name in wanted:
                prediction = models.create(name, curve, bank=job.bank).fit(curve, history)
                loss = prediction.sampler(np.array([float(run.final_step)]))[:, 0]
                loss = loss[np.isfinite(loss)]
                if not len(loss):
                    continue
                median, *raw = np.quantile(loss, (0.5, *RAW_LEVELS))
                usable = features.usable(curve) is None
                drop = features.extract(curve).features[8] if usable else np.nan
                rows.append(
                    {
                        "source": job.source.name,
                        "task": job.task,
                        "part": job.part,
                        "model": name,
                        "served": choice,  # what auto serves on this cut run
                        "cutoff": cutoff,
                        "run_id": run.run_id,
                        "progress": curve.last_step / run.final_step,
                        "n_points": n_points,
                        "r": (truth - float(median)) / scale,
                        "raw_in_50": bool(raw[1] <= truth <= raw[2]),
                        "raw_in_90": bool(raw[0] <= truth <= raw[3]),
                        "raw_w50": float(raw[2] - raw[1]) / scale,
                        "raw_w90": float(raw[3] - raw[0]) / scale,
                        "drop_50": float(drop),
                    }
                )
    return rows


def collect(
    corpus: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    bank: ModelBank | None = None,
    max_runs_per_task: int = 10,
    cutoffs: Sequence[float] = CUTOFFS,
    ensemble_parts: Sequence[str] = ("calib", "test"),
    seed: int = 0,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per (run, cutoff, forecaster) of the sampled runs of every task: its scale-free
    residual at the run's final step, where the cut stands, and whether the forecaster's own
    50%/90% intervals held the truth, and their width. bank: the learned models (None:
    parametric only). The ensemble's residuals are collected on ensemble_parts (its test tasks
    too, which no table uses, for the leave-one-source-out benchmark to score)."""
    jobs: list[_Job] = []
    for source, task, order, chosen in sample_tasks(corpus, source_names, max_runs_per_task, seed):
        parts = splits.split_tasks(source.name, _task_names(source), seed=split_seed)
        for fold in range(_FOLDS):
            mine = tuple(chosen[fold::_FOLDS])
            others = tuple(r for r in order if r not in set(mine))[:24]
            if mine:
                jobs.append(
                    _Job(source, task, parts[task], mine, others, fold, tuple(cutoffs),
                         tuple(ensemble_parts), bank)
                )  # fmt: skip
    rows: list[dict[str, Any]] = []
    for batch in run_jobs(_task_residuals, jobs, workers, progress, "calibrate"):
        rows.extend(batch)
    return sorted(
        rows, key=lambda r: (r["source"], r["task"], r["run_id"], r["cutoff"], r["model"])
    )


_TASK_NAMES: dict[str, list[str]] = {}


def _task_names(source: Source) -> list[str]:
    key = str(source.path)
    if key not in _TASK_NAMES:
        _TASK_NAMES[key] = [str(t) for t in source.runs()["task"].unique().to_list()]
    return _TASK_NAMES[key]


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows each forecaster's table may be built from (TABLE_PARTS)."""
    return [r for r in rows if r["part"] in TABLE_PARTS.get(str(r["model"]), ())]


def write(
    out: str | Path,
    rows: Sequence[Mapping[str, Any]],
    srcs: Sequence[Source],
    settings: Mapping[str, Any],
    holdout_sources: Sequence[str] = (),
) -> Path:
    """Builds the tables from rows and writes OUT/calibration/ (its meta lists the sources
    held out whole, as every artifact's does, so a leave-one-source-out bank can be checked)."""
    from forecaster.training.report import fingerprint

    calibration = cal.build(cal.as_residuals(table_rows(rows)))
    meta = {
        "corpus_fingerprint": fingerprint(srcs),
        "corpus_sources": [s.name for s in srcs],
        "holdout_sources": sorted(holdout_sources),
        "training_tasks": sorted(
            {splits.task_key(str(r["source"]), str(r["task"])) for r in table_rows(rows)}
        ),
        "settings": dict(settings),
    }
    return cal.save(out, calibration, meta)


def calibrate(
    corpus: str | Path,
    models_dir: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    max_runs_per_task: int = 10,
    seed: int = 0,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    residuals_out: str | Path | None = None,
) -> Path:
    """Collects the residuals of the forecasters served from models_dir (its learned models
    loaded from there) on the corpus and writes models_dir/calibration/; the residual rows go to
    residuals_out (Parquet) when given, for the benchmark to reuse."""
    srcs = sources(corpus, source_names)
    bank = ModelBank.load(str(models_dir))
    rows = collect(
        corpus,
        source_names=[s.name for s in srcs],
        bank=bank,
        max_runs_per_task=max_runs_per_task,
        seed=seed,
        split_seed=split_seed,
        workers=workers,
        progress=progress,
    )
    if residuals_out is not None:
        import polars as pl

        pl.DataFrame(rows).write_parquet(residuals_out)
    settings = {"max_runs_per_task": max_runs_per_task, "seed": seed, "split_seed": split_seed,
                "cutoffs": list(CUTOFFS)}  # fmt: skip
    return write(models_dir, rows, srcs, settings)


def rebuild(
    corpus: str | Path,
    models_dir: str | Path,
    residuals: str | Path,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """models_dir/calibration/ from the residual rows an earlier `calibrate` wrote
    (residuals_out), for the sources they hold: the tables again, without forecasting.
    settings: what that collection ran with (recorded in meta.json)."""
    import polars as pl

    rows = pl.read_parquet(residuals).to_dicts()
    names = sorted({str(r["source"]) for r in rows})
    recorded = {**dict(settings or {}), "cutoffs": sorted({float(r["cutoff"]) for r in rows})}
    return write(models_dir, rows, sources(corpus, names), recorded)
