"""The application: studies, runs, ingest, a forecast cache, decisions. No transport here.

The server (gRPC) and the demo call the Engine; the Engine calls the Store, the forecasters
and the policies. Forecasts are cached per run and keyed by the run's last stored step, so a
GetDecision after a ReportMetrics costs one small read; any replica recomputes the same
forecast and decision from the store alone: the stop votes behind hysteresis are saved with
each run's latest decision. Judging itself (curve + study state -> forecast -> decision) is
judging.py, the one path the replay (evaluation/replay/) takes too, so it decides as the
service does; the engine keeps the state around it: the store, the caches and their locks.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from forecaster import models, policies, ranking
from forecaster.curves import Curve, LrSchedule, Points
from forecaster.errors import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError
from forecaster.judging import (
    HistoryHolder,
    Judged,
    Standing,
    decision_of,
    fit_forecast,
    incumbent_of,
    judge,
    manual_stop,
    record_of,
    standing_of,
)
from forecaster.models import Prediction, StudyHistory, calibration
from forecaster.models.artifacts import ModelBank
from forecaster.models.prediction import ForecastSummary, summarize
from forecaster.observer import EngineObserver, NoObserver
from forecaster.policies import Decision, RunView, StoppingPolicy, StudyContext
from forecaster.policies.base import Peers
from forecaster.store import (
    DecisionChange,
    Run,
    RunSpec,
    RunState,
    Store,
    StoredDecision,
    Study,
    StudySpec,
    curve_of,
)

log = logging.getLogger("forecaster.engine")


@dataclass(frozen=True)
class ReportResult:
    decision: Decision
    n_stored: int
    run: Run


@dataclass(frozen=True)
class RunSummary:
    """A run with what the service thinks of it now: what a dashboard row shows."""

    run: Run
    decision: Decision | None  # the latest saved one; None before the first point
    forecast: ForecastSummary | None  # at the budget, for running runs that have one
    prob_beat_incumbent: float | None
    incumbent: float | None
    saved_steps: int  # budget not spent because the run was stopped early


@dataclass(frozen=True)
class Ranking:
    """A study's running and paused runs, best first, and the incumbent they are priced by."""

    runs: list[ranking.RankedRun]
    incumbent: float | None


@dataclass(frozen=True)
class _StudyEntry:
    study: Study
    policy: StoppingPolicy


@dataclass(frozen=True)
class _RunEntry:
    """A run's curve with the forecast and decision made on it (keyed by curve.last_step)."""

    curve: Curve
    prediction: Prediction | None
    decision: Decision
    fitted_points: int = 0
    record: StoredDecision | None = None
    incumbent: float | None = None  # the study's incumbent the decision was made against


