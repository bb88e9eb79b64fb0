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
            stopped = done.number in self._stopped or "stopped_by" in done.user_attrs
            state = "stopped" if stopped else _FINAL_STATES[done.state]
            client.finish(f"trial-{done.number}", state)
        values = trial.intermediate_values
        if not values:
            return False
        points = [(step, values[step], None) for step in sorted(values)]
        decision = client.report(f"trial-{trial.number}", points, config=trial.params)
        if decision is None:
            return False
        self.last_decision[trial.number] = decision
        return decision.stop and decision.reason in _PRUNE_REASONS

    def record_forecast(self, trial: optuna.Trial) -> float | None:
        """Sets the service's forecast of the trial's final value on the trial as user
        attributes (see the module's docstring); returns its median, None when the service has
        no forecast to give."""
        if self._client is None:
            return None
        forecast = self._client.final_forecast(f"trial-{trial.number}")
        if forecast is None:
            return None
        decision = self.last_decision.get(trial.number)
        trial.set_user_attr("forecast_final", forecast.median)
        trial.set_user_attr("forecast_low", forecast.low)
        trial.set_user_attr("forecast_high", forecast.high)
        trial.set_user_attr("forecast_step", forecast.at_step)
        trial.set_user_attr("forecast_model", forecast.model)
        trial.set_user_attr("stopped_by", decision.reason if decision else "forecaster")
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
