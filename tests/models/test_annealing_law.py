"""The schedule laws on a synthetic study whose runs follow a known annealing law."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.curves import Curve, LrProfile, LrSchedule, ScheduleKind
from forecaster.models import StudyHistory, auto_choice, create
from forecaster.models.annealing_law import AnnealingLawForecaster, fit_study
from forecaster.models.artifacts import ModelBank

L0, A, ALPHA, C, TAU = 2.0, 0.6, 0.5, 1.5, 0.02


def law_loss(schedule: LrSchedule, steps: np.ndarray, total: int) -> np.ndarray:
    profile = LrProfile.from_schedule(schedule, total)
    area = profile.peak * total
    s1 = profile.s1(steps) / area
    s2 = profile.s2(steps, TAU * total) / area
    return L0 + A * s1**-ALPHA - C * s2


def run(kind: str, total: int, until: int | None = None, noise: float = 0.002, seed: int = 0):
    schedule = {
        "wsd": LrSchedule(ScheduleKind.WSD, peak_lr=1e-3, warmup_steps=total // 50,
                          total_steps=total, decay_fraction=0.2),
        "cosine": LrSchedule(ScheduleKind.COSINE, peak_lr=1e-3, warmup_steps=total // 50,
                             total_steps=total),
    }[kind]  # fmt: skip
    steps = np.arange(total // 50, total + 1, total // 50)
    values = law_loss(schedule, steps, total)
    values = values + np.random.default_rng(seed).normal(0, noise, len(steps))
    n = len(steps) if until is None else int(np.searchsorted(steps, until, side="right"))
    curve = Curve(steps[:n], values[:n], max_step=total, schedule=schedule)
    return curve, float(law_loss(schedule, np.array([total]), total)[0])


def study(n: int = 4) -> StudyHistory:
    curves = tuple(
        run(kind, total, seed=i)[0]
        for i, (kind, total) in enumerate([("wsd", 4000), ("cosine", 6000), ("wsd", 8000),
                                           ("cosine", 3000)][:n])
    )  # fmt: skip
    return StudyHistory(curves, f"synthetic-{n}")


def test_the_study_fit_recovers_the_shared_shape():
    fit = fit_study("annealing_law", study().curves)
    assert fit is not None and fit.n_runs == 4
    assert fit.theta[0] == pytest.approx(ALPHA, rel=0.25)
    assert fit.coef[:2] == pytest.approx([L0, A], rel=0.2)
    # tau is on a grid (0.016, 0.032 around the true 0.02): C absorbs the difference, and the
    # fitted law still gives every run's final loss.
    assert 0.008 <= fit.theta[1] <= 0.064 and fit.coef[2] > 0
    assert fit.sigma < 0.01


# The study follows the annealing law; the multi-power law approximates it.
@pytest.mark.parametrize(
    ("name", "tolerance"), [("annealing_law", 0.01), ("multi_power_law", 0.03)]
)
def test_a_stable_phase_run_forecasts_its_decay_from_the_study(name, tolerance):
    # Cut at 30%: the run has seen no decay, so only the study can say how much it will give.
    curve, final = run("wsd", 5000, until=1500, seed=9)
    p = create(name).fit(curve, study())
    lo, med, hi = p.quantiles([0.05, 0.5, 0.95], [5000])[0]
    assert abs(med - final) / final < tolerance
    assert lo <= final <= hi or name == "multi_power_law"
    assert "completed runs" in " ".join(p.notes)
    # The last value misses the decay entirely.
    assert abs(curve.last_value - final) / final > 0.02


def test_a_new_study_starts_from_the_corpus_prior_and_says_so():
    curve, final = run("cosine", 5000, until=2500)
    p = AnnealingLawForecaster().fit(curve)
    assert "corpus prior" in " ".join(p.notes)
    med = p.quantiles([0.5], [5000])[0, 0]
    assert abs(med - final) < abs(curve.last_value - final)  # better than standing still


def test_what_if_i_decay_now():
    curve, _ = run("wsd", 5000, until=2000)
    law = AnnealingLawForecaster()
    planned = law.fit(curve, study())
    # Decay linearly from step 2000 to a tenth of the peak at 3000, then hold.
    now = LrSchedule(
        ScheduleKind.EXPLICIT,
        steps=tuple(range(2001, 3002, 50)),
        values=tuple(float(v) for v in np.linspace(1e-3, 1e-4, 21)),
    )
    decayed = law.what_if(curve, now, history=study())
    # The truth: the study's law under the changed profile.
    profile = LrProfile.of(curve, 5000).with_plan_after(now, 2000, 5000)
    s1 = profile.s1([3000, 5000]) / 5.0
    s2 = profile.s2([3000, 5000], TAU * 5000) / 5.0
    truth = L0 + A * s1**-ALPHA - C * s2
    assert decayed.quantiles([0.5], [3000, 5000])[:, 0] == pytest.approx(truth, rel=0.01)
    # Decaying early trades the plateau's progress for an earlier annealing gain.
    assert decayed.mean([5000])[0] != pytest.approx(planned.mean([5000])[0], abs=1e-3)


def test_without_an_lr_it_is_the_power_law_ensemble_and_says_so():
    curve = Curve(np.arange(1, 60), 2 + np.arange(1, 60) ** -0.5, max_step=200)
    p = AnnealingLawForecaster().fit(curve)
    assert not p.converged and "no learning rate" in p.notes[0]
    shipped = ModelBank.load("")
    assert auto_choice(curve, shipped) == "ensemble"  # a budget and no lr: the shipped ensemble
    assert auto_choice(Curve(curve.steps, curve.values), shipped) == "power_law"  # no budget
    assert auto_choice(run("wsd", 1000)[0], shipped) == "annealing_law"
