"""Asynchronous successive halving (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", 2020), as a stopping rule: for comparison.

Rungs sit at min_step x eta^k. At its highest rung a run must be among the best 1/eta of the
runs that have reached that rung so far (the first to arrive always is), else it is stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_count,
    check_fraction,
    continue_promising,
    stop,
    warmup,
)


@dataclass(frozen=True)
class AshaPolicy:
    """Args:
    eta: the reduction factor (> 1): the best 1/eta go on at each rung.
    min_fraction: the first rung, as a fraction of the run's budget...
    min_steps: ...or in steps, whichever is larger.
    """

    name: ClassVar[str] = "asha"
    eta: float = 3.0
    min_fraction: float = 1 / 27
    min_steps: int = 0

    def __post_init__(self) -> None:
        if not self.eta > 1.0:
            raise InvalidArgumentError(f"policy setting eta must be > 1; got {self.eta}.")
        check_fraction("min_fraction", self.min_fraction)
        check_count("min_steps", self.min_steps)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {"min_steps": self.min_steps}

    def rung_at(self, run: RunView) -> int | None:
        """The highest rung (in steps) the run has reached, None before the first."""
        first = max(self.min_steps, math.ceil(self.min_fraction * (run.curve.max_step or 0)), 1)
        if run.curve.last_step < first:
            return None
        k = math.floor(math.log(run.curve.last_step / first) / math.log(self.eta) + 1e-9)
        return int(round(first * self.eta**k))

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve = run.curve
        rung = self.rung_at(run)
        if rung is None or not len(curve):
            return warmup(run, self.name, f"step {curve.last_step} is before the first rung.")
        at = int(np.searchsorted(curve.steps, rung, side="right"))
        mine = float(curve.values[at - 1] * curve.direction.sign) if at else math.inf
        mine = mine if math.isfinite(mine) else math.inf
        peers = study.peers.values_at(rung, "last") if study.peers else np.zeros(0)
        values = np.sort(np.append(np.where(np.isfinite(peers), peers, np.inf), mine))
        keep = max(math.floor(len(values) / self.eta), 1)
        bar = values[keep - 1]
        sign = curve.direction.sign
        said = (
            f"at rung {rung} its value {mine * sign:.4g} vs the best 1/{self.eta:g} of "
            f"{len(values)} runs there (bar {bar * sign:.4g})"
        )
        if mine > bar:
            return stop(run, self.name, Reason.UNPROMISING, f"{said}: not among them.")
        return continue_promising(run, self.name, f"{said}: among them.")
