"""Ranking a study's running and paused runs: which one deserves the next unit of compute.

Freeze-thaw (Swersky et al., 2014): a run the policy paused is not dead; when the study has
compute to spare it should go to the run whose rest is expected to buy the most per unit of
compute. Each run is priced by the cost-aware figure of the `expected_gain` policy: the
expected improvement of its value at the budget over a reference (the study's incumbent, or
the run's own best so far when the study has none), relative to the reference, per fraction
of its budget still to run. Pure: the engine and the replay both call `rank`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from forecaster.curves import Direction, to_loss
from forecaster.models.prediction import Prediction
from forecaster.policies import Decision
from forecaster.policies.expected_gain import expected_gain

INCUMBENT = "incumbent"
OWN_BEST = "own_best"


@dataclass(frozen=True)
class Candidate:
    """One running or paused run as the ranking sees it."""

    name: str
    decision: Decision | None
    last_step: int
    budget: int
    best_value: float  # the run's best finite value so far (NaN when none)
    prediction: Prediction | None  # None: no forecast (no points, or the fit failed)
    incumbent: float | None  # the best final value of the study's other runs


@dataclass(frozen=True)
class RankedRun:
    """A run with what the rest of it is expected to buy."""

    name: str
    paused: bool
    decision: Decision | None
    last_step: int
    remaining_steps: int
    expected_gain: float | None
    gain_rate: float | None
    forecast_final: float | None
    prob_beat_incumbent: float | None
    reference: str  # what expected_gain is measured against: INCUMBENT or OWN_BEST


def price(candidate: Candidate, direction: Direction) -> RankedRun:
    """The run's expected gain and its rate per fraction of the budget left."""
    c = candidate
    remaining = max(c.budget - max(c.last_step, 0), 0)
    paused = c.decision is not None and c.decision.is_pause
    reference_name = INCUMBENT if c.incumbent is not None else OWN_BEST
    reference = c.incumbent if c.incumbent is not None else c.best_value
    gain = rate = final = p_beat = None
    if c.prediction is not None and remaining > 0 and c.budget > 0:
        median = float(c.prediction.quantiles((0.5,), [c.budget])[0, 0])
        final = median if math.isfinite(median) else None
        if c.incumbent is not None:
            p_beat = c.prediction.prob_better_than(c.incumbent, c.budget)
        if reference is not None and math.isfinite(reference):
            gain = expected_gain(c.prediction, c.budget, reference, direction)
            rate = None if gain is None else gain / (remaining / c.budget)
    return RankedRun(
        name=c.name,
        paused=paused,
        decision=c.decision,
        last_step=c.last_step,
        remaining_steps=remaining,
        expected_gain=gain,
        gain_rate=rate,
        forecast_final=final,
        prob_beat_incumbent=p_beat,
        reference=reference_name,
    )


def rank(candidates: Iterable[Candidate], direction: Direction) -> list[RankedRun]:
    """The runs priced, the highest gain rate first (ties: the forecast final value better
    first, in the loss view); runs that cannot be priced last, in the order given."""
    priced = [price(c, direction) for c in candidates]
    known = [r for r in priced if r.gain_rate is not None]
    unknown = [r for r in priced if r.gain_rate is None]

    def key(r: RankedRun) -> tuple[float, float]:
        final = r.forecast_final
        loss = float(to_loss(final, direction)) if final is not None else math.inf
        return (-(r.gain_rate or 0.0), loss)

    return sorted(known, key=key) + unknown


def finish_first(
    candidates: Iterable[Candidate], direction: Direction, steps_left: float
) -> RankedRun | None:
    """The endgame of a compute budget: of the runs whose rest fits in steps_left, the one
    whose forecast final value is best (in the loss view); None when none fits or none has a
    forecast. Once the budget left can finish only one more run, a run finished is worth more
    than several cut short: its final value is what the study keeps (a schedule's late drop
    comes only at the end)."""
    fits = [
        r
        for r in (price(c, direction) for c in candidates)
        if r.forecast_final is not None and 0 < r.remaining_steps <= steps_left
    ]
    if not fits:
        return None

    def final_loss(r: RankedRun) -> float:
        return float(to_loss(r.forecast_final, direction)) if r.forecast_final is not None else 0.0

    return min(fits, key=final_loss)
