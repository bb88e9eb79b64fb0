"""Policies: pure, WARMUP on tiny curves, each reason with its numbers; the registry."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from forecaster import policies
from forecaster.curves import Curve, Direction
from forecaster.errors import InvalidArgumentError
from forecaster.models.power_law import PowerLawForecaster
from forecaster.policies import Action, Reason, RunView, StudyContext

STUDY = StudyContext("s", Direction.MIN, max_step=1000, target=2.5)


def view(values, target=2.5, max_step=1000, direction=Direction.MIN):
    steps = np.arange(1, len(values) + 1)
    curve = Curve(
        steps, np.asarray(values, dtype=float), direction, max_step=max_step, target=target
    )
    return RunView("s", "r", curve), PowerLawForecaster().fit(curve) if len(values) else None


def good(n):
    return 2.0 + 3.0 * (np.arange(1, n + 1) / 10.0) ** -0.5


REQUIRED = {"threshold": {"threshold": 4.0}}


@pytest.mark.parametrize("name", policies.available())
def test_every_policy_is_pure_and_warms_up(name):
    policy = policies.create(name, REQUIRED.get(name))
    run, pred = view(good(60))
    assert policy.decide(run, pred, STUDY) == policy.decide(run, pred, STUDY)
    tiny, tiny_pred = view([3.0, 2.9])
    assert policy.decide(tiny, tiny_pred, STUDY).action is Action.CONTINUE


def test_default_policy_reasons():
    p = policies.create("default", {"grace_fraction": 0.0, "hysteresis": 1, "target_margin": 0})
    run, pred = view(good(60))
    assert p.decide(run, pred, STUDY).reason is Reason.PROMISING
    run, pred = view(good(60), target=1.0)
    d = p.decide(run, pred, STUDY)
    assert d.reason is Reason.TARGET_UNREACHABLE and d.is_stop
    assert d.probabilities["p_reach_target"] < 0.05 and d.expected_saved_steps == 940
    run, pred = view(good(60), target=3.5)
    assert p.decide(run, pred, STUDY).reason is Reason.TARGET_REACHED
    run, pred = view(list(good(10)) + [math.nan])
    d = p.decide(run, pred, STUDY)
    assert d.reason is Reason.DIVERGED and "nan" in d.explanation
    run, pred = view(list(good(10)) + [500.0])
    assert p.decide(run, pred, STUDY).reason is Reason.DIVERGED
    run, pred = view(good(60), max_step=60)
    assert p.decide(run, pred, STUDY).reason is Reason.BUDGET_EXHAUSTED
    run, pred = view(good(60), target=None)
    assert p.decide(run, pred, STUDY).action is Action.CONTINUE


def test_grace_and_min_points_hold_back_verdicts():
    p = policies.create("default", {"grace_steps": 100, "min_points": 3, "grace_fraction": 0})
    run, pred = view(good(60), target=1.0)
    d = p.decide(run, pred, STUDY)
    assert d.reason is Reason.WARMUP and "step >= 100" in d.explanation


@pytest.mark.parametrize("name", policies.available())
def test_every_policy_declares_its_grace_settings_by_their_names(name):
    policy = policies.create(name, REQUIRED.get(name))
    settings = dict(policy.grace_settings())
    assert set(settings) <= set(inspect.signature(type(policy)).parameters)
    assert all(getattr(policy, k) == v for k, v in settings.items())


def test_a_policy_that_raises_never_stops_a_run(tmp_path, shipped_models):
    from forecaster.curves import Points
    from forecaster.engine import Engine
    from forecaster.store import RunSpec, StudySpec
    from forecaster.store.sqlite import SqliteStore

    class Broken:
        name = "broken"

        def needs_forecast(self, run, study):
            return True

        def decide(self, run, prediction, study):
            raise RuntimeError("bug")

    engine = Engine(SqliteStore(tmp_path / "e.db"), models=shipped_models)
    engine.create_study(StudySpec("s", "loss", Direction.MIN))
    engine.start_run("s", RunSpec("r"))
    entry = engine._study("s")
    object.__setattr__(entry, "policy", Broken())
    d = engine.report("s", "r", Points.of([1, 2], [1.0, math.nan])).decision
    assert d.action is Action.CONTINUE and "failed" in d.explanation


@pytest.mark.parametrize(
    "params, word",
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": 1.0}, "epsilon"),
        ({"min_points": -1}, "min_points"),
        ({"explosion_factor": -2}, "explosion_factor"),
        ({"patience": 2}, "patience"),
        ({"hysteresis": 0}, "hysteresis"),
        ({"grace_fraction": 1.5}, "grace_fraction"),
        ({"converged_epsilon": 2}, "converged_epsilon"),
        ({"delta": -0.1}, "delta"),
    ],
)
def test_bad_settings_name_the_setting(params, word):
    with pytest.raises(InvalidArgumentError, match=word):
        policies.create("default", params)
    with pytest.raises(InvalidArgumentError, match="oracle"):
        policies.create("oracle")
