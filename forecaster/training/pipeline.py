"""`train_all`: the training steps in order, from a corpus to OUT/<name>/ for each model."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from forecaster.corpus.reader import Source, sources
from forecaster.errors import InvalidArgumentError
from forecaster.training import fit, report
from forecaster.training.examples import PARTS, Examples, build_examples, prior_examples
from forecaster.training.fit import Say
from forecaster.training.report import Metrics


def train_all(
    corpus: str | Path,
    out: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    holdout_sources: Sequence[str] = (),
    max_runs_per_task: int = 60,
    synthetic_tasks: int = 150,
    pretrain_epochs: int = 6,
    finetune_epochs: int = 10,
    gbm_rounds: int = 300,
    seed: int = 0,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    example_index: bool = False,
    example_cache: str | Path | None = None,
    calibration_runs_per_task: int = 10,
) -> Metrics:
    """Trains gbm, sequence and ensemble on the corpus and writes OUT/<name>/ for each, then
    the conformal tables of every served forecaster (OUT/calibration/, training/calibrate.py)
    from calibration_runs_per_task runs of each task of the same sources.
    Returns the held-out metrics (z units) per model and source.

    holdout_sources: sources left out whole (leave-one-source-out). They are dropped here,
    where the corpus is read, so no later step (examples, fits, stacking, calibration) can
    see them; every artifact's meta.json lists them. example_index: also write
    OUT/training_examples.parquet, the run behind every example of every set. example_cache:
    a folder where each task's examples are kept and reused (banks of overlapping sources)."""
    started = time.perf_counter()
    srcs = training_sources(corpus, source_names, holdout_sources)
    say = _say(progress)
    held = f" (held out: {', '.join(sorted(holdout_sources))})" if holdout_sources else ""
    say(f"corpus {corpus}: {', '.join(s.name for s in srcs)}{held}")
    cache = Path(example_cache) if example_cache is not None else None
    with fit.reproducible():
        (train, calib, test), tasks = _corpus_examples(
            srcs, max_runs_per_task, seed, split_seed, workers, progress, say, cache
        )
        gbm_model = fit.fit_gbm(train, rounds=gbm_rounds, seed=seed, say=say)
        prior = prior_examples(
            synthetic_tasks,
            seed=seed,
            split_seed=split_seed,
            workers=workers,
            progress=progress,
            cache=cache,
        )
        seq_model = fit.fit_sequence(
            prior,
            train,
            pretrain_epochs=pretrain_epochs,
            finetune_epochs=finetune_epochs,
            seed=seed,
            say=say,
        )
        ens = fit.fit_ensemble(gbm_model, seq_model, calib, say=say)
        metrics = report.heldout_metrics(report.heldout_predictions(ens, test), test)
    meta = report.artifact_meta(
        srcs,
        tasks,
        metrics,
        {"train": len(train), "calib": len(calib), "test": len(test), "synthetic": len(prior)},
        {
            "max_runs_per_task": max_runs_per_task,
            "seed": seed,
            "synthetic_tasks": synthetic_tasks,
            "pretrain_epochs": pretrain_epochs,
            "finetune_epochs": finetune_epochs,
            "gbm_rounds": gbm_rounds,
        },
        split_seed,
        holdout_sources,
    )
    report.write_artifacts(Path(out), ens, meta)
    if example_index:
        sets = {"train": train, "calib": calib, "test": test, "prior": prior}
        say(f"example index: {report.write_example_index(Path(out), sets)}")
    _calibrate(
        corpus,
        out,
        srcs,
        calibration_runs_per_task,
        seed,
        split_seed,
        workers,
        progress,
        holdout_sources,
    )
    say(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return metrics


def training_sources(
    corpus: str | Path, source_names: Sequence[str] | None, holdout_sources: Sequence[str]
) -> list[Source]:
    """The sources training reads: those named (default: all) less the held-out ones."""
    srcs = sources(corpus, source_names)
    held = set(holdout_sources)
    unknown = sorted(held - {s.name for s in srcs})
    if unknown:
        raise InvalidArgumentError(
            f"--holdout-source {', '.join(unknown)}: no such source among "
            f"{', '.join(s.name for s in srcs)} in {corpus}."
        )
    kept = [s for s in srcs if s.name not in held]
    if not kept:
        raise InvalidArgumentError(
            "every source is held out: leave at least one source to train on."
        )
    return kept


def _calibrate(
    corpus: str | Path,
    out: str | Path,
    srcs: Sequence[Source],
    runs_per_task: int,
    seed: int,
    split_seed: int,
    workers: int | None,
    progress: bool,
    holdout_sources: Sequence[str],
) -> None:
    """The last step: the tables of the models just written, from the same sources (a source
    left out of training is left out of them too)."""
    from forecaster.models.artifacts import ModelBank
    from forecaster.training import calibrate

    rows = calibrate.collect(
        corpus,
        source_names=[s.name for s in srcs],
        bank=ModelBank.load(str(out)),
        max_runs_per_task=runs_per_task,
        seed=seed,
        split_seed=split_seed,
        workers=workers,
        progress=progress,
    )
    settings = {"max_runs_per_task": runs_per_task, "seed": seed, "split_seed": split_seed,
                "cutoffs": list(calibrate.CUTOFFS)}  # fmt: skip
    calibrate.write(out, rows, srcs, settings, holdout_sources)


def _corpus_examples(
    srcs: Sequence[Source],
    max_runs_per_task: int,
    seed: int,
    split_seed: int,
    workers: int | None,
    progress: bool,
    say: Say,
    cache: Path | None,
) -> tuple[tuple[Examples, Examples, Examples], dict[str, list[str]]]:
    """The train, calib and test examples of the corpus, and the task keys of each part."""
    data, tasks = build_examples(
        srcs, max_runs_per_task, seed, split_seed, PARTS, workers, progress, "examples",
        cache=cache,
    )  # fmt: skip
    for part in PARTS:
        if part not in data:
            raise InvalidArgumentError(
                f"the corpus has no {part} tasks: it needs at least 3 tasks in one source "
                "(tasks are split per source: 20% test, 20% calib, the rest train)."
            )
        say(f"{part}: {len(data[part])} examples from {len(tasks.get(part, []))} tasks")
    return (data["train"], data["calib"], data["test"]), tasks


def _say(progress: bool) -> Say:
    def say(text: str) -> None:
        if progress:
            print(f"[train] {text}", file=sys.stderr, flush=True)

    return say
