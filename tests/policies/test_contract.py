"""The contract every registered policy meets, on runs made here: WARMUP on tiny curves, an
honest needs_forecast, and the same Decision for the same inputs (policies are pure).

It runs over `policies.available()`: a new policy is checked by registering it. The one check
that predates this file (pure and CONTINUE on a tiny curve) is in test_policies.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from forecaster import policies
from forecaster.curves import Curve, Direction
from forecaster.models.power_law import PowerLawForecaster
from forecaster.models.prediction import Prediction
from forecaster.policies import Action, Decision, Reason, RunView, StudyContext
from forecaster.policies.base import Peers

NAMES = policies.available()
REQUIRED = {"threshold": {"threshold": 4.0}}  # settings without a default
BUDGET = 1000


def create(name: str) -> policies.StoppingPolicy:
    return policies.create(name, REQUIRED.get(name))


def loss_curve(n: int, a: float = 2.0, seed: int = 0) -> np.ndarray:
    s = np.arange(1, n + 1)
    return a + 3.0 * (s / 10.0) ** -0.5 + np.random.default_rng(seed).normal(0, 0.002, n)


def run_and_study(
    values,
    direction=Direction.MIN,
    target: float | None = 2.5,
    max_step: int | None = BUDGET,
    incumbent: float | None = None,
    peers: tuple[Curve, ...] = (),
    votes: int = 0,
) -> tuple[RunView, StudyContext]:
    """A run (values in the loss view, turned to the direction) and its study."""
    sign = direction.sign
    values = np.asarray(values, dtype=float) * sign
    steps = np.arange(1, len(values) + 1)
    target = None if target is None else target * sign
    incumbent = None if incumbent is None else incumbent * sign
    curve = Curve(steps, values, direction, max_step=max_step, target=target)
    study = StudyContext("s", direction, max_step, target, incumbent, Peers.of(list(peers)))
    return RunView("s", "r", curve, votes), study


def peers(n: int = 300, direction=Direction.MIN) -> tuple[Curve, ...]:
    out = []
    for i, a in enumerate((1.0, 1.5, 2.5, 3.0)):
        v = loss_curve(n, a, seed=i) * direction.sign
        out.append(Curve(np.arange(1, n + 1), v, direction, max_step=BUDGET))
    return tuple(out)


# name -> () -> (run, study): every reason some policy gives, in both directions.
SCENARIOS: dict[str, Callable[[], tuple[RunView, StudyContext]]] = {
    "one point": lambda: run_and_study([3.0]),
    "two points": lambda: run_and_study([3.0, 2.9]),
    "promising": lambda: run_and_study(loss_curve(60)),
    "promising, max": lambda: run_and_study(loss_curve(60), Direction.MAX),
    "target unreachable": lambda: run_and_study(loss_curve(60), target=1.0),
    "target reached": lambda: run_and_study(loss_curve(60), target=3.5),
    "no target": lambda: run_and_study(loss_curve(60), target=None),
    "no budget": lambda: run_and_study(loss_curve(60), max_step=None),
    "at the budget": lambda: run_and_study(loss_curve(60), max_step=60),
    "nan last": lambda: run_and_study([*loss_curve(10), math.nan]),
    "inf last, max": lambda: run_and_study([*loss_curve(10), math.inf], Direction.MAX),
    "exploded": lambda: run_and_study([*loss_curve(10), 500.0]),
    "flat": lambda: run_and_study(np.full(200, 2.6), target=None),
    "behind its peers": lambda: run_and_study(
        loss_curve(150, 2.8), target=None, incumbent=1.2, peers=peers()
    ),
    "ahead of its peers, max": lambda: run_and_study(
        loss_curve(150, 0.5),
        Direction.MAX,
        target=None,
        incumbent=1.2,
        peers=peers(direction=Direction.MAX),
    ),  # fmt: skip
    # a flat, noisy run level with the incumbent: its forecast spans the incumbent widely
    "too wide to judge": lambda: run_and_study(
        2.6 + np.random.default_rng(0).normal(0, 0.1, 120), target=None, incumbent=2.6
    ),
    "second stop vote": lambda: run_and_study(
        loss_curve(150, 2.8), target=None, incumbent=1.2, peers=peers(), votes=2
    ),
}


def prediction_of(run: RunView) -> Prediction:
    return PowerLawForecaster().fit(run.curve)


def assert_same_decision(a: Decision, b: Decision) -> None:
    """Equal in every field (probabilities compared with NaN equal to NaN)."""
    assert (a.action, a.reason, a.explanation) == (b.action, b.reason, b.explanation)
    assert (a.expected_saved_steps, a.at_step, a.policy, a.votes) == (
        b.expected_saved_steps,
        b.at_step,
        b.policy,
        b.votes,
    )
    fa, fb = a.forecast_final, b.forecast_final
    assert fa == fb or (fa is not None and fb is not None and math.isnan(fa) and math.isnan(fb))
    assert a.probabilities.keys() == b.probabilities.keys()
    keys = sorted(a.probabilities)
    assert np.array_equal(
        [a.probabilities[k] for k in keys], [b.probabilities[k] for k in keys], equal_nan=True
    )


def test_the_scenarios_cover_every_reason():
    given = set()
    for name in NAMES:
        policy = create(name)
        for make in SCENARIOS.values():
            run, study = make()
            given.add(policy.decide(run, prediction_of(run), study).reason)
    # MANUAL is a person's answer (StopRun), never a policy's.
    assert given == set(Reason) - {Reason.MANUAL}


# -- WARMUP on tiny curves ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("direction", list(Direction), ids=lambda d: d.value)
@pytest.mark.parametrize("target", [2.5, None], ids=["target", "no target"])
def test_contract_tiny_curves_warm_up(name, n, direction, target):
    # One or two finite points are never PROMISING: a policy with no reason to stop says WARMUP.
    # A stop is a rule's, and only a rule with no grace period may fire this early (threshold
    # at its default grace of 0 stops a run that starts on the wrong side of its threshold).
    policy = create(name)
    run, study = run_and_study([3.0, 2.9][:n], direction, target=target)
    for prediction in (None, prediction_of(run)):
        d = policy.decide(run, prediction, study)
        assert d.at_step == run.curve.last_step and d.explanation
        if d.action is Action.STOP:
            assert name == "threshold" and not any(policy.grace_settings().values())
            continue
        assert (d.action, d.reason) == (Action.CONTINUE, Reason.WARMUP), d.explanation
        assert d.expected_saved_steps == 0


# -- needs_forecast is honest ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_contract_needs_forecast_is_honest(name, scenario):
    # False means the forecast is not read: the same Decision without one.
    policy = create(name)
    run, study = SCENARIOS[scenario]()
    needs = policy.needs_forecast(run, study)
    assert isinstance(needs, bool) and policy.needs_forecast(run, study) is needs
    if not needs:
        assert_same_decision(
            policy.decide(run, None, study), policy.decide(run, prediction_of(run), study)
        )


def test_some_policies_need_a_forecast_somewhere():
    # Else the honesty check above would have nothing to bite on.
    needing = {
        name
        for name in NAMES
        for make in SCENARIOS.values()
        if create(name).needs_forecast(*make())
    }
    assert {"default", "forecast", "target"} <= needing


# -- same inputs, same Decision ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_contract_same_inputs_same_decision(name, scenario):
    policy = create(name)
    run, study = SCENARIOS[scenario]()
    prediction = prediction_of(run)
    first = policy.decide(run, prediction, study)
    assert isinstance(first, Decision) and first.explanation
    assert isinstance(first.action, Action) and isinstance(first.reason, Reason)
    assert first.is_stop is (first.action is Action.STOP)
    assert first.is_stop or first.expected_saved_steps == 0
    assert all(0.0 <= p <= 1.0 for p in first.probabilities.values())
    # Another run in between leaves no trace: no memory between calls.
    other_run, other_study = SCENARIOS["behind its peers"]()
    policy.decide(other_run, prediction_of(other_run), other_study)
    assert_same_decision(first, policy.decide(run, prediction, study))
    # Equal inputs built afresh, and a policy built afresh: the same decision.
    run2, study2 = SCENARIOS[scenario]()
    assert_same_decision(first, create(name).decide(run2, prediction_of(run2), study2))
