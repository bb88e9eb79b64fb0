"""Ray Tune: a Stopper that stops a trial when the forecaster service says so.

    stopper = ForecastStopper("127.0.0.1:50051", study="tune-sweep", metric="loss", max_step=100)
    tuner = tune.Tuner(train_fn, run_config=tune.RunConfig(stop=stopper), ...)

Each trial is a run (named by its trial id); each result's metric at its
``training_iteration`` (or ``step_key``) is a point, with ``lr_key`` as its learning rate when
the result has it. With the service unreachable no trial is stopped (one warning).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from forecaster_client._integration import MetricLookup, require
from forecaster_client._proto import forecaster_pb2 as pb
from forecaster_client.connection import Credentials, study_spec
from forecaster_client.sync import FailOpenStudy

require("ray.tune", "ray")
from ray.tune import Stopper  # noqa: E402


class ForecastStopper(Stopper):
    """Stops a trial when the service's decision about its curve is STOP.

    Args:
        address: "host:port" of the service.
        study: the service's study name.
        metric: the result key to report; mode: "min" or "max".
        max_step: a trial's budget in ``step_key`` units (training iterations by default).
        step_key: the result key that counts steps; lr_key: the result key of the current
            learning rate, when the trainable reports one.
    """

    def __init__(
        self,
        address: str,
        study: str,
        metric: str,
        *,
        mode: str = "min",
        max_step: int = 0,
        step_key: str = "training_iteration",
        lr_key: str = "lr",
        target: float | None = None,
        policy: str = "",
        policy_params: Mapping[str, Any] | None = None,
        forecaster: str = "",
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 2.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        spec = study_spec(
            study,
            metric=metric,
            direction="minimize" if mode == "min" else "maximize",
            max_step=max_step,
            target=target,
            policy=policy,
            policy_params=policy_params,
            forecaster=forecaster,
        )
        self._spec = spec.SerializeToString()
        self._connect = partial(FailOpenStudy, address, token=token, tls=tls, timeout_s=timeout_s)
        self._client: FailOpenStudy | None = None
        self._lookup = MetricLookup(metric, "Ray Tune result")
        self._step_key = step_key
        self._lr_key = lr_key
        self.last_decision: dict[str, Any] = {}  # trial id -> the service's Decision

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        value = self._lookup.find(result)
        step = result.get(self._step_key)
        if value is None or step is None:
            return False
        lr = result.get(self._lr_key)
        config = result.get("config")
        if self._client is None:
            spec = pb.StudySpec.FromString(self._spec)
            self._client = self._connect(spec)
        decision = self._client.report(
            trial_id,
            [(int(step), value, lr)],
            config=config if isinstance(config, Mapping) else None,
        )
        if decision is None:
            if result.get("done"):
                self._client.finish(trial_id, "finished")
            return False
        self.last_decision[trial_id] = decision
        if decision.stop or result.get("done"):
            self._client.finish(trial_id, decision.final_state)
        return decision.stop

    def stop_all(self) -> bool:
        return False

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves its run config with the experiment: the channel is re-opened on restore.
        return {**self.__dict__, "_client": None}
