"""Threshold stopping, as Optuna's ThresholdPruner: stop a run worse than a fixed bound."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_count,
    check_fraction,
    continue_promising,
    grace_step,
    stop,
    too_early,
    warmup,
)


@dataclass(frozen=True)
class ThresholdPolicy:
    """Args:
    threshold: required: a run whose last value is worse than this is stopped.
    grace_fraction, grace_steps: no verdict before max(grace_steps, grace_fraction x budget).
    """

    name: ClassVar[str] = "threshold"
    threshold: float | None = None
    grace_fraction: float = 0.0
    grace_steps: int = 0

    def __post_init__(self) -> None:
        if self.threshold is None or not math.isfinite(self.threshold):
            raise InvalidArgumentError(
                f"policy setting threshold is required and must be finite; got {self.threshold}."
            )
        check_fraction("grace_fraction", self.grace_fraction)
        check_count("grace_steps", self.grace_steps)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {"grace_steps": self.grace_steps}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve, last = run.curve, run.curve.last_step
        grace = grace_step(run, self.grace_steps, self.grace_fraction)
        if not len(curve) or last < grace:
            return warmup(run, self.name, f"step {last} is inside the grace period (< {grace}).")
        value, bound = curve.last_value, float(self.threshold)  # type: ignore[arg-type]
        if not math.isfinite(value) or curve.direction.better(bound, value):
            return stop(
                run,
                self.name,
                Reason.UNPROMISING,
                f"its value {value:.4g} at step {last} is worse than the threshold {bound:.4g}.",
            )
        within = continue_promising(
            run, self.name, f"its value {value:.4g} is within the threshold {bound:.4g}."
        )
        return too_early(within, run)
