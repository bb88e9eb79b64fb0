"""Training examples: each sampled run of a task cut at several fractions of its final step.

An example set is an `Examples`: named arrays with one row per example (a cut run), built per
task in a worker process and concatenated per part (train, calib, test) with the weights that
make each source count the same, and each task the same within its source.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from forecaster.corpus import splits
from forecaster.corpus.reader import Source, sources
from forecaster.curves import FloatArray
from forecaster.errors import InvalidArgumentError
from forecaster.evaluation.pool import run_jobs
from forecaster.hashing import seed_of
from forecaster.models import features

N_QUERIES = 4  # the final step and up to three logged steps between the cut and it
EVAL_CUTOFFS = (0.1, 0.2, 0.3, 0.5)
PARTS = ("train", "calib", "test")

StrArray = npt.NDArray[np.str_]


@dataclass(frozen=True)
class Examples:
    """Examples of one part (or task): arrays of one length, with each example's source and
    weight. `concat` joins sets, `select` keeps the rows of a mask."""

    x: FloatArray  # (n, len(features.FEATURE_NAMES)): the features
    seq: FloatArray  # (n, SEQ_LEN, 3): the normalised sequence
    queries: FloatArray  # (n, N_QUERIES, 2): query features of the steps zq is known at
    zq: FloatArray  # (n, N_QUERIES): z at the final step, then at later logged steps (or NaN)
    par: FloatArray  # (n, P, L): ensemble.PARAMETRIC_MEMBERS' quantiles (calib and test)
    progress: FloatArray  # (n,): the first feature, last step / budget
    cutoff: FloatArray  # (n,): the fraction of the final step the run was cut at
    sched: FloatArray  # (n,): 1.0 where the schedule laws apply (a loss whose lr is known)
    source: StrArray  # (n,)
    task: StrArray  # (n,): "source/task"
    run: StrArray  # (n,): the run_id each example was cut from (what an audit of a set reads)
    weight: FloatArray  # (n,)

    @property
    def z(self) -> FloatArray:
        """z at the final step: what the models forecast."""
        return np.asarray(self.zq[:, 0])

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def concat(cls, parts: Sequence[Examples]) -> Examples:
        """The rows of every part, in order (weights as they are)."""
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def select(self, mask: npt.NDArray[np.bool_]) -> Examples:
        """The rows where mask is true."""
        return replace(self, **{f.name: getattr(self, f.name)[mask] for f in fields(self)})


@dataclass(frozen=True)
class TaskExamples:
    """What a worker returns for one task: its examples, None when no run gave a usable cut."""

    source: str
    task: str
    part: str
    examples: Examples | None


class _Row(NamedTuple):
    """One example while a task's examples are collected."""

    run: str
    x: FloatArray
    seq: FloatArray
    queries: FloatArray
    zq: FloatArray
    par: FloatArray
    progress: float
    cutoff: float
    sched: float


def _stack(rows: Sequence[_Row], source: str, task: str) -> Examples:
    n = len(rows)
    return Examples(
        x=np.stack([r.x for r in rows]),
        seq=np.stack([r.seq for r in rows]),
        queries=np.stack([r.queries for r in rows]),
        zq=np.stack([r.zq for r in rows]),
        par=np.stack([r.par for r in rows]),
        progress=np.asarray([r.progress for r in rows], dtype=np.float64),
        cutoff=np.asarray([r.cutoff for r in rows], dtype=np.float64),
        sched=np.asarray([r.sched for r in rows], dtype=np.float64),
        source=np.full(n, source),
        task=np.full(n, f"{source}/{task}"),
        run=np.asarray([r.run for r in rows]),
        weight=np.ones(n),
    )


@dataclass(frozen=True)
class _Job:
    source: Source
    task: str
    part: str
    run_ids: tuple[str, ...]
    seed: int
    with_power_law: bool


def _cutoffs(rng: np.random.Generator, part: str) -> list[float]:
    if part == "test":
        return list(EVAL_CUTOFFS)
    jitter = rng.uniform(-0.04, 0.04, size=len(EVAL_CUTOFFS))
    return [*(np.asarray(EVAL_CUTOFFS) + jitter).tolist(), float(rng.uniform(0.05, 0.9))]


