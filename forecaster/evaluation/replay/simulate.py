"""A task replayed as a study: runs arrive, report their points in batches and are judged
after each report through `judging.judge`, the path the service takes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from forecaster import models, policies, ranking
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
    incumbent_of,
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
    resumed: bool = False  # a paused run the ranking resumed: not paused again
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
    # Stop everything once the runs have used this fraction of the steps of running every run
    # to its end (None: no cap); paused runs are resumed by the ranking while it lasts.
    compute_budget: float | None = None
    single_runs: bool = False  # each run alone, as a study of its own


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
    # The study histories (and the study fits they hold) are shared by the settings too, and
    # so are the histories whose runs the study fits read alike (HistoryHolder by_inputs).
    holder = HistoryHolder(f"{job.source.name}/{job.task}", keep=_HISTORIES_KEPT, by_inputs=True)
    if job.single_runs:  # each run alone: its own study, no peers, no incumbent
        return [
            replace(_replay(job, [r], setting, memo, holder), task=f"{job.task}/{r.run_id}")
            for r in logged
            for setting in job.settings
        ]
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

    def standings(run: _Run) -> list[Standing]:
        return [
            Standing.of(
                o.logged.run_id, done=o.done, last_value=o.seen.last_value, decision=o.record
            )
            for o in runs
            if o is not run and o.reported
        ]

    def judge_run(policy: StoppingPolicy, run: _Run) -> tuple[Reason | None, bool]:
        """The stop reason (None: go on) and whether the decision is PAUSE."""
        others = [o for o in runs if o is not run and o.reported]
        context = study_context(
            study, direction, budget, target, standings(run), lambda: [o.seen for o in others]
        )
        view = RunView(study, run.logged.run_id, run.seen)
        judged = judge(policy, view, context, run.record, run.cached, fit(run))
        run.record = judged.record
        run.cached = (judged.record.fitted_points, judged.prediction)
        d = judged.decision
        if d.is_pause and not run.resumed:
            return d.reason, True
        return (d.reason if d.is_stop else None), False

    def candidates_of(pool: list[_Run]) -> list[ranking.Candidate]:
        candidates = []
        for r in pool:
            values = r.seen.values[np.isfinite(r.seen.values)]
            best = float(to_loss(values, direction).min()) if len(values) else np.nan
            candidates.append(
                ranking.Candidate(
                    name=r.logged.run_id,
                    decision=None,
                    last_step=r.seen.last_step,
                    budget=r.curve.horizon,
                    best_value=float(to_loss(best, direction)),
                    prediction=r.cached[1] if r.cached is not None else None,
                    incumbent=incumbent_of(direction, standings(r)),
                )
            )
        return candidates

    def best_paused(paused: list[_Run]) -> _Run:
        """The paused run whose rest buys most per unit of compute (forecaster/ranking.py),
        as RankRuns would say."""
        first = ranking.rank(candidates_of(paused), direction)[0].name
        return next(r for r in paused if r.logged.run_id == first)

    def next_steps(run: _Run) -> int:
        """The steps the run's next report adds."""
        if run.reported >= len(run.batches):
            return 0
        head = run.curve.head(run.batches[run.reported])
        return max(head.last_step, 0) - (max(run.seen.last_step, 0) if run.reported else 0)

    def endgame(active: list[_Run], paused: list[_Run], left: float) -> _Run | None:
        """Under a budget, with a pausing policy: the run to finish alone once the budget
        left would no longer finish it if every active run reported once more (the ranking's
        finish_first); None while there is room."""
        pool = [r for r in (*active, *paused) if r.reported and r.cached is not None]
        top = ranking.finish_first(candidates_of(pool), direction, left)
        if top is None:
            return None
        run = next(r for r in pool if r.logged.run_id == top.name)
        others = sum(next_steps(r) for r in active if r is not run)
        return run if top.remaining_steps > left - others else None

    full = sum(max(r.curve.last_step, 0) for r in runs)
    cap = None if job.compute_budget is None else job.compute_budget * full
    used = 0.0
    queue = list(runs)
    active: list[_Run] = []
    paused: list[_Run] = []
    pausing = policy is not None and bool(getattr(policy, "pause", False))
    finishing = False  # the endgame: one run finishes on the budget left
    while queue or active or paused:
        while queue and len(active) < job.parallel:
            active.append(queue.pop(0))
        while paused and not queue and len(active) < job.parallel and cap is not None:
            run = best_paused(paused)  # freeze-thaw: compute left goes to the best paused run
            paused.remove(run)
            run.resumed = True
            active.append(run)
        if not active:  # paused runs that no budget resumes: they stay stopped
            for run in paused:
                run.done = True
            break
        if pausing and cap is not None and not finishing:
            last = endgame(active, paused, cap - used)
            if last is not None:  # the budget left goes to finishing one run
                finishing = True
                for r in active:
                    if r is not last:  # held for the budget's sake; cut unless resumed
                        r.stop_reason = Reason.BUDGET_EXHAUSTED
                        paused.append(r)
                if last in paused:
                    paused.remove(last)
                last.resumed = True
                active = [last]
                queue = []
        for run in list(active):
            if cap is not None and used >= cap:  # the budget is spent: every run ends here
                for r in (*active, *queue, *paused):
                    r.done = True
                    r.stop_reason = Reason.BUDGET_EXHAUSTED if r.reported else None
                active, queue, paused = [], [], []
                break
            before = max(run.seen.last_step, 0) if run.reported else 0
            run.advance()
            used += max(run.seen.last_step, 0) - before
            finished = run.reported == len(run.batches)
            reason: Reason | None = None
            pause = False
            if decide is not None:
                reason = decide(run, finished)
            elif policy is not None:
                reason, pause = judge_run(policy, run)
            if pause and not finished:
                run.stop_reason = reason  # a paused run that is never resumed was cut here
                active.remove(run)
                paused.append(run)
                continue
            if reason is not None or finished:
                run.done = True
                # A verdict at the last point saves nothing: the run ran to its end.
                run.stop_reason = None if finished else reason
                active.remove(run)
    return score_task(job.source.name, job.task, setting, runs, budgeted=cap is not None)


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
    compute_budget: float | None = None,
    single_runs: bool = False,
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
                compute_budget=compute_budget,
                single_runs=single_runs,
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
    compute_budget: float | None = None,
    single_runs: bool = False,
) -> list[TaskResult]:
    """Every policy setting on every task of the corpus; one TaskResult per (task, setting).

    models_dir: the learned models, as the service's setting ("": the shipped ones, "none":
    none); loaded only when the forecaster is "auto" or a learned one.
    engine: "local" (workers processes) or "ray" (the batch's Ray engine, at address).

    The studies get the corpus targets only with use_targets: the figures measure how well a
    policy keeps the best run, which a study that wants a target (and stops every run that
    cannot reach it) does not aim at.

    compute_budget: every task stops once its runs have used this fraction of the steps of
    running them all to the end; a policy that pauses (forecast with pause=true) spends what
    is left on its paused runs, best first by the ranking (freeze-thaw).
    single_runs: each run replayed alone, as a study of its own (no peers, no incumbent): the
    "when does it stop learning" question; its regret is the metric the stop gave up."""
    if parallel < 1:
        raise InvalidArgumentError(f"--parallel must be >= 1; got {parallel}.")
    if max_reports < 1:
        raise InvalidArgumentError(f"max_reports must be >= 1; got {max_reports}.")
    if compute_budget is not None and not 0.0 < compute_budget <= 1.0:
        raise InvalidArgumentError(
            f"--compute-budget must be in (0, 1] (a fraction of the steps); got {compute_budget}."
        )
    settings = parse_settings(policy_specs)
    name = models.check_name(forecaster)
    learned = name == models.AUTO or models.is_learned(name)
    bank = ModelBank.load(models_dir, lazy=True) if learned else None  # loaded where used
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
            compute_budget,
            single_runs,
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
