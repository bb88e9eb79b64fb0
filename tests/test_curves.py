"""Curve math: validation, the one direction flip, planned LR schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forecaster.curves import Curve, Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import InvalidArgumentError


def test_points_validate_once_and_are_read_only():
    p = Points.of([1, 2, 5], [1.0, math.nan, math.inf], lr=[0.1, None, 0.2])
    assert np.isnan(p.lr[1]) and np.isnan(p.wall_time_s).all()
    with pytest.raises(ValueError):
        p.values[0] = 3.0
    with pytest.raises(InvalidArgumentError, match="got 2 after 5"):
        Points.of([1, 5, 2], [1.0, 1.0, 1.0])
    with pytest.raises(InvalidArgumentError, match=">= 0"):
        Points.of([-3], [1.0])
    with pytest.raises(InvalidArgumentError, match="lr"):
        Points.of([1], [1.0], lr=[-0.1])


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20), st.floats(-1e6, 1e6))
def test_max_curve_is_the_negated_min_curve(values, target):
    steps = np.arange(len(values))
    up = Curve(steps, np.array(values), Direction.MAX, target=target).loss_view()
    down = Curve(steps, -np.array(values), Direction.MIN, target=-target)
    np.testing.assert_array_equal(up.values, down.values)
    assert up.target == down.target and up.direction is Direction.MIN
    assert Curve(steps, np.array(values), Direction.MAX).best_value() == max(values)


def test_best_value_ignores_non_finite():
    c = Curve(np.arange(4), np.array([3.0, math.nan, 1.0, -math.inf]), Direction.MIN)
    assert c.best_value() == 1.0 and c.last_step == 3 and len(c.finite()) == 2


@pytest.mark.parametrize(
    "schedule, at, expected",
    [
        (
            LrSchedule(ScheduleKind.CONSTANT, peak_lr=1.0, warmup_steps=10),
            [0, 5, 10, 99],
            [0.0, 0.5, 1.0, 1.0],
        ),
        (
            LrSchedule(ScheduleKind.COSINE, peak_lr=1.0, total_steps=100),
            [0, 50, 100, 200],
            [1.0, 0.5, 0.0, 0.0],
        ),
        (
            LrSchedule(ScheduleKind.LINEAR, peak_lr=1.0, final_lr=0.1, total_steps=100),
            [0, 100],
            [1.0, 0.1],
        ),
        (
            LrSchedule(ScheduleKind.WSD, peak_lr=1.0, total_steps=100, decay_fraction=0.2),
            [50, 80, 90, 100],
            [1.0, 1.0, 0.5, 0.0],
        ),
        (
            LrSchedule(ScheduleKind.STEP, peak_lr=1.0, step_size=10, gamma=0.5),
            [9, 10, 25],
            [1.0, 0.5, 0.25],
        ),
        (
            LrSchedule(ScheduleKind.EXPLICIT, steps=(0, 10), values=(0.3, 0.1)),
            [0, 5, 10, 50],
            [0.3, 0.3, 0.1, 0.1],
        ),
    ],
)
def test_planned_schedules(schedule, at, expected):
    np.testing.assert_allclose(schedule.lr_at(at), expected, atol=1e-12)
    assert LrSchedule.from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(kind=ScheduleKind.COSINE, peak_lr=0.0, total_steps=10), "peak_lr"),
        (dict(kind=ScheduleKind.COSINE, peak_lr=1.0, total_steps=0), "total_steps"),
        (
            dict(kind=ScheduleKind.WSD, peak_lr=1.0, total_steps=10, decay_fraction=2.0),
            "decay_fraction",
        ),
        (dict(kind=ScheduleKind.EXPLICIT, steps=(1, 1), values=(1.0, 1.0)), "increase"),
        (dict(kind=ScheduleKind.STEP, peak_lr=1.0), "step_size"),
    ],
)
def test_bad_schedules_name_the_field(kwargs, word):
    with pytest.raises(InvalidArgumentError, match=word):
        LrSchedule(**kwargs)


@pytest.mark.parametrize("kind", [ScheduleKind.WSD, ScheduleKind.CONSTANT, ScheduleKind.COSINE])
def test_a_schedule_of_any_kind_refuses_non_finite_values(kind):
    """Found by benchmarks/fuzz.py: values a WSD schedule does not use are still stored as
    JSON, which has no NaN; a NaN among them gave INTERNAL instead of INVALID_ARGUMENT."""
    with pytest.raises(InvalidArgumentError, match="values must be finite"):
        LrSchedule(kind, peak_lr=1e-3, total_steps=100, decay_fraction=0.2, values=(math.nan,))


@pytest.mark.parametrize("old_lr", [None, [0.1, 0.1, 0.05]])
@pytest.mark.parametrize("new_lr", [None, [0.01, 0.02]])
def test_extended_is_the_curve_built_whole(old_lr, new_lr):
    """What a report appends to the cached curve equals the curve validated from scratch."""
    old = Curve(
        np.array([1, 2, 4]), np.array([3.0, 2.0, math.nan]), Direction.MAX, 100,
        None if old_lr is None else np.array(old_lr), 2.5, None, {"lr": 0.1},
    )  # fmt: skip
    new = Points.of([7, 9], [1.5, math.inf], lr=new_lr)
    grown = old.extended(new)
    whole = Curve(
        np.array([1, 2, 4, 7, 9]), np.array([3.0, 2.0, math.nan, 1.5, math.inf]),
        Direction.MAX, 100,
        None if old_lr is None and new_lr is None
        else np.concatenate([old_lr or [math.nan] * 3, new_lr or [math.nan] * 2]),
        2.5, None, {"lr": 0.1},
    )  # fmt: skip
    for name in ("direction", "max_step", "target", "schedule", "config", "kind"):
        assert getattr(grown, name) == getattr(whole, name), name
    np.testing.assert_array_equal(grown.steps, whole.steps)
    np.testing.assert_array_equal(grown.values, whole.values)
    assert grown.steps.dtype == whole.steps.dtype and grown.values.dtype == whole.values.dtype
    assert (grown.lr is None) == (whole.lr is None)
    if whole.lr is not None:
        np.testing.assert_array_equal(grown.lr, whole.lr)
    with pytest.raises(ValueError):
        grown.values[0] = 1.0
    with pytest.raises(InvalidArgumentError, match="does not follow"):
        grown.extended(Points.of([9], [1.0]))
