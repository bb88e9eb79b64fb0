"""One study of a batch: each of its runs (at each cutoff) forecast and judged through
`judging.fit_forecast` and `judging.judge`, the path the service takes, into result rows.

The study as a run sees it:
- the incumbent is the best final value of the study's *completed* other runs (a run is
  completed when it reached its budget, or has no budget: a logged run that ended);
- the study history (what the schedule laws share) is the completed runs of the *other fold*
  (the study's runs split in two by a hash of their id), so a forecast never reads the run's own
  ending, whichever cutoff it is judged at;
- the peers (median, percentile, ASHA) are the other runs' curves as logged.
A forecast-based stop waits for the policy's stop votes (hysteresis): when the decision at the
cut is a vote short of a stop, the run is judged again on the prefixes the service would have
refitted it at before, oldest first, so the votes are the ones the service would have counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from forecaster import policies
from forecaster.batch.inputs import BatchInput
from forecaster.corpus.reader import LoggedRun
from forecaster.curves import Curve, to_loss
from forecaster.hashing import seed_of
from forecaster.judging import (
    ForecastMemo,
    HistoryHolder,
    Judged,
    Standing,
    batchable,
    fit_forecast,
    fit_forecasts,
    fit_length,
    incumbent_of,
    judge,
)
from forecaster.models import DEFAULT_QUANTILES, Prediction, StudyHistory
from forecaster.models.artifacts import ModelBank
from forecaster.policies import RunView, StoppingPolicy, StudyContext
from forecaster.policies.base import Peers

QUANTILE_NAMES = tuple(f"q{round(q * 100):02d}" for q in DEFAULT_QUANTILES)
_VOTES_LOOKBACK = 10  # earlier forecasts re-judged, at most, to count pending stop votes


@dataclass(frozen=True)
class JudgeSpec:
    """What every run of a batch is judged with."""

    model: str = "auto"
    policy: str = "default"
    policy_params: tuple[tuple[str, Any], ...] = ()
    cutoffs: tuple[float, ...] = ()  # fractions of each run's last logged step
    at_steps: tuple[int, ...] = ()  # or absolute steps
    horizon: int | None = None  # forecast at this step (default: each run's budget)
    path_points: int = 12  # forecast fan points kept per row, for the report (0: none)
    curve_points: int = 48  # observed points kept per row, for the report (0: none)

    def cuts(self, run: LoggedRun) -> list[tuple[float | None, int]]:
        """(cutoff fraction or None, step) at which the run is judged."""
        last = int(run.steps[-1])
        if self.cutoffs:
            return [(c, int(math.floor(c * last))) for c in self.cutoffs]
        if self.at_steps:
            return [(None, s) for s in self.at_steps if s <= last]
        return [(None, last)]


@dataclass(frozen=True)
class StudyJob:
    """Judge `judged` (a slice of the study's runs, or all of them) with the whole study as
    their context. Picklable: it travels to worker processes and Ray tasks."""

    index: int
    input: BatchInput
    source: str
    task: str
    run_ids: tuple[str, ...]
    judged: tuple[str, ...]
    spec: JudgeSpec
    bank: ModelBank | None = field(default=None, compare=False)

    @property
    def study(self) -> str:
        return f"{self.source}/{self.task}"


def budget_of(run: LoggedRun, spec: JudgeSpec, longest: int) -> int:
    """The step a run's forecast aims at: --horizon, its max_step, else the study's longest."""
    if spec.horizon is not None:
        return spec.horizon
    if run.max_step is not None and run.max_step > 0:
        return max(run.max_step, int(run.steps[-1]))
    return max(longest, int(run.steps[-1]))


def completed(run: LoggedRun) -> bool:
    """A logged run is complete when it has no budget (its log ended), or its next point, at
    its last logging interval, would be past its budget."""
    if run.max_step is None:
        return True
    last = int(run.steps[-1])
    interval = last - int(run.steps[-2]) if len(run.steps) > 1 else 0
    return last + interval >= run.max_step


def _fold(run_id: str) -> int:
    return seed_of(run_id) & 1


def run_job_table(job: StudyJob) -> Any:
    """run_job's rows as an Arrow table (output.job_table): what the engines send back."""
    from forecaster.batch.output import job_table

    return job_table(run_job(job))


def run_job(job: StudyJob) -> list[dict[str, Any]]:
    """The result rows of one job, in the order of job.judged and the cutoffs."""
    logged = [r for r in job.input.load(job.source, job.run_ids) if len(r.steps)]
    if not logged:
        return []
    judge_spec = job.spec
    policy = policies.create(judge_spec.policy, dict(judge_spec.policy_params))
    longest = max(int(r.steps[-1]) for r in logged)
    full = _Curves({r.run_id: r for r in logged}, judge_spec, longest)
    done = {r.run_id: completed(r) for r in logged}
    holder = HistoryHolder(job.study, keep=2)
    histories = {
        fold: _history_of(
            holder, full, [r.run_id for r in logged if done[r.run_id] and _fold(r.run_id) != fold]
        )
        for fold in (0, 1)
    }
    by_id = {r.run_id: r for r in logged}
    # The incumbent of a run is the best of the other completed runs: the best two suffice.
    finished = [
        Standing.of(r.run_id, done=True, last_value=float(r.values[-1]), decision=None)
        for r in logged
        if done[r.run_id] and math.isfinite(float(r.values[-1]))
    ]
    finished.sort(key=lambda s: float(to_loss(s.last_value, logged[0].direction)))
    memo: ForecastMemo = {}
    fit_forecasts(judge_spec.model, _heads(job, by_id, full), job.bank, memo)
    cuts: list[tuple[LoggedRun, float | None, Curve, StudyContext, _Fit]] = []
    for run_id in job.judged:
        run = by_id.get(run_id)
        if run is None:
            continue
        best_others = [s for s in finished[:2] if s.name != run_id][:1]
        context = StudyContext(
            job.study,
            run.direction,
            full[run_id].max_step,
            run.target,
            incumbent_of(run.direction, best_others),
            Peers(_peers(logged, full, run_id)),
        )
        fit = _Fit(judge_spec.model, f"{job.study}/{run_id}", histories[_fold(run_id)], job, memo)
        for cutoff, step in judge_spec.cuts(run):
            n = int(np.searchsorted(run.steps, step, side="right"))
            if n >= 1:
                cuts.append((run, cutoff, full[run_id].head(n), context, fit))
    # Rounds: a row whose judging asks for a forecast not fitted yet (the earlier prefixes the
    # stop votes are counted on) is judged again once the round's asks are fitted together.
    rows: list[dict[str, Any] | None] = [None] * len(cuts)
    pending = list(range(len(cuts)))
    while pending:
        asked: list[tuple[str, Curve]] = []
        still = []
        for i in pending:
            run, cutoff, curve, context, fit = cuts[i]
            fit.asked = []
            rows[i] = _row(job, run, curve, cutoff, policy, context, fit)
            if fit.asked:
                asked.extend(fit.asked)
                still.append(i)
        fit_forecasts(judge_spec.model, asked, job.bank, memo)
        for where, head in asked:  # a batch that failed: fitted (and logged) one by one
            if (where, len(head), "") not in memo:
                memo[(where, len(head), "")] = fit_forecast(
                    judge_spec.model, head, lambda: StudyHistory(()), where, job.bank, None
                )
        pending = still
    return [r for r in rows if r is not None]


class _Fit:
    """A run's fit for judge: from the memo; a forecast the batch can fit with others and
    that is not fitted yet is noted in `asked` (and None given for now: the row is judged
    again once it is fitted); the others are fitted on the spot."""

    def __init__(
        self,
        model: str,
        where: str,
        history: Callable[[], StudyHistory],
        job: StudyJob,
        memo: ForecastMemo,
    ) -> None:
        self.model, self.where, self.history, self.bank, self.memo = (
            model,
            where,
            history,
            job.bank,
            memo,
        )
        self.asked: list[tuple[str, Curve]] = []

    def __call__(self, head: Curve) -> Prediction | None:
        key = (self.where, len(head), "")
        if key in self.memo:
            return self.memo[key]
        if batchable(self.model, head, self.bank):
            if all(len(h) != len(head) for _, h in self.asked):
                self.asked.append((self.where, head))
            return None
        return fit_forecast(self.model, head, self.history, self.where, self.bank, self.memo)


class _Curves(dict[str, Curve]):
    """run_id -> the run's whole curve with its budget, built on first use: a job judges a
    slice of its study, and reads the other runs' curves only for a history or the peers."""

    def __init__(self, runs: dict[str, LoggedRun], spec: JudgeSpec, longest: int) -> None:
        super().__init__()
        self._runs, self._spec, self._longest = runs, spec, longest

    def __missing__(self, run_id: str) -> Curve:
        run = self._runs[run_id]
        curve = self[run_id] = run.curve(horizon=budget_of(run, self._spec, self._longest))
        return curve


def _heads(
    job: StudyJob, by_id: dict[str, LoggedRun], full: dict[str, Curve]
) -> list[tuple[str, Curve]]:
    """(where, the points its forecast is fitted on) of each judged run at each of its cuts."""
    out = []
    for run_id in job.judged:
        run = by_id.get(run_id)
        if run is None:
            continue
        for _, step in job.spec.cuts(run):
            n = int(np.searchsorted(run.steps, step, side="right"))
            if n >= 1:
                out.append((f"{job.study}/{run_id}", full[run_id].head(fit_length(n))))
    return out


def _history_of(
    holder: HistoryHolder, full: dict[str, Curve], members: list[str]
) -> Callable[[], StudyHistory]:
    """The history of the completed runs `members`, built on first use."""
    return lambda: holder.get(
        ((m, full[m].last_step) for m in members), lambda: [full[m] for m in members]
    )


def _peers(
    logged: Sequence[LoggedRun], full: dict[str, Curve], run_id: str
) -> Callable[[], list[Curve]]:
    return lambda: [full[r.run_id] for r in logged if r.run_id != run_id]


def _judged(
    job: StudyJob,
    run_id: str,
    policy: StoppingPolicy,
    curve: Curve,
    context: StudyContext,
    prediction: Prediction | None,
    fit: Callable[[Curve], Prediction | None],
) -> Judged:
    """The decision at the cut, with the stop votes the service would have counted on the
    forecasts before it: when the cut's forecast votes stop but the policy waits for more
    votes, the earlier refit prefixes are judged, newest first, until one votes continue or
    the votes suffice (a vote is the policy's own: it does not depend on earlier votes)."""
    view = RunView(job.study, run_id, curve)
    n_fit = fit_length(len(curve))
    judged = judge(policy, view, context, None, (n_fit, prediction), fit)
    if not judged.decision.votes or judged.decision.is_stop:
        return judged
    earlier = sorted({fit_length(m) for m in range(1, len(curve))} - {n_fit}, reverse=True)
    for votes, length in enumerate(earlier[:_VOTES_LOOKBACK], start=1):
        head = curve.head(length)
        before = judge(policy, RunView(job.study, run_id, head), context, None, None, fit)
        if not before.decision.votes:
            break
        previous = replace(before.record, votes=votes)
        judged = judge(policy, view, context, previous, (n_fit, prediction), fit)
        if judged.decision.is_stop:
            break
    return judged


def _row(
    job: StudyJob,
    run: LoggedRun,
    curve: Curve,
    cutoff: float | None,
    policy: StoppingPolicy,
    context: StudyContext,
    fit: Callable[[Curve], Prediction | None],
) -> dict[str, Any] | None:
    n_fit = fit_length(len(curve))
    prediction = fit(curve.head(n_fit))
    judged = _judged(job, run.run_id, policy, curve, context, prediction, fit)
    if isinstance(fit, _Fit) and fit.asked:
        return None  # judged again once the forecasts it asked for are fitted
    decision = judged.decision
    horizon = curve.horizon
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "source": job.source,
        "task": job.task,
        "cutoff": cutoff,
        "last_step": curve.last_step,
        "last_value": curve.last_value,
        "n_points": len(curve),
        "horizon": horizon,
        "direction": run.direction.value,
        "target": run.target,
    }
    row.update(_forecast_columns(prediction, horizon, run.target, job.spec.path_points))
    row.update(
        action=decision.action.value,
        reason=decision.reason.value,
        explanation=decision.explanation,
        policy=decision.policy,
        stop_votes=decision.votes,
        expected_saved_steps=int(decision.expected_saved_steps),
        probabilities=json.dumps(dict(sorted(decision.probabilities.items()))),
        final_step=run.final_step,
        final_value=run.final_value,
    )
    row.update(_observed(run, job.spec.curve_points))
    return row


