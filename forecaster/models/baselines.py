"""The floors every forecaster must beat: the last value, and damped-trend exponential
smoothing (statsmodels). They stay in every benchmark, and the fallbacks of the other models
come from here."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.curves import Curve, FloatArray
from forecaster.models.base import StudyHistory
from forecaster.models.prediction import Prediction

_MIN_SMOOTHING_POINTS = 6


def nan_prediction(curve: Curve, model: str, version: int, n_samples: int, note: str) -> Prediction:
    """A diverged run: the forecast is NaN, and the notes say why."""
    loss = curve.loss_view()
    finite = loss.values[np.isfinite(loss.values)]

    def sampler(steps: FloatArray) -> FloatArray:
        return np.full((n_samples, len(steps)), np.nan)

    return Prediction(
        model,
        version,
        curve.direction,
        sampler,
        curve.last_step,
        float(finite.min()) if len(finite) else math.nan,
        converged=False,
        notes=(note,),
    )


def diverged_note(curve: Curve) -> str | None:
    """Why a curve cannot be extrapolated (no finite value, or a non-finite last value)."""
    finite = np.isfinite(curve.values)
    if not finite.any():
        return "no finite value yet: the run diverged, so the forecast is NaN."
    if not finite[-1]:
        return f"last value is {curve.last_value}: the run diverged, so the forecast is NaN."
    return None


def constant_prediction(
    curve: Curve, model: str, version: int, n_samples: int, seed: int, note: str | None
) -> Prediction:
    """Last finite value, spread by the recent scatter: the fallback of every fit.

    With fewer than 3 finite points the spread is at least 10% of the level: an honest, wide
    interval rather than a confident guess.
    """
    why = diverged_note(curve)
    if why is not None:
        return nan_prediction(curve, model, version, n_samples, why if note is None else note)
    loss = curve.loss_view()
    finite = loss.values[np.isfinite(loss.values)]
    recent = finite[-10:]
    scale = max(float(np.std(recent)), 0.01 * abs(float(recent[-1])), 1e-9)
    if len(finite) < 3:
        scale = max(scale, 0.1 * abs(float(recent[-1])), 1e-6)
    noise = np.random.default_rng(seed).standard_normal(n_samples) * scale
    level = float(finite[-1])

    def sampler(steps: FloatArray) -> FloatArray:
        return np.broadcast_to((level + noise)[:, None], (n_samples, len(steps))).copy()

    return Prediction(
        model,
        version,
        curve.direction,
        sampler,
        curve.last_step,
        float(finite.min()),
        converged=note is None,
        notes=() if note is None else (note,),
    )


def unfit_prediction(
    curve: Curve,
    n_usable: int,
    min_points: int,
    model: str,
    version: int,
    n_samples: int,
    seed: int = 0,
) -> Prediction | None:
    """The fallback when a model cannot fit: the run diverged, or has fewer than min_points
    usable points (a wide last-value forecast that says so); None when it can fit."""
    why = diverged_note(curve)
    if why is None and n_usable >= min_points:
        return None
    note = why or (
        f"only {n_usable} usable points (< {min_points}): the forecast is the last value with "
        "a wide interval."
    )
    return constant_prediction(curve, model, version, n_samples, seed, note)


@dataclass(frozen=True)
class LastValueForecaster:
    """The metric stays where it is, give or take its recent scatter."""

    name: ClassVar[str] = "last_value"
    version: ClassVar[int] = 1
    n_samples: int = 200
    seed: int = 0

    def needs_history(self, curve: Curve) -> bool:
        return False

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        return constant_prediction(curve, self.name, self.version, self.n_samples, self.seed, None)


@dataclass(frozen=True)
class DampedTrendForecaster:
    """Holt's exponential smoothing with a damped additive trend (statsmodels), on the curve
    resampled to even steps; intervals from its one-step residuals, growing with the horizon
    as the damped trend's forecast variance does."""

    name: ClassVar[str] = "damped_trend"
    version: ClassVar[int] = 1
    n_samples: int = 200
    max_fit_points: int = 100
    seed: int = 0

    def needs_history(self, curve: Curve) -> bool:
        return False

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        finite = curve.loss_view().finite()
        fallback = unfit_prediction(
            curve, len(finite), _MIN_SMOOTHING_POINTS, self.name, self.version, self.n_samples,
            self.seed,
        )  # fmt: skip
        if fallback is not None:
            return fallback
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        # Resample to evenly spaced steps: smoothing assumes one unit between observations.
        n = min(len(finite), self.max_fit_points)
        grid = np.linspace(float(finite.steps[0]), float(finite.steps[-1]), n)
        y = np.interp(grid, finite.steps.astype(np.float64), finite.values)
        spacing = float(grid[1] - grid[0]) if n > 1 else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ExponentialSmoothing(
                y, trend="add", damped_trend=True, initialization_method="estimated"
            )
            res = model.fit()
        level, trend = float(res.level[-1]), float(res.trend[-1])
        phi = float(res.params.get("damping_trend", 0.98))
        alpha = float(res.params.get("smoothing_level", 0.5))
        sd = float(np.std(np.asarray(res.resid)[1:])) or 1e-9
        rng = np.random.default_rng(self.seed)
        z = rng.standard_normal(self.n_samples)
        last = float(finite.steps[-1])

        def sampler(steps: FloatArray) -> FloatArray:
            h = np.maximum((np.asarray(steps, dtype=np.float64) - last) / spacing, 0.0)
            damp = phi * (1.0 - phi**h) / (1.0 - phi) if phi < 1 else h
            mean = level + trend * damp
            # Simple-smoothing variance growth, 1 + (h - 1) alpha^2: wide, as it should be.
            spread = sd * np.sqrt(1.0 + np.maximum(h - 1.0, 0.0) * alpha**2)
            out: FloatArray = mean[None, :] + z[:, None] * spread[None, :]
            return out

        return Prediction(
            self.name,
            self.version,
            curve.direction,
            sampler,
            curve.last_step,
            float(finite.values.min()),
        )


__all__ = [
    "DampedTrendForecaster",
    "LastValueForecaster",
    "constant_prediction",
    "diverged_note",
    "nan_prediction",
    "unfit_prediction",
]