def _task_examples(job: _Job) -> TaskExamples:
    """Every example of one task (runs with a finite final value and a usable cut)."""
    from forecaster.models import ensemble
    from forecaster.models.annealing_law import schedule_known
    from forecaster.models.base import StudyHistory
    from forecaster.models.sequence import query_features

    rng = np.random.default_rng([job.seed, seed_of(f"{job.source.name}/{job.task}")])
    rows: list[_Row] = []
    runs = [
        r
        for r in job.source.load(list(job.run_ids))
        if len(r.steps) and math.isfinite(r.final_value)
    ]
    # A run's study history (what the schedule laws learn from): the task's completed runs of
    # the other fold, as in evaluation/accuracy.py, so that no run sees itself.
    histories = [
        StudyHistory(
            tuple(r.curve() for r in runs[1 - fold :: 2]) if job.with_power_law else (),
            f"train/{job.seed}/{job.source.name}/{job.task}/fold{fold}",
        )
        for fold in (0, 1)
    ]
    for i, run in enumerate(runs):
        final_loss = run.final_value * run.direction.sign
        loss = run.values * run.direction.sign
        for cut in _cutoffs(rng, job.part):
            curve = run.curve(until_step=int(math.floor(cut * run.final_step)))
            if features.usable(curve) is not None:
                continue
            f = features.extract(curve)
            frame = f.frame
            later = np.flatnonzero(
                (run.steps > frame.last_step) & (run.steps < run.final_step) & np.isfinite(loss)
            )
            picks = rng.choice(later, size=min(N_QUERIES - 1, len(later)), replace=False)
            q_steps = np.full(N_QUERIES, float(frame.horizon))
            q_z = np.full(N_QUERIES, np.nan)
            q_z[0] = float(frame.scaled(final_loss))
            q_steps[1 : 1 + len(picks)] = run.steps[picks]
            q_z[1 : 1 + len(picks)] = frame.scaled(loss[picks])
            rows.append(
                _Row(
                    run=run.run_id,
                    x=f.features,
                    seq=f.sequence,
                    queries=query_features(frame, q_steps),
                    zq=np.clip(q_z, -features.Z_CLIP, features.Z_CLIP),
                    par=(
                        ensemble.parametric_z(curve, frame, histories[i % 2])
                        if job.with_power_law
                        else np.full(
                            (len(ensemble.PARAMETRIC_MEMBERS), len(features.LEVELS)), np.nan
                        )
                    ),
                    progress=f.features[0],
                    cutoff=cut,
                    sched=float(schedule_known(curve)),
                )
            )
    examples = _stack(rows, job.source.name, job.task) if rows else None
    return TaskExamples(job.source.name, job.task, job.part, examples)


def combine(tasks: Sequence[TaskExamples]) -> Examples:
    """The examples of tasks, weighted so that each source counts the same and each task the
    same within its source (mean weight 1)."""
    parts = [(t.source, t.examples) for t in tasks if t.examples is not None]
    if not parts:
        raise InvalidArgumentError("no usable examples: the runs are too short or diverged.")
    per_source: dict[str, int] = defaultdict(int)
    for source, _ in parts:
        per_source[source] += 1
    w = np.concatenate([np.full(len(ex), 1.0 / (per_source[s] * len(ex))) for s, ex in parts])
    return replace(Examples.concat([ex for _, ex in parts]), weight=w / w.mean())


