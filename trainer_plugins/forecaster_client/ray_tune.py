"""Ray Tune: a Stopper that stops a trial when the forecaster service says so, and a
TrialScheduler that pauses and resumes trials (freeze-thaw) on the service's ranking.

    stopper = ForecastStopper("127.0.0.1:50051", study="tune-sweep", metric="loss", max_step=100)
    tuner = tune.Tuner(train_fn, run_config=tune.RunConfig(stop=stopper), ...)

    scheduler = ForecastScheduler("127.0.0.1:50051", study="tune-sweep", max_step=100)
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(metric="loss", mode="min",
                                                              scheduler=scheduler), ...)

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
from forecaster_client.decision import RankedRun
from forecaster_client.sync import FailOpenStudy

require("ray.tune", "ray")
from ray.tune import Stopper  # noqa: E402
from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402


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


class ForecastScheduler(FIFOScheduler):
    """A Tune scheduler that asks the service about each result: STOP stops the trial, PAUSE
    pauses it (Tune checkpoints it and frees its resources), CONTINUE goes on.

    The service's study pauses instead of stopping an unpromising trial (its `forecast`
    policy with ``pause``). New trials run first; once none is waiting, paused trials are
    resumed from their checkpoints in the order of the service's ranking (RankRuns: the
    expected gain of the rest of each trial per fraction of its budget left), best first. A
    paused trial whose gain rate is below ``resume_min_gain_rate`` is stopped instead of
    resumed (0, the default: every paused trial is resumed in turn). A resumed trial is not
    paused again (only stopped): it was chosen to run on. Pausing needs trainables that save
    and restore checkpoints (a ``tune.Trainable`` class, or a function that reports them).
    With the service unreachable no trial is paused or stopped, and paused ones resume in
    order (one warning). Bound concurrency by resources, not ``max_concurrent_trials``:
    Tune counts a paused trial as live, so that limit holds new trials back until the paused
    ones are resumed.

    Args:
        address: "host:port" of the service.
        study: the service's study name.
        max_step: a trial's budget in ``step_key`` units (training iterations by default).
        metric, mode: the result key to report and "min"/"max"; default: the TuneConfig's.
        step_key, lr_key: the result keys of the step and of the current learning rate.
        resume_min_gain_rate: paused trials priced below this are stopped, not resumed.
        policy_params: further settings of the study's `forecast` policy (``pause`` is set).
    """

    def __init__(
        self,
        address: str,
        study: str,
        *,
        max_step: int = 0,
        metric: str | None = None,
        mode: str | None = None,
        step_key: str = "training_iteration",
        lr_key: str = "lr",
        target: float | None = None,
        policy_params: Mapping[str, Any] | None = None,
        forecaster: str = "",
        resume_min_gain_rate: float = 0.0,
        token: str | None = None,
        tls: Credentials = False,
        timeout_s: float = 2.0,
    ) -> None:
        super().__init__()
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
        self._address = address
        self._study = study
        self._max_step = max_step
        self._metric = metric
        self._mode = mode
        self._target = target
        self._params = {**(policy_params or {}), "pause": True}
        self._forecaster = forecaster
        self._step_key = step_key
        self._lr_key = lr_key
        self.resume_min_gain_rate = resume_min_gain_rate
        self._connect = partial(FailOpenStudy, address, token=token, tls=tls, timeout_s=timeout_s)
        self._client: FailOpenStudy | None = None
        self.last_decision: dict[str, Any] = {}  # trial id -> the service's Decision
        self.paused: list[str] = []  # trial ids, in the order they were paused
        self.resumed: list[str] = []  # trial ids, in the order they were resumed
        self.stopped_paused: list[str] = []  # paused trials stopped instead of resumed
        self.last_ranking: list[RankedRun] = []  # the service's ranking at the last resume

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self._metric is not None and metric is not None and metric != self._metric:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def _study_client(self) -> FailOpenStudy:
        if self._client is None:
            if self._metric is None:
                raise ValueError(
                    "ForecastScheduler needs a metric: pass metric= (and mode=) to it or to "
                    "tune.TuneConfig"
                )
            spec = study_spec(
                self._study,
                metric=self._metric,
                direction="maximize" if self._mode == "max" else "minimize",
                max_step=self._max_step,
                target=self._target,
                policy="forecast",
                policy_params=self._params,
                forecaster=self._forecaster,
            )
            self._client = self._connect(spec)
        return self._client

    def _report(self, trial: Trial, result: Mapping[str, Any]) -> Any:
        """The result's point sent; the service's decision, None when it has none."""
        value = result.get(self._metric) if self._metric else None
        step = result.get(self._step_key)
        if value is None or step is None:
            return None
        lr = result.get(self._lr_key)
        decision = self._study_client().report(
            trial.trial_id,
            [(int(step), float(value), None if lr is None else float(lr))],
            config=trial.config if isinstance(trial.config, Mapping) else None,
        )
        if decision is not None:
            self.last_decision[trial.trial_id] = decision
        return decision

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision = self._report(trial, result)
        if decision is None:
            return str(TrialScheduler.CONTINUE)
        if decision.stop:
            self._study_client().finish(trial.trial_id, decision.final_state)
            return str(TrialScheduler.STOP)
        if decision.pause and trial.trial_id not in self.resumed and not result.get("done"):
            self.paused.append(trial.trial_id)
            return str(TrialScheduler.PAUSE)
        return str(TrialScheduler.CONTINUE)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        # Tune hands the last result of a trial its stop criteria end here, not to
        # on_trial_result: it is the run's last point.
        decision = self._report(trial, result) if result else None
        decision = decision or self.last_decision.get(trial.trial_id)
        if self._client is not None:
            state = "finished"
            if decision is not None and decision.stop:
                state = decision.final_state
            self._client.finish(trial.trial_id, state)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        if self._client is not None:
            self._client.finish(trial.trial_id, "failed")

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        paused = {t.trial_id: t for t in trials if t.status == Trial.PAUSED}
        if not paused:
            return None
        ranking = self._client.rank() if self._client is not None else None
        if ranking is not None:
            self.last_ranking = ranking
        order = [r for r in ranking or () if r.run in paused]
        chosen: Trial | None = None
        for ranked in order:
            trial = paused.pop(ranked.run)
            rate = ranked.gain_rate
            if rate is not None and rate < self.resume_min_gain_rate:
                self.stopped_paused.append(trial.trial_id)
                if self._client is not None:
                    self._client.finish(trial.trial_id, "stopped")
                tune_controller.stop_trial(trial)
                continue
            chosen = trial
            break
        if chosen is None and paused:  # unranked (no forecast, or the service away): in order
            chosen = next(iter(paused.values()))
        if chosen is not None and chosen.trial_id not in self.resumed:
            self.resumed.append(chosen.trial_id)
        return chosen

    def debug_string(self) -> str:
        return (
            f"Using ForecastScheduler (service {self._address}, study {self._study!r}): "
            f"{len(self.paused)} paused, {len(self.resumed)} resumed."
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}
