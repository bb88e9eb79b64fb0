"""BUDGET_EXHAUSTED: the run has reached its planned max_step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Action,
    Decision,
    Reason,
    RunView,
    StudyContext,
    continue_promising,
    too_early,
)


@dataclass(frozen=True)
class BudgetPolicy:
    name: ClassVar[str] = "budget"

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        budget, last = run.curve.max_step, run.curve.last_step
        if budget and last >= budget:
            return Decision(
                action=Action.STOP,
                reason=Reason.BUDGET_EXHAUSTED,
                explanation=f"step {last} has reached the budget max_step={budget}.",
                at_step=last,
                policy=self.name,
            )
        left = f"{budget - last} steps of budget left" if budget else "no budget set"
        return too_early(continue_promising(run, self.name, f"{left}."), run)