def build_examples(
    srcs: Sequence[Source],
    max_runs_per_task: int,
    seed: int,
    split_seed: int,
    parts: Sequence[str],
    workers: int | None,
    progress: bool,
    desc: str,
    power_law: bool = True,
    cache: Path | None = None,
) -> tuple[dict[str, Examples], dict[str, list[str]]]:
    """Examples per part, and the task keys in each part; the power-law ensemble's forecast
    (what the ensemble stacks) is computed for the calib and test examples when power_law.

    cache: a folder of each task's examples by everything they depend on (`_TaskCache`), so
    that banks trained on overlapping sources (leave-one-source-out) cut each task once."""
    jobs: list[_Job] = []
    keys: dict[str, list[str]] = defaultdict(list)
    for source in srcs:
        runs = source.runs().sort("run_id")
        by_task = {
            str(t): f["run_id"].to_list() for (t,), f in runs.group_by("task", maintain_order=True)
        }
        assignment = splits.split_tasks(source.name, by_task, seed=split_seed)
        for task, ids in by_task.items():
            part = assignment[task]
            keys[part].append(splits.task_key(source.name, task))
            if part not in parts:
                continue
            rng = np.random.default_rng([seed, seed_of(f"{source.name}/{task}")])
            chosen = [ids[i] for i in rng.permutation(len(ids))[:max_runs_per_task]]
            jobs.append(
                _Job(source, task, part, tuple(chosen), seed, power_law and part != "train")
            )
    # Workers hand tasks back as they finish: put them in job order, so that the examples (and
    # the models trained on them) are the same for any number of workers.
    order = {(job.source.name, job.task): i for i, job in enumerate(jobs)}
    store = _TaskCache(cache) if cache is not None else None
    cached = [store.get(job) for job in jobs] if store else [None] * len(jobs)
    todo = [job for job, hit in zip(jobs, cached, strict=True) if hit is None]
    fresh = list(run_jobs(_task_examples, todo, workers, progress, desc))
    if store:
        done = {(r.source, r.task): r for r in fresh}
        for job in todo:
            store.put(job, done[(job.source.name, job.task)])
    results = sorted(
        [hit for hit in cached if hit is not None] + fresh,
        key=lambda r: order[(r.source, r.task)],
    )
    by_part = {
        p: combine([r for r in results if r.part == p])
        for p in parts
        if any(r.part == p and r.examples is not None for r in results)
    }
    return by_part, dict(keys)


class _TaskCache:
    """One task's examples on disk (an .npz of the `Examples` arrays), named by the digest of
    everything `_task_examples` reads: the source's fingerprint, the task, its part, the runs
    sampled, the seed, whether the parametric forecasts are computed, and the code of the
    models and of training. Only the jobs of the sources a training reads are ever looked up,
    so a source held out is no more seen through the cache than through the corpus."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fingerprints: dict[Path, str] = {}

    def _path(self, job: _Job) -> Path:
        from forecaster.hashing import digest
        from forecaster.training.report import code_digest, fingerprint

        src = job.source
        if src.path not in self._fingerprints:
            self._fingerprints[src.path] = fingerprint([src])
        key = [self._fingerprints[src.path], src.name, job.task, job.part, list(job.run_ids),
               job.seed, job.with_power_law, code_digest()]  # fmt: skip
        return self.folder / f"{digest(repr(key))}.npz"

    def get(self, job: _Job) -> TaskExamples | None:
        path = self._path(job)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            if "empty" in data.files:
                return TaskExamples(job.source.name, job.task, job.part, None)
            ex = Examples(**{f.name: data[f.name] for f in fields(Examples)})
        return TaskExamples(job.source.name, job.task, job.part, ex)

    def put(self, job: _Job, result: TaskExamples) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(job)
        tmp = path.with_name(path.stem + ".partial.npz")
        if result.examples is None:
            np.savez(tmp, empty=np.zeros(0))
        else:
            np.savez(tmp, **{f.name: getattr(result.examples, f.name) for f in fields(Examples)})
        tmp.replace(path)


def prior_examples(
    n_tasks: int,
    *,
    seed: int,
    split_seed: int,
    workers: int | None,
    progress: bool,
    cache: Path | None = None,
) -> Examples:
    """Examples of n_tasks synthetic tasks of 20 runs (corpus/synthetic.py), every part: what
    sequence is pre-trained on."""
    from forecaster.corpus import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        syn_dir = synthetic.write_corpus(Path(tmp) / "synthetic", n_tasks, 20, seed=seed)
        syn, _ = build_examples(
            sources(syn_dir),
            20,
            seed,
            split_seed,
            PARTS,
            workers,
            progress,
            "synthetic",
            power_law=False,
            cache=cache,
        )
    return Examples.concat(list(syn.values()))
