"""Percentile stopping, as Optuna's PercentilePruner does it: for comparison.

A run is stopped when its best value so far is worse than the given percentile of the other
runs' values at the same step (percentile 25 keeps the best quarter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    RunView,
    StudyContext,
    check_count,
    check_fraction,
    grace_step,
)
from forecaster.policies.median import compare_with_peers


@dataclass(frozen=True)
class PercentilePolicy:
    """Args:
    percentile: in (0, 100): the share of runs, best first, that a run must be among.
    grace_fraction, grace_steps, min_peers: as for the median rule.
    """

    name: ClassVar[str] = "percentile"
    percentile: float = 25.0
    grace_fraction: float = 0.1
    grace_steps: int = 0
    min_peers: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile < 100.0:
            raise InvalidArgumentError(
                f"policy setting percentile must be in (0, 100); got {self.percentile}."
            )
        check_fraction("grace_fraction", self.grace_fraction)
        check_count("grace_steps", self.grace_steps)
        check_count("min_peers", self.min_peers, minimum=1)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return False

    def grace_settings(self) -> Mapping[str, float]:
        return {"grace_steps": self.grace_steps}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        grace = grace_step(run, self.grace_steps, self.grace_fraction)
        return compare_with_peers(
            run, study, self.name, grace, self.min_peers, self.percentile, peer_statistic="last"
        )
