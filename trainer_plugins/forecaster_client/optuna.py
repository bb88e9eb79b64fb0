"""Optuna: a pruner that asks the forecaster service, from forecasts of each trial's curve.

    pruner = ForecastPruner("127.0.0.1:50051", max_step=100)
    study = optuna.create_study(direction="minimize", pruner=pruner)

Each trial is a run of the service's study (named after the Optuna study); its intermediate
values are the curve and its params the run's config. Finished, pruned and failed trials are
marked so in the service, whose policy compares running trials with them. With the service
unreachable the pruner never prunes (and warns once).

A pruned trial can tell the sampler what it would have reached. Optuna's samplers learn little
from pruned trials (TPE treats them as worse than every complete one, ranked by their last
step); a forecast of the final value is a far better guess:

    if trial.should_prune():
        return pruner.forecast_or_prune(trial)   # instead of: raise optuna.TrialPruned()

It records the service's forecast on the trial (user attributes ``forecast_final``,
``forecast_low``, ``forecast_high`` (the 90% interval), ``forecast_step``, ``forecast_model``,
``stopped_by``) and returns the median, so the trial completes with it; the service still
records the run as stopped. Without a forecast (service away) it raises TrialPruned as usual.
``pruner.record_forecast(trial)`` records the same attributes and lets you raise yourself.

Pause and resume: with ``policy_params={"pause": True}`` the service pauses an unpromising
trial instead of stopping it. The pruner prunes it in Optuna (``forecast_or_prune`` marks it
with the user attribute ``paused`` = True) but leaves its run running in the service, so a
driver can resume it later, best first by the service's ranking:

    study.optimize(objective, n_trials=30)
    for frozen in pruner.paused_trials(study):     # best first (RankRuns)
        pruner.resume(study, frozen)               # enqueues its params, as its continuation
    study.optimize(objective, n_trials=len(study.get_trials(states=(WAITING,))))

The resumed trial carries ``forecaster_resumes`` (the paused trial's number) in its user
attributes: the objective reads it to restart from that trial's checkpoint, and the pruner
reports it as the same run (its points go on from the paused step) and does not pause it
again.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from forecaster_client._integration import require
from forecaster_client.connection import Credentials, study_spec
from forecaster_client.sync import FailOpenStudy

if TYPE_CHECKING:
    import optuna
else:
    optuna = require("optuna", "optuna")

# The stops that say a trial is bad. Optuna has no "stop early but count it" outcome: a
# converged run, one that reached the target or its budget, is left to complete (the decision
# is in last_decision).
_PRUNE_REASONS = frozenset({"diverged", "unpromising", "target_unreachable", "not_learning"})

_FINAL_STATES = MappingProxyType(
    {
        optuna.trial.TrialState.COMPLETE: "finished",
        optuna.trial.TrialState.PRUNED: "stopped",
        optuna.trial.TrialState.FAIL: "failed",
    }
)


# The user attribute of a trial that goes on from a paused one: the paused trial's number.
_RESUMES = "forecaster_resumes"


def _run_name(trial: optuna.trial.FrozenTrial | optuna.Trial) -> str:
    """The service's run of a trial: a resumed trial is the run of the trial it goes on from."""
    resumes = trial.user_attrs.get(_RESUMES)
    return f"trial-{resumes if resumes is not None else trial.number}"


def _is_paused(trial: optuna.trial.FrozenTrial, paused: Mapping[int, int]) -> bool:
    return trial.number in paused or bool(trial.user_attrs.get("paused"))


