"""Median stopping (Golovin et al., "Google Vizier", 2017): the classic rule, for comparison.

A run is stopped at step s when its best value so far is worse than the median of the other
runs' running means up to s. It needs no forecast, only the other runs' curves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_count,
    check_fraction,
    continue_promising,
    grace_step,
    run_statistic,
    stop,
    warmup,
)


@dataclass(frozen=True)
class MedianStoppingPolicy:
    """Args:
    grace_fraction, grace_steps: no verdict before max(grace_steps, grace_fraction x budget).
    min_peers: no verdict until this many other runs have reached the step.
    """

    name: ClassVar[str] = "median"
    grace_fraction: float = 0.1
    grace_steps: int = 0
    min_peers: int = 3

    def __post_init__(self) -> None:
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
            run, study, self.name, grace, self.min_peers, percentile=50.0, peer_statistic="mean"
        )


def compare_with_peers(
    run: RunView,
    study: StudyContext,
    policy: str,
    grace: int,
    min_peers: int,
    percentile: float,
    peer_statistic: str,
) -> Decision:
    """UNPROMISING when the run's best so far is worse than the given percentile (0 = best) of
    the other runs' values at its last step; the median and percentile rules share this."""
    curve, last = run.curve, run.curve.last_step
    if not len(curve) or last < grace:
        return warmup(run, policy, f"step {last} is inside the grace period (step < {grace}).")
    peers = study.peers.values_at(last, peer_statistic) if study.peers else np.zeros(0)
    peers = peers[~np.isnan(peers)]
    if len(peers) < min_peers:
        return continue_promising(
            run, policy, f"{len(peers)} other runs have reached step {last}; needs {min_peers}."
        )
    bar = float(np.percentile(peers, percentile))
    mine = run_statistic(curve, "best")
    sign = curve.direction.sign
    what = "median" if percentile == 50.0 else f"{percentile:g}th percentile"
    said = (
        f"its best {mine * sign:.4g} vs the {what} {bar * sign:.4g} of {len(peers)} other runs' "
        f"{'running means' if peer_statistic == 'mean' else 'values'} at step {last}"
    )
    if mine > bar:
        return stop(run, policy, Reason.UNPROMISING, f"{said}: worse.")
    return continue_promising(run, policy, f"{said}: no worse.")
