"""UNPROMISING: the run is unlikely to end better than the best of the study's other runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_probability,
    continue_promising,
    stop,
)


@dataclass(frozen=True)
class UnpromisingPolicy:
    """Stops a run when P(its value at the budget beats the study's incumbent) < epsilon.

    The incumbent is the best final value, observed or forecast, of the study's other runs
    (StudyContext.incumbent); with none yet, the run continues. Part of the `forecast` policy,
    which adds the warm-up and the hysteresis this check needs on its own.
    """

    name: ClassVar[str] = "unpromising"
    epsilon: float = 0.05

    def __post_init__(self) -> None:
        check_probability("epsilon", self.epsilon)

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
        if p < self.epsilon:
            return stop(run, self.name, Reason.UNPROMISING, f"{said} < {self.epsilon:g}.", probs)
        return continue_promising(run, self.name, f"{said} >= {self.epsilon:g}.", probs)
