"""The batched fits (models/batched.py) give the single-curve path's forecasts, on corpus curves:
the batch and the service must agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecaster import models
from forecaster.corpus.reader import sources
from forecaster.curves import Curve
from forecaster.judging import fit_forecast, fit_forecasts
from forecaster.models import StudyHistory
from forecaster.models.batched import fit_many, solve_rows
from forecaster.models.fitting import solve_grid
from forecaster.models.power_law import FAMILIES
from forecaster.models.prediction import sample_quantiles

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "sample"
LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def _corpus_curves(per_source: int = 12) -> list[Curve]:
    """Heads of the sample corpus's runs at several cutoffs (2 to hundreds of points)."""
    out = []
    for source in sources(SAMPLE):
        ids = source.runs()["run_id"].to_list()[:per_source]
        for run in source.load(ids):
            if not len(run.steps):
                continue
            last = int(run.steps[-1])
            for fraction in (0.05, 0.2, 0.5, 1.0):
                out.append(run.curve(until_step=int(fraction * last), horizon=last))
    return [c for c in out if len(c)]


@pytest.fixture(scope="module")
def corpus_curves() -> list[Curve]:
    curves = _corpus_curves()
    assert len(curves) > 100
    return curves


@pytest.mark.parametrize("name", ["pow3", "exp3", "log_power", "vapour_pressure", "power_law"])
def test_fit_many_gives_the_single_curve_forecasts(name: str, corpus_curves: list[Curve]) -> None:
    forecaster = models.create(name)
    batched = fit_many(forecaster, corpus_curves)  # type: ignore[arg-type]
    fitted = 0
    for curve, many in zip(corpus_curves, batched, strict=True):
        one = forecaster.fit(curve)
        steps = [curve.last_step + 1, (curve.last_step + curve.horizon) // 2 + 1, curve.horizon]
        assert many.model == one.model and many.notes == one.notes
        assert many.converged == one.converged
        # The same sums in the same order: the same numbers, not merely close ones.
        np.testing.assert_array_equal(many.quantiles(LEVELS, steps), one.quantiles(LEVELS, steps))
        fitted += one.converged and np.isfinite(one.quantiles(LEVELS, steps)).all()
    assert fitted > len(corpus_curves) // 2  # most curves were fitted, not fallbacks


def test_solve_rows_is_solve_grid_per_curve(corpus_curves: list[Curve]) -> None:
    family = FAMILIES["pow4"]
    ys, xs = [], []
    for curve in corpus_curves:
        if len(curve) >= 40:
            y = curve.loss_view().values[:40]
            if np.isfinite(y).all():
                ys.append(y)
                xs.append(np.linspace(0.1, 1.0, 40))
    assert len(ys) >= 5
    m = len(family.theta)
    design = np.concatenate([family.basis(family.theta, x) for x in xs])
    coef, cov, sigma2, log_weight = solve_rows(design, np.stack(ys), family.nonneg)
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        single = solve_grid(family.basis, family.theta, x, y, nonneg=family.nonneg)
        rows = slice(k * m, (k + 1) * m)
        np.testing.assert_array_equal(coef[rows], single.coef)
        np.testing.assert_array_equal(cov[rows], single.cov)
        np.testing.assert_array_equal(sigma2[rows], single.sigma2)


def test_sample_quantiles_are_numpys_to_the_bit() -> None:
    rng = np.random.default_rng(7)
    for trial in range(200):
        samples = rng.standard_normal((int(rng.integers(1, 500)), int(rng.integers(1, 13))))
        samples *= 10 ** rng.uniform(-6, 6)
        if trial % 3 == 0:
            samples[rng.integers(len(samples)), rng.integers(samples.shape[1])] = np.nan
        if trial % 5 == 0:
            samples[:, 0] = np.inf
        for levels in (LEVELS, (0.01, 0.5, 0.99), (0.3,)):
            with np.errstate(invalid="ignore"):
                expected = np.quantile(samples, levels, axis=0).T
            np.testing.assert_array_equal(sample_quantiles(samples, levels), expected)


def test_fit_forecasts_fills_the_memo_fit_forecast_reads(corpus_curves: list[Curve]) -> None:
    heads = [(f"study/run{i}", c) for i, c in enumerate(corpus_curves[:40])]
    memo: dict = {}
    fit_forecasts("pow3", heads, None, memo)
    assert len(memo) == len([h for h in heads if len(h[1])])

    def no_history() -> StudyHistory:
        raise AssertionError("pow3 reads no history")

    for where, head in heads:
        kept = fit_forecast("pow3", head, no_history, where, None, memo)
        fresh = fit_forecast("pow3", head, no_history, where, None, None)
        assert kept is memo[(where, len(head), "")]
        assert kept is not None and fresh is not None
        np.testing.assert_allclose(
            kept.quantiles(LEVELS, [head.horizon]),
            fresh.quantiles(LEVELS, [head.horizon]),
            rtol=1e-12,
        )


def test_the_ensemble_batched_gives_its_single_curve_forecasts(
    corpus_curves: list[Curve],
) -> None:
    from forecaster.models.artifacts import ModelBank
    from forecaster.models.ensemble import EnsembleForecaster

    bank = ModelBank.load("")
    ensemble = bank.get("ensemble")
    assert isinstance(ensemble, EnsembleForecaster)
    curves = [c for c in corpus_curves if not ensemble.needs_history(c)]
    batched = ensemble.fit_many(curves)
    stacked = 0
    for curve, many in zip(curves, batched, strict=True):
        one = ensemble.fit(curve)
        steps = [curve.last_step + 1, (curve.last_step + curve.horizon) // 2 + 1, curve.horizon]
        assert many.model == one.model and many.notes == one.notes
        np.testing.assert_array_equal(many.quantiles(LEVELS, steps), one.quantiles(LEVELS, steps))
        stacked += one.model == "ensemble"
    assert stacked > len(curves) // 2  # most were stacked forecasts, not fallbacks


def test_fit_forecasts_batches_auto_as_fit_forecast_fits_it(corpus_curves: list[Curve]) -> None:
    from forecaster.judging import batchable
    from forecaster.models.artifacts import ModelBank

    bank = ModelBank.load("")
    heads = [(f"study/run{i}", c) for i, c in enumerate(corpus_curves)]
    heads = [h for h in heads if batchable("auto", h[1], bank)]
    assert len(heads) > 50
    memo: dict = {}
    fit_forecasts("auto", heads, bank, memo)
    assert len(memo) == len(heads)
    for where, head in heads:
        kept = memo[(where, len(head), "")]
        fresh = fit_forecast("auto", head, lambda: StudyHistory(()), where, bank, None)
        assert kept is not None and fresh is not None and kept.model == fresh.model
        np.testing.assert_array_equal(
            kept.quantiles(LEVELS, [head.horizon]), fresh.quantiles(LEVELS, [head.horizon])
        )
