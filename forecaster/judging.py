"""Judging: from a run's curve and its study's state to a forecast and a decision.

The one path the service (engine.py) and the replay (evaluation/replay/) both take, so that a
replay decides as the service does: the prefix a forecast is fitted on (`fit_length`), where
the study's other runs stand (`Standing`, the incumbent, the peers: `study_context`), the
study history a forecaster reads (`HistoryHolder`, keyed by `history_key`), and `judge`, which
fits when the policy will read a forecast, decides, and carries the stop votes over. Nothing
here reads a store, a clock or a cache: it works on the store's values (runs, saved
decisions) and the histories the caller passes in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

from forecaster import models
from forecaster.curves import Curve, Direction
from forecaster.hashing import digest
from forecaster.models import Prediction, StudyHistory, calibration
from forecaster.models.artifacts import ModelBank
from forecaster.policies import Action, Decision, Reason, RunView, StoppingPolicy, StudyContext
from forecaster.policies.base import Peers, best_final
from forecaster.store import Run, RunState, StopRequest, StoredDecision

# The service log's name for these lines (they were the engine's before judging moved here).
log = logging.getLogger("forecaster.engine")

# A run is refitted when its curve has grown by this factor since the points its forecast was
# fitted on (every point while it has fewer than _REFIT_ALL points). The prefix a forecast is
# fitted on is a function of the curve alone, so every replica and a replay get the same
# forecast; a 1,000-point run reported in batches of 10 is fitted ~40 times, not 100.
_REFIT_GROWTH = 1.1
_REFIT_ALL = 32


def fit_length(n_points: int) -> int:
    """How many leading points of an n-point curve its forecast is fitted on."""
    if n_points <= _REFIT_ALL:
        return n_points
    k = int(np.floor(np.log(n_points / _REFIT_ALL) / np.log(_REFIT_GROWTH) + 1e-9))
    return max(int(np.ceil(_REFIT_ALL * _REFIT_GROWTH**k - 1e-9)), _REFIT_ALL)


# -- the study as a policy sees it -------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where one run of a study stands, for the incumbent: its observed value once it is done
    (finished, stopped, or at its budget), its forecast final value while it runs."""

    name: str
    done: bool
    failed: bool
    last_value: float
    forecast_final: float | None

    @classmethod
    def of(
        cls,
        name: str,
        *,
        done: bool,
        last_value: float,
        decision: StoredDecision | None,
        failed: bool = False,
    ) -> Standing:
        """A run's standing, with the forecast final value its latest decision recorded."""
        final = decision.forecast_final if decision is not None else None
        return cls(name, done, failed, last_value, final)


def standing_of(run: Run, budget: int | None, decision: StoredDecision | None) -> Standing:
    """A stored run's standing: done once it is not running or has reached its budget."""
    done = run.state is not RunState.RUNNING or bool(budget and run.last_step >= budget)
    return Standing.of(
        run.name,
        done=done,
        failed=run.state is RunState.FAILED,
        last_value=run.last_value,
        decision=decision,
    )


def incumbent_of(direction: Direction, others: Iterable[Standing]) -> float | None:
    """The best final value, observed or forecast, of the study's other runs."""
    return best_final(
        direction,
        [(o.last_value if o.done else o.forecast_final) for o in others if not o.failed],
    )


def study_context(
    name: str,
    direction: Direction,
    max_step: int | None,
    target: float | None,
    others: Iterable[Standing],
    peers: Callable[[], Sequence[Curve]],
) -> StudyContext:
    """The study as a policy sees it from one run: the incumbent of the other runs' standings,
    and their curves (peers, read only when a policy asks for them)."""
    incumbent = incumbent_of(direction, others)
    return StudyContext(name, direction, max_step, target, incumbent, Peers(peers))


# -- the study history a forecaster reads ------------------------------------------------------


def history_key(study: str, done: Iterable[tuple[str, int]]) -> str:
    """Names a study's set of completed runs (name, last step): a cached history is reused
    while the key is the same."""
    text = ";".join(f"{name}@{last}" for name, last in sorted(done))
    return f"{study}:{digest(text)[:16]}"


