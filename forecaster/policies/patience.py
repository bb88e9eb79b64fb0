"""Patience (early stopping as Keras and Optuna's PatientPruner do it): for comparison.

A run that has not improved its best by more than min_delta over its last `patience` points
has stopped learning: CONVERGED, and its best is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.curves import to_loss
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
    warmup,
)


@dataclass(frozen=True)
class PatiencePolicy:
    """Args:
    patience: points without an improvement before the run is stopped.
    min_delta: the improvement (in the metric's units) that counts.
    """

    name: ClassVar[str] = "patience"
    patience: int = 10
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check_count("patience", self.patience, minimum=1)
        check_non_negative("min_delta", self.min_delta)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve = run.curve
        n = len(curve)
        if n <= self.patience:
            return warmup(run, self.name, f"{n} points; patience is {self.patience}.")
        loss = to_loss(curve.values, curve.direction)
        loss = np.where(np.isfinite(loss), loss, np.inf)
        before = float(loss[: n - int(self.patience)].min())
        recent = float(loss[n - int(self.patience) :].min())
        sign = curve.direction.sign
        said = (
            f"best of the last {self.patience} points {recent * sign:.4g} vs the best before "
            f"{before * sign:.4g}"
        )
        if recent >= before - self.min_delta:
            return stop(run, self.name, Reason.CONVERGED, f"{said}: no improvement.")
        return continue_promising(run, self.name, f"{said}: improving.")
