"""The cost-aware check: the expected improvement over the incumbent per budget of compute."""

from __future__ import annotations

import numpy as np

from forecaster import policies
from forecaster.curves import Curve, Direction
from forecaster.models.power_law import PowerLawForecaster
from forecaster.policies import Reason, RunView, StudyContext


def heading_for(final: float, n: int = 300, budget: int = 1000) -> Curve:
    steps = np.arange(1, n + 1)
    return Curve(steps, final + 2.0 * (steps / 10.0) ** -0.7, Direction.MIN, max_step=budget)


def judge(policy, curve, incumbent):
    study = StudyContext("s", Direction.MIN, 1000, incumbent=incumbent)
    return policy.decide(RunView("s", "r", curve), PowerLawForecaster().fit(curve), study)


def test_a_run_that_could_win_only_by_a_hair_is_stopped_before_p_beat_says_so():
    policy = policies.create("expected_gain", {"min_gain_rate": 0.01})
    curve = heading_for(1.05, n=600)
    d = judge(policy, curve, incumbent=1.0)
    plain = judge(policies.create("forecast", {"hysteresis": 1}), curve, 1.0)
    assert plain.reason is not Reason.UNPROMISING  # P(beat) >= 0.05: it may still win
    assert d.is_stop and d.reason is Reason.UNPROMISING
    assert d.probabilities["gain_rate"] < 0.01 and "per budget" in d.explanation


def test_a_run_heading_well_past_the_incumbent_continues():
    d = judge(policies.create("expected_gain", {"min_gain_rate": 0.01}), heading_for(0.8), 1.0)
    assert not d.is_stop and d.probabilities["gain_rate"] > 0.1


def test_the_forecast_policy_prices_runs_only_when_asked():
    curve = heading_for(1.05, n=600)
    on = policies.create("forecast", {"hysteresis": 1, "min_gain_rate": 0.01})
    assert judge(on, curve, 1.0).reason is Reason.UNPROMISING
    off = policies.create("forecast", {"hysteresis": 1})
    assert "gain_rate" not in judge(off, curve, 1.0).probabilities


def test_a_run_alone_is_priced_against_its_own_best_and_stops_as_converged():
    policy = policies.create("expected_gain", {"min_gain_rate": 0.01})
    steps = np.arange(1, 601)  # at its floor long since: the rest buys little over its best
    flat = Curve(steps, 1.0 + 2.0 * np.exp(-steps / 30.0), Direction.MIN, max_step=1000)
    d = judge(policy, flat, incumbent=None)
    assert d.is_stop and d.reason is Reason.CONVERGED and "its own best" in d.explanation
    steep = Curve(np.arange(1, 101), 1.0 + 50.0 / np.arange(1, 101), Direction.MIN, max_step=1000)
    going = judge(policy, steep, incumbent=None)
    assert not going.is_stop and "its own best" in going.explanation