class HistoryHolder:
    """One study's histories of completed runs, by their set (its key): the newest `keep`.

    A history owns the study fits made from it, so a caller that keeps one holder per study
    fits the study laws once per set of completed runs, not once per forecast. The engine keeps
    the newest one (a study's set of completed runs only grows); the replay, whose policy
    settings each complete the runs of a task in their own order, keeps many and shares them
    across settings. Thread-safe: two threads that build the same new history at once may
    both build it (the same curves, so the same fits); the holder keeps the first.

    by_inputs: a new set whose runs, as the study fits read them (the newest
    `schedule_laws.HISTORY_RUNS` that `used_by_study_fit`, in order), are those of a set held
    already gets that set's history, fits and all: the same inputs make the same fits, and so
    the same forecasts (the study laws are the only forecasters that read a history). In a
    replay the settings stop runs at different steps, and most of those sets differ only in
    runs the fits leave out (measured: 185 fits of 3 tasks, 65 distinct inputs). A run is
    named by (name, last step): its curve must be the same whenever it is.

    Example:
        >>> holder = HistoryHolder("sweep")
        >>> h = holder.get([("r1", 100)], lambda: [])
        >>> holder.get([("r1", 100)], lambda: []) is h
        True
    """

    def __init__(self, study: str, keep: int = 1, *, by_inputs: bool = False) -> None:
        self.study = study
        self._keep = max(keep, 1)
        self._lock = threading.Lock()
        self._histories: OrderedDict[str, StudyHistory] = OrderedDict()
        self._by_inputs: OrderedDict[str, StudyHistory] | None = (
            OrderedDict() if by_inputs else None
        )
        self._used: dict[tuple[str, int], bool] = {}  # (name, last step) -> read by the fits

    def get(
        self, done: Iterable[tuple[str, int]], curves: Callable[[], Iterable[Curve]]
    ) -> StudyHistory:
        """The history of the completed runs `done` (name, last step); `curves` reads their
        curves (in the order of `done`), called only when the set has changed since the last
        call."""
        done = list(done)
        key = history_key(self.study, done)
        with self._lock:
            current = self._histories.get(key)
            if current is not None:
                self._histories.move_to_end(key)
                return current
        made = tuple(curves())
        inputs = self._inputs_key(done, made) if self._by_inputs is not None else ""
        with self._lock:
            same = self._by_inputs.get(inputs) if self._by_inputs is not None else None
        history = same if same is not None else StudyHistory(made, key)
        with self._lock:
            kept = self._histories.setdefault(key, history)
            self._histories.move_to_end(key)
            while len(self._histories) > self._keep:
                self._histories.popitem(last=False)
            if self._by_inputs is not None:
                self._by_inputs.setdefault(inputs, kept)
                self._by_inputs.move_to_end(inputs)
                while len(self._by_inputs) > self._keep:
                    self._by_inputs.popitem(last=False)
        return kept

    def _inputs_key(self, done: list[tuple[str, int]], curves: tuple[Curve, ...]) -> str:
        """Names the runs of a set the study fits read, in order (see by_inputs)."""
        from forecaster.models.schedule_laws import HISTORY_RUNS, used_by_study_fit

        if len(done) != len(curves):
            raise ValueError(f"{len(done)} completed runs named, {len(curves)} curves read.")
        names = []
        for run, curve in list(zip(done, curves, strict=True))[-HISTORY_RUNS:]:
            used = self._used.get(run)
            if used is None:
                used = self._used[run] = used_by_study_fit(curve)
            if used:
                names.append(f"{run[0]}@{run[1]}")
        return digest("\n".join(names))


# -- forecast and decision ---------------------------------------------------------------------

# (where, fitted points, history key) -> forecast: a caller that fits the same prefix under the
# same history more than once (the replay, over several policy settings) shares them.
ForecastMemo = MutableMapping[tuple[str, int, str], Prediction | None]


def fit_forecast(
    forecaster: str,
    head: Curve,
    history: Callable[[], StudyHistory],
    where: str,
    bank: ModelBank | None,
    memo: ForecastMemo | None = None,
) -> Prediction | None:
    """The study's forecaster (learned ones from bank) fitted on head, with the study history
    when it uses one (history() is called only then); None, logged, when the forecaster fails:
    a forecaster bug must not take the service down. `where` names the run, in the log and in
    the memo."""
    model = models.create(forecaster, head, bank=bank)
    key = (where, len(head), "")
    prediction: Prediction | None = None
    try:  # reading the history is part of the fit: its failure is the forecaster's, too
        study_history = history() if model.needs_history(head) else None
        key = (where, len(head), study_history.key if study_history is not None else "")
        if memo is not None and key in memo:
            return memo[key]
        prediction = calibration.fit_calibrated(model, head, study_history, bank)
    except Exception:
        log.exception("forecaster %s failed on run %s", model.name, where)
        prediction = None
    if memo is not None:
        memo[key] = prediction
    return prediction


def batchable(forecaster: str, head: Curve, bank: ModelBank | None) -> bool:
    """Whether fit_forecasts fits head with others in one batch: a parametric family or the
    learned ensemble (models/batched.py, EnsembleForecaster.fit_many) that reads no study
    history for it."""
    return _batch_model(forecaster, head, bank) is not None


def _batch_model(forecaster: str, head: Curve, bank: ModelBank | None) -> object | None:
    from forecaster.models.ensemble import EnsembleForecaster
    from forecaster.models.power_law import PowerLawForecaster

    if not len(head):
        return None
    model = models.create(forecaster, head, bank=bank)
    if isinstance(model, PowerLawForecaster | EnsembleForecaster) and not model.needs_history(head):
        return model
    return None


