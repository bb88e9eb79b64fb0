"""DIVERGED: a NaN/inf value, or a loss explosion relative to the run's own best."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Action,
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_non_negative,
    continue_promising,
    too_early,
)


@dataclass(frozen=True)
class DivergedPolicy:
    """Stops a run whose last value is NaN/inf, or whose loss has exploded.

    Args:
        explosion_factor: the last value (loss view) counts as an explosion when it is worse
            than the run's best by more than explosion_factor times max(|best|, first - best).
            0 disables the explosion rule.
    """

    name: ClassVar[str] = "diverged"
    explosion_factor: float = 3.0

    def __post_init__(self) -> None:
        check_non_negative("explosion_factor", self.explosion_factor)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve = run.curve
        last = curve.last_step
        saved = run.remaining_steps
        if len(curve) and not math.isfinite(curve.last_value):
            return Decision(
                action=Action.STOP,
                reason=Reason.DIVERGED,
                explanation=f"the metric is {curve.last_value} at step {last}.",
                expected_saved_steps=saved,
                at_step=last,
                policy=self.name,
            )
        loss = curve.loss_view().values
        finite = loss[np.isfinite(loss)]
        if self.explosion_factor > 0 and len(finite) >= 3:
            best, first, now = float(finite.min()), float(finite[0]), float(finite[-1])
            allowed = self.explosion_factor * max(abs(best), first - best)
            if allowed > 0 and now - best > allowed:
                shown = now * curve.direction.sign
                best_shown = best * curve.direction.sign
                return Decision(
                    action=Action.STOP,
                    reason=Reason.DIVERGED,
                    explanation=(
                        f"the metric exploded to {shown:.4g} at step {last}, worse than its "
                        f"best {best_shown:.4g} by more than {self.explosion_factor:g}x its "
                        "scale."
                    ),
                    expected_saved_steps=saved,
                    at_step=last,
                    policy=self.name,
                )
        finite_now = continue_promising(run, self.name, f"the metric is finite at step {last}.")
        return too_early(finite_now, run)
