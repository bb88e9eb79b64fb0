"""CONVERGED: what is left to gain over the rest of the budget is too small to pay for.

The idea of stopping once the forecast gain is negligible follows "When do CNNs stop
learning?" (the run is stopped and its result kept, unlike an unpromising run). Never while
the run's planned lr schedule still has a decay ahead (curves.decay_ahead): a flat loss in the
stable phase of a WSD schedule drops at its cool-down, which a forecast may not see coming.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from forecaster.curves import decay_ahead, to_loss
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_fraction,
    check_non_negative,
    check_probability,
    continue_promising,
    stop,
)


@dataclass(frozen=True)
class ConvergedPolicy:
    """Stops a run when P(it improves on its best so far by more than delta) < epsilon.

    Args:
        delta: the gain that matters, relative to the run's best value so far (0.002 = 0.2%).
        epsilon: the confidence: stop when the probability of such a gain is below it.
        min_fraction: no CONVERGED verdict before this fraction of the budget: a plateau early
            in a run is often a noisy one, or one a schedule the log does not tell ends (0:
            none).
    """

    name: ClassVar[str] = "converged"
    delta: float = 0.002
    epsilon: float = 0.05
    min_fraction: float = 0.0

    def __post_init__(self) -> None:
        check_non_negative("delta", self.delta)
        check_probability("epsilon", self.epsilon)
        check_fraction("min_fraction", self.min_fraction)

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        return bool(run.curve.max_step) and run.remaining_steps > 0 and not decay_ahead(run.curve)

    def grace_settings(self) -> Mapping[str, float]:
        return {}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        curve, budget = run.curve, run.curve.max_step
        best = curve.best_value()
        if prediction is None or not budget or best != best:
            return continue_promising(run, self.name, "no forecast or no budget to judge by.")
        held = decay_held(run)
        if held is not None:
            return held
        best_loss = float(to_loss(best, curve.direction))
        needed = float(to_loss(best_loss - self.delta * abs(best_loss), curve.direction))
        p = prediction.prob_better_than(needed, budget)
        probs = {"p_gain": p}
        said = (
            f"P(gain of more than {100 * self.delta:.3g}% on its best {best:.4g} by step "
            f"{budget}) = {p:.3f}"
        )
        progress = curve.last_step / budget
        if p < self.epsilon and progress < self.min_fraction:
            said = (
                f"{said} < {self.epsilon:g}, but {progress:.0%} of the budget run: too early to "
                f"call it converged (from {self.min_fraction:.0%})."
            )
            return continue_promising(run, self.name, said, probs)
        if p < self.epsilon:
            return stop(run, self.name, Reason.CONVERGED, f"{said} < {self.epsilon:g}.", probs)
        return continue_promising(run, self.name, f"{said} >= {self.epsilon:g}.", probs)


def decay_held(run: RunView) -> Decision | None:
    """CONTINUE while a planned lr decay is still ahead of the run; None otherwise."""
    ahead = decay_ahead(run.curve)
    if ahead is None:
        return None
    said = (
        f"a planned lr decay is still ahead (lr {ahead.lr_now:.3g} now, {ahead.lr_then:.3g} "
        f"by step {ahead.step}): not converged before it."
    )
    return continue_promising(run, "converged", said)