def _forecast_columns(
    prediction: Prediction | None, horizon: int, target: float | None, path_points: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"model": None, "model_version": None, "converged": None}
    out.update({name: None for name in QUANTILE_NAMES})
    out.update(mean=None, p_reach_target=None, notes="")
    out.update({f"steps_to_target_{name}": None for name in QUANTILE_NAMES})
    out.update(path_steps=[], **{f"path_{name}": [] for name in QUANTILE_NAMES})
    if prediction is None:
        return out
    # One draw for the fan and the horizon: the fan's last step is the horizon.
    steps = [horizon]
    if path_points > 0 and horizon > prediction.observed_until:
        steps = path_steps(prediction.observed_until, horizon, path_points)
    fan = prediction.quantiles(DEFAULT_QUANTILES, steps)
    out.update(
        model=prediction.model,
        model_version=prediction.model_version,
        converged=prediction.converged,
        mean=float(prediction.mean([horizon])[0]),
        notes="; ".join(prediction.notes),
    )
    out.update({name: float(q) for name, q in zip(QUANTILE_NAMES, fan[-1], strict=True)})
    if target is not None:
        out["p_reach_target"] = prediction.prob_reach(target, horizon)
        to_target = prediction.steps_to_target(target, horizon, DEFAULT_QUANTILES)
        out.update(
            {f"steps_to_target_{n}": int(s) for n, s in zip(QUANTILE_NAMES, to_target, strict=True)}
        )
    if len(steps) > 1:
        out["path_steps"] = [int(s) for s in steps]
        for j, name in enumerate(QUANTILE_NAMES):
            out[f"path_{name}"] = fan[:, j].astype(np.float64).tolist()
    return out


