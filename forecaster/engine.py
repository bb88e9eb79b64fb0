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
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from forecaster import models, policies
from forecaster.curves import Curve, LrSchedule, Points
from forecaster.errors import AlreadyExistsError, InvalidArgumentError
from forecaster.judging import (
    HistoryHolder,
    fit_forecast,
    judge,
    standing_of,
    study_context,
)
from forecaster.models import Prediction, StudyHistory
from forecaster.models.artifacts import ModelBank
from forecaster.models.prediction import ForecastSummary, summarize
from forecaster.observer import EngineObserver, NoObserver
from forecaster.policies import Decision, RunView, StoppingPolicy, StudyContext
from forecaster.store import (
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


class Engine:
    """Ingest -> forecast cache -> decide.

    Args:
        store: where studies, runs and points live.
        models: the learned models "auto" and the learned forecaster names are served from
            (None: none; the service passes the bank it loaded and reloads).
        cache_size: runs whose curve and forecast are kept in memory.
        clock: injected for tests; seconds since the epoch.
        observer: told of each fit and cache lookup (the service's metrics).
    """

    def __init__(
        self,
        store: Store,
        *,
        models: ModelBank | None,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        observer: EngineObserver | None = None,
    ) -> None:
        self.store = store
        self.observer: EngineObserver = observer or NoObserver()
        self.models = models
        self.clock = clock
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._studies: dict[str, _StudyEntry] = {}
        self._runs: OrderedDict[tuple[str, str], _RunEntry] = OrderedDict()
        self._histories: dict[str, HistoryHolder] = {}

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
            old = cached.curve
            new = result.new_points
            lr = None
            if old.lr is not None or not np.isnan(new.lr).all():
                old_lr = old.lr if old.lr is not None else np.full(len(old), np.nan)
                lr = np.concatenate([old_lr, new.lr])
            curve = Curve(
                np.concatenate([old.steps, new.steps]),
                np.concatenate([old.values, new.values]),
                old.direction,
                old.max_step,
                lr,
                old.target,
                old.schedule,
                old.config,
            )
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
        prediction = models.create(forecaster, curve, bank=self.models).fit(curve)
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
        """The study's completed runs as curves; re-read only when one more has completed."""
        done = [r for r in self.store.list_runs(study) if r.state is not RunState.RUNNING]
        with self._lock:
            holder = self._histories.setdefault(study, HistoryHolder(study))
        entry = self._study(study)
        return holder.get(
            ((r.name, r.last_step) for r in done),
            lambda: (
                curve_of(entry.study, r, self.store.get_points(study, r.name))
                for r in done
                if r.last_step >= 0
            ),
        )

    def _current(self, study: str, run: str) -> tuple[_StudyEntry, _RunEntry]:
        entry = self._study(study)
        stored = self.store.get_run(study, run)
        with self._lock:
            cached = self._runs.get((study, run))
        hit = cached is not None and cached.curve.last_step == stored.last_step
        self.observer.cache_lookup(hit)
        if cached is not None and hit:
            return entry, cached
        return entry, self._evaluate(entry, stored, None)

    def _context(
        self, entry: _StudyEntry, run: str
    ) -> tuple[StudyContext, dict[str, StoredDecision]]:
        """The study as a policy sees it from run (the incumbent, and lazily the peers), and
        the saved decisions of the study's runs (this run's too) it was read from."""
        spec = entry.study.spec
        others = [r for r in self.store.list_runs(spec.name) if r.name != run]
        decisions = self.store.list_decisions(spec.name)
        context = study_context(
            spec.name,
            spec.direction,
            spec.max_step,
            spec.target,
            (
                standing_of(r, r.spec.max_step or spec.max_step, decisions.get(r.name))
                for r in others
            ),
            lambda: [self._stored_curve(entry, r) for r in others],
        )
        return context, decisions

    def _stored_curve(self, entry: _StudyEntry, run: Run) -> Curve:
        with self._lock:
            cached = self._runs.get((run.study, run.name))
        if cached is not None and cached.curve.last_step == run.last_step:
            return cached.curve
        return curve_of(entry.study, run, self.store.get_points(run.study, run.name))

    def _fit(self, entry: _StudyEntry, run: Run, head: Curve) -> Prediction | None:
        name, where = entry.study.spec.forecaster, f"{run.study}/{run.name}"
        start = time.perf_counter()
        fitted = fit_forecast(name, head, lambda: self._history(run.study), where, self.models)
        if fitted is not None:
            self.observer.forecast_fitted(fitted.model, time.perf_counter() - start)
        return fitted

    def _evaluate(self, entry: _StudyEntry, run: Run, curve: Curve | None) -> _RunEntry:
        """Forecast (when the policy needs it) and decide on the run's curve."""
        if curve is None:
            curve = curve_of(entry.study, run, self.store.get_points(run.study, run.name))
        key = (run.study, run.name)
        with self._lock:
            previous = self._runs.get(key)
        context, decisions = self._context(entry, run.name)
        record = previous.record if previous is not None else decisions.get(run.name)
        cached = None if previous is None else (previous.fitted_points, previous.prediction)
        judged = judge(
            entry.policy,
            RunView(run.study, run.name, curve),
            context,
            record,
            cached,
            lambda head: self._fit(entry, run, head),
        )
        new = judged.record
        if record is None or (
            (new.fitted_points, new.votes, new.action, new.reason, new.forecast_final)
            != (
                record.fitted_points,
                record.votes,
                record.action,
                record.reason,
                record.forecast_final,
            )
        ):
            self.store.save_decision(run.study, run.name, new)
        run_entry = _RunEntry(
            curve=curve,
            prediction=judged.prediction,
            decision=judged.decision,
            fitted_points=new.fitted_points,
            record=new,
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


def _alias_of(stored: str, name: str) -> bool:
    """Whether the policy name a study was stored with stands for the canonical name."""
    try:
        return policies.check_name(stored) == name
    except InvalidArgumentError:
        return False
