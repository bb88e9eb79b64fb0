"""A least-squares power law, L(s) = a + b * s^-c, with intervals from its residuals.

The simple, honest forecaster the service starts with. For each exponent c on a grid, a and b
are an ordinary least-squares fit; the exponents are then weighted by their profile likelihood,
so the predictive distribution mixes over c, over (a, b) from each fit's covariance, and over
the observation noise. The parametric-forecasters issue replaces it with a full ensemble.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from forecaster.curves import Curve, FloatArray
from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction

_MIN_FIT_POINTS = 5


def _constant_prediction(
    curve: Curve, model: str, version: int, n_samples: int, seed: int, note: str | None
) -> Prediction:
    """Last finite value, spread by the recent scatter: the fallback of every fit."""
    loss = curve.loss_view()
    finite = loss.values[np.isfinite(loss.values)]
    notes: tuple[str, ...] = () if note is None else (note,)
    best = float(finite.min()) if len(finite) else math.nan
    if not len(finite) or not np.isfinite(loss.last_value):
        diverged = "no finite value yet" if not len(finite) else f"last value is {loss.last_value}"
        notes += (f"{diverged}: the run diverged, so the forecast is NaN.",)

        def nan_sampler(steps: FloatArray) -> FloatArray:
            return np.full((n_samples, len(steps)), np.nan)

        return Prediction(
            model,
            version,
            curve.direction,
            nan_sampler,
            curve.last_step,
            best,
            converged=False,
            notes=notes,
        )
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
        best,
        converged=note is None,
        notes=notes,
    )


@dataclass(frozen=True)
class _GridFit:
    """Least-squares (a, b) for each exponent c, with what the covariance needs."""

    c: FloatArray
    a: FloatArray
    b: FloatArray
    sse: FloatArray
    s1: FloatArray
    s2: FloatArray
    det: FloatArray
    ok: npt.NDArray[np.bool_]


def _grid_fit(c: FloatArray, t: FloatArray, y: FloatArray) -> _GridFit:
    n = len(y)
    basis = t[None, :] ** -c[:, None]  # (C, n)
    s1, s2 = basis.sum(axis=1), (basis**2).sum(axis=1)
    sy, sty = y.sum(), basis @ y
    det = n * s2 - s1**2
    ok = det > 1e-12 * np.maximum(n * s2, 1e-300)
    det = np.where(ok, det, np.inf)
    b = (n * sty - s1 * sy) / det
    a = (sy - b * s1) / n
    resid = y[None, :] - a[:, None] - b[:, None] * basis
    sse = np.maximum((resid**2).sum(axis=1), 1e-12 * (1.0 + float(np.var(y))) * n)
    return _GridFit(c, a, b, sse, s1, s2, det, ok)


def _fit_with_refined_exponent(c: FloatArray, t: FloatArray, y: FloatArray) -> _GridFit:
    """The grid fit, with the best exponent moved to the continuous minimiser between its
    neighbours, so that a clean curve is not forced onto the grid."""
    from scipy.optimize import minimize_scalar

    fit = _grid_fit(c, t, y)
    sse = np.where(fit.ok, fit.sse, np.inf)
    k = int(np.argmin(sse))
    lo, hi = c[max(k - 1, 0)], c[min(k + 1, len(c) - 1)]
    res = minimize_scalar(
        lambda x: float(_grid_fit(np.array([x]), t, y).sse[0]),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4 * c[k]},
    )
    if not (res.success and res.fun < sse[k]):
        return fit
    refined = c.copy()
    refined[k] = float(res.x)
    return _grid_fit(refined, t, y)


@dataclass(frozen=True)
class LastValueForecaster:
    """The floor every forecaster must beat: the metric stays where it is."""

    name: ClassVar[str] = "last_value"
    version: ClassVar[int] = 1
    n_samples: int = 200
    seed: int = 0

    def fit(self, curve: Curve) -> Prediction:
        return _constant_prediction(curve, self.name, self.version, self.n_samples, self.seed, None)


@dataclass(frozen=True)
class PowerLawForecaster:
    """L(s) = a + b * (s / last)^-c, fitted by least squares over an exponent grid.

    Example:
        >>> prediction = PowerLawForecaster().fit(curve)
        >>> prediction.quantiles([0.05, 0.5, 0.95], at_steps=[curve.max_step])
    """

    name: ClassVar[str] = "power_law"
    version: ClassVar[int] = 1
    n_samples: int = 400
    max_fit_points: int = 256
    min_exponent: float = 0.05
    max_exponent: float = 3.0
    n_exponents: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.min_exponent < self.max_exponent:
            raise InvalidArgumentError(
                f"need 0 < min_exponent < max_exponent; got {self.min_exponent=}, "
                f"{self.max_exponent=}."
            )
        if self.n_samples < 10 or self.n_exponents < 2 or self.max_fit_points < _MIN_FIT_POINTS:
            raise InvalidArgumentError(
                f"need n_samples >= 10, n_exponents >= 2, max_fit_points >= {_MIN_FIT_POINTS}; "
                f"got {self.n_samples=}, {self.n_exponents=}, {self.max_fit_points=}."
            )

    def fit(self, curve: Curve) -> Prediction:
        loss = curve.loss_view()
        finite = loss.finite()
        if len(finite) < _MIN_FIT_POINTS or not np.isfinite(loss.last_value):
            note = (
                f"only {len(finite)} finite points (< {_MIN_FIT_POINTS}): the forecast is the "
                "last value with a wide interval."
            )
            return _constant_prediction(
                curve, self.name, self.version, self.n_samples, self.seed, note
            )
        idx = np.unique(np.linspace(0, len(finite) - 1, self.max_fit_points).round().astype(int))
        # Shift by one only when step 0 is logged, so s^-c stays finite there.
        offset = 1.0 if finite.steps[0] == 0 else 0.0
        scale_step = float(finite.steps[-1]) + offset
        t = (finite.steps[idx].astype(np.float64) + offset) / scale_step
        y = finite.values[idx]
        n = len(y)

        fit = _fit_with_refined_exponent(
            np.geomspace(self.min_exponent, self.max_exponent, self.n_exponents), t, y
        )
        c, a, b, sse, s1, s2, det = fit.c, fit.a, fit.b, fit.sse, fit.s1, fit.s2, fit.det
        log_w = np.where(fit.ok, -0.5 * n * np.log(sse), -np.inf)
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        sigma2 = sse / max(n - 3, 1)

        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(c), size=self.n_samples, p=w)
        # (a, b) ~ N(beta, sigma2 * (X'X)^-1), with (X'X)^-1 = [[s2, -s1], [-s1, n]] / det.
        var_a, var_b, cov_ab = (
            (sigma2 * s2 / det)[pick],
            (sigma2 * n / det)[pick],
            (-sigma2 * s1 / det)[pick],
        )
        z1, z2, z3 = rng.standard_normal((3, self.n_samples))
        sd_a = np.sqrt(np.maximum(var_a, 0.0))
        rho = np.where(sd_a > 0, cov_ab / np.where(sd_a > 0, sd_a, 1.0), 0.0)
        a_s = a[pick] + sd_a * z1
        b_s = b[pick] + rho * z1 + np.sqrt(np.maximum(var_b - rho**2, 0.0)) * z2
        c_s = c[pick]
        noise = np.sqrt(sigma2[pick]) * z3

        notes: list[str] = []
        best = int(np.argmax(w))
        if best in (0, len(c) - 1):
            notes.append(
                f"the best exponent c={c[best]:.3g} is at the edge of its range "
                f"[{self.min_exponent}, {self.max_exponent}]: the shape may not be a power law."
            )

        def sampler(steps: FloatArray) -> FloatArray:
            ts = np.maximum(np.asarray(steps, dtype=np.float64) + offset, 0.5) / scale_step
            out: FloatArray = (
                a_s[:, None] + b_s[:, None] * ts[None, :] ** -c_s[:, None] + noise[:, None]
            )
            return out

        return Prediction(
            self.name,
            self.version,
            curve.direction,
            sampler,
            curve.last_step,
            float(finite.values.min()),
            converged=True,
            notes=tuple(notes),
        )
