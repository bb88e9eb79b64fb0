"""Curve, Points, LrSchedule and LrProfile: the one home of curve math.

Validation happens once, when a value is built; arrays are made read-only so nothing
downstream can change a curve behind another component's back. Forecasters and policies see
"lower is better" only, through `Curve.loss_view()`, the one place the direction is flipped.

The learning-rate areas of "Scaling Law with Learning Rate Annealing" (Tissue et al. 2024,
arXiv:2408.11029) and the multi-power law (Luo et al. 2025, arXiv:2503.12811) live in
`LrProfile`: a piecewise-constant learning rate built from the lr a run reported plus its
planned schedule, on which the areas have closed forms at any step, so a run logged in tokens
costs no more than one logged in steps.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import median_filter

from forecaster.errors import InvalidArgumentError

if TYPE_CHECKING:
    from forecaster.metric_kinds import MetricKind

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Direction(enum.Enum):
    """Whether lower (MIN) or higher (MAX) values of the metric are better."""

    MIN = "min"
    MAX = "max"

    def better(self, a: float, b: float) -> bool:
        """True when a is strictly better than b (NaN is never better)."""
        return a < b if self is Direction.MIN else a > b

    @property
    def sign(self) -> float:
        """Multiplier that turns this direction's values into losses."""
        return 1.0 if self is Direction.MIN else -1.0


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _sealed(a: np.ndarray) -> np.ndarray:
    """A freshly made array (a mask's copy, a negation) made read-only, without a copy."""
    a.setflags(write=False)
    return a


