"""NOT_LEARNING: a run flat at its starting level is stopped without an incumbent; one that
learns, however slowly or noisily, is not."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster import policies
from forecaster.curves import Curve, Direction, Points
from forecaster.engine import Engine
from forecaster.policies import Reason, RunView, StudyContext
from forecaster.store import RunSpec, RunState, StudySpec
from forecaster.store.sqlite import SqliteStore

STUDY = StudyContext("s", Direction.MIN, 1000)


def judged(values, direction=Direction.MIN, budget=1000, policy="not_learning"):
    steps = np.arange(1, len(values) + 1)
    curve = Curve(steps, np.asarray(values, dtype=float), direction, max_step=budget)
    return policies.create(policy).decide(RunView("s", "r", curve), None, STUDY)


def test_an_accuracy_flat_at_chance_is_stopped_from_a_fifth_of_its_budget():
    rng = np.random.default_rng(0)
    chance = 0.1 + rng.normal(0, 0.01, 400)
    assert judged(chance[:150], Direction.MAX).reason is not Reason.NOT_LEARNING  # 15%: too soon
    d = judged(chance[:200], Direction.MAX)
    assert d.is_stop and d.reason is Reason.NOT_LEARNING
    assert "20% of the budget" in d.explanation and d.expected_saved_steps == 800


def test_a_loss_flat_at_its_initial_value_is_stopped():
    rng = np.random.default_rng(1)
    d = judged(np.log(10) * 3.0 ** rng.uniform(-0.2, 0.2, 300))
    assert d.is_stop and d.reason is Reason.NOT_LEARNING


@pytest.mark.parametrize("seed", range(20))
def test_a_run_that_learns_slowly_and_noisily_is_not_stopped(seed):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, 401)
    slow = 2.3 - 0.3 * (steps / 400.0) ** 2  # 2% better by step 200 of 1000, and accelerating
    noisy = slow * 3.0 ** rng.uniform(-0.05, 0.05, 400)
    assert judged(noisy).reason is not Reason.NOT_LEARNING


def test_a_run_without_a_budget_is_never_judged_flat():
    assert judged(np.full(300, 0.5), budget=0).reason is not Reason.NOT_LEARNING


def test_the_forecast_policy_stops_a_flat_run_when_asked_to_and_only_without_an_incumbent():
    curve = Curve(np.arange(1, 301), np.full(300, 0.5), max_step=1000)
    on = policies.create("forecast", {"flat_fraction": 0.2})
    assert on.decide(RunView("s", "r", curve), None, STUDY).reason is Reason.NOT_LEARNING
    with_incumbent = StudyContext("s", Direction.MIN, 1000, incumbent=0.4)
    assert on.decide(RunView("s", "r", curve), None, with_incumbent).reason is not (
        Reason.NOT_LEARNING
    )
    default = policies.create("forecast")
    assert default.decide(RunView("s", "r", curve), None, STUDY).reason is not Reason.NOT_LEARNING


def test_a_sequential_sweep_with_a_first_run_flat_at_chance_saves_40_percent(
    tmp_path, shipped_models
):
    """Six learning rates one after another, the first flat at chance level: as the issue's
    Lightning sweep, through the engine with the default policy."""
    engine = Engine(SqliteStore(tmp_path / "sweep.db"), models=shipped_models)
    study = StudySpec(
        "lr-sweep",
        "val_loss",
        Direction.MIN,
        1000,
        policy="forecast",
        policy_params={"flat_fraction": 0.2},
    )
    engine.create_study(study)
    rng = np.random.default_rng(5)
    steps = np.arange(10, 1001, 10)
    finals = {}
    used = 0
    for i, (floor, rate) in enumerate(
        [(None, 0), (0.9, 0.5), (0.6, 0.6), (1.4, 0.4), (0.7, 0.5), (1.1, 0.3)]
    ):
        if floor is None:  # too small an lr: flat at the chance-level loss
            values = np.log(10) + rng.normal(0, 0.01, len(steps))
        else:
            values = floor + 2.0 * (steps / 10.0) ** -rate + rng.normal(0, 0.005, len(steps))
        name = f"lr{i}"
        engine.start_run("lr-sweep", RunSpec(name))
        for lo in range(0, len(steps), 5):
            decision = engine.report(
                "lr-sweep", name, Points.of(steps[lo : lo + 5], values[lo : lo + 5])
            ).decision
            if decision.is_stop:
                break
        last = min(lo + 5, len(steps))
        used += steps[last - 1]
        finals[name] = float(values[-1])
        cut = decision.is_stop and decision.reason is not Reason.BUDGET_EXHAUSTED
        state = RunState.STOPPED if cut else RunState.FINISHED
        engine.finish_run("lr-sweep", name, state)
        if i == 0:
            assert decision.reason is Reason.NOT_LEARNING
    saved = 1 - used / (6 * 1000)
    best = min(finals, key=finals.__getitem__)
    assert saved >= 0.4, f"saved {saved:.0%} of the steps"
    kept = engine.get_run("lr-sweep", best)
    assert kept.state is RunState.FINISHED and kept.last_step == 1000
