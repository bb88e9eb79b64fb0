"""The `forecast` policy, the service default: every reason, from the run's forecast and study.

Order of the checks: BUDGET_EXHAUSTED, DIVERGED and TARGET_REACHED stop at once; then, past
the warm-up (min_points and the grace period), a forecast whose interval is too wide to decide
on answers UNCERTAIN (continue, no stop vote); else the forecast-based verdicts
TARGET_UNREACHABLE, UNPROMISING and CONVERGED each need `hysteresis` consecutive forecasts
voting stop, so that one unlucky fit cannot end a run. The votes come in with the RunView
(the engine keeps them in the store), so the policy stays pure. The defaults are the ones the
replay benchmark chose (docs/benchmarks.md, sections replay and calibration).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

from forecaster.curves import Direction
from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction
from forecaster.policies.base import (
    UNCERTAIN_WIDTH,
    Action,
    Decision,
    Reason,
    RunView,
    StudyContext,
    check_count,
    check_fraction,
    check_non_negative,
    check_probability,
    grace_step,
    too_uncertain,
    warmup,
)
from forecaster.policies.budget import BudgetPolicy
from forecaster.policies.converged import ConvergedPolicy
from forecaster.policies.diverged import DivergedPolicy
from forecaster.policies.expected_gain import ExpectedGainPolicy
from forecaster.policies.not_learning import NotLearningPolicy
from forecaster.policies.target import TargetPolicy
from forecaster.policies.unpromising import UnpromisingPolicy

# TARGET_UNREACHABLE's margin (in the run's observed range) and the progress it waits for:
# chosen leave-one-task-out on the replay's target sources (docs/benchmarks.md, section
# replay_freeze; benchmarks/replay_freeze.py).
TARGET_MARGIN = 0.25
TARGET_MIN_FRACTION = 0.0
# CONVERGED's progress floor, chosen leave-one-source-out on the single-run replay (same
# section).
CONVERGED_MIN_FRACTION = 0.0


@dataclass(frozen=True)
class ForecastPolicy:
    """Stop/continue from the run's predictive distribution.

    Args:
        epsilon: TARGET_UNREACHABLE when P(reach the target by the budget) < epsilon;
            UNPROMISING when P(the value at the budget beats the incumbent) < epsilon.
        delta: CONVERGED when P(a gain over the run's best of more than delta, relative)
            < converged_epsilon. 0 (the default) turns CONVERGED off: on the LLM sources of
            the replay, runs stopped as converged gave up 1-4% of their final loss (the late
            drop of an LR decay); 0.002 is a good value where curves flatten for good.
        converged_epsilon: the confidence of the CONVERGED verdict.
        converged_min_fraction: no CONVERGED verdict before this fraction of the budget (see
            ConvergedPolicy.min_fraction).
        min_points: no forecast-based verdict before the run has this many points.
        grace_steps: nor before this step...
        grace_fraction: ...nor before this fraction of the run's budget.
        hysteresis: consecutive forecasts that must vote stop before a forecast-based STOP.
        min_gain_rate: the cost-aware check (see ExpectedGainPolicy): UNPROMISING when the
            expected improvement over the incumbent, relative to it, per fraction of the budget
            left is below this (0.01: 1% per budget of compute). 0 (the default) leaves it off.
        flat_fraction: NOT_LEARNING from this fraction of the budget on, when the run's level
            has not moved from where it started and no incumbent exists (see
            NotLearningPolicy). 0 (the default) turns it off: on the replay corpus, 0.2 cut
            downstream evaluations of LLMs that sit at chance level for 40% of training, then
            rise (colpret: regret 1.3%, top-1 kept 0.85). 0.2 suits sweeps of one model whose
            metric moves from the first evaluations (the sequential lr sweep of
            tests/policies/test_not_learning.py saves 53% of its steps with it, 40% without).
        explosion_factor: DIVERGED when the loss's smoothed level is worse than its best level by
            this many times its scale, beyond its noise (see DivergedPolicy); 0 keeps only the
            NaN/inf and blow-up rules.
        target_margin: TARGET_UNREACHABLE also needs the forecast's calibrated optimistic
            bound to miss the target by more than this many times the run's observed range
            (see TargetPolicy.margin).
        target_min_fraction: no TARGET_UNREACHABLE before this fraction of the budget.
        pause: answer PAUSE (reason UNPROMISING) where an UNPROMISING verdict would STOP:
            the run is frozen, not killed, and a scheduler resumes it when the study's
            ranking (RankRuns) puts it first. Off by default: a plugin that cannot pause stops.
        uncertain_width: UNCERTAIN (continue, no stop vote) when the forecast's 90% interval
            of the value at the budget spans the incumbent (or, with none, the target) by more
            than this many times the run's observed range on both sides: too wide to decide
            anything on its median. 0 turns it off.
        incumbent_confidence: while a run is still running, the final value it offers the
            other runs as the incumbent is one it reaches with this probability (0.5: its
            median forecast). Higher is more careful: an optimistic early forecast of one run
            should not cut the others.
    """

    name: ClassVar[str] = "forecast"
    epsilon: float = 0.05
    delta: float = 0.0
    converged_epsilon: float = 0.05
    converged_min_fraction: float = CONVERGED_MIN_FRACTION
    min_points: int = 5
    grace_steps: int = 0
    grace_fraction: float = 0.1
    hysteresis: int = 3
    explosion_factor: float = 3.0
    min_gain_rate: float = 0.0
    flat_fraction: float = 0.0
    incumbent_confidence: float = 0.97
    pause: bool = False
    target_margin: float = TARGET_MARGIN
    target_min_fraction: float = TARGET_MIN_FRACTION
    uncertain_width: float = UNCERTAIN_WIDTH
    _hard: tuple[BudgetPolicy | DivergedPolicy | NotLearningPolicy, ...] = field(
        init=False, repr=False, compare=False
    )
    _checks: tuple[TargetPolicy | UnpromisingPolicy | ConvergedPolicy | ExpectedGainPolicy, ...] = (
        field(init=False, repr=False, compare=False)
    )

    def __post_init__(self) -> None:
        check_probability("epsilon", self.epsilon)
        check_probability("converged_epsilon", self.converged_epsilon)
        check_non_negative("delta", self.delta)
        check_count("min_points", self.min_points)
        check_count("grace_steps", self.grace_steps)
        check_fraction("grace_fraction", self.grace_fraction)
        check_count("hysteresis", self.hysteresis, minimum=1)
        check_probability("incumbent_confidence", self.incumbent_confidence)
        check_non_negative("target_margin", self.target_margin)
        check_fraction("target_min_fraction", self.target_min_fraction)
        check_fraction("converged_min_fraction", self.converged_min_fraction)
        if not isinstance(self.pause, bool):
            raise InvalidArgumentError(
                f"policy setting pause must be true or false; got {self.pause!r}."
            )
        check_non_negative("uncertain_width", self.uncertain_width)
        hard = (
            BudgetPolicy(),
            DivergedPolicy(explosion_factor=self.explosion_factor),
            NotLearningPolicy(after_fraction=self.flat_fraction),
        )
        checks: list[TargetPolicy | UnpromisingPolicy | ConvergedPolicy | ExpectedGainPolicy] = [
            # the forecast policy judges UNCERTAIN itself, once, over every check
            TargetPolicy(
                epsilon=self.epsilon,
                min_points=0,
                grace_steps=0,
                uncertain_width=0,
                margin=self.target_margin,
                min_fraction=self.target_min_fraction,
            ),
            UnpromisingPolicy(epsilon=self.epsilon, uncertain_width=0),
        ]
        check_non_negative("min_gain_rate", self.min_gain_rate)
        if self.min_gain_rate > 0:
            checks.append(ExpectedGainPolicy(min_gain_rate=self.min_gain_rate, uncertain_width=0))
        if self.delta > 0:
            checks.append(
                ConvergedPolicy(
                    delta=self.delta,
                    epsilon=self.converged_epsilon,
                    min_fraction=self.converged_min_fraction,
                )
            )
        object.__setattr__(self, "_hard", hard)
        object.__setattr__(self, "_checks", tuple(checks))

    def _warming_up(self, run: RunView) -> Decision | None:
        grace = grace_step(run, self.grace_steps, self.grace_fraction)
        n, last = len(run.curve), run.curve.last_step
        if n < max(self.min_points, 1) or last < grace:
            return warmup(
                run,
                self.name,
                f"{n} points up to step {last}: too early to judge (needs {self.min_points} "
                f"points and step >= {grace}).",
            )
        return None

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        curve = run.curve
        if not len(curve) or not math.isfinite(curve.last_value) or run.remaining_steps <= 0:
            return False
        return self._warming_up(run) is None

    def grace_settings(self) -> Mapping[str, float]:
        return {"grace_steps": self.grace_steps}

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        for policy in self._hard:
            d = policy.decide(run, prediction, study)
            if d.is_stop:
                return replace(d, policy=self.name)
        target = self._checks[0].decide(run, prediction, study)
        if target.reason is Reason.TARGET_REACHED:
            return replace(target, policy=self.name)
        held = self._warming_up(run)
        if held is not None:
            return held
        budget = run.curve.max_step
        final = None
        if prediction is not None and budget:
            c = self.incumbent_confidence
            level = c if run.curve.direction is Direction.MIN else 1.0 - c
            final = float(prediction.quantiles((level,), [budget])[0, 0])
            final = final if math.isfinite(final) else None
        probs: dict[str, float] = {}
        vote: Decision | None = None
        said = []
        for check in self._checks:
            d = target if check is self._checks[0] else check.decide(run, prediction, study)
            probs.update(d.probabilities)
            if d.probabilities or isinstance(check, UnpromisingPolicy | ExpectedGainPolicy):
                said.append(d.explanation.rstrip("."))
            if d.is_stop and vote is None:
                vote = d
        against = "the incumbent" if study.incumbent is not None else "the target"
        reference = study.incumbent if study.incumbent is not None else run.curve.target
        unsure = too_uncertain(run, prediction, reference, self.uncertain_width, self.name, against)
        if unsure is not None:
            return replace(unsure, probabilities=probs, forecast_final=final)
        if vote is None:
            text = "; ".join(said) or "no forecast to judge by"
            return Decision(
                action=Action.CONTINUE,
                reason=Reason.PROMISING,
                explanation=f"{text}.",
                probabilities=probs,
                at_step=run.curve.last_step,
                policy=self.name,
                forecast_final=final,
            )
        votes = run.stop_votes + 1
        if votes >= self.hysteresis:
            paused = self.pause and vote.reason is Reason.UNPROMISING
            return replace(
                vote,
                action=Action.PAUSE if paused else vote.action,
                probabilities=probs,
                policy=self.name,
                votes=votes,
                forecast_final=final,
            )
        return Decision(
            action=Action.CONTINUE,
            reason=Reason.PROMISING,
            explanation=(
                f"stop vote {votes} of {self.hysteresis} ({vote.reason.value}): {vote.explanation}"
            ),
            probabilities=probs,
            at_step=run.curve.last_step,
            policy=self.name,
            votes=votes,
            forecast_final=final,
        )
