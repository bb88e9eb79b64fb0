"""Short curves get a fitted forecast; a metric's kind bounds its forecast; a metric on its
starting plateau is not extrapolated (issue 16)."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest

from forecaster import models
from forecaster.curves import Curve, Direction
from forecaster.errors import InvalidArgumentError
from forecaster.metric_kinds import KINDS, infer_kind, kind_of, on_starting_plateau
from forecaster.models.prediction import within_bounds
from forecaster.models.short_curve import ShortCurveForecaster, ShortCurvePriors


def law_curve(n: int, noise: float = 0.0, seed: int = 0) -> Curve:
    """n evaluations of one saturating law, evenly spaced over the first 20% of a 1000-step
    budget (as an evaluation schedule gives them)."""
    steps = np.linspace(200 / n, 200, n).round().astype(np.int64)
    values = 1.0 + 4.0 * (steps / 10.0) ** -0.5
    values = values + np.random.default_rng(seed).normal(0.0, noise, n)
    return Curve(steps, values, Direction.MIN, max_step=1000, kind=KINDS["loss"])


def width90(prediction, step: int = 1000) -> float:
    lo, hi = prediction.quantiles([0.05, 0.95], [step])[0]
    return float(hi - lo)


@pytest.mark.parametrize("name", ["auto", "power_law", "short_curve"])
@pytest.mark.parametrize("n", [3, 4])
def test_three_and_four_points_get_a_fitted_forecast_wider_than_thirty(name, n):
    short, long = law_curve(n), law_curve(30, noise=0.01)
    p = models.create(name, short).fit(short)
    assert p.converged and any("short curve" in note for note in p.notes), p.notes
    median = float(p.quantiles([0.5], [1000])[0, 0])
    # A fit, not the last value: the forecast goes on down, toward the law's end.
    assert median < short.last_value - 0.05
    assert abs(median - (1.0 + 4.0 * 100**-0.5)) < abs(short.last_value - (1.0 + 4.0 * 100**-0.5))
    p30 = models.create(name, long).fit(long)
    assert width90(p) > width90(p30) > 0


def test_fewer_than_three_points_is_the_last_value_and_says_so():
    curve = law_curve(30).head(2)
    p = models.create("auto", curve).fit(curve)
    assert not p.converged and "last value" in p.notes[0]
    assert p.quantiles([0.5], [1000])[0, 0] == pytest.approx(curve.last_value, rel=0.05)


def test_auto_picks_the_short_law_for_short_curves_and_the_ensemble_after():
    assert models.auto_choice(law_curve(3), None) == "short_curve"
    assert models.auto_choice(law_curve(4), None) == "short_curve"
    assert models.auto_choice(law_curve(5), None) == "power_law"


def test_the_shipped_priors_are_a_small_table_learned_leave_one_source_out():
    text = resources.files("forecaster.models").joinpath("short_curve_priors.json").read_text()
    table = json.loads(text)
    priors = ShortCurvePriors.from_dict(table)
    assert priors == ShortCurvePriors.shipped()
    assert priors.log_exponent_sd > 0 and priors.log_remaining_sd > 0 and priors.inflation > 0
    loso = table["meta"]["loso"]
    assert len(loso) == len(table["meta"]["learned_on"]) >= 2
    assert all(0.0 <= v["cov90"] <= 1.0 for v in loso.values())


def test_a_malformed_priors_table_says_how_to_rebuild_it():
    with pytest.raises(InvalidArgumentError, match="short_curve_priors.py"):
        ShortCurvePriors.from_dict({"log_exponent": {}})


def test_a_spike_in_a_short_curve_moves_the_centre_little():
    clean = law_curve(8)
    values = clean.values.copy()
    values[5] += 3.0  # one bad evaluation
    spiked = Curve(clean.steps, values, Direction.MIN, max_step=1000)
    f = ShortCurveForecaster()
    a = f.fit(clean).quantiles([0.5], [1000])[0, 0]
    b = f.fit(spiked).quantiles([0.5], [1000])[0, 0]
    assert abs(b - a) < 0.3 * float(np.ptp(clean.values))


# -- metric kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "minimize", "kind"),
    [
        ("val_loss", True, "loss"),
        ("val_cross_entropy", True, "loss"),
        ("log_perplexity", True, "loss"),
        ("val_ppl", True, "perplexity"),
        ("val_accuracy", False, "accuracy"),
        ("top1", False, "accuracy"),
        ("val_auc", False, "accuracy"),
        ("val_mean_average_precision", False, "accuracy"),
        ("dice", False, "accuracy"),
        ("val_wer", True, "error_rate"),
        ("win_rate", False, "win_rate"),
        ("mean_squared_error", True, "loss"),
        ("accuracy", True, "unbounded"),  # an accuracy minimised is not one we know
        ("reward", False, "unbounded"),
    ],
)
def test_the_kind_is_taken_from_the_name_and_direction(metric, minimize, kind):
    assert infer_kind(metric, minimize).name == kind


def test_a_study_can_say_the_kind_and_its_bounds():
    assert kind_of("score", False, "probability").bounds == (0.0, 1.0)
    assert kind_of("score", False, "", lower=0.0, upper=100.0).bounds == (0.0, 100.0)
    assert kind_of("val_loss", True, "", lower=1.5).bounds == (1.5, math.inf)
    with pytest.raises(InvalidArgumentError, match="unknown metric_kind 'ratio'; use one of"):
        kind_of("x", True, "ratio")
    with pytest.raises(InvalidArgumentError, match="below metric_upper"):
        kind_of("x", True, "", lower=2.0, upper=1.0)


def accuracy_curve() -> Curve:
    steps = np.arange(1, 41) * 10
    values = 0.97 - 0.6 * (steps / 10.0) ** -0.7 + np.random.default_rng(3).normal(0, 0.03, 40)
    return Curve(steps, np.minimum(values, 0.999), Direction.MAX, max_step=4000,
                 kind=infer_kind("val_accuracy", False))  # fmt: skip


@pytest.mark.parametrize("name", ["auto", "power_law", "pow3", "damped_trend", "short_curve"])
def test_an_accuracy_forecast_and_its_interval_stay_inside_zero_one(name):
    curve = accuracy_curve()
    raw = models.create(name, curve).fit(curve)
    p = within_bounds(raw, curve)
    q = p.quantiles([0.01, 0.05, 0.5, 0.95, 0.99], [400, 1000, 4000])
    assert (q >= 0.0).all() and (q <= 1.0).all()
    assert (p.samples([4000]) <= 1.0).all() and 0.0 <= p.prob_better_than(0.999, 4000) <= 1.0
    assert p.prob_reach(1.01, 4000) == 0.0  # beyond the bound: never reached
    # Kept by whoever wraps the sampler later (e.g. a calibration): bounds are read-side.
    from dataclasses import replace

    wrapped = replace(p, sampler=lambda s: raw.sampler(s) * 3.0)
    assert (wrapped.quantiles([0.01, 0.99], [4000]) <= 1.0).all()


def test_a_percent_accuracy_is_not_cut_at_one():
    curve = accuracy_curve()
    percent = Curve(curve.steps, curve.values * 100, Direction.MAX, max_step=4000,
                    kind=curve.kind)  # fmt: skip
    p = within_bounds(models.create("power_law").fit(percent), percent)
    assert p.quantiles([0.5], [4000])[0, 0] > 50


def wer_plateau() -> Curve:
    steps = np.arange(1, 21) * 100
    values = 1.0 - 0.0015 * np.arange(20) + np.random.default_rng(5).normal(0, 0.008, 20)
    return Curve(steps, values, Direction.MIN, max_step=20_000, kind=infer_kind("val_wer", True))


def test_a_wer_on_its_plateau_is_not_extrapolated_downwards():
    curve = wer_plateau()
    assert on_starting_plateau(curve.kind, curve.values)
    p = within_bounds(models.create("auto", curve).fit(curve), curve)
    assert p.model == "plateau" and "plateau" in p.notes[0]
    median = p.quantiles([0.5], [20_000])[0, 0]
    assert median >= float(np.min(curve.values[-5:])) - 0.01
    # Without the kind the same numbers are a slow trend that a fit carries down.
    unkinded = Curve(curve.steps, curve.values, Direction.MIN, max_step=20_000)
    assert models.auto_choice(unkinded, None) != "plateau"
    fitted = models.create("auto", unkinded).fit(unkinded).quantiles([0.5], [20_000])[0, 0]
    assert fitted < median - 0.01


def test_a_win_rate_that_left_half_is_a_trend_again():
    steps = np.arange(1, 21) * 10
    rising = 0.5 + 0.3 * (1 - np.exp(-steps / 80.0))
    kind = infer_kind("win_rate", False)
    assert on_starting_plateau(kind, np.full(10, 0.5) + 0.01)
    assert not on_starting_plateau(kind, rising)
