"""Leave-one-source-out (LOSO): each source scored by a bank that never saw any of it.

For each source scored, a bank (gbm, sequence, the ensemble's weights and interval deltas, and
whatever else `training.train_all` trains) is trained on the corpus without that source
(`train_all(holdout_sources=[source])`, which drops it where the corpus is read) and the
source's runs are forecast with it: the learned models, and everything the parametric ones
take from a bank, and `auto`'s choice, come from the bank that did not see the source.

Training eight banks on two cores is the cost, so LOSO trains small ones (`LosoTraining`: fewer
runs per task, a smaller synthetic prior, fewer epochs and rounds) and keeps each in a cache
folder named by everything it depends on: the training sources' fingerprint, the held-out
sources, the training settings, and the code that trains and serves the models. A bank whose
name matches is reused; anything else trains a new one. Each task's examples are kept too
(`training.examples._TaskCache`): the banks of one evaluation share six of seven sources, so
each task is cut once; a held-out source's tasks are never looked up, since its runs never
become a training job.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forecaster.corpus import splits
from forecaster.corpus.reader import sources
from forecaster.errors import FailedPreconditionError, InvalidArgumentError
from forecaster.evaluation.accuracy import DEFAULT_CUTOFFS, DEFAULT_MODELS, Score, score_corpus
from forecaster.hashing import digest

PROTOCOLS = ("in-distribution", "loso")
DONE = "loso.json"  # written last into a cached bank: what it was trained with


@dataclass(frozen=True)
class LosoTraining:
    """How each bank of a LOSO evaluation is trained: `forecaster train`'s settings, smaller
    (a bank in a few minutes on two cores rather than an hour)."""

    max_runs_per_task: int = 12
    synthetic_tasks: int = 40
    pretrain_epochs: int = 2
    finetune_epochs: int = 4
    gbm_rounds: int = 120
    seed: int = 0
    split_seed: int = 0


def default_cache() -> Path:
    """Where banks are kept between evaluations: the user's cache folder."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("forecaster")) / "loso"


def bank_key(corpus: str | Path, holdout: Sequence[str], training: LosoTraining) -> dict[str, Any]:
    """Everything a bank trained without `holdout` depends on."""
    from forecaster.training.pipeline import training_sources
    from forecaster.training.report import code_digest, fingerprint

    srcs = training_sources(corpus, None, holdout)
    return {
        "holdout_sources": sorted(holdout),
        "training_sources": [s.name for s in srcs],
        "corpus_fingerprint": fingerprint(srcs),
        "training": asdict(training),
        "code": code_digest(),
    }


def bank_for(
    corpus: str | Path,
    holdout: Sequence[str],
    training: LosoTraining,
    cache: str | Path,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """The folder of a bank trained on the corpus without the holdout sources: from the cache
    when one was trained with the same key, else trained now (into a temporary folder, moved
    into place when complete, so an interrupted training is never reused)."""
    from forecaster.training import train_all

    key = bank_key(corpus, holdout, training)
    name = "-".join(key["holdout_sources"]) or "all-sources"
    folder = Path(cache) / f"{name}-{digest(json.dumps(key, sort_keys=True))[:16]}"
    if (folder / DONE).exists():
        if progress:
            what = f"without {name}" if holdout else "trained on every source"
            print(f"[loso] reusing the bank {what}: {folder}", file=sys.stderr)
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    train_all(
        corpus,
        partial,
        holdout_sources=list(holdout),
        max_runs_per_task=training.max_runs_per_task,
        synthetic_tasks=training.synthetic_tasks,
        pretrain_epochs=training.pretrain_epochs,
        finetune_epochs=training.finetune_epochs,
        gbm_rounds=training.gbm_rounds,
        seed=training.seed,
        split_seed=training.split_seed,
        workers=workers,
        progress=progress,
        example_index=True,
        example_cache=Path(cache) / "examples",
    )
    (partial / DONE).write_text(json.dumps(key, indent=1, sort_keys=True))
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return folder


def score_loso(
    corpus: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    model_names: Sequence[str] = DEFAULT_MODELS,
    cutoffs: Sequence[float] = DEFAULT_CUTOFFS,
    max_runs_per_task: int = 50,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    training: LosoTraining | None = None,
    cache: str | Path | None = None,
    skip_tasks: Collection[str] = (),
) -> tuple[list[Score], list[str], dict[str, Path]]:
    """Every forecast of every model on the runs of each source scored (default: all), each
    source by the bank trained without it; the model names in report order; and the bank
    folder each source was scored with. Arguments as for `score_corpus`; training: how the
    banks are trained (default `LosoTraining()`); cache: where they are kept (default
    `default_cache()`)."""
    from tqdm import tqdm

    every = [s.name for s in sources(corpus)]
    scored = list(source_names) if source_names else every
    sources(corpus, scored)  # a clear error for a source the corpus does not have
    folds = [(train, held) for train, held in splits.leave_one_source_out(every) if held in scored]
    training = training or LosoTraining()
    cache = Path(cache) if cache is not None else default_cache()
    scores: list[Score] = []
    names: list[str] = []
    banks: dict[str, Path] = {}
    bar = tqdm(total=len(folds), desc="loso", unit="source", disable=not progress)
    try:
        for _, held in folds:
            bar.set_postfix_str(held)
            folder = bank_for(corpus, [held], training, cache, workers=workers, progress=progress)
            _check_held_out(folder, held)
            fold_scores, names = score_corpus(
                str(corpus),
                source_names=[held],
                model_names=model_names,
                cutoffs=cutoffs,
                max_runs_per_task=max_runs_per_task,
                seed=seed,
                workers=workers,
                progress=progress,
                models_dir=str(folder),
                skip_tasks=skip_tasks,
            )
            scores.extend(fold_scores)
            banks[held] = folder
            bar.update()
    finally:
        bar.close()
    return scores, names, banks


def _check_held_out(folder: Path, source: str) -> None:
    """Refuses a bank whose artifacts do not all say they were trained without source."""
    metas = sorted(folder.glob("*/meta.json"))
    if not metas:
        raise FailedPreconditionError(f"the LOSO bank {folder} holds no artifact; delete it.")
    for meta_file in metas:
        meta = json.loads(meta_file.read_text())
        if source not in meta.get("holdout_sources", ()) or source in meta.get(
            "corpus_sources", ()
        ):
            raise FailedPreconditionError(
                f"{meta_file} was not trained without {source}: delete {folder} and rerun."
            )


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise InvalidArgumentError(
            f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}."
        )
    return protocol
