"""The forecast policy's votes and reasons, and the classic rules, on curves made here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecaster import policies
from forecaster.curves import Curve, Direction
from forecaster.errors import InvalidArgumentError
from forecaster.models.power_law import PowerLawForecaster
from forecaster.policies import Action, Reason, RunView, StudyContext
from forecaster.policies.base import Peers


def curve(a, b=3.0, c=0.5, n=100, budget=1000, direction=Direction.MIN, noise=0.0, seed=0):
    steps = np.arange(1, n + 1)
    values = a + b * (steps / 10.0) ** -c
    values = values + np.random.default_rng(seed).normal(0, noise, n)
    if direction is Direction.MAX:
        values = -values
    return Curve(steps, values, direction, max_step=budget)


def study(incumbent=None, peers=(), direction=Direction.MIN):
    return StudyContext("s", direction, 1000, None, incumbent, Peers.of(list(peers)))


def decide(policy, c, ctx, votes=0):
    view = RunView("s", "r", c, votes)
    prediction = PowerLawForecaster().fit(c) if policy.needs_forecast(view, ctx) else None
    return policy.decide(view, prediction, ctx)


def test_unpromising_needs_two_votes_and_names_the_incumbent():
    policy = policies.create("forecast", {"hysteresis": 2})
    bad = curve(2.0)  # heads for ~2.2, the incumbent is 1.0
    first = decide(policy, bad, study(incumbent=1.0))
    assert first.action is Action.CONTINUE and first.votes == 1
    assert "stop vote 1 of 2 (unpromising)" in first.explanation
    second = decide(policy, bad, study(incumbent=1.0), votes=first.votes)
    assert second.is_stop and second.reason is Reason.UNPROMISING and second.votes == 2
    assert second.probabilities["p_beat_incumbent"] < 0.05
    assert "incumbent 1" in second.explanation and second.expected_saved_steps == 900
    assert second.forecast_final is not None and second.forecast_final > 2.0


def test_a_single_run_waits_for_an_incumbent_but_can_diverge_or_converge():
    policy = policies.create("forecast", {"hysteresis": 1, "delta": 0.002})
    d = decide(policy, curve(2.0), study())
    assert d.action is Action.CONTINUE and "no other run has a final value yet" in d.explanation
    steps = np.arange(1, 301)
    learned_then_flat = Curve(steps, 0.5 + 0.5 * steps**-2.0, max_step=1000)
    d = decide(policy, learned_then_flat, study())
    assert d.is_stop and d.reason is Reason.CONVERGED and d.probabilities["p_gain"] < 0.05
    never_learned = Curve(steps, np.full(300, 0.5), Direction.MIN, max_step=1000)
    flat_policy = policies.create("forecast", {"hysteresis": 1, "flat_fraction": 0.2})
    d = decide(flat_policy, never_learned, study())
    assert d.is_stop and d.reason is Reason.NOT_LEARNING and "not learning" in d.explanation
    values = curve(2.0).values.copy()
    values[-1] = math.inf
    d = decide(policy, Curve(np.arange(1, 101), values, max_step=1000), study())
    assert d.is_stop and d.reason is Reason.DIVERGED  # no vote needed


def test_a_promising_run_continues_with_its_probabilities():
    policy = policies.create("forecast")
    d = decide(policy, curve(1.0), study(incumbent=1.4))
    assert d.action is Action.CONTINUE and d.reason is Reason.PROMISING and d.votes == 0
    assert d.probabilities["p_beat_incumbent"] > 0.5 and "P(value at step 1000" in d.explanation


def test_the_grace_period_is_a_fraction_of_the_budget():
    policy = policies.create("forecast", {"grace_fraction": 0.2})
    d = decide(policy, curve(2.0, n=150), study(incumbent=1.0))
    assert d.reason is Reason.WARMUP and "step >= 200" in d.explanation


def test_maximize_studies_compare_in_their_own_direction():
    policy = policies.create("forecast", {"hysteresis": 1})
    d = decide(policy, curve(2.0, direction=Direction.MAX), study(-1.0, direction=Direction.MAX))
    assert d.is_stop and d.reason is Reason.UNPROMISING
    d = decide(policy, curve(1.0, direction=Direction.MAX), study(-1.4, direction=Direction.MAX))
    assert d.action is Action.CONTINUE


def peers_at(levels, n=100):
    return [curve(a, n=n) for a in levels]


def test_median_rule_compares_the_best_so_far_with_peers_running_means():
    policy = policies.create("median")
    d = decide(policy, curve(2.0), study(peers=peers_at([1.0, 1.1, 1.2, 1.3])))
    assert d.is_stop and d.reason is Reason.UNPROMISING and "median" in d.explanation
    d = decide(policy, curve(0.9), study(peers=peers_at([1.0, 1.1, 1.2, 1.3])))
    assert d.action is Action.CONTINUE
    d = decide(policy, curve(2.0), study(peers=peers_at([1.0, 1.1])))
    assert d.action is Action.CONTINUE and "needs 3" in d.explanation
    d = decide(policy, curve(2.0, n=50), study(peers=peers_at([1.0, 1.1, 1.2])))
    assert d.reason is Reason.WARMUP  # step 50 < 10% of 1000


def test_percentile_rule_keeps_the_best_share():
    strict = policies.create("percentile", {"percentile": 25.0})
    loose = policies.create("percentile", {"percentile": 90.0})
    ctx = study(peers=peers_at([1.0, 1.2, 1.4, 1.6, 1.8]))
    middle = curve(1.3)
    assert decide(strict, middle, ctx).is_stop
    assert not decide(loose, middle, ctx).is_stop
    with pytest.raises(InvalidArgumentError, match="percentile"):
        policies.create("percentile", {"percentile": 100})


def test_asha_judges_at_the_highest_rung_and_keeps_the_first_arrival():
    policy = policies.create("asha", {"eta": 3, "min_fraction": 0.01})
    assert policy.rung_at(RunView("s", "r", curve(1.0, n=95))) == 90  # rungs 10, 30, 90
    d = decide(policy, curve(2.0, n=95), study())
    assert d.action is Action.CONTINUE and "among them" in d.explanation
    d = decide(policy, curve(2.0, n=95), study(peers=peers_at([1.0, 1.1, 1.2], n=95)))
    assert d.is_stop and "rung 90" in d.explanation
    d = decide(policy, curve(2.0, n=5), study(peers=peers_at([1.0], n=95)))
    assert d.reason is Reason.WARMUP


def test_threshold_and_patience():
    threshold = policies.create("threshold", {"threshold": 2.0})
    assert decide(threshold, curve(2.5), study()).is_stop
    assert not decide(threshold, curve(1.0), study()).is_stop
    with pytest.raises(InvalidArgumentError, match="threshold"):
        policies.create("threshold")
    patience = policies.create("patience", {"patience": 5})
    values = np.r_[np.linspace(3, 1, 20), np.full(6, 1.2)]
    stalled = Curve(np.arange(1, 27), values, max_step=1000)
    d = decide(patience, stalled, study())
    assert d.is_stop and d.reason is Reason.CONVERGED and "no improvement" in d.explanation
    assert not decide(patience, curve(1.0), study()).is_stop


@pytest.mark.parametrize(
    "name, params, word",
    [
        ("forecast", {"incumbent_confidence": 1.0}, "incumbent_confidence"),
        ("forecast", {"hysteresis": 1.5}, "hysteresis"),
        ("median", {"min_peers": 0}, "min_peers"),
        ("asha", {"eta": 1.0}, "eta"),
        ("patience", {"patience": 0}, "patience"),
    ],
)
def test_contradictory_settings_name_the_setting(name, params, word):
    with pytest.raises(InvalidArgumentError, match=word):
        policies.create(name, params)
