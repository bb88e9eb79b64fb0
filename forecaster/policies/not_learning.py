"""NOT_LEARNING: a run still at the level it started from, well into its budget.

The first run of a sequential sweep has no incumbent to lose to and no forecast worth trusting
when its curve is flat, so no other rule can stop it; yet a curve flat at its starting level
(chance accuracy, the initial loss) a fifth of the way into its budget has told us what it will
do. Flat means: the best smoothed level (running median, curves.smoothed_levels) is no better
than where the curve started (the median of its first three values) by more than `min_gain` of
it, nor by more than the noise of the levels. Only a run with no incumbent to lose to is judged:
where there is one, UNPROMISING says more (a run flat at a good level is not a bad run), and the
replay showed a run that learns within its first points and then holds looks flat from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.curves import LEVEL_NOISE_UNITS, level_noise, smoothed_levels
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_fraction,
    check_non_negative,
    continue_promising,
    stop,
    too_early,
)

WINDOW = 9  # points per smoothed level, as the divergence rule's


@dataclass(frozen=True)
class NotLearningPolicy:
    """Stops a run whose metric has not moved from its starting level.

    Args:
        after_fraction: judged only from this fraction of the run's budget on (a run without a
            budget is never judged: flat for how long, of how much?). 0 turns the rule off.
        min_gain: the gain of the best level over the starting one, relative to the starting
            level, below which the run counts as flat (also below the levels' own noise).
    """

    name: ClassVar[str] = "not_learning"
    after_fraction: float = 0.2
    min_gain: float = 0.01

    def __post_init__(self) -> None:
        check_fraction("after_fraction", self.after_fraction)
        check_non_negative("min_gain", self.min_gain)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve = run.curve
        budget, last = curve.max_step, curve.last_step
        judged = bool(self.after_fraction > 0 and budget and last >= self.after_fraction * budget)
        if budget and judged and study.incumbent is None and len(curve) >= 2 * WINDOW:
            loss = curve.loss_view().values
            if bool((loss == loss).all()):  # NaN is the divergence rule's to judge
                levels = smoothed_levels(loss, WINDOW)
                start, best = float(np.median(loss[:3])), float(levels.min())
                noise = LEVEL_NOISE_UNITS * level_noise(loss, WINDOW)
                needed = max(self.min_gain * abs(start), noise)
                if start - best <= needed:
                    sign = curve.direction.sign
                    return stop(
                        run,
                        self.name,
                        Reason.NOT_LEARNING,
                        f"at step {last} ({last / budget:.0%} of the budget) the metric's best "
                        f"level {best * sign:.4g} is within {needed:.3g} of where it started "
                        f"({start * sign:.4g}): the run is not learning.",
                    )
        said = f"the metric has moved from its starting level by step {last}."
        if not judged:
            said = f"step {last} is short of {self.after_fraction:g} of the budget: not judged yet."
        return too_early(continue_promising(run, self.name, said), run)
