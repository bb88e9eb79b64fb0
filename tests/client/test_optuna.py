"""The Optuna pruner against the real service."""

from __future__ import annotations

import logging
import math

import optuna
import pytest

from forecaster.server._proto import forecaster_pb2 as pb
from forecaster_client.optuna import ForecastPruner
from tests.client.conftest import Service, free_port

STEPS = 40


@pytest.fixture(scope="module")
def service(shared_service: Service) -> Service:
    """One service for the module: each test reports to a study of its own."""
    return shared_service


def objective(trial: optuna.Trial) -> float:
    """A power-law curve; trials with diverge=True turn NaN at step 10."""
    scale = trial.suggest_float("scale", 0.5, 2.0)
    diverge = trial.suggest_categorical("diverge", [False, True])
    value = math.nan
    for step in range(1, STEPS + 1):
        value = math.nan if diverge and step >= 10 else 1.0 + scale * step**-0.5
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def study_with(pruner: ForecastPruner) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="optuna-sweep", direction="minimize", pruner=pruner)
    for scale, diverge in [(1.0, False), (1.5, True), (0.8, False)]:
        study.enqueue_trial({"scale": scale, "diverge": diverge})
    return study


def test_a_diverging_trial_is_pruned_and_every_trial_is_a_run(service):
    pruner = ForecastPruner(service.address, max_step=STEPS)
    study = study_with(pruner)
    study.optimize(objective, n_trials=3)

    states = [t.state for t in study.trials]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.COMPLETE,
    ]
    assert study.trials[1].last_step == 10  # pruned at the first NaN
    assert pruner.last_decision[1].reason == "diverged"

    spec = service.study("optuna-sweep").spec
    assert spec.direction == pb.DIRECTION_MINIMIZE and spec.max_step == STEPS
    runs = {r.spec.name: r for r in service.runs("optuna-sweep")}
    assert sorted(runs) == ["trial-0", "trial-1", "trial-2"]
    # Trials that ended before a later prune() call are marked in the service.
    assert runs["trial-0"].state == pb.RUN_STATE_FINISHED
    assert runs["trial-1"].state == pb.RUN_STATE_STOPPED
    assert dict(runs["trial-1"].spec.config) == {"scale": 1.5, "diverge": True}
    assert service.points("optuna-sweep", "trial-0").steps.tolist() == list(range(1, STEPS + 1))


def test_with_the_service_down_nothing_is_pruned_and_one_warning_is_logged(caplog):
    pruner = ForecastPruner(f"127.0.0.1:{free_port()}", max_step=STEPS)
    with caplog.at_level(logging.WARNING, "forecaster_client"):
        study = study_with(pruner)
        study.optimize(objective, n_trials=3)
    # Never pruned: the diverging trial runs to its end (and fails there on its NaN value).
    assert [t.state for t in study.trials] == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,
    ]
    assert study.trials[1].last_step == STEPS
    assert sum("cannot ask the service" in m for m in caplog.messages) == 1


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_service_study_takes_the_optuna_direction(service, direction):
    pruner = ForecastPruner(service.address, study="dir-" + direction, max_step=5)
    study = optuna.create_study(direction=direction, pruner=pruner)
    study.optimize(lambda t: (t.report(1.0, 1), t.should_prune(), 1.0)[-1], n_trials=1)
    expected = pb.DIRECTION_MINIMIZE if direction == "minimize" else pb.DIRECTION_MAXIMIZE
    assert service.study("dir-" + direction).spec.direction == expected


