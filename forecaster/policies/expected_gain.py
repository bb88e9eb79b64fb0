"""UNPROMISING by cost: what the rest of a run is expected to buy, per unit of compute.

P(beat the incumbent) < epsilon asks only whether a run can win; it spends the same compute on
a run that may win by 0.01% as on one that may win by 5%. The cost-aware check prices the rest
of the run: the expected improvement over the incumbent at the budget, E[max(0, incumbent -
final)] in the loss view (Jones et al.'s expected improvement), relative to the incumbent, per
fraction of the budget still to run. A run is stopped when that rate falls below
`min_gain_rate`: with 0.01, "continue only while the rest of this run is expected to improve
on the best result by 1% per budget's worth of compute still to spend". A run with no incumbent
to beat (a study's first run, a run alone) is priced against its own best so far, and stopped
as CONVERGED: what the rest of it buys over what it already has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from forecaster.curves import Direction, to_loss
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    UNCERTAIN_WIDTH,
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_non_negative,
    continue_promising,
    stop,
    too_early,
    too_uncertain,
)
from forecaster.policies.converged import decay_held


def expected_gain(
    prediction: Prediction, budget: int, reference: float, direction: Direction
) -> float | None:
    """E[max(0, reference - final)] in the loss view at the budget, relative to |reference|;
    None when the forecast has no finite value there. The ranking (forecaster/ranking.py)
    prices runs with the same figure."""
    best_loss = float(to_loss(reference, direction))
    finals = to_loss(prediction.samples([budget])[:, 0], direction)
    finals = finals[np.isfinite(finals)]
    if not len(finals):
        return None
    gain = float(np.maximum(best_loss - finals, 0.0).mean())
    return gain / max(abs(best_loss), 1e-12)


@dataclass(frozen=True)
class ExpectedGainPolicy:
    """Stops a run whose expected improvement over the incumbent, relative to it, per fraction
    of the budget left, is below min_gain_rate. Part of the `forecast` policy (its
    `min_gain_rate` setting), which adds the warm-up and the hysteresis. UNCERTAIN (continue)
    when the forecast's 90% interval spans the incumbent by more than uncertain_width times the
    run's observed range on both sides (0: off)."""

    name: ClassVar[str] = "expected_gain"
    min_gain_rate: float = 0.01
    uncertain_width: float = UNCERTAIN_WIDTH

    def __post_init__(self) -> None:
        check_non_negative("min_gain_rate", self.min_gain_rate)
        check_non_negative("uncertain_width", self.uncertain_width)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return bool(run.curve.max_step) and run.remaining_steps > 0

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve, budget = run.curve, run.curve.max_step
        incumbent, against, reason = study.incumbent, "the incumbent", Reason.UNPROMISING
        if incumbent is None:  # nothing to beat: price the rest against the run's own best
            held = decay_held(run)  # as CONVERGED: never before a planned decay
            if held is not None:
                return too_early(replace(held, policy=self.name), run)
            finite = curve.values[np.isfinite(curve.values)]
            if len(finite):
                best = finite.min() if curve.direction is Direction.MIN else finite.max()
                incumbent, against, reason = float(best), "its own best", Reason.CONVERGED
        if incumbent is None or prediction is None or not budget or run.remaining_steps <= 0:
            said = "no incumbent or forecast to price by."
            return too_early(continue_promising(run, self.name, said), run)
        relative = expected_gain(prediction, budget, incumbent, curve.direction)
        if relative is None:
            said = "no finite forecast to price by."
            return too_early(continue_promising(run, self.name, said), run)
        left = run.remaining_steps / budget
        rate = relative / left
        # In the decision's probabilities, capped at 1 as every entry there (the explanation
        # says the full figures).
        probs = {"expected_gain": min(relative, 1.0), "gain_rate": min(rate, 1.0)}
        said = (
            f"expected gain over {against} {incumbent:.4g} is {relative:.3%} for the "
            f"{run.remaining_steps} steps left ({left:.0%} of the budget): {rate:.3%} per budget"
        )
        unsure = too_uncertain(run, prediction, incumbent, self.uncertain_width, self.name, against)
        if unsure is not None:  # inside the warm-up, WARMUP says more
            return too_early(replace(unsure, probabilities=probs), run)
        if rate < self.min_gain_rate:
            return stop(run, self.name, reason, f"{said} < {self.min_gain_rate:.3%}.", probs)
        going_on = continue_promising(run, self.name, f"{said} >= {self.min_gain_rate:.3%}.", probs)
        return too_early(going_on, run)
