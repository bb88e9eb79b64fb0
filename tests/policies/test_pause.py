"""The forecast policy's `pause` setting, and the ranking that prices the paused runs."""

from __future__ import annotations

from functools import partial

import numpy as np

from forecaster import policies, ranking
from forecaster.curves import Curve, Direction
from forecaster.models.power_law import PowerLawForecaster
from forecaster.policies import Action, Reason, RunView, StudyContext


def heading_for(final: float, n: int = 300, budget: int = 1000) -> Curve:
    steps = np.arange(1, n + 1)
    return Curve(steps, final + 2.0 * (steps / 10.0) ** -0.7, Direction.MIN, max_step=budget)


def decide(params, curve, incumbent=1.0):
    study = StudyContext("s", Direction.MIN, 1000, incumbent=incumbent)
    policy = policies.create("forecast", {"hysteresis": 1, **params})
    return policy.decide(RunView("s", "r", curve), PowerLawForecaster().fit(curve), study)


def test_pause_turns_only_the_unpromising_stop_into_a_pause():
    hopeless = heading_for(3.0)
    stopped, paused = decide({}, hopeless), decide({"pause": True}, hopeless)
    assert stopped.action is Action.STOP and stopped.reason is Reason.UNPROMISING
    assert paused.action is Action.PAUSE and paused.reason is Reason.UNPROMISING
    assert paused.is_pause and not paused.is_stop
    assert paused.expected_saved_steps == stopped.expected_saved_steps == 700
    nan = Curve(np.arange(1, 11), np.r_[np.ones(9), np.nan], Direction.MIN, max_step=1000)
    assert decide({"pause": True}, nan).action is Action.STOP  # a diverged run is not paused


def _candidate(name: str, final: float, n: int, incumbent: float | None) -> ranking.Candidate:
    """A run heading for `final`, n steps of its 1,000 run, as the ranking sees it."""
    curve = heading_for(final, n=n)
    return ranking.Candidate(
        name=name,
        decision=None,
        last_step=curve.last_step,
        budget=1000,
        best_value=float(curve.values.min()),
        prediction=PowerLawForecaster().fit(curve),
        incumbent=incumbent,
    )


def test_the_ranking_puts_the_run_whose_rest_buys_most_first():
    candidate = partial(_candidate, incumbent=1.0)

    runs = [candidate("hopeless", 3.0, 300), candidate("early", 0.8, 300)]
    ranked = ranking.rank([*runs, candidate("late", 0.8, 900)], Direction.MIN)
    assert [r.name for r in ranked] == ["late", "early", "hopeless"]
    late, early, hopeless = ranked
    # Both head for 0.8; "late" buys about the same gain with a seventh of the compute left:
    # the rate divides the gain by the fraction of the budget still to run.
    assert abs(late.gain_rate * 0.1 - late.expected_gain) < 1e-12
    assert abs(early.gain_rate * 0.7 - early.expected_gain) < 1e-12
    assert hopeless.expected_gain < 1e-3 < early.expected_gain


def test_finish_first_picks_the_best_forecast_that_the_budget_left_can_finish():
    candidate = partial(_candidate, incumbent=None)

    runs = [candidate("best", 1.0, 300), candidate("near", 1.5, 900), candidate("worse", 2.0, 800)]
    # 700 steps left finish any of them: the best forecast final goes first.
    assert ranking.finish_first(runs, Direction.MIN, 700).name == "best"
    # 250 left: "best" (700 to go) cannot finish; of those that can, the better forecast.
    assert ranking.finish_first(runs, Direction.MIN, 250).name == "near"
    assert ranking.finish_first(runs, Direction.MIN, 50) is None  # none fits
