"""CONVERGED knows the schedule: never while the run's planned lr decay is still ahead."""

from __future__ import annotations

import numpy as np

from forecaster import policies
from forecaster.curves import Curve, Direction, LrSchedule, ScheduleKind, decay_ahead
from forecaster.models.power_law import PowerLawForecaster
from forecaster.policies import Reason, RunView, StudyContext
from forecaster.policies.converged import ConvergedPolicy

WSD = LrSchedule(ScheduleKind.WSD, peak_lr=1e-3, total_steps=1000, decay_fraction=0.2)


def stable_phase(n: int, schedule: LrSchedule | None) -> Curve:
    """A loss flat at its stable-phase level: what a WSD run looks like before its cool-down."""
    steps = np.arange(1, n + 1)
    values = 2.0 + 2.0 * np.exp(-steps / 30.0)
    return Curve(steps, values, Direction.MIN, max_step=1000, schedule=schedule)


def decide(name, params, curve):
    policy = ConvergedPolicy(**params) if name == "converged" else policies.create(name, params)
    study = StudyContext("s", Direction.MIN, 1000)
    return policy.decide(RunView("s", "r", curve), PowerLawForecaster().fit(curve), study)


def test_converged_waits_for_the_planned_cool_down():
    blind = decide("converged", {"delta": 0.01}, stable_phase(600, None))
    assert blind.is_stop and blind.reason is Reason.CONVERGED  # no plan: flat is converged
    held = decide("converged", {"delta": 0.01}, stable_phase(600, WSD))
    assert not held.is_stop and "planned lr decay is still ahead" in held.explanation
    ahead = decay_ahead(stable_phase(600, WSD))
    assert ahead is not None and 800 < ahead.step <= 910 and ahead.lr_now == 1e-3
    # The cost-aware rule's CONVERGED (a run alone, priced against its own best) waits too.
    blind_gain = decide("expected_gain", {"min_gain_rate": 0.01}, stable_phase(600, None))
    assert blind_gain.reason is Reason.CONVERGED
    gain = decide("expected_gain", {"min_gain_rate": 0.01}, stable_phase(600, WSD))
    assert not gain.is_stop and "decay" in gain.explanation


def test_once_the_decay_is_behind_converged_may_stop_again():
    done = stable_phase(980, WSD)  # at step 980 the lr is near its end: no halving ahead
    assert decay_ahead(done) is None
    assert decide("converged", {"delta": 0.01}, done).reason is Reason.CONVERGED
    # The forecast policy's CONVERGED (delta) is the same check.
    forecast = {"delta": 0.01, "hysteresis": 1}
    assert not decide("forecast", forecast, stable_phase(600, WSD)).is_stop
    assert decide("forecast", forecast, stable_phase(600, None)).reason is Reason.CONVERGED
    cosine = LrSchedule(ScheduleKind.COSINE, peak_lr=1e-3, total_steps=1000)
    assert decay_ahead(stable_phase(300, cosine)) is not None  # most of a cosine is ahead
    constant = LrSchedule(ScheduleKind.CONSTANT, peak_lr=1e-3, total_steps=1000)
    assert decay_ahead(stable_phase(300, constant)) is None
