"""What the evaluations share: the tasks of a corpus with their runs in a seeded order, and
running jobs (one task each) on a process pool with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from forecaster.corpus.reader import Source, sources
from forecaster.hashing import seed_of

if TYPE_CHECKING:
    from forecaster.batch.engines import Engine

J = TypeVar("J")
R = TypeVar("R")


def run_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int | None,
    progress: bool,
    desc: str,
    engine: Engine | None = None,
) -> Iterator[R]:
    """fn(job) for each job, results as they complete; in this process when workers <= 1.
    With an engine (the batch's: `forecaster.batch.engines`, e.g. Ray), on it, in job order."""
    from tqdm import tqdm

    workers = workers or min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs), desc=desc, unit="task", disable=not progress, leave=False)
    try:
        if engine is not None:
            for result in engine.map(fn, jobs):
                yield result
                bar.update()
            return
        if workers <= 1:
            from forecaster.batch.engines import single_threaded

            with single_threaded():  # as a worker process is (_one_thread)
                for job in jobs:
                    yield fn(job)
                    bar.update()
            return
        # spawn, not fork: polars' thread pool does not survive a fork (workers would hang).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
            futures = [pool.submit(fn, job) for job in jobs]
            for future in as_completed(futures):
                yield future.result()
                bar.update()
    finally:
        bar.close()


def _one_thread() -> None:
    """A worker's numeric libraries on one thread: the variables for those loaded later, and
    threadpoolctl for those numpy already loaded (a spawned worker imports numpy before its
    initializer runs), so that a result does not depend on how busy the machine is."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def sample_tasks(
    corpus: str | Path, source_names: Sequence[str] | None, max_runs_per_task: int, seed: int
) -> Iterator[tuple[Source, str, list[str], list[str]]]:
    """(source, task, every run id in a seeded order, the first max_runs_per_task of them)
    for each task of the corpus; the order depends on the seed and the task, not on the rest
    of the corpus."""
    for source in sources(corpus, source_names):
        runs = source.runs().sort("run_id")
        for (task,), frame in runs.group_by("task", maintain_order=True):
            ids = frame["run_id"].to_list()
            rng = np.random.default_rng([seed, seed_of(f"{source.name}/{task}")])
            order = [ids[i] for i in rng.permutation(len(ids))]
            chosen = order[:max_runs_per_task] if max_runs_per_task > 0 else order
            yield source, str(task), order, chosen
