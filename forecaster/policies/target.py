"""TARGET_REACHED / TARGET_UNREACHABLE: can the run still reach the study's target?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    UNCERTAIN_WIDTH,
    Action,
    Decision,
    Reason,
    RunView,
    StudyContext,
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
    """

    name: ClassVar[str] = "target"
    epsilon: float = 0.05
    min_points: int = 5
    grace_steps: int = 0
    uncertain_width: float = UNCERTAIN_WIDTH

    def __post_init__(self) -> None:
        check_probability("epsilon", self.epsilon)
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
