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
