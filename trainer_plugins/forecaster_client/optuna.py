"""Optuna: a pruner that asks the forecaster service, from forecasts of each trial's curve.

    pruner = ForecastPruner("127.0.0.1:50051", max_step=100)
    study = optuna.create_study(direction="minimize", pruner=pruner)

Each trial is a run of the service's study (named after the Optuna study); its intermediate
values are the curve and its params the run's config. Finished, pruned and failed trials are
marked so in the service, whose policy compares running trials with them. With the service
unreachable the pruner never prunes (and warns once).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from forecaster_client._integration import require
from forecaster_client.connection import Credentials, study_spec
from forecaster_client.sync import StudyClient

if TYPE_CHECKING:
    import optuna
else:
    optuna = require("optuna", "optuna")

# The stops that say a trial is bad. Optuna has no "stop early but count it" outcome: a
# converged run, one that reached the target or its budget, is left to complete (the decision
# is in last_decision).
_PRUNE_REASONS = frozenset({"diverged", "unpromising", "target_unreachable"})

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
        self._connect = partial(StudyClient, address, token=token, tls=tls, timeout_s=timeout_s)
        self._client: StudyClient | None = None
        self.last_decision: dict[int, Any] = {}  # trial number -> the service's Decision

    def _client_for(self, study: optuna.Study) -> StudyClient:
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
            client.finish(f"trial-{done.number}", _FINAL_STATES[done.state])
        values = trial.intermediate_values
        if not values:
            return False
        points = [(step, values[step], None) for step in sorted(values)]
        decision = client.report(f"trial-{trial.number}", points, config=trial.params)
        if decision is None:
            return False
        self.last_decision[trial.number] = decision
        return decision.stop and decision.reason in _PRUNE_REASONS
