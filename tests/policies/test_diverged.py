"""DIVERGED on noisy per-batch losses: a smoothed level for the slow rule, a fast path for
blow-ups. The noise is the issue's: a decaying loss times a factor between 1/3 and 3."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecaster import policies
from forecaster.curves import Curve, Direction, smoothed_levels
from forecaster.errors import InvalidArgumentError
from forecaster.policies import Reason, RunView, StudyContext

STUDY = StudyContext("s", Direction.MIN, 2000)
REPORT_EVERY = 10  # points per report, as a trainer batches them


def noisy_loss(rng: np.random.Generator, n: int = 200) -> np.ndarray:
    steps = np.arange(1, n + 1) * 10.0
    clean = rng.uniform(1.5, 3.0) + rng.uniform(1.0, 6.0) * (steps / 50.0) ** -rng.uniform(0.2, 0.8)
    return clean * 3.0 ** rng.uniform(-1.0, 1.0, n)  # 3x multiplicative batch noise


def reasons_at_each_report(policy, values: np.ndarray) -> list[tuple[int, Reason]]:
    """The policy's reason after every report of REPORT_EVERY points, as the engine asks it."""
    steps = np.arange(1, len(values) + 1) * 10
    out = []
    for end in range(REPORT_EVERY, len(values) + 1, REPORT_EVERY):
        curve = Curve(steps[:end], values[:end], Direction.MIN, max_step=2000)
        out.append((end, policy.decide(RunView("s", "r", curve), None, STUDY).reason))
    return out


@pytest.mark.parametrize("name", ["diverged", "forecast"])
def test_no_false_divergence_on_3x_batch_noise_in_1000_runs(name):
    policy = policies.create(name, {"hysteresis": 1} if name == "forecast" else None)
    rng = np.random.default_rng(7)
    false_stops = 0
    for _ in range(1000):
        values = noisy_loss(rng)
        false_stops += any(r is Reason.DIVERGED for _, r in reasons_at_each_report(policy, values))
    assert false_stops == 0


@pytest.mark.parametrize("blowup", [math.nan, math.inf, 100.0])
def test_a_real_blow_up_is_stopped_within_three_reports(blowup):
    policy = policies.create("forecast")
    rng = np.random.default_rng(3)
    for _ in range(50):
        values = noisy_loss(rng)
        at = 100
        values[at:] = values[at:] * blowup if math.isfinite(blowup) else blowup
        stops = [end for end, r in reasons_at_each_report(policy, values) if r is Reason.DIVERGED]
        assert stops, "the blow-up was never stopped"
        assert stops[0] - at <= 3 * REPORT_EVERY
        assert all(end > at for end in stops)


def test_a_loss_that_climbs_and_stays_up_is_stopped_within_two_reports():
    policy = policies.create("diverged")
    rng = np.random.default_rng(11)
    values = noisy_loss(rng)
    values[120:] = values[120:] * 8.0  # a sustained 8x rise: well past 3x the run's scale
    stops = [end for end, r in reasons_at_each_report(policy, values) if r is Reason.DIVERGED]
    assert stops and stops[0] - 120 <= 2 * REPORT_EVERY
    assert (
        "median of its last 9 points"
        in policy.decide(
            RunView("s", "r", Curve(np.arange(1, 201) * 10, values, Direction.MIN, max_step=2000)),
            None,
            STUDY,
        ).explanation
    )


def test_one_spike_moves_the_smoothed_level_not_at_all():
    loss = np.full(30, 2.0)
    loss[20] = 50.0
    levels = smoothed_levels(loss, 9)
    assert len(levels) == 22 and np.all(levels == 2.0)
    assert smoothed_levels(loss, 1)[20] == 50.0


def test_the_smoothed_levels_are_of_whole_windows():
    loss = np.arange(20, dtype=float)
    levels = smoothed_levels(loss, 5)
    # One level per window of five: the first is the median of values 0..4, the last of 15..19.
    assert list(levels) == [float(i) for i in range(2, 18)]
    assert list(smoothed_levels(loss[:3], 5)) == [1.0]


def test_an_even_window_is_refused_with_its_name():
    with pytest.raises(InvalidArgumentError, match="smoothing_window must be odd"):
        policies.create("diverged", {"smoothing_window": 4})
