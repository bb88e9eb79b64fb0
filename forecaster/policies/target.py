"""TARGET_REACHED / TARGET_UNREACHABLE: can the run still reach the study's target?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from forecaster.curves import Direction, to_loss
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    UNCERTAIN_WIDTH,
    Action,
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_fraction,
    check_non_negative,
    check_probability,
    continue_promising,
    too_early,
    too_uncertain,
)


@dataclass(frozen=True)
class TargetPolicy:
    """Stops a run once it reaches the target, or once reaching it is improbable.

    Args:
        epsilon: stop when P(reach target by the budget) < epsilon.
        min_points: no UNREACHABLE verdict before this many points (WARMUP).
        grace_steps: no UNREACHABLE verdict before this step (WARMUP).
        uncertain_width: UNCERTAIN (continue) when the forecast's 90% interval at the budget
            spans the target by more than this many times the run's observed range on both
            sides (0: off).
        margin: UNREACHABLE also needs the forecast's optimistic bound (its calibrated
            epsilon-quantile at the budget, on the better side) to miss the target by more
            than this many times the run's observed range (models/calibration.unit_of): a
            target just out of reach of the interval is not out of reach (0: no margin).
        min_fraction: no UNREACHABLE verdict before this fraction of the budget: early
            intervals are narrow for how far they extrapolate (0: none).
    """

    name: ClassVar[str] = "target"
    epsilon: float = 0.05
    min_points: int = 5
    grace_steps: int = 0
    uncertain_width: float = UNCERTAIN_WIDTH
    margin: float = 0.0
    min_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_probability("epsilon", self.epsilon)
        check_non_negative("margin", self.margin)
        check_fraction("min_fraction", self.min_fraction)
        check_non_negative("uncertain_width", self.uncertain_width)
        check_non_negative("min_points", self.min_points)
        check_non_negative("grace_steps", self.grace_steps)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return run.curve.target is not None and len(run.curve) >= self.min_points

    def grace_settings(self) -> Mapping[str, float]:
        return {"grace_steps": self.grace_steps}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve = run.curve
        last, target, budget = curve.last_step, curve.target, curve.max_step
        if target is None:
            return too_early(continue_promising(run, self.name, "the study has no target."), run)
        best = curve.best_value()
        if best == best and not curve.direction.better(target, best):
            return Decision(
                action=Action.STOP,
                reason=Reason.TARGET_REACHED,
                explanation=f"the best value {best:.4g} has reached the target {target:.4g}.",
                probabilities={"p_reach_target": 1.0},
                expected_saved_steps=run.remaining_steps,
                at_step=last,
                policy=self.name,
            )
        if len(curve) < self.min_points or last < self.grace_steps:
            return Decision(
                action=Action.CONTINUE,
                reason=Reason.WARMUP,
                explanation=(
                    f"{len(curve)} points up to step {last}: too early to judge (needs "
                    f"{self.min_points} points and step >= {self.grace_steps})."
                ),
                at_step=last,
                policy=self.name,
            )
        if prediction is None or not budget:
            return continue_promising(
                run, self.name, "no forecast or no budget to judge the target by."
            )
        p = prediction.prob_reach(target, budget)
        probs = {"p_reach_target": p}
        unsure = too_uncertain(
            run, prediction, target, self.uncertain_width, self.name, "the target"
        )
        if unsure is not None:
            return replace(unsure, probabilities=probs)
        if p < self.epsilon:
            held = self._within_reach(run, prediction, target, budget)
            if held is not None:
                return replace(held, probabilities=probs)
            return Decision(
                action=Action.STOP,
                reason=Reason.TARGET_UNREACHABLE,
                explanation=(
                    f"P(reach {target:.4g} by step {budget}) = {p:.3f} < {self.epsilon:g}."
                ),
                probabilities=probs,
                expected_saved_steps=run.remaining_steps,
                at_step=last,
                policy=self.name,
            )
        return continue_promising(
            run,
            self.name,
            f"P(reach {target:.4g} by step {budget}) = {p:.3f} >= {self.epsilon:g}.",
            probs,
        )

    def _within_reach(
        self, run: RunView, prediction: Prediction, target: float, budget: int
    ) -> Decision | None:
        """CONTINUE when P(reach) < epsilon is not enough: before min_fraction of the budget,
        or with the optimistic bound within margin x the run's range of the target."""
        from forecaster.models.calibration import unit_of

        progress = run.curve.last_step / budget
        if progress < self.min_fraction:
            return continue_promising(
                run,
                self.name,
                f"{progress:.0%} of the budget run: too early to call the target "
                f"{target:.4g} out of reach (from {self.min_fraction:.0%}).",
            )
        if self.margin <= 0:
            return None
        direction = run.curve.direction
        level = self.epsilon if direction is Direction.MIN else 1.0 - self.epsilon
        bound = float(prediction.quantiles((level,), [budget])[0, 0])
        margin = self.margin * unit_of(run.curve)[0]
        if not (math.isfinite(bound) and math.isfinite(margin)):
            return None
        miss = float(to_loss(bound, direction) - to_loss(target, direction))
        if miss > margin:
            return None
        return continue_promising(
            run,
            self.name,
            f"the optimistic bound {bound:.4g} at step {budget} misses the target {target:.4g} "
            f"by {miss:.3g}, within the margin {margin:.3g} ({self.margin:g}x the run's "
            "observed range): not out of reach.",
        )