def test_a_stopped_trial_returns_its_forecast_so_the_sampler_learns_from_it(service):
    """The second trial heads for 3.0 against a finished 1.0: stopped as unpromising, it
    completes with the forecast of its final value, recorded on the trial."""
    pruner = ForecastPruner(
        service.address,
        study="feedback",
        max_step=STEPS,
        policy="forecast",
        policy_params={"hysteresis": 1, "grace_fraction": 0.0, "min_points": 5},
    )

    def feedback_objective(trial: optuna.Trial) -> float:
        floor = trial.suggest_float("floor", 0.5, 3.0)
        value = math.nan
        for step in range(1, STEPS + 1):
            value = floor + 0.5 * step**-0.5
            trial.report(value, step)
            if trial.should_prune():
                return pruner.forecast_or_prune(trial)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="feedback", direction="minimize", pruner=pruner)
    for floor in (1.0, 3.0, 1.1):
        study.enqueue_trial({"floor": floor})
    study.optimize(feedback_objective, n_trials=3)

    stopped = study.trials[1]
    assert stopped.state == optuna.trial.TrialState.COMPLETE and stopped.last_step < STEPS
    attrs = stopped.user_attrs
    assert attrs["stopped_by"] == "unpromising"
    true_final = 3.0 + 0.5 * STEPS**-0.5
    assert abs(stopped.value - true_final) / true_final < 0.05
    assert (
        attrs["forecast_low"] <= attrs["forecast_final"] == stopped.value <= attrs["forecast_high"]
    )
    assert attrs["forecast_step"] == STEPS and attrs["forecast_model"]
    runs = {r.spec.name: r for r in service.runs("feedback")}
    assert runs["trial-1"].state == pb.RUN_STATE_STOPPED  # the service knows it was cut
    assert study.best_trial.number == 0


def test_a_paused_trial_is_marked_and_a_driver_resumes_it_as_the_same_run(service):
    """The study pauses instead of pruning; the paused trial carries its mark, ranks as the
    service says, and its continuation goes on from its checkpoint as the same run."""
    checkpoints: dict[int, int] = {}  # trial number -> last step trained: the objective's own

    def curve_objective(trial: optuna.Trial) -> float:
        floor = trial.suggest_float("floor", 1.0, 8.0)
        start = checkpoints.get(trial.user_attrs.get("forecaster_resumes", -1), 0)
        value = math.nan
        for step in range(start + 1, STEPS + 1):
            value = floor + 3.0 * (step / 10.0) ** -0.5
            trial.report(value, step)
            checkpoints[trial.number] = step
            if trial.should_prune():
                return pruner.forecast_or_prune(trial)
        return value

    pruner = ForecastPruner(service.address, max_step=STEPS, policy_params={"pause": True})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="optuna-pause", direction="minimize", pruner=pruner)
    for floor in (2.0, 6.0, 4.0):
        study.enqueue_trial({"floor": floor})
    study.optimize(curve_objective, n_trials=3)

    assert set(pruner.paused) == {1, 2} and pruner.last_decision[1].pause
    paused = pruner.paused_trials(study)
    assert [t.number for t in paused] == [2, 1]  # 4.0 is closer to the incumbent: first
    assert all(t.user_attrs["paused"] and t.user_attrs["paused_at_step"] < STEPS for t in paused)
    runs = {r.spec.name: r for r in service.runs("optuna-pause")}
    assert runs["trial-1"].state == runs["trial-2"].state == pb.RUN_STATE_RUNNING

    pruner.resume(study, paused[0])
    study.optimize(curve_objective, n_trials=1)
    resumed = study.trials[-1]
    assert resumed.user_attrs["forecaster_resumes"] == 2
    assert (
        resumed.state == optuna.trial.TrialState.COMPLETE and min(resumed.intermediate_values) > 1
    )
    assert [t.number for t in pruner.paused_trials(study)] == [1]
    study.optimize(curve_objective, n_trials=1)  # a later report finishes the resumed run
    steps = service.points("optuna-pause", "trial-2").steps.tolist()
    assert steps == list(range(1, STEPS + 1))  # one run, no step twice: it went on
    assert service.run("optuna-pause", "trial-2").state == pb.RUN_STATE_FINISHED
    with pytest.raises(ValueError, match="not paused"):
        pruner.resume(study, study.trials[0])