class Engine:
    """Ingest -> forecast cache -> decide.

    Args:
        store: where studies, runs and points live.
        models: the learned models "auto" and the learned forecaster names are served from
            (None: none; the service passes the bank it loaded and reloads).
        cache_size: runs whose curve and forecast are kept in memory.
        clock: injected for tests; seconds since the epoch.
        allow_manual_stop: whether stop_run (a person stopping a run) is allowed.
        observer: told of each fit and cache lookup (the service's metrics).
    """

    def __init__(
        self,
        store: Store,
        *,
        models: ModelBank | None,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        allow_manual_stop: bool = False,
        observer: EngineObserver | None = None,
    ) -> None:
        self.store = store
        self.observer: EngineObserver = observer or NoObserver()
        self.models = models
        self.clock = clock
        self.allow_manual_stop = allow_manual_stop
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._studies: dict[str, _StudyEntry] = {}
        self._runs: OrderedDict[tuple[str, str], _RunEntry] = OrderedDict()
        self._histories: dict[str, HistoryHolder] = {}
        self._history_at: dict[str, tuple[int, StudyHistory]] = {}  # study -> (n_done, history)
        # Other runs' curves read for peers and histories, so each is read from the store once.
        self._curves: OrderedDict[tuple[str, str], Curve] = OrderedDict()

    def forget_forecasts(self) -> None:
        """Drops cached forecasts (the models changed); the next read fits again."""
        with self._lock:
            self._runs.clear()

    # -- studies and runs -------------------------------------------------------------------

    def create_study(self, spec: StudySpec) -> tuple[Study, bool]:
        """Validates forecaster and policy settings, then creates (idempotently); the spec is
        stored with the policy's canonical name ("" and "default" are "forecast")."""
        models.check_name(spec.forecaster)
        name = policies.check_name(spec.policy)
        policy = policies.create(spec.policy, spec.policy_params)  # errors name it as sent
        for setting, grace in policy.grace_settings().items():
            if spec.max_step and grace > spec.max_step:
                raise InvalidArgumentError(
                    f"policy setting {setting}={grace} is beyond the study budget "
                    f"max_step={spec.max_step}; no run could ever be judged."
                )
        spec = replace(spec, policy=name)
        try:
            study, created = self.store.create_study(spec)
        except AlreadyExistsError:
            # A study stored before the alias was resolved spells its policy "default" or "":
            # the same definition, so compare the rest as stored.
            stored = self.store.get_study(spec.name).spec.policy
            if stored == name or not _alias_of(stored, name):
                raise
            study, created = self.store.create_study(replace(spec, policy=stored))
        with self._lock:
            self._studies[spec.name] = _StudyEntry(study, policy)
        return study, created

    def _study(self, name: str) -> _StudyEntry:
        with self._lock:
            entry = self._studies.get(name)
        if entry is None:
            study = self.store.get_study(name)  # studies never change once created
            entry = _StudyEntry(study, policies.create(study.spec.policy, study.spec.policy_params))
            with self._lock:
                self._studies[name] = entry
        return entry

    def get_study(self, name: str) -> Study:
        return self.store.get_study(name)

    def list_studies(self) -> list[Study]:
        return self.store.list_studies()

    def start_run(self, study: str, spec: RunSpec) -> tuple[Run, bool]:
        if spec.lr_schedule is not None:
            spec.lr_schedule.check_covers(spec.max_step or self._study(study).study.spec.max_step)
        return self.store.start_run(study, spec)

    def get_run(self, study: str, run: str) -> Run:
        return self.store.get_run(study, run)

    def list_runs(self, study: str, state: RunState | None = None) -> list[Run]:
        return self.store.list_runs(study, state=state)

    def finish_run(self, study: str, run: str, state: RunState) -> Run:
        return self.store.finish_run(study, run, state)

    def stop_run(self, study: str, run: str, note: str = "") -> Decision:
        """A person stops a running run: from now on its decision is STOP/MANUAL, which the
        trainer's plugin reads with its next report. The first request is kept."""
        if not self.allow_manual_stop:
            raise FailedPreconditionError(
                "manual stops are off on this service: start it with --allow-manual-stop "
                "(FORECASTER_ALLOW_MANUAL_STOP=true) to allow StopRun and the dashboard's button."
            )
        entry = self._study(study)
        stored = self.store.request_stop(study, run, note.strip()[:500])
        with self._lock:
            cached = self._runs.get((study, run))
        curve = None
        if cached is not None and cached.curve.last_step == stored.last_step:
            curve = cached.curve
        return self._evaluate(entry, stored, curve).decision

    # -- reading back what was decided ------------------------------------------------------

    def points(
        self, study: str, run: str, after_step: int = -1, limit: int | None = None
    ) -> Points:
        """The run's stored points after after_step, at most limit."""
        return self.store.get_points(study, run, after_step=after_step, limit=limit)

    def decision_history(
        self, study: str, run: str, start: int = 0, limit: int | None = None
    ) -> list[DecisionChange]:
        """Every change of the run's decision (action or reason), oldest first."""
        return self.store.decision_history(study, run, start=start, limit=limit)

    def incumbent(self, study: str) -> float | None:
        """The study's best final value, observed or forecast: the line a run must beat
        (one bounded read of the store's standings)."""
        self._study(study)
        best = self.store.best_standings(study, 1)
        value = best[0][1] if best else None
        return value if value is not None and math.isfinite(value) else None

    def run_summary(self, study: str, run: str) -> RunSummary:
        """One run's summary (as run_summaries gives it), without the other runs' forecasts."""
        return self.run_summaries(study, only=run)[0]

    def _standings(
        self, study: str
    ) -> tuple[StudySpec, list[Run], dict[str, StoredDecision], dict[str, Standing]]:
        """The study's spec, runs, latest decisions and each run's standing (what the
        incumbent is made of), as the listing and the ranking read them."""
        spec = self._study(study).study.spec
        runs = self.store.list_runs(study)
        decisions = self.store.list_decisions(study)
        standings = {
            r.name: standing_of(r, r.spec.max_step or spec.max_step, decisions.get(r.name))
            for r in runs
        }
        return spec, runs, decisions, standings

    def run_summaries(
        self, study: str, start: int = 0, limit: int | None = None, *, only: str | None = None
    ) -> list[RunSummary]:
        """The study's runs (from start, at most limit; or only the one named) with their
        latest decision, the forecast at the budget of those still running, and P(beat the
        incumbent)."""
        spec, runs, decisions, standings = self._standings(study)
        end = None if limit is None else start + limit
        chosen = runs[start:end]
        if only is not None:
            chosen = [r for r in runs if r.name == only]
            if not chosen:
                self.store.get_run(study, only)  # raises NotFoundError, named
        out = []
        for r in chosen:
            budget = r.spec.max_step or spec.max_step
            incumbent = incumbent_of(
                spec.direction, (s for name, s in standings.items() if name != r.name)
            )
            forecast: ForecastSummary | None = None
            p_beat: float | None = None
            if r.state is RunState.RUNNING and r.n_points and budget and budget > r.last_step:
                try:
                    run_entry, prediction = self._predicted(study, r.name)
                except InvalidArgumentError:
                    prediction = None
                if prediction is not None:
                    forecast = summarize(prediction, [budget], (), spec.target)
                    if incumbent is not None:
                        p_beat = prediction.prob_better_than(incumbent, budget)
            record = decisions.get(r.name)
            saved = 0
            if r.state is RunState.STOPPED and budget:
                saved = max(budget - max(r.last_step, 0), 0)
            out.append(
                RunSummary(
                    run=r,
                    decision=None if record is None else decision_of(record),
                    forecast=forecast,
                    prob_beat_incumbent=p_beat,
                    incumbent=incumbent,
                    saved_steps=saved,
                )
            )
        return out

    def rank_runs(self, study: str, limit: int | None = None) -> Ranking:
        """The study's running runs (paused ones included: a PAUSE leaves a run RUNNING)
        ranked by expected gain per unit of remaining compute (forecaster/ranking.py), best
        first, at most limit; the forecasts come from the cache, fitted where missing."""
        spec, runs, decisions, standings = self._standings(study)
        candidates = []
        for r in runs:
            if r.state is not RunState.RUNNING:
                continue
            budget = r.spec.max_step or spec.max_step or 0
            prediction: Prediction | None = None
            if r.n_points and budget > r.last_step:
                try:
                    prediction = self._predicted(study, r.name)[1]
                except InvalidArgumentError:
                    prediction = None
            record = decisions.get(r.name)
            others = (s for name, s in standings.items() if name != r.name)
            candidates.append(
                ranking.Candidate(
                    name=r.name,
                    decision=None if record is None else decision_of(record),
                    last_step=r.last_step,
                    budget=budget,
                    best_value=r.best_value,
                    prediction=prediction,
                    incumbent=incumbent_of(spec.direction, others),
                )
            )
        ranked = ranking.rank(candidates, spec.direction)
        incumbent = incumbent_of(spec.direction, standings.values())
        return Ranking(ranked if limit is None else ranked[:limit], incumbent)

    # -- ingest and decisions ---------------------------------------------------------------

    def report(
        self, study: str, run: str, points: Points, lr_schedule: LrSchedule | None = None
    ) -> ReportResult:
        """Stores a batch atomically, then returns the run's decision on its new curve."""
        entry = self._study(study)
        if lr_schedule is not None:
            budget = self.store.get_run(study, run).spec.max_step or entry.study.spec.max_step
            lr_schedule.check_covers(budget)
        result = self.store.append_points(study, run, points, lr_schedule)
        key = (study, run)
        with self._lock:
            cached = self._runs.get(key)
        curve: Curve | None = None
        if (
            cached is not None
            and result.n_stored
            and cached.curve.last_step == result.previous_last_step
            and lr_schedule is None
        ):
            curve = cached.curve.extended(result.new_points)
        elif (
            cached is not None
            and cached.curve.last_step == result.run.last_step
            and (lr_schedule is None)
        ):
            return ReportResult(cached.decision, result.n_stored, result.run)
        run_entry = self._evaluate(entry, result.run, curve)
        return ReportResult(run_entry.decision, result.n_stored, result.run)

    def decision(self, study: str, run: str) -> Decision:
        """The current decision; recomputed only when the run has new points."""
        return self._current(study, run)[1].decision

    def forecast(
        self,
        study: str,
        run: str,
        at_steps: Sequence[int] = (),
        quantile_levels: Sequence[float] = (),
        path_points: int = 0,
    ) -> tuple[ForecastSummary, ForecastSummary | None]:
        """The run's predictive distribution at at_steps (default: its budget)."""
        run_entry, prediction = self._predicted(study, run)
        curve = run_entry.curve
        steps = self._check_steps(
            curve, list(at_steps) or self._default_steps(curve, f"run {run!r}")
        )
        summary = summarize(prediction, steps, quantile_levels, curve.target)
        path = None
        if path_points < 0 or path_points > 1000:
            raise InvalidArgumentError(f"path_points must be in [0, 1000]; got {path_points}.")
        if path_points:
            end = max(max(steps), curve.last_step)
            grid = np.unique(np.linspace(curve.last_step, end, path_points).round().astype(int))
            path = summarize(prediction, grid.tolist(), quantile_levels, None)
        return summary, path

    def _predicted(self, study: str, run: str) -> tuple[_RunEntry, Prediction]:
        """The run's current entry and its forecast, fitted now when the policy did not."""
        study_entry, run_entry = self._current(study, run)
        if not len(run_entry.curve):
            raise InvalidArgumentError(
                f"run {run!r} of study {study!r} has no points yet: report some first."
            )
        prediction = run_entry.prediction
        if prediction is None:  # the policy did not need one: fit it now
            head = run_entry.curve.head(run_entry.fitted_points or len(run_entry.curve))
            prediction = self._fit(study_entry, self.store.get_run(study, run), head)
            if prediction is None:
                raise InvalidArgumentError(
                    f"the forecaster could not fit run {run!r} of study {study!r}; see the log."
                )
            run_entry = replace(run_entry, prediction=prediction)
            self._remember((study, run), run_entry)
        return run_entry, prediction

    def forecast_curve(
        self,
        curve: Curve,
        forecaster: str = "",
        at_steps: Sequence[int] = (),
        quantile_levels: Sequence[float] = (),
    ) -> ForecastSummary:
        """Stateless: forecasts an inline curve; nothing is stored."""
        if not len(curve):
            raise InvalidArgumentError("ForecastCurve: the curve has no points.")
        model = models.create(forecaster, curve, bank=self.models)
        # Served as a run's forecast is (judging): calibrated, then bounded.
        prediction = calibration.fit_calibrated(model, curve, None, self.models)
        steps = self._check_steps(curve, list(at_steps) or self._default_steps(curve, "the curve"))
        return summarize(prediction, steps, quantile_levels, curve.target)

    @staticmethod
    def _check_steps(curve: Curve, steps: list[int]) -> list[int]:
        early = [s for s in steps if s < curve.last_step]
        if early:
            raise InvalidArgumentError(
                f"at_steps {early} are before the last observed step {curve.last_step}: a "
                "forecast is for steps still to come; ask GetRun for what was observed."
            )
        return steps

    @staticmethod
    def _default_steps(curve: Curve, what: str) -> list[int]:
        if not curve.max_step:
            raise InvalidArgumentError(
                f"{what} has no budget (max_step): pass at_steps to say where to forecast."
            )
        return [curve.max_step]

    def _history(self, study: str) -> StudyHistory:
        """The study's completed runs as curves; re-read only when one more has completed
        (the study's summary row counts them, so asking costs one row, not the study)."""
        n_done = self.store.get_study(study).n_done
        with self._lock:
            holder = self._histories.setdefault(study, HistoryHolder(study))
            known = self._history_at.get(study)
        if known is not None and known[0] == n_done:
            return known[1]
        done = [r for r in self.store.list_runs(study) if r.state is not RunState.RUNNING]
        entry = self._study(study)
        history = holder.get(
            ((r.name, r.last_step) for r in done),
            lambda: (self._stored_curve(entry, r) for r in done if r.last_step >= 0),
        )
        with self._lock:
            self._history_at[study] = (len(done), history)
        return history

    def _current(self, study: str, run: str) -> tuple[_StudyEntry, _RunEntry]:
        entry = self._study(study)
        best: list[tuple[str, float]] | None = None
        if self.store.shared_by_replicas:  # the run and the incumbent, in one read
            stored, best = self.store.run_and_standings(study, run, 2)
        else:
            stored = self.store.get_run(study, run)
        with self._lock:
            cached = self._runs.get((study, run))
        hit = cached is not None and cached.curve.last_step == stored.last_step
        self.observer.cache_lookup(hit)
        context = None if best is None else self._context(entry, run, best)
        if cached is None or not hit:
            return entry, self._evaluate(entry, stored, None, context)
        if context is None:  # one replica: the decision as of the run's last report
            return entry, cached
        if context.incumbent == cached.incumbent:
            return entry, cached
        # Several replicas: same points, but the other runs moved the incumbent since this
        # replica decided: decide again on the cached curve, counting votes from the stored
        # record, so that every replica answers from the same state (one replica alone
        # answers the decision of the run's last report, which costs no query).
        return entry, self._evaluate(entry, stored, cached.curve, context, from_store=True)

    def _context(
        self, entry: _StudyEntry, run: str, best: list[tuple[str, float]] | None = None
    ) -> StudyContext:
        """The study as a policy sees it from run: the incumbent (the best standing of the
        other runs, which the store keeps, so one bounded query whatever the study's size;
        best: the two best standings when already read), and the peers' curves, read only
        when a policy asks for them."""
        spec = entry.study.spec
        if best is None:
            best = self.store.best_standings(spec.name, 2)
        incumbent = next((value for name, value in best if name != run), None)

        def peers() -> list[Curve]:
            others = [r for r in self.store.list_runs(spec.name) if r.name != run]
            return [self._stored_curve(entry, r) for r in others]

        return StudyContext(
            spec.name, spec.direction, spec.max_step, spec.target, incumbent, Peers(peers)
        )

    def _stored_curve(self, entry: _StudyEntry, run: Run) -> Curve:
        """Another run's curve (a peer, a completed run of the history): from the forecast
        cache, else from the curves read before, else read once and kept (LRU)."""
        key = (run.study, run.name)
        with self._lock:
            cached = self._runs.get(key)
            if cached is not None and cached.curve.last_step == run.last_step:
                return cached.curve
            seen = self._curves.get(key)
            if seen is not None and seen.last_step == run.last_step:
                self._curves.move_to_end(key)
                return seen
        curve = curve_of(entry.study, run, self.store.get_points(run.study, run.name))
        with self._lock:
            self._curves[key] = curve
            self._curves.move_to_end(key)
            while len(self._curves) > self._cache_size:
                self._curves.popitem(last=False)
        return curve

    def _fit(self, entry: _StudyEntry, run: Run, head: Curve) -> Prediction | None:
        name, where = entry.study.spec.forecaster, f"{run.study}/{run.name}"
        start = time.perf_counter()
        fitted = fit_forecast(name, head, lambda: self._history(run.study), where, self.models)
        if fitted is not None:
            self.observer.forecast_fitted(fitted.model, time.perf_counter() - start)
        return fitted

    def _evaluate(
        self,
        entry: _StudyEntry,
        run: Run,
        curve: Curve | None,
        context: StudyContext | None = None,
        from_store: bool = False,
    ) -> _RunEntry:
        """Forecast (when the policy needs it) and decide on the run's curve; the vote count
        carries on from this replica's last record, or from the store's when from_store."""
        if curve is None:
            curve = curve_of(entry.study, run, self.store.get_points(run.study, run.name))
        key = (run.study, run.name)
        with self._lock:
            previous = self._runs.get(key)
        if context is None:
            context = self._context(entry, run.name)
        record = (
            previous.record
            if previous is not None and not from_store
            else self.store.get_decision(run.study, run.name)
        )
        cached = None if previous is None else (previous.fitted_points, previous.prediction)
        if run.stop_request is not None:  # a person stopped it: no policy is asked
            decision = manual_stop(
                run.stop_request,
                at_step=curve.last_step,
                budget=curve.max_step,
                forecast_final=None if record is None else record.forecast_final,
            )
            fitted = 0 if record is None else record.fitted_points
            judged = Judged(
                decision,
                None if cached is None or cached[0] != fitted else cached[1],
                record_of(decision, fitted_points=fitted, votes_before=0),
            )
        else:
            judged = judge(
                entry.policy,
                RunView(run.study, run.name, curve),
                context,
                record,
                cached,
                lambda head: self._fit(entry, run, head),
            )
        new = judged.record
        if _worth_saving(record, new):
            self.store.save_decision(run.study, run.name, new)
        run_entry = _RunEntry(
            curve=curve,
            prediction=judged.prediction,
            decision=judged.decision,
            fitted_points=new.fitted_points,
            record=new,
            incumbent=context.incumbent,
        )
        self._remember(key, run_entry)
        return run_entry

    def _remember(self, key: tuple[str, str], run_entry: _RunEntry) -> None:
        with self._lock:
            current = self._runs.get(key)
            if current is None or current.curve.last_step <= run_entry.curve.last_step:
                self._runs[key] = run_entry
                self._runs.move_to_end(key)
                while len(self._runs) > self._cache_size:
                    self._runs.popitem(last=False)


def _worth_saving(stored: StoredDecision | None, new: StoredDecision) -> bool:
    """Whether the new record says anything the stored one does not: another action, reason,
    vote count or forecast final value, or another forecast while stop votes are counted. A
    forecast refitted on more points with no votes on either side counts on from zero
    whichever record a replica reads, so it costs no write (most reports of a healthy run)."""
    if stored is None:
        return True
    if (new.votes, new.action, new.reason, new.forecast_final) != (
        stored.votes,
        stored.action,
        stored.reason,
        stored.forecast_final,
    ):
        return True
    no_votes = new.votes == new.votes_before == stored.votes == stored.votes_before == 0
    return new.fitted_points != stored.fitted_points and not no_votes


def _alias_of(stored: str, name: str) -> bool:
    """Whether the policy name a study was stored with stands for the canonical name."""
    try:
        return policies.check_name(stored) == name
    except InvalidArgumentError:
        return False
