"""UNPROMISING: the run is unlikely to end better than the best of the study's other runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    UNCERTAIN_WIDTH,
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_non_negative,
    check_probability,
    continue_promising,
    stop,
    too_uncertain,
)


@dataclass(frozen=True)
class UnpromisingPolicy:
    """Stops a run when P(its value at the budget beats the study's incumbent) < epsilon.

    The incumbent is the best final value, observed or forecast, of the study's other runs
    (StudyContext.incumbent); with none yet, the run continues. Part of the `forecast` policy,
    which adds the warm-up and the hysteresis this check needs on its own. UNCERTAIN (continue)
    when the forecast's 90% interval spans the incumbent by more than uncertain_width times the
    run's observed range on both sides (0: off).
    """

    name: ClassVar[str] = "unpromising"
    epsilon: float = 0.05
    uncertain_width: float = UNCERTAIN_WIDTH

    def __post_init__(self) -> None:
        check_probability("epsilon", self.epsilon)
        check_non_negative("uncertain_width", self.uncertain_width)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return study.incumbent is not None and bool(run.curve.max_step)

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve, incumbent, budget = run.curve, study.incumbent, run.curve.max_step
        if incumbent is None:
            return continue_promising(run, self.name, "no other run has a final value yet.")
        best = curve.best_value()
        if best == best and not curve.direction.better(incumbent, best):
            said = f"its best {best:.4g} already matches the incumbent {incumbent:.4g}."
            return continue_promising(run, self.name, said)
        if prediction is None or not budget:
            return continue_promising(run, self.name, "no forecast or no budget to judge by.")
        p = prediction.prob_better_than(incumbent, budget)
        probs = {"p_beat_incumbent": p}
        said = f"P(value at step {budget} beats the incumbent {incumbent:.4g}) = {p:.3f}"
        unsure = too_uncertain(
            run, prediction, incumbent, self.uncertain_width, self.name, "the incumbent"
        )
        if unsure is not None:
            return replace(unsure, probabilities=probs)
        if p < self.epsilon:
            return stop(run, self.name, Reason.UNPROMISING, f"{said} < {self.epsilon:g}.", probs)
        return continue_promising(run, self.name, f"{said} >= {self.epsilon:g}.", probs)
