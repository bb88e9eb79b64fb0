"""Variable projection over a grid: the one fitting routine of the parametric forecasters.

Every parametric law here is linear in some coefficients once its shape parameters are fixed
(L = a + b * g(s; theta), or L0 + A * S1^-alpha - C * S2). So a fit evaluates the basis for
every theta on a grid at once, solves each weighted least-squares problem in closed form, and
the grid is its own set of restarts: no initial values to guess, no local minima to fall
into, and ~100 shape candidates fit in well under a millisecond for a 256-point curve.

Robustness: Huber reweighting (two passes), sign bounds on coefficients (a shape coefficient
that would flip the curve is dropped, leaving the rest refitted), and optional ridge priors
(how a study's completed runs inform a run that cannot identify a coefficient alone).
The posterior over theta is its profile likelihood; coefficients are Gaussian around their
least-squares values with the usual covariance, so samples carry parameter uncertainty and
observation noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from forecaster.curves import FloatArray

Basis = Callable[[FloatArray, FloatArray], FloatArray]  # (theta (m, d), x (n,)) -> (m, n, p)

_HUBER_K = 1.5  # residuals beyond 1.5 robust sd are down-weighted (Huber's usual constant)
_HUBER_PASSES = 1  # one reweighting removes most of a spike's pull; more buys little
_ACTIVE_SET_PASSES = 4  # bound violations drop out in 1-2 passes; a block fit may need more


@dataclass(frozen=True)
class Prior:
    """Ridge prior on the coefficients: the fit minimises sum(w * r^2) + sum(precision *
    (coef - mean)^2), so precision is in units of squared residuals per squared coefficient;
    a precision of 0 leaves that coefficient to the data alone."""

    mean: FloatArray
    precision: FloatArray


@dataclass(frozen=True)
class GridFit:
    """The least-squares solution at every grid point, and what sampling needs."""

    theta: FloatArray  # (m, d)
    coef: FloatArray  # (m, p)
    cov: FloatArray  # (m, p, p), including the noise variance
    sigma2: FloatArray  # (m,) residual variance
    log_weight: FloatArray  # (m,) profile log-likelihood (+ log prior on theta)
    n: int

    @property
    def weights(self) -> FloatArray:
        w = np.exp(self.log_weight - self.log_weight.max())
        return np.asarray(w / w.sum(), dtype=np.float64)

    @property
    def best(self) -> int:
        return int(np.argmax(self.log_weight))

    def sample(
        self, rng: np.random.Generator, n_samples: int
    ) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
        """(grid index, coefficients, noise sd) per sample."""
        pick = rng.choice(len(self.theta), size=n_samples, p=self.weights)
        p = self.coef.shape[1]
        # Cholesky of each picked covariance (jittered: a dropped coefficient has variance 0),
        # once per grid point picked: the same factors, a tenth of the work.
        picked, again = np.unique(pick, return_inverse=True)
        cov = self.cov[picked] + np.eye(p)[None] * 1e-18
        chol = np.linalg.cholesky(cov + np.eye(p)[None] * 1e-12 * np.abs(cov).max())[again]
        z = rng.standard_normal((n_samples, p, 1))
        coef = self.coef[pick] + np.matmul(chol, z)[:, :, 0]
        return pick, coef, np.sqrt(self.sigma2[pick])


def solve_grid(
    basis: Basis,
    theta: FloatArray,
    x: FloatArray,
    y: FloatArray,
    *,
    nonneg: tuple[bool, ...],
    prior: Prior | None = None,
    point_weights: FloatArray | None = None,
    robust: bool = True,
) -> GridFit:
    """Fits y ~ basis(theta, x) @ coef for every theta on the grid.

    Args:
        basis: the law's design matrix for each theta.
        theta: (m, d) grid of shape parameters.
        x, y: the points (already thinned and in the loss view).
        nonneg: per coefficient, whether it must be >= 0 (a bounded fit).
        prior: optional ridge prior on the coefficients.
        point_weights: optional per-point weights (e.g. recency).
        robust: Huber reweighting, so one spike does not bend the fit.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        X = np.asarray(basis(theta, x), dtype=np.float64)  # (m, n, p)
    return solve_grids(
        [(theta, X)], y, nonneg=nonneg, prior=prior, point_weights=point_weights, robust=robust
    )[0]


