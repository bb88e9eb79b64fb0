"""The StoppingPolicy protocol, the Decision it returns, and the registry of policies.

Policies are pure: no I/O, no clock, no memory between calls, so every replica decides the same
and a replay reproduces production. What a policy needs to remember (the stop votes behind
hysteresis) comes in with the RunView, and the engine keeps it in the store. The default is
CONTINUE: too little data gives CONTINUE/WARMUP, and a policy that raises never stops a run
(the engine logs and continues).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from forecaster.curves import Curve, Direction, to_loss
from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction


class Action(enum.Enum):
    """CONTINUE, STOP, or PAUSE: stop for now, keeping the run's state, so a scheduler can
    resume it when the study's ranking (forecaster/ranking.py) says it deserves compute."""

    CONTINUE = "continue"
    STOP = "stop"
    PAUSE = "pause"


class Reason(enum.Enum):
    """Why a decision was made (DESIGN.md), plus PROMISING: no reason to stop, and MANUAL:
    a person stopped the run (never a policy's answer; the engine gives it after StopRun)."""

    WARMUP = "warmup"
    DIVERGED = "diverged"
    TARGET_UNREACHABLE = "target_unreachable"
    UNPROMISING = "unpromising"
    CONVERGED = "converged"
    TARGET_REACHED = "target_reached"
    BUDGET_EXHAUSTED = "budget_exhausted"
    PROMISING = "promising"
    MANUAL = "manual"
    NOT_LEARNING = "not_learning"
    # Continue: the forecast's interval is too wide to decide on (see `too_uncertain`).
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Decision:
    """Stop or continue, why, and the numbers behind it."""

    action: Action
    reason: Reason
    explanation: str  # one sentence with numbers: "P(reach 0.41 by 10000) = 0.03 < 0.05"
    probabilities: Mapping[str, float] = field(default_factory=dict)
    expected_saved_steps: int = 0
    at_step: int = -1
    policy: str = ""
    # Consecutive stop votes including this decision's (hysteresis); 0 when it voted continue.
    votes: int = 0
    # The forecast median at the budget, in the study's direction: other runs' incumbent.
    forecast_final: float | None = None

    def __post_init__(self) -> None:
        if not self.explanation:
            raise ValueError("a Decision needs an explanation")

    @property
    def is_stop(self) -> bool:
        return self.action is Action.STOP

    @property
    def is_pause(self) -> bool:
        return self.action is Action.PAUSE


@dataclass(frozen=True)
class StudyContext:
    """What a policy may know about the study a run belongs to."""

    name: str
    direction: Direction
    max_step: int | None = None
    target: float | None = None
    incumbent: float | None = None  # best final value of the study's other runs, when known
    peers: Peers | None = None  # the other runs' curves, for the rules that compare at a step


class Peers:
    """The curves of a study's other runs, read only when a policy asks for them."""

    def __init__(self, load: Callable[[], Sequence[Curve]]) -> None:
        self._load = load

    @classmethod
    def of(cls, curves: Sequence[Curve]) -> Peers:
        return cls(lambda: curves)

    @cached_property
    def curves(self) -> Sequence[Curve]:
        return tuple(c for c in self._load() if len(c))

    def values_at(self, step: int, statistic: str = "last") -> np.ndarray:
        """Each peer that has reached step: its value there ("last"), its best so far ("best")
        or its running mean ("mean"), in the loss view. Peers short of step are left out."""
        out = []
        for c in self.curves:
            if c.last_step < step:
                continue
            upto = int(np.searchsorted(c.steps, step, side="right"))
            loss = to_loss(c.values[:upto], c.direction)
            out.append(_statistic(loss, statistic))
        return np.asarray(out, dtype=np.float64)


def _statistic(loss: np.ndarray, statistic: str) -> float:
    finite = loss[np.isfinite(loss)]
    if statistic == "last":
        return float(loss[-1]) if len(loss) else math.nan
    if not len(finite):
        return math.inf  # a run with no finite value is the worst there is
    return float(finite.min() if statistic == "best" else finite.mean())


