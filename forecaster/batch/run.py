"""A batch from its input to its results file: plan the studies, cut them into jobs, run the
jobs on an engine, write their rows in job order."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forecaster import models
from forecaster.batch import engines
from forecaster.batch.inputs import BatchInput
from forecaster.batch.output import ResultsWriter
from forecaster.batch.study import JudgeSpec, StudyJob, plan_jobs, run_job_table
from forecaster.errors import InvalidArgumentError
from forecaster.models.artifacts import ModelBank

RUNS_PER_JOB = 256  # a job judges this many runs of a study (reading the whole study)
ROW_GROUP_ROWS = 4096


@dataclass(frozen=True)
class BatchSummary:
    rows: int
    runs: int
    skipped_runs: int  # written before a --resume
    seconds: float

    @property
    def runs_per_s(self) -> float:
        return (self.runs - self.skipped_runs) / self.seconds if self.seconds > 0 else 0.0


def run_batch(
    input: BatchInput,
    out: str | Path,
    spec: JudgeSpec,
    *,
    engine: engines.Engine | None = None,
    models_dir: str = "",
    runs_per_job: int = RUNS_PER_JOB,
    row_group_rows: int = ROW_GROUP_ROWS,
    resume: bool = False,
    progress: bool = True,
    on_job: Callable[[int], None] | None = None,
) -> BatchSummary:
    """Forecasts and judges every run of input (at spec's cutoffs) into the Parquet file out.

    models_dir: the learned models, as the service's setting ("": the shipped ones, "none":
    none); loaded only when the model is "auto" or a learned one, and passed to the workers.
    on_job: called with each job's index once its rows are written (progress hooks, tests).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    name = models.check_name(spec.model)
    if runs_per_job < 1 or row_group_rows < 1:
        raise InvalidArgumentError("runs per job and rows per group must be >= 1.")
    # Lazy: the workers load it (once each); this process only when it runs the jobs itself.
    learned = name == models.AUTO or models.is_learned(name)
    bank = ModelBank.load(models_dir, lazy=True) if learned else None
    settings = {
        "input": input.describe(),
        "spec": asdict(spec),
        "models_dir": models_dir if bank is not None else "",
        "runs_per_job": runs_per_job,
        "row_group_rows": row_group_rows,
    }
    writer = ResultsWriter.open(Path(out), settings, row_group_rows, resume=resume)
    studies = [(p.source, p.task, p.run_ids) for p in input.plan()]
    jobs = plan_jobs(studies, input, spec, bank, runs_per_job)
    total_runs = sum(len(j.judged) for j in jobs)
    todo = [j for j in jobs if j.index >= writer.next_job]
    skipped = total_runs - sum(len(j.judged) for j in todo)
    engine = engine or engines.LocalEngine()
    bar = tqdm(
        total=total_runs,
        initial=skipped,
        desc="batch",
        unit="run",
        disable=not progress,
        smoothing=0.1,
    )
    try:
        for job, rows in zip(todo, engine.map(run_job_table, todo), strict=True):
            writer.add(job.index, rows)
            bar.update(len(job.judged))
            if on_job is not None:
                on_job(job.index)
        n_rows = writer.finish()
    finally:
        bar.close()
    return BatchSummary(n_rows, total_runs, skipped, time.perf_counter() - started)


def jobs_of(input: BatchInput, spec: JudgeSpec, runs_per_job: int = RUNS_PER_JOB) -> list[StudyJob]:
    """The jobs a batch would run (no models loaded): for benchmarks and tests."""
    studies = [(p.source, p.task, p.run_ids) for p in input.plan()]
    return plan_jobs(studies, input, spec, None, runs_per_job)


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings a results file was made with (its Parquet metadata)."""
    import json

    import pyarrow.parquet as pq

    from forecaster.batch.output import METADATA_KEY

    meta = pq.read_schema(path).metadata or {}
    return dict(json.loads(meta.get(METADATA_KEY, b"{}")))
