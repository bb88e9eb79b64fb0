"""The contract every registered forecaster meets, plus the power law's own accuracy.

The contract runs over `models.available()` (but "auto", which names one of them): the
parametric ones as the registry builds them, the learned ones both as the registry serves them
without a bank (the stand-in that falls back and says so) and from the bank of the
`trained_models` fixture. A new forecaster is checked by registering it, with no new test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from forecaster import models
from forecaster.curves import Curve, Direction, LrSchedule, ScheduleKind
from forecaster.models import Forecaster, StudyHistory, artifacts
from forecaster.models.artifacts import ModelBank
from forecaster.models.power_law import PowerLawForecaster

NAMES = [n for n in models.available() if n != models.AUTO]
LEARNED = [n for n in NAMES if models.is_learned(n)]
# The learned ones need the trained_models fixture, which trains for seconds (once a session).
SERVED = [pytest.param(n, marks=pytest.mark.slow) if models.is_learned(n) else n for n in NAMES]
LEVELS = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]


def power_law_curve(n=80, noise=0.01, direction=Direction.MIN, seed=0):
    s = np.arange(1, n + 1)
    v = 2.0 + 3.0 * (s / 10.0) ** -0.5 + np.random.default_rng(seed).normal(0, noise, n)
    return Curve(s, v * direction.sign, direction, max_step=1000)


UGLY = {
    "three points": Curve(np.array([1, 2, 3]), np.array([3.0, 2.0, 1.5])),
    "one point": Curve(np.array([5]), np.array([1.0])),
    "flat": Curve(np.arange(50), np.full(50, 0.7)),
    "noisy": Curve(np.arange(50), np.random.default_rng(1).normal(1.0, 0.5, 50)),
    "rise then fall": Curve(
        np.arange(60), np.concatenate([np.linspace(1, 3, 30), np.linspace(3, 0.5, 30)])
    ),
    "nan tail": Curve(np.arange(20), np.r_[np.linspace(3, 1, 15), [np.nan] * 5]),
    "all nan": Curve(np.arange(5), np.full(5, np.nan)),
    "step zero": Curve(np.arange(0, 30), 1.0 + 1.0 / (1.0 + np.arange(30))),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ugly", sorted(UGLY))
def test_ugly_curves_never_raise_and_say_so(name, ugly):
    check_ugly_curve(models.create(name), name, UGLY[ugly])


def check_ugly_curve(forecaster: Forecaster, name: str, curve: Curve) -> None:
    before = curve.values.copy()
    p = forecaster.fit(curve)
    q = p.quantiles([0.05, 0.5, 0.95], [100, 200])
    assert q.shape == (2, 3)
    np.testing.assert_array_equal(curve.values, before)  # input untouched
    if not np.isfinite(curve.last_value):
        assert not p.converged and any("diverged" in n for n in p.notes)
    elif len(curve) < 3 and name == "power_law":
        assert not p.converged and p.notes
    elif len(curve) < 5 and name == "power_law":  # the short-curve law answers, and says so
        assert p.converged and any("short-curve law" in n for n in p.notes)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", list(Direction))
def test_quantiles_monotone_shapes_and_determinism(name, direction):
    curve = power_law_curve(direction=direction)
    f = models.create(name)
    p1, p2 = f.fit(curve), f.fit(curve)
    q = p1.quantiles([0.05, 0.25, 0.5, 0.75, 0.95], [100, 500, 1000])
    assert q.shape == (3, 5) and (np.diff(q, axis=1) >= 0).all()
    np.testing.assert_array_equal(q, p2.quantiles([0.05, 0.25, 0.5, 0.75, 0.95], [100, 500, 1000]))
    assert p1.mean([1000]).shape == (1,)
    assert 0.0 <= p1.prob_better_than(curve.last_value, 1000) <= 1.0
    assert p1.model == name


def test_power_law_recovers_the_final_value_and_covers_it():
    truth = 2.0 + 3.0 * 100**-0.5
    for direction in Direction:
        p = PowerLawForecaster().fit(power_law_curve(direction=direction))
        lo, mid, hi = p.quantiles([0.05, 0.5, 0.95], [1000])[0] * direction.sign
        assert min(lo, hi) <= truth <= max(lo, hi)
        assert mid == pytest.approx(truth, abs=0.05)


def test_power_law_probabilities_agree_with_quantiles():
    p = PowerLawForecaster().fit(power_law_curve())
    lo, hi = p.quantiles([0.05, 0.95], [1000])[0]
    assert p.prob_better_than(hi, 1000) > 0.9 and p.prob_better_than(lo, 1000) < 0.1
    assert p.prob_reach(hi, 1000) > 0.9 and p.prob_reach(lo - 1.0, 1000) < 0.01
    assert p.prob_reach(10.0, 1000) == 1.0  # already reached
    median = float(p.quantiles([0.5], [1000])[0, 0])
    assert median < p.observed_best_loss  # still improving: the median is not reached yet
    steps = p.steps_to_target(median, 1000, [0.5])
    assert 80 < steps[0] <= 1000


def test_power_law_widens_with_noise():
    clean = PowerLawForecaster().fit(power_law_curve(noise=0.001))
    noisy = PowerLawForecaster().fit(power_law_curve(noise=0.1))
    width = [np.ptp(p.quantiles([0.05, 0.95], [1000])) for p in (clean, noisy)]
    assert width[1] > 1.3 * width[0]
    # ... around a sensible centre: the noise widens the interval, it does not scale the
    # extrapolation term (issue 16: a noise of 0.3 once gave [-6.9, 12.7] for a final 2.3).
    truth = 2.0 + 3.0 * 100**-0.5
    for sd in (0.1, 0.3):
        lo, mid, hi = (
            PowerLawForecaster()
            .fit(power_law_curve(noise=sd))
            .quantiles([0.05, 0.5, 0.95], [1000])[0]
        )
        assert lo < truth < hi and abs(mid - truth) < 0.5 and hi - lo < 6.0


def test_unknown_forecaster_names_the_choices():
    with pytest.raises(Exception, match="power_law"):
        models.create("crystal_ball")
    assert not math.isnan(models.create("").fit(power_law_curve()).mean([1000])[0])


# -- the contract, for every forecaster as it is served ----------------------------------------


@pytest.fixture(scope="session")
def learned_bank(trained_models: Path) -> ModelBank:
    bank = ModelBank(trained_models)
    outcome = bank.reload()
    assert sorted(bank.names()) == sorted(LEARNED), outcome
    return bank


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Callable[[str], Forecaster]:
    """name -> the forecaster as the service would serve it (a learned one from the bank)."""

    def make(name: str) -> Forecaster:
        bank = request.getfixturevalue("learned_bank") if models.is_learned(name) else None
        return models.create(name, bank=bank)

    return make


BUDGET = 400
COSINE = LrSchedule(ScheduleKind.COSINE, peak_lr=1e-3, warmup_steps=8, total_steps=BUDGET)


def small_curve(direction=Direction.MIN, n=40, schedule=None, lr=False, seed=0) -> Curve:
    """A noisy power law seen up to step 5 n (200) of a 400-step budget."""
    s = np.arange(5, 5 * n + 1, 5)
    v = 2.0 + 3.0 * (s / 50.0) ** -0.5 + np.random.default_rng(seed).normal(0, 0.01, n)
    logged = np.full(n, 1e-3) if lr else None
    return Curve(
        s, v * direction.sign, direction, max_step=BUDGET, lr=logged, schedule=schedule,
        config={"lr": 1e-3, "hparams": {"batch_size": 64}},
    )  # fmt: skip


def finished_runs() -> StudyHistory:
    """Three finished runs on the same cosine schedule: what a study-level fit learns from."""
    runs = []
    for i, scale in enumerate((2.5, 3.0, 3.5)):
        s = np.arange(10, BUDGET + 1, 10)
        decay = 0.3 * (1 - np.cos(np.pi * s / BUDGET)) / 2  # lower as the lr anneals
        v = 2.0 + scale * (s / 50.0) ** -0.5 - decay
        v = v + np.random.default_rng(10 + i).normal(0, 0.005, len(s))
        runs.append(Curve(s, v, max_step=BUDGET, schedule=COSINE))
    return StudyHistory(tuple(runs), "three-cosine-runs")


CURVES = {
    "min": lambda: small_curve(),
    "max": lambda: small_curve(Direction.MAX),
    "min, cosine plan": lambda: small_curve(schedule=COSINE),
    "max, cosine plan": lambda: small_curve(Direction.MAX, schedule=COSINE),
    "min, logged lr": lambda: small_curve(lr=True),
    "short": lambda: small_curve(n=6),
}


def read(p: models.Prediction, at: list[int]) -> dict[str, object]:
    """Everything a caller reads off a prediction, for comparing two of them."""
    return {
        "quantiles": p.quantiles(LEVELS, at),
        "mean": p.mean(at),
        "samples": p.samples(at),
        "p_better": [p.prob_better_than(2.4, s) for s in at],
        "p_reach": p.prob_reach(2.3, at[-1]),
        "model": (p.model, p.model_version, p.direction, p.observed_until),
        "converged": (p.converged, p.notes),
    }


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], tuple):
            assert a[key] == b[key], key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", SERVED)
@pytest.mark.parametrize("kind", sorted(CURVES))
def test_contract_shapes_and_quantiles_monotone_in_q(serve, name, kind):
    curve = CURVES[kind]()
    f = serve(name)
    p = f.fit(curve)
    assert p.model == name and p.direction is curve.direction
    assert p.observed_until == curve.last_step
    at = [curve.last_step, 200, BUDGET, 2 * BUDGET]  # the present, the budget and past it
    q = p.quantiles(LEVELS, at)
    assert q.shape == (len(at), len(LEVELS)) and np.isfinite(q).all()
    assert (np.diff(q, axis=1) >= 0).all()
    assert p.quantiles([0.5], BUDGET).shape == (1, 1)
    samples = p.samples(at)
    assert samples.ndim == 2 and samples.shape[1] == len(at) and samples.shape[0] > 1
    assert p.mean(at).shape == (len(at),) and p.mean(BUDGET).shape == (1,)
    for prob in (p.prob_better_than(curve.last_value, BUDGET), p.prob_reach(2.3, BUDGET)):
        assert 0.0 <= prob <= 1.0
    if p.converged:
        # Its median at the budget is a value of the metric, on the curve's side of zero.
        assert np.sign(q[2, LEVELS.index(0.5)]) == np.sign(curve.last_value)


@pytest.mark.parametrize("name", SERVED)
@pytest.mark.parametrize("kind", sorted(CURVES))
def test_contract_the_prediction_names_its_forecaster_and_version(serve, name, kind):
    curve = CURVES[kind]()
    f = serve(name)
    p = f.fit(curve)
    assert (p.model, p.model_version) == (f.name, f.version) == (name, f.version)


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("ugly", sorted(UGLY))
def test_contract_learned_models_on_ugly_curves(serve, name, ugly):
    check_ugly_curve(serve(name), name, UGLY[ugly])


@pytest.mark.parametrize("name", SERVED)
def test_contract_the_input_is_untouched(serve, name):
    curve, history = small_curve(schedule=COSINE), finished_runs()
    config = {"lr": 1e-3, "hparams": {"batch_size": 64}}
    kept = [(c.steps.copy(), c.values.copy(), c.schedule) for c in (curve, *history.curves)]
    f = serve(name)
    f.fit(curve, history).quantiles(LEVELS, [BUDGET])
    f.fit(curve).quantiles(LEVELS, [BUDGET])
    for c, (steps, values, schedule) in zip((curve, *history.curves), kept, strict=True):
        np.testing.assert_array_equal(c.steps, steps)
        np.testing.assert_array_equal(c.values, values)
        assert c.schedule == schedule
    assert curve.config == config  # a dict: the one mutable thing in a Curve
    assert history.key == "three-cosine-runs" and len(history.curves) == 3


@pytest.mark.parametrize("name", SERVED)
@pytest.mark.parametrize("kind", ["max", "min, cosine plan"])
def test_contract_same_curve_same_forecast(serve, name, kind):
    curve, history = CURVES[kind](), finished_runs()
    at = [200, BUDGET]
    first = read(serve(name).fit(curve, history), at)
    f = serve(name)
    f.fit(small_curve(seed=3), history)  # another run in between: no memory across calls
    equal_curve = CURVES[kind]()  # equal, not the same object
    assert_same(first, read(f.fit(equal_curve, finished_runs()), at))


@pytest.mark.parametrize("name", SERVED)
def test_contract_needs_history_is_honest(serve, name):
    # False means the history is ignored: the same forecast with and without it.
    f, history, at = serve(name), finished_runs(), [200, BUDGET]
    said = {}
    for kind, make in CURVES.items():
        curve = make()
        said[kind] = f.needs_history(curve)
        assert isinstance(said[kind], bool) and f.needs_history(curve) is said[kind]
        if not said[kind]:
            assert_same(read(f.fit(curve), at), read(f.fit(curve, history), at))
    assert not said["min"] and not said["max"]  # no lr, so no study-level fit to share


# Both fits see the same loss view, so the samples are exact negatives; the quantiles of
# negated samples at 1 - q are read by np.quantile at mirrored interpolation points, equal up
# to a few ulps of the value (and the median, exactly). 1e-12 on values of order 1 is that.
SYMMETRY_RTOL = 1e-12


# The learned models are left out by design: they read "higher is better" as a feature
# (features.py is_max), so a max curve is another input to them, not a mirrored one (the
# GRU's forecast past the last point of the mirrored curve differs by about 0.02).
@pytest.mark.parametrize("name", [n for n in NAMES if not models.is_learned(n)])
def test_contract_direction_symmetry(serve, name):
    loss = small_curve()
    gain = Curve(loss.steps, -loss.values, Direction.MAX, max_step=BUDGET, config=loss.config)
    at = [loss.last_step, 200, BUDGET]
    p_loss, p_gain = serve(name).fit(loss), serve(name).fit(gain)
    np.testing.assert_array_equal(p_gain.samples(at), -p_loss.samples(at))
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]  # symmetric around the median
    np.testing.assert_allclose(
        p_gain.quantiles(levels, at),
        -p_loss.quantiles(levels, at)[:, ::-1],
        rtol=SYMMETRY_RTOL,
        atol=SYMMETRY_RTOL,
    )
    np.testing.assert_allclose(p_gain.mean(at), -p_loss.mean(at), rtol=SYMMETRY_RTOL)
    for step in at[1:]:
        assert p_gain.prob_better_than(-2.4, step) == p_loss.prob_better_than(2.4, step)
    assert p_gain.prob_reach(-2.3, BUDGET) == p_loss.prob_reach(2.3, BUDGET)
    assert (p_gain.converged, p_gain.notes) == (p_loss.converged, p_loss.notes)


# -- save/load round trip of the learned forecasters -------------------------------------------


@pytest.fixture(scope="session")
def reloaded_bank(learned_bank: ModelBank, tmp_path_factory: pytest.TempPathFactory) -> ModelBank:
    """Every learned model saved through artifacts.save from its files(), and loaded back by
    its module's load (ModelBank.reload calls them, the ensemble after its members)."""
    folder = tmp_path_factory.mktemp("round-trip")
    for name in LEARNED:
        model = learned_bank.get(name)
        artifacts.save(folder, name, model.version, model.files(), model.meta)
    bank = ModelBank(folder)
    outcome = bank.reload()
    assert outcome == {n: f"loaded version {learned_bank.get(n).version}" for n in LEARNED}
    return bank


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNED)
def test_contract_save_load_round_trip(learned_bank, reloaded_bank, name, tmp_path):
    original, loaded = learned_bank.get(name), reloaded_bank.get(name)
    assert loaded is not original and type(loaded) is type(original)
    assert loaded.version == original.version
    assert loaded.meta["corpus_fingerprint"] == original.meta["corpus_fingerprint"]
    history, at = finished_runs(), [200, BUDGET]
    for kind, make in CURVES.items():
        curve = make()
        assert loaded.needs_history(curve) == original.needs_history(curve), kind
        assert_same(read(original.fit(curve, history), at), read(loaded.fit(curve, history), at))
    # The loaded model saves what it loaded: a second round trip changes nothing.
    assert loaded.files().keys() == original.files().keys()
    module = __import__(f"forecaster.models.{name}", fromlist=["load"])
    artifacts.save(tmp_path, name, loaded.version, loaded.files(), loaded.meta)
    again = module.load(tmp_path, reloaded_bank)
    curve = small_curve()
    assert_same(read(original.fit(curve), at), read(again.fit(curve), at))
