"""A task replayed as a study: runs arrive, report their points in batches and are judged
after each report through `judging.judge`, the path the service takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from forecaster import models, policies
from forecaster.corpus.reader import LoggedRun, Source
from forecaster.curves import Curve, to_loss
from forecaster.errors import InvalidArgumentError
from forecaster.evaluation.pool import run_jobs, sample_tasks
from forecaster.evaluation.replay.optuna_driver import optuna_driver
from forecaster.evaluation.replay.score import TaskResult, score_task
from forecaster.evaluation.replay.settings import (
    DEFAULT_POLICIES,
    OPTUNA,
    Setting,
    parse_settings,
)
from forecaster.judging import (
    ForecastMemo,
    HistoryHolder,
    Standing,
    fit_forecast,
    judge,
    study_context,
)
from forecaster.models import Prediction, StudyHistory
from forecaster.models.artifacts import ModelBank
from forecaster.policies import Reason, RunView, StoppingPolicy
from forecaster.store import StoredDecision


@dataclass
class _Run:
    logged: LoggedRun
    curve: Curve  # the whole run, with its budget (its last step) and planned schedule
    batches: list[int]  # number of points seen after each report
    record: StoredDecision | None = None
    cached: tuple[int, Prediction | None] | None = None
    reported: int = 0  # reports made
    done: bool = False
    stop_reason: Reason | None = None
    trial: Any = None
    seen: Curve = field(init=False)  # what the service has been told so far

    def __post_init__(self) -> None:
        self.seen = self.curve.head(0)

    def advance(self) -> None:
        """The next report."""
        self.reported += 1
        self.seen = self.curve.head(self.batches[self.reported - 1])

    @property
    def kept(self) -> float:
        return float(to_loss(self.seen.last_value, self.curve.direction))


@dataclass(frozen=True)
class _Job:
    source: Source
    task: str
    run_ids: tuple[str, ...]
    settings: tuple[Setting, ...]
    parallel: int
    max_reports: int
    forecaster: str
    use_targets: bool
    bank: ModelBank | None  # the learned models (a worker process loads its own)


def _batches(n: int, max_reports: int) -> list[int]:
    if n <= max_reports:
        return list(range(1, n + 1))
    return [int(x) for x in np.unique(np.ceil(np.linspace(0, n, max_reports + 1)[1:]))]


def replay_task(job: _Job) -> list[TaskResult]:
    """Every setting on one task; forecasts are shared between settings (same prefix, same
    study history: same forecast)."""
    logged = [r for r in job.source.load(list(job.run_ids)) if len(r.steps)]
    if len(logged) < 1:
        return []
    memo: ForecastMemo = {}
    # The study histories (and the study fits they hold) are shared by the settings too.
    holder = HistoryHolder(f"{job.source.name}/{job.task}", keep=_HISTORIES_KEPT)
    return [_replay(job, logged, setting, memo, holder) for setting in job.settings]


_HISTORIES_KEPT = 256  # per task: the sets of completed runs the settings pass through


def _replay(
    job: _Job, logged: list[LoggedRun], setting: Setting, memo: ForecastMemo, holder: HistoryHolder
) -> TaskResult:
    direction = logged[0].direction
    target = logged[0].target if job.use_targets else None
    runs = [
        _Run(
            r,
            replace(r.curve(horizon=int(r.steps[-1])), target=target),
            _batches(len(r.steps), job.max_reports),
        )
        for r in logged
    ]
    budget = max(r.curve.horizon for r in runs)
    study = f"{job.source.name}/{job.task}"
    decide = None
    if setting.family in OPTUNA:
        decide = optuna_driver(setting, direction, budget, study)
    policy = None
    if decide is None and setting.family != "none":
        policy = policies.create(setting.family, dict(setting.params))

    def history() -> StudyHistory:
        done = [r for r in runs if r.done]
        return holder.get(
            ((r.logged.run_id, r.seen.last_step) for r in done), lambda: [r.seen for r in done]
        )

    def fit(run: _Run) -> Callable[[Curve], Prediction | None]:
        where = f"{study}/{run.logged.run_id}"
        return lambda head: fit_forecast(job.forecaster, head, history, where, job.bank, memo)

    def judge_run(policy: StoppingPolicy, run: _Run) -> Reason | None:
        others = [o for o in runs if o is not run and o.reported]
        context = study_context(
            study,
            direction,
            budget,
            target,
            (
                Standing.of(
                    o.logged.run_id, done=o.done, last_value=o.seen.last_value, decision=o.record
                )
                for o in others
            ),
            lambda: [o.seen for o in others],
        )
        view = RunView(study, run.logged.run_id, run.seen)
        judged = judge(policy, view, context, run.record, run.cached, fit(run))
        run.record = judged.record
        run.cached = (judged.record.fitted_points, judged.prediction)
        return judged.decision.reason if judged.decision.is_stop else None

    queue = list(runs)
    active: list[_Run] = []
    while queue or active:
        while queue and len(active) < job.parallel:
            run = queue.pop(0)
            active.append(run)
        for run in list(active):
            run.advance()
            finished = run.reported == len(run.batches)
            reason: Reason | None = None
            if decide is not None:
                reason = decide(run, finished)
            elif policy is not None:
                reason = judge_run(policy, run)
            if reason is not None or finished:
                run.done = True
                # A verdict at the last point saves nothing: the run ran to its end.
                run.stop_reason = None if finished else reason
                active.remove(run)
    return score_task(job.source.name, job.task, setting, runs)


# -- the corpus --------------------------------------------------------------------------------


def _jobs(
    corpus: str | Path,
    source_names: Sequence[str] | None,
    settings: Sequence[Setting],
    max_runs_per_task: int,
    parallel: int,
    seed: int,
    max_reports: int,
    forecaster: str,
    use_targets: bool,
    bank: ModelBank | None,
) -> Iterator[_Job]:
    for source, task, _, chosen in sample_tasks(corpus, source_names, max_runs_per_task, seed):
        if chosen:
            yield _Job(
                source=source,
                task=str(task),
                run_ids=tuple(chosen),
                settings=tuple(settings),
                parallel=parallel,
                max_reports=max_reports,
                forecaster=forecaster,
                use_targets=use_targets,
                bank=bank,
            )


def replay_corpus(
    corpus: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    policy_specs: Sequence[str] = DEFAULT_POLICIES,
    max_runs_per_task: int = 30,
    parallel: int = 4,
    seed: int = 0,
    max_reports: int = 100,
    forecaster: str = "",
    use_targets: bool = False,
    workers: int | None = None,
    progress: bool = True,
    models_dir: str = "",
    engine: str = "local",
    address: str | None = None,
) -> list[TaskResult]:
    """Every policy setting on every task of the corpus; one TaskResult per (task, setting).

    models_dir: the learned models, as the service's setting ("": the shipped ones, "none":
    none); loaded only when the forecaster is "auto" or a learned one.
    engine: "local" (workers processes) or "ray" (the batch's Ray engine, at address).

    The studies get the corpus targets only with use_targets: the figures measure how well a
    policy keeps the best run, which a study that wants a target (and stops every run that
    cannot reach it) does not aim at."""
    if parallel < 1:
        raise InvalidArgumentError(f"--parallel must be >= 1; got {parallel}.")
    if max_reports < 1:
        raise InvalidArgumentError(f"max_reports must be >= 1; got {max_reports}.")
    settings = parse_settings(policy_specs)
    name = models.check_name(forecaster)
    bank = ModelBank.load(models_dir) if name == models.AUTO or models.is_learned(name) else None
    jobs = list(
        _jobs(
            corpus,
            source_names,
            settings,
            max_runs_per_task,
            parallel,
            seed,
            max_reports,
            forecaster,
            use_targets,
            bank,
        )
    )
    from forecaster.batch import engines

    on = engines.create("ray", address=address) if engine == "ray" else None
    if engine not in engines.ENGINES:
        engines.create(engine)  # the error that names the engines
    out: list[TaskResult] = []
    for batch in run_jobs(replay_task, jobs, workers, progress, "replay", on):
        out.extend(batch)
    return out