def solve_grids(
    designs: Sequence[tuple[FloatArray, FloatArray]],
    y: FloatArray,
    *,
    nonneg: tuple[bool, ...],
    prior: Prior | None = None,
    point_weights: FloatArray | None = None,
    robust: bool = True,
) -> list[GridFit]:
    """solve_grid for several grids on the same points, each given as (theta (m, d), its
    design (m, n, p)) with the same coefficients and bounds: their designs stacked and solved
    as one, a GridFit each. Every operation is row by row (a grid point's sums, its 2x2
    solve), so a grid's numbers are those it gets alone, for a tenth of the numpy calls when
    a curve's ten offset-and-shape families are fitted together."""
    X = designs[0][1] if len(designs) == 1 else np.concatenate([d for _, d in designs])
    m, n, p = X.shape
    broken = broken_rows(X)  # a shape that overflows on these points is not a candidate
    if broken.any():
        X = np.where(broken[:, None, None], 0.0, X)
    base_w = np.ones(n) if point_weights is None else point_weights
    w = np.broadcast_to(base_w, (m, n)).copy()
    coef, resid, active = _weighted_solve(X, y, w, nonneg, prior)
    if robust and n > p + 2:
        for _ in range(_HUBER_PASSES):
            scale = 1.4826 * np.median(np.abs(resid), axis=1, keepdims=True)
            scale = np.maximum(scale, 1e-9 * (1.0 + np.abs(y).max()))
            u = np.abs(resid) / scale
            w = base_w * np.where(u <= _HUBER_K, 1.0, _HUBER_K / np.maximum(u, 1e-300))
            coef, resid, active = _weighted_solve(X, y, w, nonneg, prior)
    dof = max(n - p, 1)
    wsum = w.sum(axis=1)
    sse = (w * resid**2).sum(axis=1) * n / wsum
    floor = 1e-12 * (1.0 + float(np.var(y))) * n
    sse = np.maximum(sse, floor)
    sigma2 = sse / dof
    # Covariance of the active coefficients: sigma2 * (X'WX + Lambda)^-1.
    Xa = X * active[:, None, :]
    XtWX = np.matmul((Xa * w[:, :, None]).transpose(0, 2, 1), Xa)
    if prior is not None:
        XtWX = XtWX + np.diag(prior.precision)[None]
    inactive = ~active
    XtWX = XtWX + np.einsum("mp,pq->mpq", inactive.astype(float), np.eye(p))
    # The same tiny ridge as the solve: a column that is all zeros (no annealing seen yet, and
    # no prior) gets a huge variance instead of a singular matrix.
    XtWX = XtWX + np.eye(p)[None] * 1e-10 * np.trace(XtWX, axis1=1, axis2=2)[:, None, None]
    cov = _inverse(XtWX) * sigma2[:, None, None]
    cov = cov * (active[:, :, None] & active[:, None, :])
    log_weight = -0.5 * n * np.log(sse)
    usable = np.isfinite(log_weight) & np.isfinite(coef).all(axis=1) & ~broken
    log_weight = np.where(usable, log_weight, -np.inf)
    fits, start = [], 0
    for theta, design in designs:
        rows = slice(start, start + len(design))
        start += len(design)
        lw = log_weight[rows]
        if not np.isfinite(lw).any():
            lw = np.zeros(len(design))
        fits.append(GridFit(theta, coef[rows], cov[rows], sigma2[rows], lw, n))
    return fits


def broken_rows(X: FloatArray) -> npt.NDArray[np.bool_]:
    """(m,) the grid points whose design overflows on these points (a NaN, an infinity or a
    value beyond 1e12): not candidates. One pass: NaN propagates through the max, and
    neither NaN nor infinity is <= 1e12."""
    with np.errstate(invalid="ignore"):
        return np.asarray(~(np.abs(X).max(axis=(1, 2), initial=0) <= 1e12))


def _weighted_solve(
    X: FloatArray,
    y: FloatArray,
    w: FloatArray,
    nonneg: tuple[bool, ...],
    prior: Prior | None,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Weighted ridge least squares per grid point, with one active-set pass for the bounds."""
    m, n, p = X.shape
    if p == 2 and prior is None and nonneg == (False, True):
        return _offset_shape_solve(X[:, :, 1], y, w)
    active = np.ones((m, p), dtype=bool)
    bounded = np.asarray(nonneg, dtype=bool)
    for _ in range(min(p, _ACTIVE_SET_PASSES)):
        Xa = X * active[:, None, :]
        XaW = (Xa * w[:, :, None]).transpose(0, 2, 1)  # (m, p, n)
        A = np.matmul(XaW, Xa)
        rhs = XaW @ y
        if prior is not None:
            A = A + np.diag(prior.precision)[None] * active[:, None, :]
            rhs = rhs + (prior.precision * prior.mean)[None] * active
        A = A + np.einsum("mp,pq->mpq", (~active).astype(float), np.eye(p))
        # A tiny ridge keeps near-collinear bases (a flat shape) solvable.
        A = A + np.eye(p)[None] * 1e-10 * np.trace(A, axis1=1, axis2=2)[:, None, None]
        coef = _solve(A, rhs) * active
        violate = bounded[None, :] & active & (coef < 0)
        if not violate.any():
            break
        active &= ~violate
    coef = np.where(bounded[None, :] & (coef < 0), 0.0, coef)  # whatever is left, clamp
    resid = y[None, :] - np.matmul(X, coef[:, :, None])[:, :, 0]
    return coef, resid, active


def _offset_shape_solve(
    g: FloatArray, y: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """The common case y ~ a + b g with b >= 0, in closed form (5 weighted sums per theta)."""
    sw = w.sum(axis=1)
    wg = w * g
    sg, sy = wg.sum(axis=1), w @ y
    sgg, sgy = (wg * g).sum(axis=1), wg @ y
    det = sw * sgg - sg**2
    ok = det > 1e-12 * np.maximum(sw * sgg, 1e-300)
    b = np.where(ok, (sw * sgy - sg * sy) / np.where(ok, det, 1.0), 0.0)
    b_active = ok & (b > 0)
    b = np.where(b_active, b, 0.0)
    a = (sy - b * sg) / sw
    coef = np.stack([a, b], axis=1)
    resid = y[None, :] - a[:, None] - b[:, None] * g
    active = np.stack([np.ones_like(b_active), b_active], axis=1)
    return coef, resid, active


def _solve(A: FloatArray, rhs: FloatArray) -> FloatArray:
    try:
        return np.asarray(np.linalg.solve(A, rhs[..., None])[..., 0])
    except np.linalg.LinAlgError:  # a degenerate grid point: least norm, not an exception
        return np.asarray(np.matmul(np.linalg.pinv(A), rhs[..., None])[..., 0])


def _inverse(A: FloatArray) -> FloatArray:
    try:
        return np.asarray(np.linalg.inv(A))
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(A))
