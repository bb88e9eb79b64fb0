"""A metric still on its kind's starting plateau (a WER of 1, a win rate of 0.5): the forecast
is the plateau itself, give or take its scatter. A fit would read noise about the plateau as
a trend and extrapolate it; nothing yet says when (or whether) the run leaves it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from forecaster.curves import Curve
from forecaster.models.base import StudyHistory
from forecaster.models.baselines import constant_prediction
from forecaster.models.prediction import Prediction


@dataclass(frozen=True)
class PlateauForecaster:
    """The last value with its recent scatter, saying that the curve is on its plateau."""

    name: ClassVar[str] = "plateau"
    version: ClassVar[int] = 1
    n_samples: int = 200
    seed: int = 0

    def needs_history(self, curve: Curve) -> bool:
        return False

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        prediction = constant_prediction(
            curve, self.name, self.version, self.n_samples, self.seed, None
        )
        if not prediction.converged:  # diverged: its own note says why
            return prediction
        kind = curve.kind
        where = f" of a {kind.name} ({kind.plateau:g})" if kind and kind.plateau is not None else ""
        note = (
            f"the metric is still on the starting plateau{where}: a plateau, not a trend; the "
            "forecast stays there until the run leaves it."
        )
        return replace(prediction, notes=(note,))
