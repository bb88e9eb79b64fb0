"""Curve, Points and LrSchedule: the one home of curve math.

Validation happens once, when a value is built; arrays are made read-only so nothing
downstream can change a curve behind another component's back. Forecasters and policies see
"lower is better" only, through `Curve.loss_view()`, the one place the direction is flipped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from forecaster.errors import InvalidArgumentError

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

    def same_as(self, other: Points) -> bool:
        """Exact equality, NaN equal to NaN: how a retried batch is recognised."""
        return (
            np.array_equal(self.steps, other.steps)
            and np.array_equal(self.values, other.values, equal_nan=True)
            and np.array_equal(self.lr, other.lr, equal_nan=True)
            and np.array_equal(self.wall_time_s, other.wall_time_s, equal_nan=True)
        )

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
        if self.kind is ScheduleKind.EXPLICIT:
            if not self.steps or len(self.steps) != len(self.values):
                raise InvalidArgumentError(
                    f"{where}: needs steps and values of equal, non-zero length; got "
                    f"{len(self.steps)} steps and {len(self.values)} values."
                )
            if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
                raise InvalidArgumentError(f"{where}: steps must increase strictly.")
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
    """

    steps: IntArray
    values: FloatArray
    direction: Direction = Direction.MIN
    max_step: int | None = None
    lr: FloatArray | None = None
    target: float | None = None
    schedule: LrSchedule | None = field(default=None)

    def __post_init__(self) -> None:
        pts = Points(self.steps, self.values, self.lr, None)  # one validation for both types
        object.__setattr__(self, "steps", pts.steps)
        object.__setattr__(self, "values", pts.values)
        object.__setattr__(self, "lr", None if self.lr is None else pts.lr)
        if self.max_step is not None and self.max_step < 0:
            raise InvalidArgumentError(f"max_step must be >= 0; got {self.max_step}.")
        if self.target is not None and not math.isfinite(self.target):
            raise InvalidArgumentError(f"target must be finite; got {self.target}.")

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
        return replace(self, steps=self.steps[:n], values=self.values[:n], lr=lr)

    def finite(self) -> Curve:
        """The points whose value is finite (what a fit can use)."""
        mask = np.isfinite(self.values)
        lr = None if self.lr is None else self.lr[mask]
        return replace(self, steps=self.steps[mask], values=self.values[mask], lr=lr)

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
        return replace(self, values=-self.values, direction=Direction.MIN, target=target)


def to_loss(values: npt.ArrayLike, direction: Direction) -> FloatArray:
    """Values in the loss view (lower is better); the inverse of itself."""
    return np.asarray(values, dtype=np.float64) * direction.sign
