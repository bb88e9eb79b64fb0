"""DIVERGED: a NaN/inf value, a blow-up, or a loss that has risen and stays risen.

Two paths, because a per-batch training loss is noisy and a real blow-up is not subtle:
- the fast path stops on the raw last value: NaN/inf, or worse than the run's best level by
  ``blowup_factor`` times its scale (an exploding run's x100), at the first report;
- the slow path compares smoothed levels: a running median of the last ``smoothing_window``
  points against the best such median so far. A 3x spike of one noisy batch moves a median of 9
  points not at all, so it is not a divergence; a loss that climbs and stays up is, within half a
  window. The scale is the run's own: max(|best level|, first level - best level), so a factor
  means the same on a loss near 0 and on one near 10; and the rise must also clear the noise of
  the levels themselves (LEVEL_NOISE_UNITS standard errors), measured on the run's own points.
The blow-up factor (30) is ten times the largest excess 3x batch noise makes (2x the level);
tests/policies/test_diverged.py holds both rules to 0 false stops in 1,000 such runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.curves import LEVEL_NOISE_UNITS, level_noise, smoothed_levels
from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_count,
    check_non_negative,
    continue_promising,
    stop,
    too_early,
)


@dataclass(frozen=True)
class DivergedPolicy:
    """Stops a run whose last value is NaN/inf, whose loss blew up, or whose smoothed loss has
    exploded.

    Args:
        explosion_factor: the smoothed level (loss view) counts as an explosion when it is worse
            than the best smoothed level by more than explosion_factor times the run's scale,
            max(|best|, first - best). 0 disables the smoothed rule.
        blowup_factor: the raw last value counts as a blow-up, stopped at once, when it is worse
            than the best smoothed level by more than blowup_factor times the scale. 0
            disables it.
        smoothing_window: points in the running median of the smoothed rule, odd (1: no
            smoothing).
    """

    name: ClassVar[str] = "diverged"
    explosion_factor: float = 3.0
    blowup_factor: float = 30.0
    smoothing_window: int = 9

    def __post_init__(self) -> None:
        check_non_negative("explosion_factor", self.explosion_factor)
        check_non_negative("blowup_factor", self.blowup_factor)
        check_count("smoothing_window", self.smoothing_window, minimum=1)
        if self.smoothing_window % 2 == 0:
            raise InvalidArgumentError(
                f"policy setting smoothing_window must be odd; got {self.smoothing_window}."
            )

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve = run.curve
        last = curve.last_step
        if len(curve) and not math.isfinite(curve.last_value):
            return stop(
                run, self.name, Reason.DIVERGED, f"the metric is {curve.last_value} at step {last}."
            )
        loss = curve.loss_view().values
        finite = loss[np.isfinite(loss)]
        if len(finite) >= 3 and (self.explosion_factor > 0 or self.blowup_factor > 0):
            levels = smoothed_levels(finite, self.smoothing_window)
            best, first = float(levels.min()), float(levels[0])
            scale = max(abs(best), first - best)
            sign = curve.direction.sign
            if (
                scale > 0
                and self.blowup_factor > 0
                and finite[-1] - best > self.blowup_factor * scale
            ):
                return stop(
                    run,
                    self.name,
                    Reason.DIVERGED,
                    f"the metric blew up to {finite[-1] * sign:.4g} at step {last}, worse than "
                    f"its best level {best * sign:.4g} by more than {self.blowup_factor:g}x its "
                    "scale.",
                )
            now = float(levels[-1])
            noise = LEVEL_NOISE_UNITS * level_noise(finite, self.smoothing_window)
            if (
                scale > 0
                and self.explosion_factor > 0
                and now - best > self.explosion_factor * scale + noise
            ):
                return stop(
                    run,
                    self.name,
                    Reason.DIVERGED,
                    f"the metric's level (median of its last {self.smoothing_window} points) "
                    f"rose to {now * sign:.4g} at step {last}, worse than its best level "
                    f"{best * sign:.4g} by more than {self.explosion_factor:g}x its scale plus "
                    f"{LEVEL_NOISE_UNITS:g} standard errors of its level ({noise:.3g}).",
                )
        finite_now = continue_promising(run, self.name, f"the metric is finite at step {last}.")
        return too_early(finite_now, run)
