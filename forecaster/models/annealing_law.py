"""The annealing law (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing",
arXiv:2408.11029), in its own absolute units:

    L(s) = L0 + A * S1(s)^-alpha - C * S2(s)

S1 the forward area (sum of the lr over steps), S2 the annealing area in its momentum form,
m_i = lambda * m_(i-1) + (lr_(i-1) - lr_i), S2 = sum of m_i, with the decay factor lambda a
fitted shape parameter (the paper uses about 0.999; fitted as tau = -1 / ln lambda, in steps).
The areas are `curves.LrProfile.s1` and `.s2` (a linear recursion over the steps); the fit,
its uncertainty and the forecaster are shared with the multi-power law
(`models/schedule_laws.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.curves import DropGrid, FloatArray, LrProfile
from forecaster.models.schedule_laws import (
    Law,
    ScheduleLawForecaster,
    StudyFit,
    fit_study,
    schedule_known,
)

__all__ = ["ANNEALING_LAW", "AnnealingLawForecaster", "StudyFit", "fit_study", "schedule_known"]


@dataclass(frozen=True, eq=False)
class _Areas:
    steps: FloatArray
    s1: FloatArray  # in units of ref lr x steps
    grid: DropGrid  # drops in units of ref


def _prepare(profile: LrProfile, steps: FloatArray, ref: float) -> _Areas:
    steps = np.asarray(steps, dtype=np.float64)
    grid = profile.drop_grid(float(steps.max()) if len(steps) else 1.0)
    return _Areas(steps, profile.s1(steps) / ref, DropGrid(grid.width, grid.drops / ref))


def _s2(areas: _Areas, rest: FloatArray) -> FloatArray:
    return areas.grid.s2(areas.steps, 10.0 ** float(rest[0]))


def _report(shape: FloatArray, ref: float) -> dict[str, float]:
    tau = 10.0 ** float(shape[1])
    return {"alpha": float(shape[0]), "lambda": math.exp(-1.0 / tau)}


ANNEALING_LAW = Law(
    name="annealing_law",
    shape_names=("alpha", "lambda"),
    anneal_name="C",
    # alpha about 0.5 and lambda 0.99-0.999 (tau 100-1000 steps) are where the paper's fits
    # land; the bounds are wide.
    starts=((0.3, 2.0), (0.3, 3.0), (0.6, 2.0), (0.6, 3.0)),
    lower=(0.01, 0.0),
    upper=(3.0, 5.0),
    max_points=1000,
    prepare=_prepare,
    anneal=_s2,
    s1_of=lambda areas: areas.s1,
    report=_report,
)


@dataclass(frozen=True)
class AnnealingLawForecaster(ScheduleLawForecaster):
    """L = L0 + A * S1^-alpha - C * S2 (Tissue et al. 2024); shape and C shared by the study,
    L0 and A by the runs of one peak lr."""

    name: ClassVar[str] = "annealing_law"
    version: ClassVar[int] = 2
