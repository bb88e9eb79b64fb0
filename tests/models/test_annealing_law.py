"""The schedule laws on synthetic studies whose runs follow a known law, in absolute units."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.curves import Curve, LrProfile, LrSchedule, ScheduleKind
from forecaster.models import StudyHistory, auto_choice, create
from forecaster.models.annealing_law import AnnealingLawForecaster, fit_study
from forecaster.models.artifacts import ModelBank
from forecaster.models.base import AUTO_LAW

# The annealing law's parameters (lr in absolute units, tau in steps: lambda = 0.999) ...
L0, A, ALPHA, C, TAU = 2.0, 0.5, 0.5, 0.6, 1000.0
# ... and the multi-power law's (Luo et al.'s form; C, beta, gamma of the loss drop).
MPL = {"L0": 2.0, "A": 0.5, "alpha": 0.5, "B": 300.0, "C": 2.0, "beta": 0.5, "gamma": 0.5}
PEAK = 1e-3


def law_loss(schedule: LrSchedule, steps: np.ndarray, total: int, law: str = "annealing_law"):
    profile = LrProfile.from_schedule(schedule, total)
    s1 = profile.s1(steps)
    if law == "annealing_law":
        return L0 + A * s1**-ALPHA - C * profile.s2(steps, TAU)
    drop = profile.drop_table(4096).multi_power(s1, MPL["C"], MPL["beta"], MPL["gamma"])
    return MPL["L0"] + MPL["A"] * s1 ** -MPL["alpha"] - MPL["B"] * drop


def schedule_of(kind: str, total: int, peak: float = PEAK) -> LrSchedule:
    return {
        "wsd": LrSchedule(ScheduleKind.WSD, peak_lr=peak, warmup_steps=200, total_steps=total,
                          decay_fraction=0.2),
        "cosine": LrSchedule(ScheduleKind.COSINE, peak_lr=peak, warmup_steps=200,
                             total_steps=total),
        "constant": LrSchedule(ScheduleKind.CONSTANT, peak_lr=peak, warmup_steps=200),
    }[kind]  # fmt: skip


def run(
    kind: str,
    total: int,
    until: int | None = None,
    noise: float = 0.001,
    seed: int = 0,
    law: str = "annealing_law",
    lr_in_points: bool = False,
    every: int | None = None,
):
    """A run of the study: loss every total/200 steps (or `every`), relative noise."""
    schedule = schedule_of(kind, total)
    every = every or total // 200
    steps = np.arange(every, total + 1, every)
    if not lr_in_points:
        steps = steps[steps >= 200]  # past the warm-up
    values = law_loss(schedule, steps, total, law)
    values = values * (1 + np.random.default_rng(seed).normal(0, noise, len(steps)))
    n = len(steps) if until is None else int(np.searchsorted(steps, until, side="right"))
    if lr_in_points:  # the lr as a trainer reports it, at the logged steps, and no plan
        curve = Curve(steps[:n], values[:n], max_step=total, lr=schedule.lr_at(steps[:n]))
    else:
        curve = Curve(steps[:n], values[:n], max_step=total, schedule=schedule)
    return curve, float(law_loss(schedule, np.array([total]), total, law)[0])


STUDY = [("constant", 8000), ("cosine", 8000), ("wsd", 8000)]  # the paper's fitted schedules


def study(
    law: str = "annealing_law", lr_in_points: bool = False, every: int | None = None
) -> StudyHistory:
    curves = tuple(
        run(kind, total, seed=i, law=law, lr_in_points=lr_in_points, every=every)[0]
        for i, (kind, total) in enumerate(STUDY)
    )
    return StudyHistory(curves, f"synthetic-{law}-{lr_in_points}-{every}")


@pytest.mark.parametrize("law", ["annealing_law", "multi_power_law"])
def test_the_study_fit_recovers_the_parameters_and_predicts_a_3x_longer_horizon(law):
    from forecaster.models.schedule_laws import fit_study as fit_any

    fit = fit_any(law, study(law).curves)
    assert fit is not None and fit.n_runs == 3
    got = {name: (value, sd) for name, value, sd in fit.parameters()}
    truth = {"L0": L0, "A": A, "alpha": ALPHA} if law == "annealing_law" else MPL
    for name in ("L0", "A", "alpha"):
        assert got[name][0] == pytest.approx(truth[name], rel=0.01), name
        assert 0 < got[name][1] < 0.05 * truth[name]  # the fit's own standard error
    if law == "annealing_law":
        assert got["lambda"][0] == pytest.approx(np.exp(-1 / TAU), abs=1e-4)
        assert got["C"][0] == pytest.approx(C, rel=0.05)
    # Three times the fitted horizon, under schedules never fitted: the whole curve.
    for kind in ("wsd", "cosine"):
        schedule = schedule_of(kind, 24_000)
        steps = np.arange(500, 24_001, 100)
        truth_path = law_loss(schedule, steps, 24_000, law)
        samples = fit.predict(LrProfile.from_schedule(schedule, 24_000), steps)
        q05, med, q95 = np.quantile(samples, [0.05, 0.5, 0.95], axis=0)
        assert np.mean(np.abs(med - truth_path) / truth_path) < 5e-4, kind
        assert np.mean((q05 <= truth_path) & (truth_path <= q95)) > 0.5


@pytest.mark.parametrize(
    "shape",
    [{"C": 20.0, "beta": 0.3, "gamma": 0.3}, {"C": 0.2, "beta": 1.0, "gamma": 0.8}],
    ids=["fast-shallow-drop", "slow-steep-drop"],
)
def test_the_multi_power_fit_starts_from_a_grid_so_other_drop_shapes_are_recovered(
    shape, monkeypatch
):
    # Loss-drop shapes away from the papers' 0.5 / 0.5 (the three starts there before): the grid
    # of starts (multi_power_law._STARTS) reaches them, and the 3x horizon is still predicted.
    from forecaster.models.multi_power_law import _STARTS, MULTI_POWER_LAW
    from forecaster.models.schedule_laws import fit_study as fit_any

    assert len(_STARTS) > 3 and MULTI_POWER_LAW.starts == _STARTS
    lo, hi = np.array(MULTI_POWER_LAW.lower), np.array(MULTI_POWER_LAW.upper)
    assert all(((lo < s) & (s < hi)).all() for s in np.array(_STARTS))
    monkeypatch.setitem(MPL, "C", shape["C"])
    monkeypatch.setitem(MPL, "beta", shape["beta"])
    monkeypatch.setitem(MPL, "gamma", shape["gamma"])
    fit = fit_any("multi_power_law", study("multi_power_law").curves)
    assert fit is not None
    got = {name: value for name, value, _ in fit.parameters()}
    for name in ("L0", "A", "alpha"):
        assert got[name] == pytest.approx(MPL[name], rel=0.01), name
    for kind in ("wsd", "cosine"):
        schedule = schedule_of(kind, 24_000)
        steps = np.arange(500, 24_001, 100)
        truth_path = law_loss(schedule, steps, 24_000, "multi_power_law")
        med = np.median(fit.predict(LrProfile.from_schedule(schedule, 24_000), steps), axis=0)
        assert np.mean(np.abs(med - truth_path) / truth_path) < 1e-3, kind


def test_the_areas_are_in_absolute_units_so_a_longer_run_is_not_a_rescaled_short_one():
    # Same schedule shape, 3x the steps: the law (and the run) ends lower.
    fit = fit_study("annealing_law", study().curves)
    assert fit is not None
    short, long = (LrProfile.from_schedule(schedule_of("wsd", t), t) for t in (8000, 24000))
    at_short = np.median(fit.predict(short, np.array([8000.0])))
    at_long = np.median(fit.predict(long, np.array([24000.0])))
    assert at_long < at_short - 0.01


@pytest.mark.parametrize("law", ["annealing_law", "multi_power_law"])
def test_a_stable_phase_run_forecasts_its_drop_from_the_study(law):
    # Cut at 30% of a longer WSD run: it has seen no decay, only the study says what it gives.
    curve, final = run("wsd", 16000, until=4800, seed=9, law=law)
    p = create(law).fit(curve, study(law))
    lo, med, hi = p.quantiles([0.05, 0.5, 0.95], [16000])[0]
    assert abs(med - final) / final < 0.002
    assert lo <= final <= hi
    assert "shared with 3 completed runs" in " ".join(p.notes)
    # The drop is in the path, at the cool-down: the stable phase is not.
    stable, end = p.quantiles([0.5], [12000, 16000])[:, 0]
    assert stable - end > 0.02
    assert abs(curve.last_value - final) / final > 0.02  # the last value misses it


def test_lr_in_the_points_and_a_planned_schedule_forecast_the_same():
    # The lr a trainer reports is held until its next report: logged every 10 steps, it gives
    # the schedule's areas to within a few steps of lr.
    curve, _ = run("wsd", 16000, until=4800, seed=9)
    by_plan = create("annealing_law").fit(curve, study(every=10))
    by_points = create("annealing_law").fit(curve, study(lr_in_points=True, every=10))
    at = [6000, 14000, 16000]
    np.testing.assert_allclose(
        by_points.quantiles([0.5], at)[:, 0], by_plan.quantiles([0.5], at)[:, 0], rtol=2e-3
    )
    # And the running run itself: its lr reported with its points, the plan for the rest.
    reported = Curve(curve.steps, curve.values, max_step=curve.max_step,
                     lr=curve.schedule.lr_at(curve.steps), schedule=curve.schedule)  # fmt: skip
    both = create("annealing_law").fit(reported, study(every=10))
    np.testing.assert_allclose(
        both.quantiles([0.5], at)[:, 0], by_plan.quantiles([0.5], at)[:, 0], rtol=2e-3
    )


def test_a_new_study_fits_the_run_alone_and_says_so():
    curve, final = run("cosine", 8000, until=4000)
    p = AnnealingLawForecaster().fit(curve)
    assert "fitted on this run alone" in " ".join(p.notes)
    med = p.quantiles([0.5], [8000])[0, 0]
    assert abs(med - final) < abs(curve.last_value - final)  # better than standing still


def test_what_if_i_decay_now():
    curve, _ = run("wsd", 16000, until=6000)
    law = AnnealingLawForecaster()
    planned = law.fit(curve, study())
    # Decay linearly from step 6000 to a tenth of the peak at 8000, then hold.
    now = LrSchedule(
        ScheduleKind.EXPLICIT,
        steps=tuple(range(6001, 8002, 50)),
        values=tuple(float(v) for v in np.linspace(PEAK, PEAK / 10, 41)),
    )
    decayed = law.what_if(curve, now, history=study())
    profile = LrProfile.of(curve, 16000).with_plan_after(now, 6000, 16000)
    at = np.array([8000, 16000])
    truth = L0 + A * profile.s1(at) ** -ALPHA - C * profile.s2(at, TAU)
    assert decayed.quantiles([0.5], at)[:, 0] == pytest.approx(truth, rel=0.003)
    # Decaying early trades the plateau's progress for an earlier annealing gain.
    assert decayed.mean([16000])[0] != pytest.approx(planned.mean([16000])[0], abs=1e-3)


def test_without_an_lr_it_is_the_power_law_ensemble_and_says_so():
    curve = Curve(np.arange(1, 60), 2 + np.arange(1, 60) ** -0.5, max_step=200)
    p = AnnealingLawForecaster().fit(curve)
    assert not p.converged and "no learning rate" in p.notes[0]
    shipped = ModelBank.load("")
    assert auto_choice(curve, shipped) == "ensemble"  # a budget and no lr: the shipped ensemble
    assert auto_choice(Curve(curve.steps, curve.values), shipped) == "power_law"  # no budget
    assert auto_choice(run("wsd", 1000)[0], shipped) == AUTO_LAW == "multi_power_law"


@pytest.mark.parametrize("kind", ["wsd", "cosine"])
def test_the_multi_power_laws_closed_form_derivatives_are_its_finite_differences(kind):
    # The fit's Jacobian comes from DropTable.multi_power_grad; a wrong column would only
    # slow or misdirect the descent, so check it against the term it differentiates.
    total = 24_000
    profile = LrProfile.from_schedule(schedule_of(kind, total), total)
    table = profile.drop_table(64)
    s1 = profile.s1(np.linspace(200, total, 300)) / PEAK
    scaled = type(table)(table.area / PEAK, table.amount / PEAK, table.lr_after / PEAK)
    c, beta, gamma = 0.02, 0.6, 0.4
    value, grad = scaled.multi_power_grad(s1, c, beta, gamma)
    np.testing.assert_allclose(value, scaled.multi_power(s1, c, beta, gamma), rtol=1e-12)
    h = 1e-6
    numeric = np.column_stack([
        (scaled.multi_power(s1, c * np.exp(h), beta, gamma) - value) / h,
        (scaled.multi_power(s1, c, beta + h, gamma) - value) / h,
        (scaled.multi_power(s1, c, beta, gamma + h) - value) / h,
    ])  # fmt: skip
    assert np.abs(grad).max() > 0
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6 * np.abs(grad).max())
