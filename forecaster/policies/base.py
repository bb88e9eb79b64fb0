"""The StoppingPolicy protocol, the Decision it returns, and the registry of policies.

Policies are pure: no I/O, no clock, no memory between calls, so every replica decides the same
and a replay reproduces production. The default is CONTINUE: too little data gives
CONTINUE/WARMUP, and a policy that raises never stops a run (the engine logs and continues).
"""

from __future__ import annotations

import enum
import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from forecaster.curves import Curve, Direction
from forecaster.errors import InvalidArgumentError
from forecaster.models.prediction import Prediction


class Action(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


class Reason(enum.Enum):
    """Why a decision was made (DESIGN.md), plus PROMISING: no reason to stop."""

    WARMUP = "warmup"
    DIVERGED = "diverged"
    TARGET_UNREACHABLE = "target_unreachable"
    UNPROMISING = "unpromising"
    CONVERGED = "converged"
    TARGET_REACHED = "target_reached"
    BUDGET_EXHAUSTED = "budget_exhausted"
    PROMISING = "promising"


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

    def __post_init__(self) -> None:
        if not self.explanation:
            raise ValueError("a Decision needs an explanation")

    @property
    def is_stop(self) -> bool:
        return self.action is Action.STOP


@dataclass(frozen=True)
class StudyContext:
    """What a policy may know about the study a run belongs to."""

    name: str
    direction: Direction
    max_step: int | None = None
    target: float | None = None
    incumbent: float | None = None  # best final value of the study's other runs, when known


@dataclass(frozen=True)
class RunView:
    """What a policy may know about one run: its curve (with budget and target) so far."""

    study: str
    name: str
    curve: Curve

    @property
    def remaining_steps(self) -> int:
        return max((self.curve.max_step or 0) - self.curve.last_step, 0)


@runtime_checkable
class StoppingPolicy(Protocol):
    """Decides stop/continue for one run. Pure: same inputs, same Decision."""

    name: ClassVar[str]

    def decide(self, run: RunView, prediction: Prediction | None, study: StudyContext) -> Decision:
        """Returns the decision; CONTINUE/WARMUP when there is too little to judge."""
        ...


def continue_promising(
    run: RunView, policy: str, explanation: str, probabilities: Mapping[str, float] | None = None
) -> Decision:
    return Decision(
        Action.CONTINUE,
        Reason.PROMISING,
        explanation,
        dict(probabilities or {}),
        0,
        run.curve.last_step,
        policy,
    )


def check_probability(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise InvalidArgumentError(f"policy setting {name} must be in (0, 1); got {value}.")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    if value < 0:
        raise InvalidArgumentError(f"policy setting {name} must be >= 0; got {value}.")
    return value


# name -> "module:factory"; factories take the policy settings as keyword arguments.
_REGISTRY: dict[str, str] = {
    "default": "forecaster.policies.combined:default_policy",
    "budget": "forecaster.policies.budget:BudgetPolicy",
    "diverged": "forecaster.policies.diverged:DivergedPolicy",
    "target": "forecaster.policies.target:TargetPolicy",
}
DEFAULT = "default"


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, params: Mapping[str, Any] | None = None) -> StoppingPolicy:
    """Builds a policy from its settings; InvalidArgumentError names any bad setting."""
    name = name or DEFAULT
    if name not in _REGISTRY:
        raise InvalidArgumentError(
            f"unknown policy {name!r}; choose one of {', '.join(available())}."
        )
    module, _, attr = _REGISTRY[name].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    params = dict(params or {})
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidArgumentError(
            f"policy {name!r} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings are {', '.join(accepted) or 'none'}."
        )
    try:
        policy: StoppingPolicy = factory(**params)
    except TypeError as e:
        raise InvalidArgumentError(f"policy {name!r}: bad settings {params}: {e}") from None
    return policy