def run_statistic(curve: Curve, statistic: str) -> float:
    """The same statistic as Peers.values_at, for the run being judged (loss view)."""
    return _statistic(to_loss(curve.values, curve.direction), statistic)


def best_final(direction: Direction, finals: Sequence[float | None]) -> float | None:
    """The best of the other runs' final values (observed or forecast); None when none is."""
    known = [f for f in finals if f is not None and math.isfinite(f)]
    if not known:
        return None
    return min(known) if direction is Direction.MIN else max(known)


@dataclass(frozen=True)
class RunView:
    """What a policy may know about one run: its curve (with budget and target) so far, and the
    consecutive stop votes cast on its earlier forecasts (hysteresis; kept by the engine)."""

    study: str
    name: str
    curve: Curve
    stop_votes: int = 0

    @property
    def remaining_steps(self) -> int:
        return max((self.curve.max_step or 0) - self.curve.last_step, 0)


@runtime_checkable
class StoppingPolicy(Protocol):
    """Decides stop/continue for one run. Pure: same inputs, same Decision."""

    name: ClassVar[str]

    def needs_forecast(self, run: RunView, study: StudyContext) -> bool:
        """Whether decide() would read a forecast now; the engine fits one only then."""
        ...

    def grace_settings(self) -> Mapping[str, float]:
        """The settings that hold back every verdict until a step, by name, as set (e.g.
        {"grace_steps": 500}); the engine refuses a study whose budget ends before one."""
        ...

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        """Returns the decision; CONTINUE/WARMUP when there is too little to judge."""
        ...


def stop(
    run: RunView,
    policy: str,
    reason: Reason,
    explanation: str,
    probabilities: Mapping[str, float] | None = None,
) -> Decision:
    """A STOP that saves the rest of the run's budget."""
    return Decision(
        action=Action.STOP,
        reason=reason,
        explanation=explanation,
        probabilities=dict(probabilities or {}),
        expected_saved_steps=run.remaining_steps,
        at_step=run.curve.last_step,
        policy=policy,
    )


def warmup(run: RunView, policy: str, explanation: str) -> Decision:
    return Decision(
        action=Action.CONTINUE,
        reason=Reason.WARMUP,
        explanation=explanation,
        at_step=run.curve.last_step,
        policy=policy,
    )


# Fewer points than this say too little to call a run promising: a rule that judges from the
# first point (budget, divergence, a threshold) answers WARMUP when it has no reason to stop a
# run this short; a stop it has a reason for (a NaN, the budget reached) still stands.
MIN_JUDGED_POINTS = 3


def too_early(decision: Decision, run: RunView) -> Decision:
    """WARMUP in place of a PROMISING (or an UNCERTAIN) that a curve of fewer than
    MIN_JUDGED_POINTS points cannot back; the probabilities it rests on are kept."""
    n = len(run.curve)
    if decision.reason not in (Reason.PROMISING, Reason.UNCERTAIN) or n >= MIN_JUDGED_POINTS:
        return decision
    said = decision.explanation.rstrip(".")
    return replace(
        decision,
        reason=Reason.WARMUP,
        explanation=f"{said}; {n} of the {MIN_JUDGED_POINTS} points needed to judge so far.",
    )


def continue_promising(
    run: RunView, policy: str, explanation: str, probabilities: Mapping[str, float] | None = None
) -> Decision:
    return Decision(
        action=Action.CONTINUE,
        reason=Reason.PROMISING,
        explanation=explanation,
        probabilities=dict(probabilities or {}),
        at_step=run.curve.last_step,
        policy=policy,
    )


# The forecast-reading policies' `uncertain_width` by default: CONTINUE/UNCERTAIN when the 90%
# interval of the value at the budget reaches past the reference value (the incumbent or the
# target) on both sides by more than this many times the run's own unit (the observed 5-95%
# width of its curve, models/calibration.unit_of): scale-free, so it means the same for a
# loss and for an accuracy near 1. Chosen leave-one-source-out on the
# replay (docs/benchmarks.md, section calibration); 0 turns UNCERTAIN off.
UNCERTAIN_WIDTH = 1.0


