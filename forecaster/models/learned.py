"""What the learned forecasters share: serving from the artifact bank, and falling back to
the power-law ensemble (saying so) where a curve is outside what they can read."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from forecaster.curves import Curve
from forecaster.models.base import Forecaster, StudyHistory
from forecaster.models.prediction import Prediction

if TYPE_CHECKING:
    from forecaster.models.artifacts import ModelBank


def fallback(curve: Curve, model: str, version: int, why: str) -> Prediction:
    """The power-law ensemble's forecast, labelled as model's, with a note saying why."""
    from forecaster.models.power_law import PowerLawForecaster

    prediction = PowerLawForecaster().fit(curve)
    note = f"{model} cannot read this curve ({why}); this is the power_law forecast."
    return replace(
        prediction,
        model=model,
        model_version=version,
        converged=False,
        notes=(note, *prediction.notes),
    )


@dataclass(frozen=True)
class Unavailable:
    """Stands in for a learned forecaster whose artifact is not loaded."""

    name: str
    reason: str
    version: ClassVar[int] = 0

    def needs_history(self, curve: Curve) -> bool:
        return False

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        return fallback(curve, self.name, self.version, f"no model loaded: {self.reason}")


def from_bank(name: str, bank: ModelBank | None) -> Forecaster:
    """The model called name in bank, or a stand-in that says why there is none."""
    if bank is None:
        return Unavailable(name, "no model bank was given (learned models are off)")
    model = bank.get(name)
    if model is not None:
        return model
    reason = bank.refused.get(name) or (
        f"no artifact {name!r} in {bank.folder}" if bank.folder else "learned models are off"
    )
    return Unavailable(name, reason)
