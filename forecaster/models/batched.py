"""Many curves fitted at once: the parametric families of `power_law` solved for every curve of
a batch (a study's runs, each at its cuts) in a few array computations, with the forecasts the
single-curve path gives.

Why: a pow3 fit of a 20-point curve is some forty numpy calls on arrays of a few hundred
numbers, so one curve at a time its cost is Python's, not arithmetic. `solve_rows` is
`fitting.solve_grid` with one more axis: each row is one (curve, grid point) problem with its
own y, and the closed forms run once for the whole batch. `fit_many` prepares each curve as
`PowerLawForecaster.fit` does, solves every family fit that forecast will ask for in one
batch per fitted length, and then runs the single-curve `fit` with those fits handed in
through its `_family_fits` seam; the weights, the sampling and the Prediction are the
single-curve code's. A fit the batch did not make (or made on other points) is fitted on the
spot, so a change to the single-curve preparation makes the batch slower, never different.
tests/models/test_batched.py holds the two paths to the same forecasts on corpus curves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from forecaster.curves import Curve, FloatArray, thin_indices
from forecaster.models.baselines import diverged_note
from forecaster.models.fitting import (
    _ACTIVE_SET_PASSES,
    _HUBER_K,
    _HUBER_PASSES,
    GridFit,
    _inverse,
    _solve,
    broken_rows,
)
from forecaster.models.power_law import (
    _MIN_FIT_POINTS,
    _MIN_HOLDOUT_POINTS,
    FAMILIES,
    PowerLawForecaster,
    _holdout_size,
    _Member,
)
from forecaster.models.prediction import Prediction

_MAX_CELLS = 2_000_000  # rows x points x coefficients solved in one call (~16 MB a design)


def solve_rows(
    X: FloatArray, ys: FloatArray, nonneg: tuple[bool, ...], *, robust: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """`fitting.solve_grid` (no prior, unit point weights) for R curves at once.

    X: (R * m, n, p) the designs of m grid points for each curve, curve by curve; ys: (R, n)
    the curves' points. Returns (coef (R * m, p), cov (R * m, p, p), sigma2, log_weight
    (R * m,) before the all-unusable fallback, which is per curve). The operations are
    solve_grid's, row by row: the sums are the same sums (the products with y are one BLAS
    call per curve, as solve_grid makes them), so the results are the same numbers.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        X = np.asarray(X, dtype=np.float64)
    rows, n, p = X.shape
    m = rows // len(ys)
    Y = np.repeat(ys, m, axis=0)
    broken = broken_rows(X)
    if broken.any():
        X = np.where(broken[:, None, None], 0.0, X)
    base_w = np.ones(n)
    w = np.ones((rows, n))
    coef, resid, active = _weighted_rows(X, ys, Y, w, nonneg)
    if robust and n > p + 2:
        top = np.repeat(np.array([np.abs(y).max() for y in ys]), m)[:, None]
        for _ in range(_HUBER_PASSES):
            scale = 1.4826 * np.median(np.abs(resid), axis=1, keepdims=True)
            scale = np.maximum(scale, 1e-9 * (1.0 + top))
            u = np.abs(resid) / scale
            w = base_w * np.where(u <= _HUBER_K, 1.0, _HUBER_K / np.maximum(u, 1e-300))
            coef, resid, active = _weighted_rows(X, ys, Y, w, nonneg)
    dof = max(n - p, 1)
    wsum = w.sum(axis=1)
    sse = (w * resid**2).sum(axis=1) * n / wsum
    floor = np.repeat(np.array([1e-12 * (1.0 + float(np.var(y))) * n for y in ys]), m)
    sse = np.maximum(sse, floor)
    sigma2 = sse / dof
    Xa = X * active[:, None, :]
    XtWX = np.matmul((Xa * w[:, :, None]).transpose(0, 2, 1), Xa)
    XtWX = XtWX + np.einsum("mp,pq->mpq", (~active).astype(float), np.eye(p))
    XtWX = XtWX + np.eye(p)[None] * 1e-10 * np.trace(XtWX, axis1=1, axis2=2)[:, None, None]
    cov = _inverse(XtWX) * sigma2[:, None, None]
    cov = cov * (active[:, :, None] & active[:, None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_weight = -0.5 * n * np.log(sse)
    usable = np.isfinite(log_weight) & np.isfinite(coef).all(axis=1) & ~broken
    log_weight = np.where(usable, log_weight, -np.inf)
    return coef, cov, sigma2, log_weight


def _per_curve(a: FloatArray, ys: FloatArray) -> FloatArray:
    """a @ y for each curve's block of rows of a (m rows a curve): solve_grid's products."""
    m = len(a) // len(ys)
    return np.concatenate([a[k * m : (k + 1) * m] @ y for k, y in enumerate(ys)])


def _weighted_rows(
    X: FloatArray, ys: FloatArray, Y: FloatArray, w: FloatArray, nonneg: tuple[bool, ...]
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """`fitting._weighted_solve` (no prior) for blocks of rows, a curve each."""
    rows, n, p = X.shape
    if p == 2 and nonneg == (False, True):
        g = X[:, :, 1]
        sw = w.sum(axis=1)
        wg = w * g
        sg, sy = wg.sum(axis=1), _per_curve(w, ys)
        sgg, sgy = (wg * g).sum(axis=1), _per_curve(wg, ys)
        det = sw * sgg - sg**2
        ok = det > 1e-12 * np.maximum(sw * sgg, 1e-300)
        b = np.where(ok, (sw * sgy - sg * sy) / np.where(ok, det, 1.0), 0.0)
        b_active = ok & (b > 0)
        b = np.where(b_active, b, 0.0)
        a = (sy - b * sg) / sw
        resid = Y - a[:, None] - b[:, None] * g
        active = np.stack([np.ones_like(b_active), b_active], axis=1)
        return np.stack([a, b], axis=1), resid, active
    active = np.ones((rows, p), dtype=bool)
    bounded = np.asarray(nonneg, dtype=bool)
    for _ in range(min(p, _ACTIVE_SET_PASSES)):
        Xa = X * active[:, None, :]
        XaW = (Xa * w[:, :, None]).transpose(0, 2, 1)
        A = np.matmul(XaW, Xa)
        rhs = _per_curve(XaW, ys)
        A = A + np.einsum("mp,pq->mpq", (~active).astype(float), np.eye(p))
        A = A + np.eye(p)[None] * 1e-10 * np.trace(A, axis1=1, axis2=2)[:, None, None]
        coef = _solve(A, rhs) * active
        violate = bounded[None, :] & active & (coef < 0)
        if not violate.any():
            break
        active &= ~violate
    coef = np.where(bounded[None, :] & (coef < 0), 0.0, coef)
    resid = Y - np.matmul(X, coef[:, :, None])[:, :, 0]
    return coef, resid, active


@dataclass(frozen=True)
class _Prepared:
    """A curve's points as PowerLawForecaster.fit fits them."""

    x: FloatArray
    y: FloatArray


def _prepare(forecaster: PowerLawForecaster, curve: Curve) -> _Prepared | None:
    """The (x, y) PowerLawForecaster.fit fits, or None when it falls back without a fit."""
    finite = curve.loss_view().finite()
    if diverged_note(curve) is not None or len(finite) < _MIN_FIT_POINTS:
        return None
    idx = thin_indices(len(finite), forecaster.max_fit_points)
    offset = 1.0 if finite.steps[0] == 0 else 0.0
    scale = float(finite.steps[-1]) + offset
    x = (finite.steps[idx].astype(np.float64) + offset) / scale
    return _Prepared(x, np.asarray(finite.values[idx], dtype=np.float64))


def _weighing_requests(forecaster: PowerLawForecaster, n: int) -> list[tuple[str, int]]:
    """(family, fitted length) of the fits forecaster.fit weighs its members on for an n-point
    curve: the chosen families on all points when it weighs them equally (their samplers read
    the same fits), else every family on the points before the hold-out."""
    names = list(forecaster.families) + (["last_value"] if forecaster.include_last_value else [])
    if not _holds_out(forecaster, n):
        chosen = names[: forecaster.top_k] if len(names) > 1 else names
        return [(name, n) for name in chosen if name in FAMILIES]
    n_fit = n - _holdout_size(n)
    return [(name, n_fit) for name in forecaster.families]


def _holds_out(forecaster: PowerLawForecaster, n: int) -> bool:
    """Whether fit weighs an n-point curve's members on a hold-out (else equally)."""
    n_names = len(forecaster.families) + int(forecaster.include_last_value)
    return n >= _MIN_HOLDOUT_POINTS and n_names > 1


@dataclass(frozen=True)
class _Prefitted(PowerLawForecaster):
    """PowerLawForecaster answering its family fits (and its members' weighing) from a batch
    when made on the same points; fitted on the spot otherwise."""

    fits: dict[tuple[str, int], tuple[FloatArray, FloatArray, GridFit]] = field(
        default_factory=dict, compare=False, repr=False
    )
    weighed: tuple[FloatArray, FloatArray, list[_Member]] | None = field(
        default=None, compare=False, repr=False
    )

    def _family_fits(
        self, names: Sequence[str], x: FloatArray, y: FloatArray, w: FloatArray
    ) -> dict[str, GridFit]:
        out: dict[str, GridFit] = {}
        for name in names:
            kept = self.fits.get((name, len(x)))
            if kept is not None and np.array_equal(kept[0], x) and np.array_equal(kept[1], y):
                out[name] = kept[2]
        missing = [name for name in names if name not in out]
        return {**out, **super()._family_fits(missing, x, y, w)} if missing else out

    def _weigh_members(self, x: FloatArray, y: FloatArray, w: FloatArray) -> list[_Member]:
        kept = self.weighed
        if kept is not None and np.array_equal(kept[0], x) and np.array_equal(kept[1], y):
            return kept[2]
        return super()._weigh_members(x, y, w)


def fit_many(forecaster: PowerLawForecaster, curves: Sequence[Curve]) -> list[Prediction]:
    """forecaster.fit(curve) for every curve, its family fits solved in batches: first the
    fits its members are weighed on, then, on all the points, only the members each curve
    keeps (top_k of the families: the others' full fits would be read by nobody)."""
    prepared = [_prepare(forecaster, c) for c in curves]
    fits: list[dict[tuple[str, int], tuple[FloatArray, FloatArray, GridFit]]] = [{} for _ in curves]
    _solve_requests(
        prepared,
        fits,
        {i: _weighing_requests(forecaster, len(p.y)) for i, p in enumerate(prepared) if p},
    )
    settings: dict[str, Any] = {f.name: getattr(forecaster, f.name) for f in fields(forecaster)}
    settings.pop("fits", None)
    settings.pop("weighed", None)
    weighed: dict[int, tuple[FloatArray, FloatArray, list[_Member]]] = {}
    for i, prep in enumerate(prepared):
        if prep is not None and _holds_out(forecaster, len(prep.y)):
            members = _Prefitted(**settings, fits=fits[i])._weigh_members(
                prep.x, prep.y, np.ones(len(prep.y))
            )
            weighed[i] = (prep.x, prep.y, members)
    _solve_requests(
        prepared,
        fits,
        {
            i: [(m.name, len(prepared[i].y)) for m in kept[2] if m.name in FAMILIES]  # type: ignore[union-attr]
            for i, kept in weighed.items()
        },
    )
    return [
        _Prefitted(**settings, fits=fits[i], weighed=weighed.get(i)).fit(c)
        for i, c in enumerate(curves)
    ]


def _solve_requests(
    prepared: Sequence[_Prepared | None],
    fits: list[dict[tuple[str, int], tuple[FloatArray, FloatArray, GridFit]]],
    requests: dict[int, list[tuple[str, int]]],
) -> None:
    """Solves each curve's requested (family, fitted length) fits, one batch per request
    shared by the curves that make it, into fits."""
    wanted: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, asked in requests.items():
        for request in asked:
            wanted[request].append(i)
    for (name, length), members in wanted.items():
        family = FAMILIES[name]
        m = len(family.theta)
        per_call = max(1, _MAX_CELLS // (m * length * len(family.nonneg)))
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            xs = np.stack([prepared[i].x[:length] for i in chunk])  # type: ignore[union-attr]
            ys = np.stack([prepared[i].y[:length] for i in chunk])  # type: ignore[union-attr]
            for j, grid_fit in enumerate(_fit_family(name, xs, ys)):
                fits[chunk[j]][(name, length)] = (xs[j], ys[j], grid_fit)


def _fit_family(name: str, xs: FloatArray, ys: FloatArray) -> list[GridFit]:
    """One family fitted to R curves of the same length: xs, ys (R, n)."""
    family = FAMILIES[name]
    r, n = xs.shape
    m = len(family.theta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # The shapes are elementwise in x: one call for every curve's points.
        X = family.basis(family.theta, xs.reshape(-1))  # (m, r * n, p)
    p = X.shape[-1]
    X = X.reshape(m, r, n, p).transpose(1, 0, 2, 3).reshape(r * m, n, p)
    coef, cov, sigma2, log_weight = solve_rows(X, ys, family.nonneg)
    out = []
    for k in range(r):
        rows = slice(k * m, (k + 1) * m)
        lw = log_weight[rows]
        if not np.isfinite(lw).any():
            lw = np.zeros(m)
        out.append(GridFit(family.theta, coef[rows], cov[rows], sigma2[rows], lw, n))
    return out