def path_steps(start: int, stop: int, n: int) -> list[int]:
    """n steps from start to stop, spaced evenly (the fan of a chart)."""
    return sorted({int(round(s)) for s in np.linspace(start, stop, n)})


def _observed(run: LoggedRun, n: int) -> dict[str, list[Any]]:
    """The run's logged curve thinned to about n points (always its last), for the report."""
    if n <= 0:
        return {"curve_steps": [], "curve_values": []}
    keep = np.unique(np.linspace(0, len(run.steps) - 1, min(n, len(run.steps))).round()).astype(int)
    return {
        "curve_steps": run.steps[keep].astype(np.int64).tolist(),
        "curve_values": run.values[keep].astype(np.float64).tolist(),
    }


def plan_jobs(
    studies: Sequence[tuple[str, str, tuple[str, ...]]],
    input: BatchInput,
    spec: JudgeSpec,
    bank: ModelBank | None,
    runs_per_job: int,
) -> list[StudyJob]:
    """The jobs of a batch, in a fixed order: each study cut into slices of runs_per_job runs
    (every slice reads the whole study for its context)."""
    jobs: list[StudyJob] = []
    for source, task, run_ids in studies:
        for start in range(0, len(run_ids), runs_per_job):
            jobs.append(
                StudyJob(
                    index=len(jobs),
                    input=input,
                    source=source,
                    task=task,
                    run_ids=run_ids,
                    judged=run_ids[start : start + runs_per_job],
                    spec=spec,
                    bank=bank,
                )
            )
    return jobs
