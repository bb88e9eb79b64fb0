"""Prediction: a forecaster's predictive distribution. All probabilities are computed here.

A Prediction holds a deterministic sampler of the metric in the loss view (lower is better):
`sampler(steps)` returns an (n_samples, n_steps) array. Quantiles, means and probabilities are
read off those samples and turned back into the study's direction, so policies never rebuild
a probability and never branch on direction.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from forecaster.curves import Curve, Direction, FloatArray, IntArray, to_loss
from forecaster.errors import InvalidArgumentError
from forecaster.metric_kinds import bounds_for

Sampler = Callable[[FloatArray], FloatArray]

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
_REACH_GRID = 64  # steps checked between the last observation and by_step


def check_quantile_levels(q: Sequence[float]) -> tuple[float, ...]:
    """Validates quantile levels: each in (0, 1), strictly ascending."""
    levels = tuple(float(x) for x in q)
    if not levels:
        return DEFAULT_QUANTILES
    if any(not 0.0 < x < 1.0 for x in levels) or any(
        b <= a for a, b in zip(levels, levels[1:], strict=False)
    ):
        raise InvalidArgumentError(
            f"quantile_levels must be strictly ascending and inside (0, 1); got {list(levels)}."
        )
    return levels


def sample_quantiles(samples: FloatArray, levels: Sequence[float]) -> FloatArray:
    """(n_steps, len(levels)) quantiles of (n_samples, n_steps) samples along the samples:
    np.quantile's default ("linear", Hyndman & Fan 7) to the bit, NaN where a column holds a
    NaN, computed from one sort instead of np.quantile's general machinery (which cost a
    batch more than the fit of a pow3 curve)."""
    arr = np.sort(np.asarray(samples, dtype=np.float64), axis=0)
    n = arr.shape[0]
    q = np.asarray(levels, dtype=np.float64)
    virtual = (n - 1) * q  # np.quantile's virtual index for "linear", as it writes it
    previous = np.floor(virtual)
    above, below = virtual >= n - 1, virtual < 0
    lo = np.where(above, -1, np.where(below, 0, previous)).astype(np.intp)
    hi = np.where(above, -1, np.where(below, 0, previous + 1)).astype(np.intp)
    gamma = (virtual - lo)[:, None]
    a, b = arr[lo], arr[hi]
    with np.errstate(invalid="ignore"):
        diff = b - a
        out = a + diff * gamma
        np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    out[:, np.isnan(arr[-1])] = np.nan
    return np.ascontiguousarray(out.T)


@dataclass(frozen=True)
class Prediction:
    """The predictive distribution of a run's metric at future steps.

    Args:
        model: registry name of the forecaster that made it.
        model_version: that forecaster's version.
        direction: the study's direction (samples are kept in the loss view).
        sampler: steps -> (n_samples, n_steps) loss-view samples; deterministic.
        observed_until: the last observed step it is conditioned on.
        observed_best_loss: best finite observed value, loss view (NaN when none).
        converged: False when the fit fell back to something simpler.
        notes: what a person should know about this forecast.
        bounds: (lower, upper) the metric cannot leave, in the study's direction (its kind's
            natural bounds, e.g. [0, 1] for an accuracy); every sample read is clipped to them
            here, so a wrapper of the sampler keeps them. None: unbounded.
    """

    model: str
    model_version: int
    direction: Direction
    sampler: Sampler = field(repr=False)
    observed_until: int
    observed_best_loss: float = math.nan
    converged: bool = True
    notes: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    # Samples at a few steps, kept: a policy asks several questions of the same step (the
    # budget), and a decision on a cached forecast should not draw them again. Not init
    # fields, so `replace()` starts a copy with its own memo; the engine's worker threads
    # share a cached Prediction, hence the lock.
    _memo: dict[tuple[float, ...], FloatArray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _memo_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def _sample(self, steps: FloatArray) -> FloatArray:
        """The sampler's draws (loss view), clipped to the metric's bounds."""
        drawn = self.sampler(steps)
        if self.bounds is None:
            return drawn
        ends = to_loss(np.asarray(self.bounds, dtype=np.float64), self.direction)
        with np.errstate(invalid="ignore"):
            return np.clip(drawn, ends.min(), ends.max())

    def _draw(self, steps: FloatArray) -> FloatArray:
        if len(steps) > 4:
            return self._sample(steps)
        key = tuple(float(s) for s in steps)
        with self._memo_lock:
            kept = self._memo.get(key)
        if kept is not None:
            return kept
        drawn = self._sample(steps)  # outside the lock: deterministic, a race draws twice
        drawn.setflags(write=False)
        with self._memo_lock:
            if len(self._memo) > 16:
                self._memo.clear()
            return self._memo.setdefault(key, drawn)

    def samples(self, at_steps: npt.ArrayLike) -> FloatArray:
        """Samples in the study's direction: (n_samples, n_steps)."""
        steps = np.atleast_1d(np.asarray(at_steps, dtype=np.float64))
        return to_loss(self._draw(steps), self.direction)

    def quantiles(self, q: Sequence[float], at_steps: npt.ArrayLike) -> FloatArray:
        """(n_steps, len(q)) quantiles, ascending along q, in the study's direction."""
        levels = check_quantile_levels(q)
        return sample_quantiles(self.samples(at_steps), levels)

    def mean(self, at_steps: npt.ArrayLike) -> FloatArray:
        """Mean at each step, in the study's direction."""
        return np.asarray(self.samples(at_steps).mean(axis=0), dtype=np.float64)

    def prob_better_than(self, value: float, at_step: int) -> float:
        """P(metric at at_step is strictly better than value)."""
        loss = self._draw(np.array([float(at_step)]))[:, 0]
        finite = loss[~np.isnan(loss)]
        if not len(finite):
            return 0.0
        return float(np.mean(finite < to_loss(value, self.direction)))

    def _reach_grid(self, by_step: int) -> FloatArray:
        start = min(float(self.observed_until), float(by_step))
        return np.unique(np.linspace(start, float(by_step), _REACH_GRID).round())

    def prob_reach(self, target: float, by_step: int) -> float:
        """P(the metric reaches target, i.e. is at least as good, at some step <= by_step)."""
        target_loss = float(to_loss(target, self.direction))
        if self.observed_best_loss <= target_loss:
            return 1.0
        paths = self._sample(self._reach_grid(by_step))
        with np.errstate(invalid="ignore"):
            reached = (paths <= target_loss).any(axis=1)
        return float(reached.mean())

    def steps_to_target(self, target: float, by_step: int, q: Sequence[float]) -> IntArray:
        """Quantiles of the first step reaching target; 0 where not reached by by_step."""
        grid = self._reach_grid(by_step)
        target_loss = float(to_loss(target, self.direction))
        if self.observed_best_loss <= target_loss:
            return np.full(len(q), self.observed_until, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            hit = self._sample(grid) <= target_loss
        first = np.where(hit.any(axis=1), grid[np.argmax(hit, axis=1)], np.inf)
        out = np.quantile(first, check_quantile_levels(q), method="lower")
        return np.where(np.isfinite(out), out, 0).astype(np.int64)


def within_bounds(prediction: Prediction, curve: Curve) -> Prediction:
    """prediction bounded by the curve's metric kind (`metric_kinds.bounds_for`): what the
    service, the batch, the replay and the evaluation read. The same object when unbounded."""
    bounds = bounds_for(curve.kind, curve.values)
    if bounds is None or prediction.bounds == bounds:
        return prediction
    return replace(prediction, bounds=bounds)


@dataclass(frozen=True)
class ForecastSummary:
    """A Prediction read off at some steps: what GetForecast and ForecastCurve return."""

    steps: tuple[int, ...]
    quantile_levels: tuple[float, ...]
    quantiles: FloatArray  # (n_steps, n_levels)
    mean: FloatArray
    model: str
    model_version: int
    converged: bool
    notes: tuple[str, ...]
    observed_until_step: int
    prob_reach_target: float | None = None
    steps_to_target: tuple[int, ...] = ()


def summarize(
    prediction: Prediction,
    at_steps: Sequence[int],
    quantile_levels: Sequence[float] = (),
    target: float | None = None,
) -> ForecastSummary:
    """Quantiles and mean at at_steps; P(reach target) and steps-to-target by the last step."""
    levels = check_quantile_levels(quantile_levels)
    steps = tuple(sorted({int(s) for s in at_steps}))
    if not steps or steps[0] < 0:
        raise InvalidArgumentError(f"at_steps must be non-empty and >= 0; got {list(at_steps)}.")
    p_reach: float | None = None
    to_target: tuple[int, ...] = ()
    if target is not None:
        p_reach = prediction.prob_reach(target, steps[-1])
        to_target = tuple(int(x) for x in prediction.steps_to_target(target, steps[-1], levels))
    return ForecastSummary(
        steps=steps,
        quantile_levels=levels,
        quantiles=prediction.quantiles(levels, steps),
        mean=prediction.mean(steps),
        model=prediction.model,
        model_version=prediction.model_version,
        converged=prediction.converged,
        notes=prediction.notes,
        observed_until_step=prediction.observed_until,
        prob_reach_target=p_reach,
        steps_to_target=to_target,
    )
