"""The LR areas against their definitions, summed step by step."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.curves import Curve, LrProfile, LrSchedule, ScheduleKind
from forecaster.errors import InvalidArgumentError


def brute_areas(lr: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """S1 and the momentum-form S2 of Tissue et al., one step at a time (lr[i] is the lr of
    step i + 1; drops before the peak, the warm-up, are not annealing)."""
    s1 = np.cumsum(lr)
    peak = int(np.argmax(lr))
    m, s2, out = 0.0, 0.0, []
    for i in range(len(lr)):
        drop = lr[i - 1] - lr[i] if i > peak else 0.0
        m = lam * m + drop
        s2 += m
        out.append(s2)
    return s1, np.array(out)


@pytest.mark.parametrize("kind", ["wsd", "cosine", "step"])
def test_areas_match_the_step_sums(kind):
    total = 2000
    schedule = {
        "wsd": LrSchedule(ScheduleKind.WSD, peak_lr=1.0, warmup_steps=100, total_steps=total,
                          decay_fraction=0.3),
        "cosine": LrSchedule(ScheduleKind.COSINE, peak_lr=1.0, warmup_steps=50,
                             total_steps=total, final_lr=0.1),
        "step": LrSchedule(ScheduleKind.STEP, peak_lr=1.0, step_size=500, gamma=0.5),
    }[kind]  # fmt: skip
    per_step = schedule.lr_at(np.arange(1, total + 1) - 0.5)
    tau = 100.0
    s1, s2 = brute_areas(per_step, np.exp(-1.0 / tau))
    profile = LrProfile.from_schedule(schedule, total)
    at = np.array([300, 1000, 1500, 1800, 2000])
    assert profile.s1(at) == pytest.approx(s1[at - 1], rel=2e-3)
    # The continuous closed form and the discrete sum agree to within a step of decay.
    assert profile.s2(at, tau) == pytest.approx(s2[at - 1], rel=0.03, abs=1.5)


def test_reported_lr_then_the_plan():
    plan = LrSchedule(ScheduleKind.WSD, peak_lr=1e-3, total_steps=1000, decay_fraction=0.2)
    curve = Curve(np.arange(0, 500, 50), np.linspace(3, 2, 10), lr=np.full(10, 5e-4),
                  schedule=plan, max_step=1000)  # fmt: skip
    profile = LrProfile.of(curve)
    assert profile.lr_at([100, 450]) == pytest.approx([5e-4, 5e-4])  # what was reported
    assert profile.lr_at([600, 999]) == pytest.approx([1e-3, plan.lr_at([999])[0]], abs=5e-6)
    # "What if I decay now": a linear decay from step 450 to 0 at 1000.
    now = LrSchedule(ScheduleKind.EXPLICIT, steps=(451, 700, 1000), values=(4e-4, 2e-4, 0.0))
    decayed = profile.with_plan_after(now, 450, 1000)
    assert decayed.lr_at([300, 800]) == pytest.approx([5e-4, 2e-4])
    assert decayed.s1([1000])[0] < profile.s1([1000])[0]  # less forward area...
    assert decayed.s2([800], 50.0)[0] > 0 == profile.s2([800], 50.0)[0]  # ...annealing sooner


def test_no_lr_and_no_plan_has_no_profile():
    assert LrProfile.of(Curve(np.arange(5), np.ones(5))) is None


@pytest.mark.parametrize(
    ("schedule", "missing"),
    [
        (LrSchedule(ScheduleKind.COSINE, peak_lr=1.0, total_steps=800), "801..1000"),
        (LrSchedule(ScheduleKind.EXPLICIT, steps=(0, 500), values=(1.0, 0.5)), "501..1000"),
    ],
)
def test_a_plan_that_ends_before_the_budget_names_the_missing_range(schedule, missing):
    with pytest.raises(InvalidArgumentError, match=missing):
        schedule.check_covers(1000)
    schedule.check_covers(500)  # covers a shorter budget
    LrSchedule(ScheduleKind.CONSTANT, peak_lr=1.0).check_covers(10**9)  # never ends
