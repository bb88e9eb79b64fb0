"""The Ray Tune stopper in a real (local, 1-CPU) Tune run against the real service."""

from __future__ import annotations

import math

import pytest

from forecaster.server._proto import forecaster_pb2 as pb

ray = pytest.importorskip("ray", reason="needs the ray extra of trainer_plugins")
from ray import tune  # noqa: E402

from forecaster_client.ray_tune import ForecastStopper  # noqa: E402

# Importing the framework alone takes seconds (see SLOW_TO_IMPORT in conftest.py).
pytestmark = pytest.mark.slow

STEPS = 30


def trainable(config: dict) -> None:
    """A power-law curve with its learning rate; diverging trials turn NaN at iteration 8."""
    for step in range(1, STEPS + 1):
        loss = math.nan if config["diverge"] and step >= 8 else 1.0 + config["scale"] * step**-0.5
        tune.report({"loss": loss, "lr": 0.1 / step})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_a_diverging_trial_is_stopped_and_every_trial_is_a_run(service, local_ray, tmp_path):
    stopper = ForecastStopper(service.address, "tune-sweep", "loss", max_step=STEPS)
    tuner = tune.Tuner(
        trainable,
        param_space={"scale": 1.0, "diverge": tune.grid_search([False, True])},
        run_config=tune.RunConfig(
            stop=stopper, storage_path=str(tmp_path), verbose=0, log_to_file=False
        ),
    )
    results = tuner.fit()

    iterations = sorted((r.config["diverge"], r.metrics["training_iteration"]) for r in results)
    assert iterations[0] == (False, STEPS)
    assert iterations[1][0] is True and 8 <= iterations[1][1] < STEPS  # stopped by the service

    runs = {r.spec.name: r for r in service.runs("tune-sweep")}
    assert len(runs) == 2
    states = sorted(pb.RunState.Name(r.state) for r in runs.values())
    assert states == ["RUN_STATE_FINISHED", "RUN_STATE_STOPPED"]
    stopped = next(name for name, r in runs.items() if r.state == pb.RUN_STATE_STOPPED)
    assert stopper.last_decision[stopped].reason == "diverged"
    points = service.points("tune-sweep", stopped)
    assert points.steps.tolist() == list(range(1, len(points) + 1))
    assert points.lr.tolist() == pytest.approx([0.1 / s for s in points.steps])
    assert math.isnan(points.values[-1])
    assert dict(runs[stopped].spec.config) == {"scale": 1.0, "diverge": True}


class Curve(tune.Trainable):
    """A power-law curve to floor + 3 (step/10)^-0.5 that checkpoints its step, so a paused
    trial resumes where it stopped."""

    def setup(self, config: dict) -> None:
        self.floor = config["floor"]
        self.step_count = 0

    def step(self) -> dict:
        self.step_count += 1
        return {"loss": self.floor + 3.0 * (self.step_count / 10.0) ** -0.5, "at": self.step_count}

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        return {"step_count": self.step_count}

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.step_count = checkpoint["step_count"]


def test_the_scheduler_pauses_unpromising_trials_and_resumes_them_by_rank(
    service, local_ray, tmp_path
):
    from forecaster_client.ray_tune import ForecastScheduler

    scheduler = ForecastScheduler(service.address, "tune-freeze", max_step=STEPS)
    tuner = tune.Tuner(
        Curve,
        param_space={"floor": tune.grid_search([2.0, 6.0, 4.0, 1.9])},
        # One trial at a time by resources (the 1-CPU Ray): max_concurrent_trials would count
        # a paused trial as live and hold the next new one back until it resumed.
        tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=scheduler),
        run_config=tune.RunConfig(
            stop={"training_iteration": STEPS},
            storage_path=str(tmp_path),
            verbose=0,
            log_to_file=False,
        ),
    )
    results = tuner.fit()

    by_floor = {r.config["floor"]: r for r in results}
    assert all(r.metrics["training_iteration"] == STEPS for r in results)  # resumed to the end
    ids = {floor: r.metrics["trial_id"] for floor, r in by_floor.items()}
    assert sorted(scheduler.paused) == sorted([ids[6.0], ids[4.0]])
    # Resumed once nothing new was waiting, the closer one (4.0) first: the service's ranking.
    assert scheduler.resumed == [ids[4.0], ids[6.0]], scheduler.last_ranking
    for floor in (6.0, 4.0):
        points = service.points("tune-freeze", ids[floor])
        # One point per iteration, no step twice: the trial went on from its checkpoint.
        assert points.steps.tolist() == list(range(1, STEPS + 1))
        assert by_floor[floor].metrics["at"] == STEPS
        assert scheduler.last_decision[ids[floor]].pause or ids[floor] in scheduler.resumed
    runs = {r.spec.name: r for r in service.runs("tune-freeze")}
    assert {pb.RunState.Name(r.state) for r in runs.values()} == {"RUN_STATE_FINISHED"}


def test_paused_trials_priced_below_the_resume_rate_are_stopped_not_resumed(
    service, local_ray, tmp_path
):
    from forecaster_client.ray_tune import ForecastScheduler

    scheduler = ForecastScheduler(
        service.address, "tune-cut", max_step=STEPS, resume_min_gain_rate=0.001
    )
    tuner = tune.Tuner(
        Curve,
        param_space={"floor": tune.grid_search([2.0, 6.0, 1.9])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=scheduler),
        run_config=tune.RunConfig(
            stop={"training_iteration": STEPS},
            storage_path=str(tmp_path),
            verbose=0,
            log_to_file=False,
        ),
    )
    results = tuner.fit()

    by_floor = {r.config["floor"]: r for r in results}
    hopeless = by_floor[6.0].metrics["trial_id"]
    assert scheduler.paused == scheduler.stopped_paused == [hopeless]
    assert scheduler.resumed == []
    assert by_floor[6.0].metrics["training_iteration"] < STEPS  # its rest was never run
    assert by_floor[1.9].metrics["training_iteration"] == STEPS
    runs = {r.spec.name: r for r in service.runs("tune-cut")}
    assert runs[hopeless].state == pb.RUN_STATE_STOPPED
