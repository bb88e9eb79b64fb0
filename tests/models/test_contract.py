"""The contract every registered forecaster meets, plus the power law's own accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecaster import models
from forecaster.curves import Curve, Direction
from forecaster.models.power_law import PowerLawForecaster

NAMES = [n for n in models.available() if n != models.AUTO]


def power_law_curve(n=80, noise=0.01, direction=Direction.MIN, seed=0):
    s = np.arange(1, n + 1)
    v = 2.0 + 3.0 * (s / 10.0) ** -0.5 + np.random.default_rng(seed).normal(0, noise, n)
    return Curve(s, v * direction.sign, direction, max_step=1000)


UGLY = {
    "three points": Curve(np.array([1, 2, 3]), np.array([3.0, 2.0, 1.5])),
    "one point": Curve(np.array([5]), np.array([1.0])),
    "flat": Curve(np.arange(50), np.full(50, 0.7)),
    "noisy": Curve(np.arange(50), np.random.default_rng(1).normal(1.0, 0.5, 50)),
    "rise then fall": Curve(
        np.arange(60), np.concatenate([np.linspace(1, 3, 30), np.linspace(3, 0.5, 30)])
    ),
    "nan tail": Curve(np.arange(20), np.r_[np.linspace(3, 1, 15), [np.nan] * 5]),
    "all nan": Curve(np.arange(5), np.full(5, np.nan)),
    "step zero": Curve(np.arange(0, 30), 1.0 + 1.0 / (1.0 + np.arange(30))),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ugly", sorted(UGLY))
def test_ugly_curves_never_raise_and_say_so(name, ugly):
    curve = UGLY[ugly]
    before = curve.values.copy()
    p = models.create(name).fit(curve)
    q = p.quantiles([0.05, 0.5, 0.95], [100, 200])
    assert q.shape == (2, 3)
    np.testing.assert_array_equal(curve.values, before)  # input untouched
    if not np.isfinite(curve.last_value):
        assert not p.converged and any("diverged" in n for n in p.notes)
    elif len(curve) < 5 and name == "power_law":
        assert not p.converged and p.notes


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", list(Direction))
def test_quantiles_monotone_shapes_and_determinism(name, direction):
    curve = power_law_curve(direction=direction)
    f = models.create(name)
    p1, p2 = f.fit(curve), f.fit(curve)
    q = p1.quantiles([0.05, 0.25, 0.5, 0.75, 0.95], [100, 500, 1000])
    assert q.shape == (3, 5) and (np.diff(q, axis=1) >= 0).all()
    np.testing.assert_array_equal(q, p2.quantiles([0.05, 0.25, 0.5, 0.75, 0.95], [100, 500, 1000]))
    assert p1.mean([1000]).shape == (1,)
    assert 0.0 <= p1.prob_better_than(curve.last_value, 1000) <= 1.0
    assert p1.model == name


def test_power_law_recovers_the_final_value_and_covers_it():
    truth = 2.0 + 3.0 * 100**-0.5
    for direction in Direction:
        p = PowerLawForecaster().fit(power_law_curve(direction=direction))
        lo, mid, hi = p.quantiles([0.05, 0.5, 0.95], [1000])[0] * direction.sign
        assert min(lo, hi) <= truth <= max(lo, hi)
        assert mid == pytest.approx(truth, abs=0.05)


def test_power_law_probabilities_agree_with_quantiles():
    p = PowerLawForecaster().fit(power_law_curve())
    lo, hi = p.quantiles([0.05, 0.95], [1000])[0]
    assert p.prob_better_than(hi, 1000) > 0.9 and p.prob_better_than(lo, 1000) < 0.1
    assert p.prob_reach(hi, 1000) > 0.9 and p.prob_reach(lo - 1.0, 1000) < 0.01
    assert p.prob_reach(10.0, 1000) == 1.0  # already reached
    median = float(p.quantiles([0.5], [1000])[0, 0])
    assert median < p.observed_best_loss  # still improving: the median is not reached yet
    steps = p.steps_to_target(median, 1000, [0.5])
    assert 80 < steps[0] <= 1000


def test_power_law_widens_with_noise():
    clean = PowerLawForecaster().fit(power_law_curve(noise=0.001))
    noisy = PowerLawForecaster().fit(power_law_curve(noise=0.1))
    width = [np.ptp(p.quantiles([0.05, 0.95], [1000])) for p in (clean, noisy)]
    assert width[1] > 2 * width[0]


def test_unknown_forecaster_names_the_choices():
    with pytest.raises(Exception, match="power_law"):
        models.create("crystal_ball")
    assert not math.isnan(models.create("").fit(power_law_curve()).mean([1000])[0])