def fit_forecasts(
    forecaster: str,
    heads: Sequence[tuple[str, Curve]],
    bank: ModelBank | None,
    memo: ForecastMemo,
) -> None:
    """The forecasts of many (where, head) at once, into memo, where the forecaster can fit
    many curves in one batch (the parametric families: models/batched.py; the learned
    ensemble: EnsembleForecaster.fit_many) and reads no study history: what
    fit_forecast(forecaster, head, ..., where, bank, memo) then finds there, the same
    forecast it would have fitted. The others are left to fit_forecast; so is a batch that
    fails (it then fits, and logs, curve by curve)."""
    from forecaster.models.batched import fit_many
    from forecaster.models.ensemble import EnsembleForecaster

    groups: dict[object, tuple[object, list[tuple[str, Curve]]]] = {}
    for where, head in heads:
        if (where, len(head), "") in memo:
            continue
        model = _batch_model(forecaster, head, bank)
        if model is not None:
            # The parametric forecasters are values (equal settings, one group); the
            # ensemble is the bank's one instance (its arrays are not hashable).
            key = id(model) if isinstance(model, EnsembleForecaster) else model
            groups.setdefault(key, (model, []))[1].append((where, head))
    for model, items in groups.values():
        curves = [head for _, head in items]
        try:
            if isinstance(model, EnsembleForecaster):
                predictions = model.fit_many(curves)
            else:
                predictions = fit_many(model, curves)  # type: ignore[arg-type]
        except Exception:
            log.exception("batched %s fit failed; fitting curve by curve", model.name)  # type: ignore[attr-defined]
            continue
        for (where, head), prediction in zip(items, predictions, strict=True):
            # What fit_forecast makes of the same fit.
            memo[(where, len(head), "")] = calibration.served(prediction, head, bank)


@dataclass(frozen=True)
class Judged:
    """A decision with the forecast it rests on and the record the store keeps of it."""

    decision: Decision
    prediction: Prediction | None
    record: StoredDecision


def record_of(decision: Decision, *, fitted_points: int, votes_before: int) -> StoredDecision:
    """The store's record of a decision made on a forecast fitted on fitted_points points,
    with the stop votes the run had before it."""
    return StoredDecision(
        at_step=decision.at_step,
        fitted_points=fitted_points,
        votes_before=votes_before,
        votes=decision.votes,
        action=decision.action.value,
        reason=decision.reason.value,
        explanation=decision.explanation,
        probabilities=dict(decision.probabilities),
        expected_saved_steps=decision.expected_saved_steps,
        policy=decision.policy,
        forecast_final=decision.forecast_final,
    )


def decision_of(record: StoredDecision) -> Decision:
    """The decision a stored record keeps (the inverse of record_of)."""
    return Decision(
        action=Action(record.action),
        reason=Reason(record.reason),
        explanation=record.explanation,
        probabilities=dict(record.probabilities),
        expected_saved_steps=record.expected_saved_steps,
        at_step=record.at_step,
        policy=record.policy,
        votes=record.votes,
        forecast_final=record.forecast_final,
    )


def manual_stop(
    request: StopRequest, *, at_step: int, budget: int | None, forecast_final: float | None
) -> Decision:
    """STOP/MANUAL: what every decision of a run a person stopped says, whatever the policy."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(request.requested_at_s))
    note = f": {request.note}" if request.note else ""
    return Decision(
        action=Action.STOP,
        reason=Reason.MANUAL,
        explanation=f"stopped by hand (StopRun at {when}){note}.",
        expected_saved_steps=max(budget - max(at_step, 0), 0) if budget else 0,
        at_step=at_step,
        policy="manual",
        forecast_final=forecast_final,
    )


def judge(
    policy: StoppingPolicy,
    view: RunView,
    context: StudyContext,
    previous: StoredDecision | None,
    cached: tuple[int, Prediction | None] | None,
    fit: Callable[[Curve], Prediction | None],
) -> Judged:
    """The one path from a run's curve to its decision, for the service and the replay.

    The forecast is fitted on the curve's first fit_length(n) points, only when the policy
    will read it; `cached` (fitted_points, prediction) is reused when the prefix is the same.
    Stop votes carry over from `previous`: the same forecast recounts the same vote, a new
    one adds to them.
    """
    curve = view.curve
    n_fit = fit_length(len(curve))
    before = 0
    if previous is not None:
        before = previous.votes_before if previous.fitted_points == n_fit else previous.votes
    view = RunView(view.study, view.name, curve, before)
    prediction = cached[1] if cached is not None and cached[0] == n_fit else None
    try:
        if prediction is None and n_fit and policy.needs_forecast(view, context):
            prediction = fit(curve.head(n_fit))
        decision = policy.decide(view, prediction, context)
    except Exception:  # default is CONTINUE: a policy that raises never stops a run
        log.exception("policy failed on run %s/%s; answering CONTINUE", view.study, view.name)
        decision = Decision(
            action=Action.CONTINUE,
            reason=Reason.WARMUP,
            explanation="the policy failed on this curve (see the service log); continuing.",
            at_step=curve.last_step,
            policy="error",
        )
    record = record_of(decision, fitted_points=n_fit, votes_before=before)
    return Judged(decision, prediction, record)