def too_uncertain(
    run: RunView,
    prediction: Prediction | None,
    reference: float | None,
    width: float,
    policy: str,
    against: str,
) -> Decision | None:
    """CONTINUE/UNCERTAIN when the forecast's 90% interval of the value at the budget spans
    reference on both sides by more than width x the run's unit (too wide to decide on its
    median), else None. against names the reference in the explanation ("the incumbent")."""
    from forecaster.models.calibration import unit_of

    budget = run.curve.max_step
    if width <= 0 or prediction is None or reference is None or not budget:
        return None
    lo, hi = (float(v) for v in prediction.quantiles((0.05, 0.95), [budget])[0])
    margin = width * unit_of(run.curve)[0]
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(margin)) or margin <= 0:
        return None
    if lo < reference - margin and hi > reference + margin:
        return Decision(
            action=Action.CONTINUE,
            reason=Reason.UNCERTAIN,
            explanation=(
                f"the 90% interval [{lo:.4g}, {hi:.4g}] of the value at step {budget} spans "
                f"{against} {reference:.4g} by more than {margin:.3g} ({width:g}x the run's "
                "observed range) on both sides: too wide to decide."
            ),
            at_step=run.curve.last_step,
            policy=policy,
        )
    return None


def check_probability(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise InvalidArgumentError(f"policy setting {name} must be in (0, 1); got {value}.")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    if value < 0:
        raise InvalidArgumentError(f"policy setting {name} must be >= 0; got {value}.")
    return value


def check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidArgumentError(f"policy setting {name} must be a whole number; got {value!r}.")
    if value < minimum:
        raise InvalidArgumentError(f"policy setting {name} must be >= {minimum}; got {value}.")
    return int(value)


def check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise InvalidArgumentError(f"policy setting {name} must be in [0, 1); got {value}.")
    return float(value)


def grace_step(run: RunView, grace_steps: int, grace_fraction: float) -> int:
    """The first step a verdict may be given at: max(grace_steps, grace_fraction x budget)."""
    return max(int(grace_steps), int(math.ceil(grace_fraction * (run.curve.max_step or 0))))


# name -> "module:factory"; factories take the policy settings as keyword arguments.
_REGISTRY: dict[str, str] = {
    "forecast": "forecaster.policies.forecast:ForecastPolicy",
    "budget": "forecaster.policies.budget:BudgetPolicy",
    "diverged": "forecaster.policies.diverged:DivergedPolicy",
    "not_learning": "forecaster.policies.not_learning:NotLearningPolicy",
    "expected_gain": "forecaster.policies.expected_gain:ExpectedGainPolicy",
    "target": "forecaster.policies.target:TargetPolicy",
    "median": "forecaster.policies.median:MedianStoppingPolicy",
    "percentile": "forecaster.policies.percentile:PercentilePolicy",
    "asha": "forecaster.policies.asha:AshaPolicy",
    "threshold": "forecaster.policies.threshold:ThresholdPolicy",
    "patience": "forecaster.policies.patience:PatiencePolicy",
}
DEFAULT = "default"
# alias -> registry name; resolved before a study is stored, so a spec names its policy once.
_ALIASES: dict[str, str] = {DEFAULT: "forecast"}


def available() -> list[str]:
    return sorted({*_REGISTRY, *_ALIASES})


def check_name(name: str) -> str:
    """Returns the canonical name ("" and "default" -> "forecast"); InvalidArgumentError for
    unknown names."""
    name = name or DEFAULT
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise InvalidArgumentError(
            f"unknown policy {name!r}; choose one of {', '.join(available())}."
        )
    return name


def create(name: str, params: Mapping[str, Any] | None = None) -> StoppingPolicy:
    """Builds a policy from its settings; InvalidArgumentError names any bad setting. The name
    may be an alias ("default"); errors name it as given."""
    given = name or DEFAULT
    module, _, attr = _REGISTRY[check_name(name)].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    params = dict(params or {})
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidArgumentError(
            f"policy {given!r} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings are {', '.join(accepted) or 'none'}."
        )
    try:
        policy: StoppingPolicy = factory(**params)
    except TypeError as e:
        raise InvalidArgumentError(f"policy {given!r}: bad settings {params}: {e}") from None
    return policy