class ForecastPruner(optuna.pruners.BasePruner):
    """Prunes a trial when the service's decision about its curve is STOP because it diverged,
    is unpromising or cannot reach the target.

    Args:
        address: "host:port" of the service.
        max_step: the budget of a trial, in the steps passed to trial.report().
        study: the service's study name; default: the Optuna study's name.
        metric: the metric's name in the service.
        target, policy, policy_params, forecaster: the service study's settings.
        timeout_s: how long one question may take before the trial goes on.
    """

    def __init__(
        self,
        address: str,
        *,
        max_step: int = 0,
        study: str | None = None,
        metric: str = "objective",
        target: float | None = None,
        policy: str = "",
        policy_params: Mapping[str, Any] | None = None,
        forecaster: str = "",
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 2.0,
    ) -> None:
        # The service's study is made on the first prune(): its name and direction are the
        # Optuna study's.
        self._spec = partial(
            study_spec,
            max_step=max_step,
            metric=metric,
            target=target,
            policy=policy,
            policy_params=policy_params,
            forecaster=forecaster,
        )
        self._study_name = study
        self._connect = partial(FailOpenStudy, address, token=token, tls=tls, timeout_s=timeout_s)
        self._client: FailOpenStudy | None = None
        self.last_decision: dict[int, Any] = {}  # trial number -> the service's Decision
        self._stopped: set[int] = set()  # trials completed with a forecast in place of a value
        self.paused: dict[int, int] = {}  # paused trial number -> the step it was paused at
        self._resumed: set[int] = set()  # paused trial numbers enqueued to go on

    def _client_for(self, study: optuna.Study) -> FailOpenStudy:
        if self._client is None:
            direction = (
                "maximize"
                if study.direction == optuna.study.StudyDirection.MAXIMIZE
                else "minimize"
            )
            spec = self._spec(self._study_name or study.study_name, direction=direction)
            self._client = self._connect(spec)
        return self._client

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        client = self._client_for(study)
        for done in study.get_trials(deepcopy=False, states=tuple(_FINAL_STATES)):
            if _is_paused(done, self.paused):
                continue  # its run stays running: the trial that resumes it finishes it
            stopped = done.number in self._stopped or "stopped_by" in done.user_attrs
            state = "stopped" if stopped else _FINAL_STATES[done.state]
            client.finish(_run_name(done), state)
        values = trial.intermediate_values
        if not values:
            return False
        points = [(step, values[step], None) for step in sorted(values)]
        decision = client.report(_run_name(trial), points, config=trial.params)
        if decision is None:
            return False
        self.last_decision[trial.number] = decision
        if decision.pause:
            if _RESUMES in trial.user_attrs:  # resumed to go on: not paused again
                return False
            self.paused[trial.number] = max(values)
            return True
        return decision.stop and decision.reason in _PRUNE_REASONS

    def paused_trials(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The study's paused trials not yet resumed, the one whose rest the service expects
        to buy most per unit of compute first (RankRuns); in trial order where the service
        cannot rank them."""
        paused = [
            t
            for t in study.get_trials(deepcopy=False)
            if _is_paused(t, self.paused) and t.number not in self._resumed
        ]
        ranking = self._client.rank() if self._client is not None else None
        order = {r.run: i for i, r in enumerate(ranking or ())}
        return sorted(paused, key=lambda t: (order.get(_run_name(t), len(order)), t.number))

    def resume(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Enqueues the paused trial's params as its continuation: the next trial carries
        ``forecaster_resumes`` = its number (and ``paused_at_step``), so the objective can
        restart from its checkpoint and the service sees the same run go on."""
        if not _is_paused(trial, self.paused):
            raise ValueError(f"trial {trial.number} was not paused by the forecaster service")
        step = self.paused.get(trial.number, trial.user_attrs.get("paused_at_step", -1))
        study.enqueue_trial(
            trial.params,
            user_attrs={_RESUMES: trial.number, "paused_at_step": step},
            skip_if_exists=False,
        )
        self._resumed.add(trial.number)

    def record_forecast(self, trial: optuna.Trial) -> float | None:
        """Sets the service's forecast of the trial's final value on the trial as user
        attributes (see the module's docstring); returns its median, None when the service has
        no forecast to give."""
        if self._client is None:
            return None
        forecast = self._client.final_forecast(_run_name(trial))
        if forecast is None:
            return None
        decision = self.last_decision.get(trial.number)
        trial.set_user_attr("forecast_final", forecast.median)
        trial.set_user_attr("forecast_low", forecast.low)
        trial.set_user_attr("forecast_high", forecast.high)
        trial.set_user_attr("forecast_step", forecast.at_step)
        trial.set_user_attr("forecast_model", forecast.model)
        trial.set_user_attr("stopped_by", decision.reason if decision else "forecaster")
        if trial.number in self.paused:
            trial.set_user_attr("paused", True)
            trial.set_user_attr("paused_at_step", self.paused[trial.number])
        return forecast.median

    def forecast_or_prune(self, trial: optuna.Trial) -> float:
        """The value a trial the pruner stopped should return so the sampler learns from it:
        the forecast of its final value (recorded on the trial); raises optuna.TrialPruned when
        there is no forecast."""
        median = self.record_forecast(trial)
        if median is None or median != median:  # NaN: a diverged trial has no final value
            raise optuna.TrialPruned()
        self._stopped.add(trial.number)
        return median
