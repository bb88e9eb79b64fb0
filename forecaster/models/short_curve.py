"""A forecast from 3 points on: a saturating 3-parameter law with priors learned from the corpus.

Real evaluation schedules give 3-8 points by a fifth of a run, too few for the power-law
ensemble (which needs 5 and weighs its members on a hold-out). Three points cannot identify
three parameters alone, so the law carries priors on its shape, in units of the curve itself
(scale-free, so one table serves a loss of 8 and an accuracy of 0.3):

    L(x) = level + r * R * (x^-c - 1),   x = step / newest step (x = 1 at the newest point)

with `level` the law at the newest point (flat prior), R the curve's observed range, c the
exponent (log c ~ N), and r the remaining drop to the asymptote in units of R (log r ~ N).
The fit is a MAP fit (`scipy.optimize.least_squares`, soft-L1 on residuals in units of the
curve's noise level, so a spike pulls little), and the interval is its Laplace posterior:
where 3 points say little the priors' spread shows, and a 30-point curve of the same law gets
a narrower one. The priors are learned by `benchmarks/short_curve_priors.py`, leave-one-source-
out, and shipped as `short_curve_priors.json` (the table learned on every source).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from forecaster.curves import Curve, FloatArray, thin_indices
from forecaster.errors import InvalidArgumentError
from forecaster.models.base import StudyHistory
from forecaster.models.baselines import unfit_prediction
from forecaster.models.prediction import Prediction

MIN_POINTS = 3  # below this the answer is the last value, with a wide interval
_LOG_C_RANGE = (-4.0, 2.5)  # exponents from 0.02 to 12: beyond them a fit is not a law
_LOG_R_RANGE = (-9.0, 4.0)
_PRIORS_FILE = "short_curve_priors.json"
_OWN_NOISE_POINTS = 6  # from this many points a curve's own scatter can set its noise level


@dataclass(frozen=True)
class ShortCurvePriors:
    """The law's priors in units of the curve (see the module docstring), and how much wider
    than its Laplace posterior the interval is drawn (`inflation`, chosen so held-out sources'
    90% intervals cover 90%)."""

    log_exponent_mean: float = math.log(0.5)
    log_exponent_sd: float = 1.0
    log_remaining_mean: float = math.log(0.3)
    log_remaining_sd: float = 1.5
    noise_share: float = 0.05  # the least noise sd assumed, in units of the curve's range
    inflation: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_exponent": {"mean": self.log_exponent_mean, "sd": self.log_exponent_sd},
            "log_remaining": {"mean": self.log_remaining_mean, "sd": self.log_remaining_sd},
            "noise_share": self.noise_share,
            "inflation": self.inflation,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShortCurvePriors:
        try:
            return cls(
                float(d["log_exponent"]["mean"]),
                float(d["log_exponent"]["sd"]),
                float(d["log_remaining"]["mean"]),
                float(d["log_remaining"]["sd"]),
                float(d["noise_share"]),
                float(d["inflation"]),
                dict(d.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidArgumentError(
                f"short-curve priors table is malformed ({e!r}); rebuild it with "
                "benchmarks/short_curve_priors.py."
            ) from None

    @classmethod
    def shipped(cls) -> ShortCurvePriors:
        """The table in the package (learned on every source of the corpus)."""
        text = resources.files("forecaster.models").joinpath(_PRIORS_FILE).read_text()
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ShortFit:
    """The MAP parameters (level, log c, log r), their Laplace covariance and the curve's
    units (range R, noise sd)."""

    theta: FloatArray
    cov: FloatArray
    span: float
    noise: float

    def curve_at(self, theta: FloatArray, x: FloatArray) -> FloatArray:
        """The law at x for each row of theta: (m, n)."""
        level, log_c, log_r = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        c = np.exp(np.clip(log_c, *_LOG_C_RANGE))
        drop = np.exp(np.clip(log_r, *_LOG_R_RANGE)) * self.span
        with np.errstate(over="ignore", invalid="ignore"):
            out: FloatArray = level + drop * (x[None, :] ** -c - 1.0)
        return out

    def draws(self, inflation: float, n_samples: int, seed: int) -> tuple[FloatArray, FloatArray]:
        """Parameter draws from the Laplace posterior widened by inflation, and noise draws."""
        rng = np.random.default_rng(seed)
        cov = self.cov * inflation**2
        w, v = np.linalg.eigh(cov)
        root = v * np.sqrt(np.maximum(w, 0.0))[None, :]
        theta = self.theta[None, :] + rng.standard_normal((n_samples, 3)) @ root.T
        return theta, rng.standard_normal(n_samples) * self.noise


def unit_points(loss: Curve, max_points: int) -> tuple[FloatArray, FloatArray, float, float]:
    """(x, y, offset, scale) of a finite loss-view curve, thinned to max_points: x = (step +
    offset) / scale is 1 at the newest point (offset 1 only when step 0 is logged)."""
    idx = thin_indices(len(loss), max_points)
    offset = 1.0 if loss.steps[0] == 0 else 0.0
    scale = float(loss.steps[-1]) + offset
    return (loss.steps[idx].astype(np.float64) + offset) / scale, loss.values[idx], offset, scale


def _map_fit(
    x: FloatArray, y: FloatArray, priors: ShortCurvePriors, span: float, noise: float
) -> Any:
    """least_squares on the residuals in noise units plus the priors' (soft-L1, f_scale 1:
    a point more than one noise sd off pulls less and less)."""
    from scipy.optimize import least_squares

    mu = np.array([priors.log_exponent_mean, priors.log_remaining_mean])
    sd = np.array([priors.log_exponent_sd, priors.log_remaining_sd])
    holder = ShortFit(np.zeros(3), np.eye(3), span, noise)

    def residuals(theta: FloatArray) -> FloatArray:
        fit = holder.curve_at(theta[None, :], x)[0]
        return np.concatenate([(y - fit) / noise, (theta[1:] - mu) / sd])

    start = np.array([float(np.median(y[-min(len(y), 3) :])), mu[0], mu[1]])
    lower = np.array([-np.inf, _LOG_C_RANGE[0], _LOG_R_RANGE[0]])
    upper = np.array([np.inf, _LOG_C_RANGE[1], _LOG_R_RANGE[1]])
    return least_squares(
        residuals, np.clip(start, lower + 1e-9, upper - 1e-9), bounds=(lower, upper),
        loss="soft_l1", f_scale=1.0, x_scale=np.array([noise, 1.0, 1.0]), max_nfev=200,
    )  # fmt: skip


def fit_short(x: FloatArray, y: FloatArray, priors: ShortCurvePriors) -> ShortFit:
    """The MAP fit of the law to points (x, y) in the loss view, x = 1 at the newest."""
    span = float(np.max(y) - np.min(y))
    span = max(span, 1e-3 * abs(float(y[-1])), 1e-12)
    noise = priors.noise_share * span  # three points cannot tell noise from shape
    result = _map_fit(x, y, priors, span, noise)
    for _ in range(2 if len(y) >= _OWN_NOISE_POINTS else 0):
        # Enough points to see their own scatter about the law: the curve is fitted again with
        # its own noise level (robust: the MAD of its residuals), noisier or cleaner than the
        # prior share says.
        resid = result.fun[: len(y)] * noise
        own = 1.4826 * float(np.median(np.abs(resid))) * math.sqrt(len(y) / (len(y) - 3))
        noise = max(own, 1e-3 * span)
        result = _map_fit(x, y, priors, span, noise)
    sd = np.array([priors.log_exponent_sd, priors.log_remaining_sd])
    jac = np.asarray(result.jac, dtype=np.float64)
    precision = jac.T @ jac + np.diag([1e-12 / noise**2, 1e-9, 1e-9])
    try:
        cov = np.linalg.inv(precision)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(precision)
    cov = 0.5 * (cov + cov.T)
    # The shape parameters' spread stays within their priors' (a soft-L1 fit can leave a
    # flat direction); correlations kept.
    sds = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    cap = np.array([sds[0], min(max(sds[1], 1e-3), sd[0]), min(max(sds[2], 1e-3), sd[1])])
    corr = np.clip(cov / np.outer(sds, sds), -1.0, 1.0)
    cov = corr * np.outer(cap, cap)
    return ShortFit(np.asarray(result.x, dtype=np.float64), cov, span, noise)


@dataclass(frozen=True)
class ShortCurveForecaster:
    """The short-curve law as a forecaster: a fitted forecast from 3 points on, the last value
    (with a wide interval) below that. `power_law` answers with it for curves too short for
    its ensemble, and `auto` picks it for them."""

    name: str = "short_curve"
    version: ClassVar[int] = 1
    priors: ShortCurvePriors = field(default_factory=ShortCurvePriors.shipped, repr=False)
    n_samples: int = 400
    max_fit_points: int = 100
    seed: int = 0

    def needs_history(self, curve: Curve) -> bool:
        return False

    def fit(self, curve: Curve, history: StudyHistory | None = None) -> Prediction:
        finite = curve.loss_view().finite()
        fallback = unfit_prediction(
            curve, len(finite), MIN_POINTS, self.name, self.version, self.n_samples, self.seed
        )
        if fallback is not None:
            return fallback
        x, y, offset, scale = unit_points(finite, self.max_fit_points)
        fitted = fit_short(x, y, self.priors)
        theta, noise = fitted.draws(self.priors.inflation, self.n_samples, self.seed)

        def sampler(steps: FloatArray) -> FloatArray:
            xs = np.maximum(np.asarray(steps, dtype=np.float64) + offset, 0.5) / scale
            out: FloatArray = fitted.curve_at(theta, xs) + noise[:, None]
            return out

        c = math.exp(float(fitted.theta[1]))
        note = (
            f"short curve ({len(finite)} points): a 3-parameter saturating law (exponent "
            f"{c:.2g}) with shape priors learned from the corpus; the interval is wide "
            "because few points say little."
        )
        return Prediction(
            self.name,
            self.version,
            curve.direction,
            sampler,
            curve.last_step,
            float(finite.values.min()),
            converged=True,
            notes=(note,),
        )


__all__ = [
    "MIN_POINTS",
    "ShortCurveForecaster",
    "ShortCurvePriors",
    "ShortFit",
    "fit_short",
    "unit_points",
]
