"""TARGET_UNREACHABLE with a margin and a progress floor, CONVERGED with a progress floor: a
verdict the interval barely supports, or one given early, is held back."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster import policies
from forecaster.curves import Curve, Direction
from forecaster.errors import InvalidArgumentError
from forecaster.models.calibration import unit_of
from forecaster.models.power_law import PowerLawForecaster
from forecaster.policies import Reason, RunView, StudyContext
from forecaster.policies.converged import ConvergedPolicy
from forecaster.policies.target import TargetPolicy

STUDY = StudyContext("s", Direction.MIN, max_step=1000)


def decaying(n: int, target: float | None = None) -> tuple[RunView, object]:
    steps = np.arange(1, n + 1) * 2
    values = 2.0 + 3.0 * (steps / 20.0) ** -0.5
    curve = Curve(steps, values, Direction.MIN, max_step=1000, target=target)
    return RunView("s", "r", curve), PowerLawForecaster().fit(curve)


def optimistic_bound(view: RunView, prediction) -> float:
    return float(prediction.quantiles((0.05,), [1000])[0, 0])


def test_a_target_just_past_the_optimistic_bound_is_not_out_of_reach():
    view, pred = decaying(200)
    bound = optimistic_bound(view, pred)
    unit = unit_of(view.curve)[0]
    near = bound - 0.2 * unit  # P(reach) < 0.05, but within 0.5 x the run's range
    run, pred = decaying(200, target=near)
    plain = TargetPolicy().decide(run, pred, STUDY)
    assert plain.reason is Reason.TARGET_UNREACHABLE and plain.is_stop
    held = TargetPolicy(margin=0.5).decide(run, pred, STUDY)
    assert not held.is_stop and "within the margin" in held.explanation
    assert held.probabilities["p_reach_target"] < 0.05
    far = bound - 2.0 * unit  # beyond the margin: out of reach
    run, pred = decaying(200, target=far)
    assert TargetPolicy(margin=0.5).decide(run, pred, STUDY).reason is Reason.TARGET_UNREACHABLE


def test_no_target_unreachable_before_its_progress_floor():
    run, pred = decaying(150, target=0.5)  # step 300 of 1000
    assert TargetPolicy().decide(run, pred, STUDY).is_stop
    early = TargetPolicy(min_fraction=0.5).decide(run, pred, STUDY)
    assert not early.is_stop and "too early to call the target" in early.explanation
    run, pred = decaying(300, target=0.5)  # step 600
    assert TargetPolicy(min_fraction=0.5).decide(run, pred, STUDY).is_stop
    # The forecast policy passes its settings on.
    p = policies.create(
        "forecast", {"hysteresis": 1, "target_min_fraction": 0.5, "target_margin": 0.0}
    )
    run, pred = decaying(150, target=0.5)
    assert not p.decide(run, pred, STUDY).is_stop


def flat(n: int) -> tuple[RunView, object]:
    steps = np.arange(1, n + 1)
    curve = Curve(steps, 2.0 + 2.0 * np.exp(-steps / 30.0), Direction.MIN, max_step=1000)
    return RunView("s", "r", curve), PowerLawForecaster().fit(curve)


def test_converged_waits_for_its_progress_floor():
    run, pred = flat(600)  # step 600 of 1000, flat for long
    assert ConvergedPolicy(delta=0.01).decide(run, pred, STUDY).reason is Reason.CONVERGED
    held = ConvergedPolicy(delta=0.01, min_fraction=0.7).decide(run, pred, STUDY)
    assert not held.is_stop and "too early to call it converged" in held.explanation
    run, pred = flat(800)  # step 800
    assert ConvergedPolicy(delta=0.01, min_fraction=0.7).decide(run, pred, STUDY).is_stop
    p = policies.create("forecast", {"delta": 0.01, "hysteresis": 1, "converged_min_fraction": 0.7})
    run, pred = flat(600)
    assert not p.decide(run, pred, STUDY).is_stop


@pytest.mark.parametrize(
    "params",
    [{"target_margin": -1.0}, {"target_min_fraction": 1.0}, {"converged_min_fraction": -0.1}],
)
def test_bad_settings_are_refused_by_name(params):
    with pytest.raises(InvalidArgumentError, match=next(iter(params)).split("_", 1)[1]):
        policies.create("forecast", params)
