"""FirstOf: composition of policies instead of flags."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StoppingPolicy,
    StudyContext,
)


class FirstOf:
    """The first STOP among the policies, in order; else the first WARMUP; else CONTINUE.

    Example:
        >>> from forecaster.policies.diverged import DivergedPolicy
        >>> from forecaster.policies.target import TargetPolicy
        >>> policy = FirstOf(DivergedPolicy(), TargetPolicy(epsilon=0.01))
    """

    name: ClassVar[str] = "first_of"

    def __init__(self, *policies: StoppingPolicy, name: str | None = None) -> None:
        if not policies:
            raise ValueError("FirstOf needs at least one policy")
        self.policies = policies
        self.label = name or self.name

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return any(p.needs_forecast(run, study) for p in self.policies)

    def grace_settings(self) -> Mapping[str, float]:
        """Each setting at the latest step any of the policies holds its verdicts to."""
        out: dict[str, float] = {}
        for p in self.policies:
            for name, step in p.grace_settings().items():
                out[name] = max(out.get(name, step), step)
        return out

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        decisions = [p.decide(run, prediction, study) for p in self.policies]
        for d in decisions:
            if d.is_stop:
                return d
        for d in decisions:
            if d.reason is Reason.WARMUP:
                return d
        probs: dict[str, float] = {}
        for d in decisions:
            probs.update(d.probabilities)
        last = decisions[-1]
        return Decision(
            action=last.action,
            reason=last.reason,
            explanation=last.explanation,
            probabilities=probs,
            at_step=last.at_step,
            policy=self.label,
        )
