"""Studies whose runs differ in peak lr: each peak lr's own fit, a new peak lr, and a run the
law does not describe. Synthetic runs of the annealing law in absolute units."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from forecaster.curves import Curve, LrProfile, LrSchedule, ScheduleKind
from forecaster.models import StudyHistory, create
from forecaster.models.schedule_laws import _DELTA_PRIOR, fit_points, fit_study
from forecaster.planning import describe

TAU = 1000.0


def schedule_of(kind: str, total: int, peak: float) -> LrSchedule:
    if kind == "constant":
        return LrSchedule(ScheduleKind.CONSTANT, peak_lr=peak, warmup_steps=200)
    return LrSchedule(
        ScheduleKind.WSD if kind == "wsd" else ScheduleKind.COSINE,
        peak_lr=peak,
        warmup_steps=200,
        total_steps=total,
        decay_fraction=0.2,
    )


def law(schedule: LrSchedule, steps: np.ndarray, total: int, l0: float, a: float, alpha: float,
        c: float) -> np.ndarray:  # fmt: skip
    profile = LrProfile.from_schedule(schedule, total)
    out: np.ndarray = l0 + a * profile.s1(steps) ** -alpha - c * profile.s2(steps, TAU)
    return out


def run(kind: str, total: int, peak: float, shape: dict[str, float], seed: int,
        until: int | None = None) -> tuple[Curve, float]:  # fmt: skip
    """A run logged every total/200 steps past the warm-up, 0.1% noise; and its final loss."""
    schedule = schedule_of(kind, total, peak)
    steps = np.arange(total // 200, total + 1, total // 200)
    steps = steps[steps >= 200]
    values = law(schedule, steps, total, **shape)
    values = values * (1 + np.random.default_rng(seed).normal(0, 1e-3, len(steps)))
    n = len(steps) if until is None else int(np.searchsorted(steps, until, side="right"))
    final = float(law(schedule, np.array([total]), total, **shape)[0])
    return Curve(steps[:n], values[:n], max_step=total, schedule=schedule), final


LOW = {"l0": 2.0, "a": 0.5, "alpha": 0.5, "c": 0.6}  # the runs at peak lr 1e-3
# At 4e-3: another shape altogether, and an annealing coefficient that does not scale with the
# peak lr as the law's prior on delta says (which a shared fit would then follow).
HIGH = {"l0": 2.2, "a": 0.9, "alpha": 0.3, "c": 0.6}
KINDS = [("constant", 8000), ("cosine", 8000), ("wsd", 8000)]


def two_peak_study() -> StudyHistory:
    curves = [run(k, t, 1e-3, LOW, seed=i)[0] for i, (k, t) in enumerate(KINDS)]
    curves += [run(k, t, 4e-3, HIGH, seed=10 + i)[0] for i, (k, t) in enumerate(KINDS)]
    return StudyHistory(tuple(curves), "two-peaks")


@pytest.mark.parametrize("law_name", ["annealing_law", "multi_power_law"])
def test_a_peak_lr_the_study_ran_often_gets_its_own_fit(law_name):
    history = two_peak_study()
    fit = fit_study(law_name, history.curves)
    assert fit is not None and len(fit.peaks) == 2 and fit.n_runs == 6
    assert [o.n_runs for o in fit.own if o is not None] == [3, 3]
    assert fit.for_peak(1e-3).n_runs == 3 and fit.for_peak(2e-3) is fit  # no group there
    shown = describe(fit)  # what `forecaster law` prints
    assert "peak lr 0.001: its 3 runs' own fit (alpha" in shown
    assert "peak lr 0.004: its 3 runs' own fit (alpha" in shown
    # A longer WSD run at the low peak lr, cut in its stable phase at 30%.
    curve, final = run("wsd", 16000, 1e-3, LOW, seed=99, until=4800)
    p = create(law_name).fit(curve, history)
    assert "fitted on the 3 completed runs of this peak lr" in p.notes[0]
    median = float(np.median(p.samples([16000])[:, 0]))
    alone = replace(fit, own=())  # the study's shared fit, no peak lr's own
    shared = float(np.median(alone.predict(LrProfile.of(curve, 16000), np.array([16000.0]))))
    own_error, shared_error = abs(median - final) / final, abs(shared - final) / final
    if law_name == "annealing_law":  # the law the runs follow: its own fit recovers it
        assert own_error < 0.002
    assert own_error < shared_error


def test_a_new_peak_lr_moves_l0_from_its_prefix_and_keeps_the_nearest_a():
    curves = tuple(run(k, t, 1e-3, LOW, seed=i)[0] for i, (k, t) in enumerate(KINDS))
    fit = fit_study("annealing_law", curves)
    assert fit is not None
    # Twice the peak lr, its loss held 0.05 higher (the level a larger lr keeps it at), its
    # annealing coefficient scaled by the law's lr exponent (the prior's, the study has one lr).
    # Its power-law term at a step is the low peak lr's (A * S1^-alpha, S1 twice as large).
    shifted = {**LOW, "l0": LOW["l0"] + 0.05, "c": LOW["c"] * 2.0 ** -_DELTA_PRIOR[0],
               "a": LOW["a"] * 2.0 ** LOW["alpha"]}  # fmt: skip
    curve, final = run("cosine", 16000, 2e-3, shifted, seed=7, until=4800)
    profile = LrProfile.of(curve, 16000)
    assert profile is not None
    steps, y = fit_points(curve)
    prior, _, same = fit._prior(profile.peak)
    (l0, a), _, same = fit.run_coefficients(profile, steps, y)
    assert not same and a == pytest.approx(float(prior[1]))  # A: the nearest peak lr's
    assert l0 - float(prior[0]) == pytest.approx(0.05, abs=0.01)  # L0: the prefix's level
    p = create("annealing_law").fit(curve, StudyHistory(curves, "one-peak"))
    assert (
        "A of the nearest one (its power-law term at the same step), L0 from this run's points"
        in p.notes[0]
    )
    assert abs(float(np.median(p.samples([16000])[:, 0])) - final) / final < 0.005


def test_a_run_that_blew_up_and_stays_high_is_not_forecast_by_the_law():
    history = StudyHistory(
        tuple(run(k, t, 1e-3, LOW, seed=i)[0] for i, (k, t) in enumerate(KINDS)), "study"
    )
    curve, _ = run("cosine", 8000, 1e-3, LOW, seed=5, until=3000)
    # The loss jumped to 7.5 at step 1000 and stayed there (a divergence that did not NaN).
    values = curve.values.copy()
    jump = curve.steps >= 1000
    rng = np.random.default_rng(3)
    values[jump] = 7.5 * (1 + rng.normal(0, 0.005, int(jump.sum())))
    blown = Curve(curve.steps, values, max_step=8000, schedule=curve.schedule)
    for law_name in ("annealing_law", "multi_power_law"):
        p = create(law_name).fit(blown, history)
        assert "does not fall as its lr area grows" in p.notes[0]
        # Near where the run sits, not near the law's 2.1 that its study reached.
        assert abs(float(np.median(p.samples([8000])[:, 0])) - 7.5) / 7.5 < 0.1
    # A run that learns as the law says is still the law's.
    assert "shared with 3 completed runs" in create("annealing_law").fit(curve, history).notes[0]


def test_the_annealing_coefficients_lr_exponent_is_fitted_where_the_study_pins_it():
    """K_eff = K * (peak / ref)^-delta: two peak lrs whose decays both ran pin delta; one peak
    lr leaves it at the prior, with the prior's uncertainty (for a new peak lr's forecast)."""
    delta = 0.4
    high = {**LOW, "l0": 2.1, "a": 0.6, "c": LOW["c"] * 4.0**-delta}
    curves = [run(k, t, 1e-3, LOW, seed=i)[0] for i, (k, t) in enumerate(KINDS)]
    curves += [run(k, t, 4e-3, high, seed=10 + i)[0] for i, (k, t) in enumerate(KINDS)]
    both = fit_study("annealing_law", tuple(curves))
    one = fit_study("annealing_law", tuple(curves[:3]))
    assert both is not None and one is not None
    d = both.d
    assert float(both.params[d - 1]) == pytest.approx(delta, abs=0.05)
    assert math.sqrt(both.cov[d - 1, d - 1]) < 0.5 * _DELTA_PRIOR[1]
    assert float(one.params[d - 1]) == pytest.approx(_DELTA_PRIOR[0], abs=1e-3)
    assert math.sqrt(one.cov[d - 1, d - 1]) == pytest.approx(_DELTA_PRIOR[1], rel=0.3)