def _optional_floats(values: Sequence[float | None] | FloatArray | None, n: int) -> FloatArray:
    if values is None:
        return np.full(n, np.nan)
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=True).reshape(-1)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Points:
    """A batch of points of one run: steps strictly increasing and >= 0.

    Missing lr / wall_time_s are NaN. Values may be NaN or +/-inf: a diverged run is data.
    """

    steps: IntArray
    values: FloatArray
    lr: FloatArray
    wall_time_s: FloatArray

    def __post_init__(self) -> None:
        steps = np.asarray(self.steps, dtype=np.int64).reshape(-1)
        n = len(steps)
        values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        lr = _optional_floats(self.lr, n)
        wall = _optional_floats(self.wall_time_s, n)
        for name, arr in (("values", values), ("lr", lr), ("wall_time_s", wall)):
            if len(arr) != n:
                raise InvalidArgumentError(
                    f"points: {name} has {len(arr)} entries but steps has {n}; give one per step."
                )
        if n and steps.min() < 0:
            bad = int(steps[np.argmax(steps < 0)])
            raise InvalidArgumentError(f"points: steps must be >= 0; got {bad}.")
        if n > 1:
            diffs = np.diff(steps)
            if (diffs <= 0).any():
                i = int(np.argmax(diffs <= 0))
                raise InvalidArgumentError(
                    f"points: steps must increase strictly within a batch; got {steps[i + 1]} "
                    f"after {steps[i]}. Send points in step order, each step once."
                )
        known_lr = lr[~np.isnan(lr)]
        if (~np.isfinite(known_lr)).any() or (known_lr < 0).any():
            raise InvalidArgumentError(
                "points: lr must be finite and >= 0 where given; got "
                f"{known_lr[(~np.isfinite(known_lr)) | (known_lr < 0)][0]}."
            )
        object.__setattr__(self, "steps", _readonly(steps))
        object.__setattr__(self, "values", _readonly(values))
        object.__setattr__(self, "lr", _readonly(lr))
        object.__setattr__(self, "wall_time_s", _readonly(wall))

    @classmethod
    def of(
        cls,
        steps: Sequence[int] | IntArray,
        values: Sequence[float] | FloatArray,
        lr: Sequence[float | None] | FloatArray | None = None,
        wall_time_s: Sequence[float | None] | FloatArray | None = None,
    ) -> Points:
        """Builds a batch from plain sequences; None in lr / wall_time_s means unknown."""
        n = len(steps)
        return cls(
            np.asarray(steps, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            _optional_floats(lr, n),
            _optional_floats(wall_time_s, n),
        )

    def __len__(self) -> int:
        return len(self.steps)

    def take(self, mask: npt.NDArray[np.bool_]) -> Points:
        return Points(self.steps[mask], self.values[mask], self.lr[mask], self.wall_time_s[mask])


class ScheduleKind(enum.Enum):
    """Shapes of a planned learning-rate schedule."""

    EXPLICIT = "explicit"
    CONSTANT = "constant"
    COSINE = "cosine"
    LINEAR = "linear"
    WSD = "wsd"
    STEP = "step"


_DECAY_SHAPES = ("linear", "cosine", "sqrt")


@dataclass(frozen=True)
class LrSchedule:
    """A planned learning-rate schedule, so that forecasters can see a decay coming.

    Example:
        >>> LrSchedule(ScheduleKind.COSINE, peak_lr=3e-4, warmup_steps=100, total_steps=1000)
    """

    kind: ScheduleKind
    peak_lr: float = 0.0
    final_lr: float = 0.0
    warmup_steps: int = 0
    total_steps: int = 0
    decay_fraction: float = 0.0
    decay_shape: str = "linear"
    step_size: int = 0
    gamma: float = 0.0
    steps: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        where = f"lr_schedule ({self.kind.value})"
        for name in ("peak_lr", "final_lr", "decay_fraction", "gamma"):
            if not math.isfinite(getattr(self, name)):  # stored as JSON, which has no NaN
                raise InvalidArgumentError(
                    f"{where}: {name} must be finite; got {getattr(self, name)}."
                )
        # Stored with the schedule whatever its kind (JSON again), so checked for every kind.
        if any(not math.isfinite(v) for v in self.values):
            raise InvalidArgumentError(f"{where}: values must be finite.")
        if self.kind is ScheduleKind.EXPLICIT:
            if not self.steps or len(self.steps) != len(self.values):
                raise InvalidArgumentError(
                    f"{where}: needs steps and values of equal, non-zero length; got "
                    f"{len(self.steps)} steps and {len(self.values)} values."
                )
            if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
                raise InvalidArgumentError(f"{where}: steps must increase strictly.")
            if self.steps[0] < 0:
                raise InvalidArgumentError(
                    f"{where}: steps must be >= 0 (training starts at step 0); got {self.steps[0]}."
                )
            if any(not math.isfinite(v) or v < 0 for v in self.values):
                raise InvalidArgumentError(f"{where}: values must be finite and >= 0.")
            return
        if not (math.isfinite(self.peak_lr) and self.peak_lr > 0):
            raise InvalidArgumentError(f"{where}: peak_lr must be > 0; got {self.peak_lr}.")
        if self.warmup_steps < 0:
            raise InvalidArgumentError(
                f"{where}: warmup_steps must be >= 0; got {self.warmup_steps}."
            )
        if not (math.isfinite(self.final_lr) and 0 <= self.final_lr <= self.peak_lr):
            raise InvalidArgumentError(
                f"{where}: final_lr must be in [0, peak_lr={self.peak_lr}]; got {self.final_lr}."
            )
        if self.kind in (ScheduleKind.COSINE, ScheduleKind.LINEAR, ScheduleKind.WSD) and (
            self.total_steps <= self.warmup_steps
        ):
            raise InvalidArgumentError(
                f"{where}: total_steps must exceed warmup_steps={self.warmup_steps}; "
                f"got {self.total_steps}."
            )
        if self.kind is ScheduleKind.WSD:
            if not 0 < self.decay_fraction <= 1:
                raise InvalidArgumentError(
                    f"{where}: decay_fraction must be in (0, 1]; got {self.decay_fraction}."
                )
            if self.decay_shape not in _DECAY_SHAPES:
                raise InvalidArgumentError(
                    f"{where}: decay_shape must be one of {_DECAY_SHAPES}; "
                    f"got {self.decay_shape!r}."
                )
        if self.kind is ScheduleKind.STEP and (self.step_size < 1 or not 0 < self.gamma <= 1):
            raise InvalidArgumentError(
                f"{where}: needs step_size >= 1 and gamma in (0, 1]; "
                f"got step_size={self.step_size}, gamma={self.gamma}."
            )

    def lr_at(self, steps: npt.ArrayLike) -> FloatArray:
        """The planned learning rate at each step."""
        s = np.asarray(steps, dtype=np.float64)
        if self.kind is ScheduleKind.EXPLICIT:
            known = np.asarray(self.steps, dtype=np.float64)
            idx = np.clip(np.searchsorted(known, s, side="right") - 1, 0, len(known) - 1)
            return np.asarray(self.values, dtype=np.float64)[idx]
        peak, final, warm = self.peak_lr, self.final_lr, float(self.warmup_steps)
        after = np.maximum(s - warm, 0.0)
        span = max(float(self.total_steps) - warm, 1.0)
        frac = np.clip(after / span, 0.0, 1.0)
        if self.kind is ScheduleKind.CONSTANT:
            lr = np.full_like(s, peak)
        elif self.kind is ScheduleKind.COSINE:
            lr = final + (peak - final) * 0.5 * (1.0 + np.cos(np.pi * frac))
        elif self.kind is ScheduleKind.LINEAR:
            lr = peak + (final - peak) * frac
        elif self.kind is ScheduleKind.WSD:
            decay_start = self.total_steps - self.decay_fraction * self.total_steps
            d = np.clip((s - decay_start) / max(self.total_steps - decay_start, 1.0), 0.0, 1.0)
            shape = {
                "linear": d,
                "cosine": 0.5 * (1.0 - np.cos(np.pi * d)),
                "sqrt": np.sqrt(d),
            }[self.decay_shape]
            lr = peak + (final - peak) * shape
        else:  # STEP
            lr = peak * self.gamma ** np.floor(after / self.step_size)
        if warm > 0:
            lr = np.where(s < warm, peak * s / warm, lr)
        return np.asarray(lr, dtype=np.float64)

    @property
    def end_step(self) -> int | None:
        """The last step the plan describes; None for shapes without an end (constant, step)."""
        if self.kind is ScheduleKind.EXPLICIT:
            return self.steps[-1]
        if self.kind in (ScheduleKind.CONSTANT, ScheduleKind.STEP):
            return None
        return self.total_steps

    def check_covers(self, budget: int | None) -> None:
        """InvalidArgumentError naming the missing range when the plan ends before budget."""
        end = self.end_step
        if budget is None or end is None or end >= budget:
            return
        hint = (
            "list the learning rate up to the budget"
            if self.kind is ScheduleKind.EXPLICIT
            else f"set total_steps >= {budget}"
        )
        raise InvalidArgumentError(
            f"lr_schedule ({self.kind.value}) ends at step {end} but the run's budget is "
            f"max_step={budget}: steps {end + 1}..{budget} have no planned learning rate; {hint}."
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "kind"}
        d["steps"], d["values"] = list(self.steps), list(self.values)
        return {"kind": self.kind.value, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LrSchedule:
        d = dict(d)
        kind = ScheduleKind(d.pop("kind"))
        d["steps"] = tuple(int(x) for x in d.get("steps", ()))
        d["values"] = tuple(float(x) for x in d.get("values", ()))
        return cls(kind, **d)


@dataclass(frozen=True, eq=False)
class Curve:
    """A run's metric so far, validated once; arrays are read-only.

    Args:
        steps: strictly increasing, >= 0.
        values: the metric; NaN/inf kept (a diverged run is data).
        direction: whether lower or higher is better.
        max_step: the budget, when known.
        lr: per-step learning rate (NaN where unknown), or None.
        target: the value the study aims for, when there is one.
        schedule: the planned learning-rate schedule, when known.
        config: the run's hyper-parameters as given (JSON-like), when known; the learned
            forecasters read the common ones (lr, batch size, size, ...) as features.
        kind: what kind of metric it is (its natural bounds, its starting plateau), when
            known (`metric_kinds`); the forecast stays within its bounds.
    """

    steps: IntArray
    values: FloatArray
    direction: Direction = Direction.MIN
    max_step: int | None = None
    lr: FloatArray | None = None
    target: float | None = None
    schedule: LrSchedule | None = field(default=None)
    config: Mapping[str, Any] | None = field(default=None, compare=False)
    kind: MetricKind | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        pts = Points.of(self.steps, self.values, self.lr)  # one validation for both types
        object.__setattr__(self, "steps", pts.steps)
        object.__setattr__(self, "values", pts.values)
        object.__setattr__(self, "lr", None if self.lr is None else pts.lr)
        if self.max_step is not None and self.max_step < 0:
            raise InvalidArgumentError(f"max_step must be >= 0; got {self.max_step}.")
        if self.target is not None and not math.isfinite(self.target):
            raise InvalidArgumentError(f"target must be finite; got {self.target}.")

    def extended(self, new: Points) -> Curve:
        """This curve with new (validated points, all after its last step) appended, without
        validating the old points again: a report's cost does not grow with the run."""
        if len(new) and int(new.steps[0]) <= self.last_step:
            raise InvalidArgumentError(
                f"points: step {int(new.steps[0])} does not follow the curve's last step "
                f"{self.last_step}."
            )
        lr = None
        if self.lr is not None or not np.isnan(new.lr).all():
            old_lr = self.lr if self.lr is not None else np.full(len(self), np.nan)
            lr = _sealed(np.concatenate([old_lr, new.lr]))
        grown = object.__new__(Curve)
        for name in ("direction", "max_step", "target", "schedule", "config", "kind"):
            object.__setattr__(grown, name, getattr(self, name))
        object.__setattr__(grown, "steps", _sealed(np.concatenate([self.steps, new.steps])))
        object.__setattr__(grown, "values", _sealed(np.concatenate([self.values, new.values])))
        object.__setattr__(grown, "lr", lr)
        return grown

    @classmethod
    def from_points(cls, points: Points, direction: Direction, **kwargs: Any) -> Curve:
        lr = None if np.isnan(points.lr).all() else points.lr
        return cls(points.steps, points.values, direction, lr=lr, **kwargs)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def last_step(self) -> int:
        return int(self.steps[-1]) if len(self.steps) else -1

    @property
    def last_value(self) -> float:
        return float(self.values[-1]) if len(self.values) else math.nan

    @property
    def horizon(self) -> int:
        """The step forecasts aim at: the budget, or the last step when there is none."""
        return max(self.max_step or 0, self.last_step)

    def head(self, n: int) -> Curve:
        """The first n points (the curve as it was when it had n points)."""
        if n >= len(self):
            return self
        lr = None if self.lr is None else self.lr[:n]
        return self._derived(steps=self.steps[:n], values=self.values[:n], lr=lr)

    def _derived(self, **changes: Any) -> Curve:
        """A copy with some arrays changed, not validated again: a head, the finite points or
        the loss view of a validated curve are valid, and validating cost more than a pow3 fit
        (the replay takes ~100,000 heads a task). The arrays given must be read-only."""
        out = object.__new__(Curve)
        out.__dict__.update(self.__dict__)
        out.__dict__.update(changes)
        return out

    def finite(self) -> Curve:
        """The points whose value is finite (what a fit can use)."""
        mask = np.isfinite(self.values)
        if mask.all():
            return self
        lr = None if self.lr is None else _sealed(self.lr[mask])
        return self._derived(
            steps=_sealed(self.steps[mask]), values=_sealed(self.values[mask]), lr=lr
        )

    def best_value(self) -> float:
        """The best finite value in this curve's direction; NaN when there is none."""
        finite = self.values[np.isfinite(self.values)]
        if not len(finite):
            return math.nan
        return float(finite.min() if self.direction is Direction.MIN else finite.max())

    def loss_view(self) -> Curve:
        """A lower-is-better copy: the only place the direction is flipped."""
        if self.direction is Direction.MIN:
            return self
        target = None if self.target is None else -self.target
        return self._derived(values=_sealed(-self.values), direction=Direction.MIN, target=target)


def to_loss(values: npt.ArrayLike, direction: Direction) -> FloatArray:
    """Values in the loss view (lower is better); the inverse of itself."""
    return np.asarray(values, dtype=np.float64) * direction.sign


# How far apart two smoothed levels of a flat noisy curve can fall, in standard errors of one
# level: the best level is the lowest of many, so it sits ~3 below the truth, and the current
# one may sit ~3 above it.
LEVEL_NOISE_UNITS = 6.0


def level_noise(loss: np.ndarray, window: int) -> float:
    """The standard error of one smoothed level, from the curve's own point-to-point noise
    before its latest window (a rise in that window must not excuse itself): the MAD of
    successive differences over sqrt(2) is the points' noise, robust to the trend and to spikes;
    a median of `window` points has sqrt(pi/2)/sqrt(window) of it."""
    before = loss[:-window] if len(loss) > 2 * window else loss
    steps = np.abs(np.diff(before))
    if not len(steps):
        return 0.0
    point_noise = 1.4826 * float(np.median(steps)) / math.sqrt(2.0)
    return math.sqrt(math.pi / 2.0) * point_noise / math.sqrt(window)


def smoothed_levels(loss: np.ndarray, window: int) -> np.ndarray:
    """The median of every run of `window` (odd) consecutive values, in order: the level of a
    noisy curve, which one outlier does not move. A curve shorter than the window has one
    level, the median of what it has. Only whole windows count: a level padded with the first
    value would lean on one noisy sample, and the run's scale with it."""
    if window <= 1:
        return loss.astype(np.float64, copy=False)
    if len(loss) < window:
        return np.array([float(np.median(loss))])
    half = window // 2
    # median_filter is C, 10x faster than a strided np.median on a 10^6-point run; it centres
    # its window, so the whole windows are the centres half a window in from either end.
    centred = median_filter(loss.astype(np.float64, copy=False), size=window, mode="nearest")
    return centred[half : len(loss) - half]


def thin_indices(n: int, max_points: int) -> IntArray:
    """Indices of at most max_points points spread evenly over n, always keeping the first
    and the last: how a long curve is resampled before a fit."""
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


_S2_CELLS = 8192  # grid cells S2's recursion runs on (drops move by < horizon / 8192 steps)
_MAX_DROPS = 128  # drop groups the multi-power sum runs over
_PLAN_KNOTS = 512  # knots a named schedule is sampled at (the areas are exact on them)


@dataclass(frozen=True, eq=False)
class LrProfile:
    """A run's learning rate as a step function: values[j] holds on [knots[j], knots[j+1]).

    Built from the lr the run reported (held until the next reported step) followed by its
    planned schedule, so the LR areas are exact closed forms at any step, past or future.

    Args:
        knots: increasing steps, knots[0] == 0.
        values: lr from each knot on (>= 0).
    """

    knots: FloatArray
    values: FloatArray

    def __post_init__(self) -> None:
        knots = np.asarray(self.knots, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if not len(knots) or len(knots) != len(values) or knots[0] != 0:
            raise InvalidArgumentError("LrProfile: needs equal-length knots starting at step 0.")
        if len(knots) > 1 and (np.diff(knots) <= 0).any():
            raise InvalidArgumentError("LrProfile: knots must increase strictly.")
        object.__setattr__(self, "knots", _readonly(knots))
        object.__setattr__(self, "values", _readonly(values))

    @classmethod
    def from_schedule(cls, schedule: LrSchedule, horizon: int) -> LrProfile:
        """The plan alone, sampled finely enough that its areas are exact to ~0.1%."""
        if schedule.kind is ScheduleKind.EXPLICIT:
            k = np.asarray(schedule.steps, dtype=np.float64)
            v = np.asarray(schedule.values, dtype=np.float64)
            if k[0] > 0:
                k, v = np.concatenate([[0.0], k]), np.concatenate([[v[0]], v])
            return cls(k, v)
        end = float(max(schedule.end_step or 0, horizon, 1))
        grid = np.linspace(0.0, end, _PLAN_KNOTS + 1)
        if schedule.kind is ScheduleKind.STEP:  # exact jump points
            jumps = schedule.warmup_steps + schedule.step_size * np.arange(
                1, min(int(end // schedule.step_size) + 1, 10_000)
            )
            grid = np.union1d(grid, jumps[jumps < end])
        if schedule.warmup_steps:
            grid = np.union1d(grid, [float(schedule.warmup_steps)])
        mids = np.append((grid[:-1] + grid[1:]) / 2, grid[-1])  # midpoint rule per segment
        return cls(grid, schedule.lr_at(mids))

    @classmethod
    def of(cls, curve: Curve, horizon: int | None = None) -> LrProfile | None:
        """Reported lr, then the planned schedule after the last reported step; None when the
        curve has neither."""
        known = np.zeros(0, dtype=bool) if curve.lr is None else ~np.isnan(curve.lr)
        horizon = max(horizon or 0, curve.horizon)
        plan = None if curve.schedule is None else cls.from_schedule(curve.schedule, horizon)
        if not known.any():
            return plan
        assert curve.lr is not None
        k = curve.steps[known].astype(np.float64)
        v = curve.lr[known]
        if plan is None:
            if k[0] > 0:
                k, v = np.concatenate([[0.0], k]), np.concatenate([[v[0]], v])
            return cls(k, v)
        last = k[-1]
        before = plan.knots < k[0]
        after = plan.knots > last
        knots = np.concatenate([plan.knots[before], k, plan.knots[after]])
        values = np.concatenate([plan.values[before], v, plan.values[after]])
        if knots[0] > 0:
            knots, values = np.concatenate([[0.0], knots]), np.concatenate([[values[0]], values])
        return cls(knots, values)

    def with_plan_after(self, schedule: LrSchedule, from_step: int, horizon: int) -> LrProfile:
        """This profile up to from_step, then another plan: "what if I decay now?"."""
        plan = LrProfile.from_schedule(schedule, max(horizon, from_step))
        keep = self.knots <= from_step
        later = plan.knots > from_step
        knots = np.concatenate([self.knots[keep], [from_step + 1.0], plan.knots[later]])
        values = np.concatenate(
            [self.values[keep], schedule.lr_at([from_step + 1.0]), plan.values[later]]
        )
        knots, first = np.unique(knots, return_index=True)
        return LrProfile(knots, values[first])

    @property
    def peak(self) -> float:
        return float(self.values.max())

    def lr_at(self, steps: npt.ArrayLike) -> FloatArray:
        s = np.asarray(steps, dtype=np.float64)
        idx = np.clip(np.searchsorted(self.knots, s, side="right") - 1, 0, len(self.knots) - 1)
        return np.asarray(self.values[idx], dtype=np.float64)

    def s1(self, steps: npt.ArrayLike) -> FloatArray:
        """Forward area: the sum of the lr over steps (0, s]."""
        s = np.maximum(np.asarray(steps, dtype=np.float64), 0.0)
        seg = np.diff(self.knots) * self.values[:-1]
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        idx = np.clip(np.searchsorted(self.knots, s, side="right") - 1, 0, len(self.knots) - 1)
        return np.asarray(cum[idx] + self.values[idx] * (s - self.knots[idx]), dtype=np.float64)

    def drops(self) -> tuple[FloatArray, FloatArray]:
        """(steps, amounts) of every lr decrease after the warm-up peak (increases after it
        count as negative drops, as a re-warm-up does in the momentum form)."""
        if len(self.values) < 2:
            return np.zeros(0), np.zeros(0)
        delta = self.values[:-1] - self.values[1:]
        delta[: int(np.argmax(self.values))] = 0.0  # the warm-up is not annealing
        nz = delta != 0
        return self.knots[1:][nz], delta[nz]

    def drop_grid(self, end: float, cells: int = _S2_CELLS) -> DropGrid:
        """The drops binned onto a uniform grid covering [0, end]: what S2 is computed on."""
        width = float(max(1.0, math.ceil(max(end, 1.0) / cells)))
        n = int(math.ceil(max(end, 1.0) / width)) + 2
        k, d = self.drops()
        where = np.minimum(np.ceil(k / width).astype(np.int64), n - 1)
        return DropGrid(width, np.bincount(where, weights=d, minlength=n).astype(np.float64))

    def s2(self, steps: npt.ArrayLike, tau: float) -> FloatArray:
        """Annealing area in its momentum form (Tissue et al.): m_i = lambda * m_(i-1) +
        (lr_(i-1) - lr_i), S2 = sum of m_i; with tau = -1 / ln(lambda) in steps, each lr drop d
        at step k contributes d * tau * (1 - exp(-(s - k) / tau)) for s > k."""
        s = np.asarray(steps, dtype=np.float64)
        if not s.size:
            return np.zeros_like(s)
        return self.drop_grid(float(s.max())).s2(s, tau)

    def drop_table(self, max_drops: int = _MAX_DROPS) -> DropTable:
        """The drops, merged into at most max_drops groups of neighbours: what the
        multi-power law's loss-drop term sums over."""
        k, d = self.drops()
        if not len(k):
            return DropTable(np.zeros(0), np.zeros(0), np.zeros(0))
        area = self.s1(k)
        after = np.maximum(self.lr_at(k), 1e-3 * self.peak)
        if len(k) > max_drops:
            group = np.minimum((np.arange(len(k)) * max_drops) // len(k), max_drops - 1)
            weight = np.abs(d) + 1e-300
            total = np.bincount(group, weights=d)
            norm = np.bincount(group, weights=weight)
            area = np.bincount(group, weights=weight * area) / norm
            after = np.exp(np.bincount(group, weights=weight * np.log(after)) / norm)
            d = np.asarray(total, dtype=np.float64)
        return DropTable(area, d, after)

    def multi_power_drop(
        self, steps: npt.ArrayLike, c: float, beta: float, gamma: float
    ) -> FloatArray:
        """The multi-power law's loss-drop shape (Luo et al. 2025), in absolute lr:
        sum over drops k of (lr_(k-1) - lr_k) * (1 - (c * lr_k^-gamma * S_k(s) + 1)^-beta),
        S_k(s) the forward area from step k to s."""
        s = np.asarray(steps, dtype=np.float64)
        return self.drop_table().multi_power(self.s1(s), c, beta, gamma)


@dataclass(frozen=True, eq=False)
class DropGrid:
    """A profile's lr drops binned (up) onto a grid of `width` steps: drops[g] falls at step
    g * width. S2 at any decay time is then one linear recursion over the grid."""

    width: float
    drops: FloatArray

    def momentum(self, tau: float) -> FloatArray:
        """m at each grid step, just after its drop: m_g = exp(-width / tau) m_(g-1) + d_g."""
        from scipy.signal import lfilter

        decay = math.exp(-self.width / max(tau, 1e-9))
        return np.asarray(lfilter([1.0], [1.0, -decay], self.drops), dtype=np.float64)

    def s2(self, steps: npt.ArrayLike, tau: float) -> FloatArray:
        """S2 at steps: the grid's cumulative area, then the exact decay within the cell."""
        s = np.maximum(np.asarray(steps, dtype=np.float64), 0.0)
        tau = max(tau, 1e-9)
        m = self.momentum(tau)
        gain = m * tau * -math.expm1(-self.width / tau)  # area gained over each full cell
        cum = np.concatenate([[0.0], np.cumsum(gain)])
        g = np.minimum((s // self.width).astype(np.int64), len(m) - 1)
        inside = s - g * self.width
        return np.asarray(cum[g] + m[g] * tau * -np.expm1(-inside / tau), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class DropTable:
    """The drops the multi-power law sums over: the forward area at each, its size, and the
    lr after it."""

    area: FloatArray
    amount: FloatArray
    lr_after: FloatArray

    def multi_power(self, s1: npt.ArrayLike, c: float, beta: float, gamma: float) -> FloatArray:
        """sum_k amount_k * (1 - (c * lr_after_k^-gamma * (S1 - area_k)_+ + 1)^-beta)."""
        s1 = np.asarray(s1, dtype=np.float64)
        if not len(self.amount):
            return np.zeros_like(s1)
        x = self._drop_argument(s1, c, gamma)
        return np.asarray((-np.expm1(-beta * np.log1p(x))) @ self.amount, dtype=np.float64)

    def _drop_argument(self, s1: FloatArray, c: float, gamma: float) -> FloatArray:
        """x = c * lr_after_k^-gamma * (S1 - area_k)_+, (n points, drops): what G is applied to."""
        since = np.maximum(s1[:, None] - self.area[None, :], 0.0)
        out: FloatArray = (c * self.lr_after**-gamma)[None, :] * since
        return out

    def multi_power_grad(
        self, s1: npt.ArrayLike, c: float, beta: float, gamma: float
    ) -> tuple[FloatArray, FloatArray]:
        """multi_power and its derivatives, (value (n,), (n, 3) columns c * d/dc, d/dbeta,
        d/dgamma): a fit's Jacobian in one pass over the drops instead of one pass per
        parameter by finite differences."""
        s1 = np.asarray(s1, dtype=np.float64)
        if not len(self.amount):
            return np.zeros_like(s1), np.zeros((len(s1), 3))
        x = self._drop_argument(s1, c, gamma)
        log1p = np.log1p(x)
        kept = np.exp(-beta * log1p)  # (1 + x)^-beta
        q = beta * kept * (x / (1.0 + x))  # x * d/dx of the drop's shape
        value = (1.0 - kept) @ self.amount
        by_gamma = -np.log(self.lr_after) * self.amount
        grad = np.stack([q @ self.amount, (kept * log1p) @ self.amount, q @ by_gamma], axis=1)
        return np.asarray(value, dtype=np.float64), np.asarray(grad, dtype=np.float64)


# A planned decay counts when the lr still to come falls below this share of the lr in force
# now: a halving, by definition of "a decay" (not fitted to any figure; CONVERGED waits for it).
DECAY_AHEAD_SHARE = 0.5


@dataclass(frozen=True)
class DecayAhead:
    """Where the planned lr first falls below DECAY_AHEAD_SHARE of the lr now."""

    step: int
    lr_then: float
    lr_now: float


def decay_ahead(curve: Curve, share: float = DECAY_AHEAD_SHARE) -> DecayAhead | None:
    """The first step between the curve's last step and its budget where its planned lr
    schedule (LrProfile: the reported lr, then the plan) falls below share x the lr now, while
    the lr now is still at least share x its peak (a run already in its cool-down has its
    drop under way); None without a plan, a budget, or such a fall. The late drop of a WSD or
    cosine cool-down is still to come while this is not None, so a flat curve then has not
    converged."""
    if curve.schedule is None or not len(curve) or not curve.max_step:
        return None
    if curve.max_step <= curve.last_step:
        return None
    profile = LrProfile.of(curve, curve.max_step)
    if profile is None:
        return None
    now = float(profile.lr_at([curve.last_step])[0])
    grid = np.unique(np.linspace(curve.last_step, curve.max_step, 513).round())
    future = profile.lr_at(grid)
    below = np.flatnonzero(future < share * now)
    if now <= 0 or now < share * profile.peak or not len(below):
        return None
    i = int(below[0])
    return DecayAhead(int(grid[i]), float(future[i]), now)
