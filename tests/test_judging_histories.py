"""HistoryHolder(by_inputs=True): sets of completed runs that the study fits read alike share
one history (its fits and so its forecasts); sets they read differently do not."""

from __future__ import annotations

import numpy as np

from forecaster.curves import Curve
from forecaster.judging import HistoryHolder
from forecaster.models import StudyHistory
from forecaster.models.annealing_law import AnnealingLawForecaster
from tests.models.test_annealing_law import run

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def _no_lr(seed: int) -> Curve:
    """A completed run with no lr: the schedule laws' study fits leave it out."""
    steps = np.arange(1, 41)
    noise = np.random.default_rng(seed).normal(0, 0.01, len(steps))
    return Curve(steps, 1.0 + steps**-0.5 + noise, max_step=40)


def test_sets_the_fits_read_alike_share_a_history_and_its_forecasts() -> None:
    done = {"w1": run("wsd", 4000, seed=1)[0], "w2": run("cosine", 4000, seed=2)[0]}
    done |= {"x1": _no_lr(1), "x2": _no_lr(2)}
    holder = HistoryHolder("s", keep=8, by_inputs=True)

    def history(names: list[str]) -> StudyHistory:
        return holder.get([(n, done[n].last_step) for n in names], lambda: [done[n] for n in names])

    first = history(["w1", "w2", "x1"])
    assert history(["w1", "w2", "x2"]) is first  # differs in a run the fits leave out
    assert history(["w1", "x1"]) is not first  # differs in a run they read
    # The shared history forecasts a new run as a history of its own set would, to the bit.
    new = run("wsd", 4000, until=2000, seed=5)[0]
    own = StudyHistory((done["w1"], done["w2"], done["x2"]), "own")
    steps = [3000, 4000]
    law = AnnealingLawForecaster()
    np.testing.assert_array_equal(
        law.fit(new, first).quantiles(LEVELS, steps), law.fit(new, own).quantiles(LEVELS, steps)
    )
    assert first.fits.get("annealing_law", lambda: None) is not None  # fitted once, kept


def test_without_by_inputs_every_set_has_its_own_history() -> None:
    done = {"w1": run("wsd", 4000, seed=1)[0], "x1": _no_lr(1), "x2": _no_lr(2)}
    holder = HistoryHolder("s", keep=8)
    a = holder.get([("w1", 4000), ("x1", 40)], lambda: [done["w1"], done["x1"]])
    b = holder.get([("w1", 4000), ("x2", 40)], lambda: [done["w1"], done["x2"]])
    assert a is not b and a.key != b.key
