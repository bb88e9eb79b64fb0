"""What the learned forecasters share: serving from the artifact bank, falling back to the
power-law ensemble (saying so) where a curve is outside what they can read, and turning
predicted quantiles of z into a Prediction."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from forecaster.curves import Curve, FloatArray
from forecaster.models import features
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


def quantile_function(q: FloatArray, levels: FloatArray, u: FloatArray) -> FloatArray:
    """Piecewise-linear quantile function through (levels, q), with tails extended at the
    outer slopes; q is (..., len(levels)), sorted along the last axis."""
    q = np.sort(q, axis=-1)
    lo_slope = (q[..., 1] - q[..., 0]) / (levels[1] - levels[0])
    hi_slope = (q[..., -1] - q[..., -2]) / (levels[-1] - levels[-2])
    flat = q.reshape(-1, len(levels))
    res = np.stack([np.interp(u, levels, row) for row in flat]).reshape(*q.shape[:-1], len(u))
    below, above = u < levels[0], u > levels[-1]
    res[..., below] = q[..., :1] - lo_slope[..., None] * (levels[0] - u[below])
    res[..., above] = q[..., -1:] + hi_slope[..., None] * (u[above] - levels[-1])
    return np.asarray(res)


def quantile_prediction(
    curve: Curve,
    frame: features.Frame,
    z_quantiles: FloatArray,
    model: str,
    version: int,
    n_samples: int,
    notes: tuple[str, ...] = (),
    z_at: object = None,
) -> Prediction:
    """A Prediction from quantiles of z at the horizon (levels features.LEVELS).

    Samples use stratified uniforms, the same for every step, so each sample is a path from
    the current level towards its own final value. z_at(steps) -> (n_steps, len(LEVELS)),
    when given, supplies quantiles at other steps (the sequence model); otherwise the path
    follows `path_weight`.
    """
    levels = np.asarray(features.LEVELS)
    u = (np.arange(n_samples) + 0.5) / n_samples
    final = quantile_function(np.asarray(z_quantiles)[None, :], levels, u)[0]  # (n,)

    def sampler(steps: FloatArray) -> FloatArray:
        steps = np.asarray(steps, dtype=np.float64)
        if z_at is not None:
            zq = z_at(steps)  # type: ignore[operator]
            z = quantile_function(zq, levels, u).T  # (n, n_steps)
        else:
            z = final[:, None] * features.path_weight(frame, steps)[None, :]
        return np.asarray(frame.unscale(np.clip(z, -features.Z_CLIP, features.Z_CLIP)))

    return Prediction(
        model,
        version,
        curve.direction,
        sampler,
        curve.last_step,
        frame.best_loss,
        converged=True,
        notes=notes,
    )
