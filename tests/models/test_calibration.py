"""The conformal tables (models/calibration.py): built from residuals, shipped as an artifact
of the bank, applied in one place by the engine's path and by `forecaster eval`, and left out
when the bank has none."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from forecaster import models
from forecaster.curves import Curve, Direction
from forecaster.evaluation import accuracy
from forecaster.judging import fit_forecast
from forecaster.models import StudyHistory
from forecaster.models import calibration as cal
from forecaster.models.artifacts import ArtifactError, ModelBank
from forecaster.training import calibrate

BUDGET = 1000


def curve(n: int = 40, noise: float = 0.01, seed: int = 0) -> Curve:
    s = np.arange(1, n + 1) * 5
    v = 1.5 + 2.0 * (s / 5.0) ** -0.6 + np.random.default_rng(seed).normal(0, noise, n)
    return Curve(s, v, Direction.MIN, max_step=BUDGET)


def residual_rows(n: int, spread_at: float = 1.0, seed: int = 0) -> list[dict[str, object]]:
    """Rows as calibrate.collect writes them: residuals that are wider the earlier the cut,
    from two sources."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        progress = float(rng.uniform(0.05, 0.95))
        w90 = float(rng.uniform(0.1, 1.0))
        unit = cal.unit_multiplier(w90, progress)
        rows.append(
            {
                "model": "power_law",
                "source": "a" if i % 2 else "b",
                "progress": progress,
                "n_points": int(rng.integers(3, 60)),
                "raw_w90": w90,
                "r": float(rng.normal(0, spread_at)) * float(unit),
                "part": "train",
            }
        )
    return rows


def test_a_table_covers_new_residuals_of_the_same_kind_at_its_levels():
    table = cal.build(cal.as_residuals(residual_rows(4000))).tables["power_law"]
    fresh = cal.as_residuals(residual_rows(4000, seed=1))["power_law"]
    q = np.array(
        [
            table.quantiles(np.array([p]), int(k))[0]
            for p, k in zip(fresh.progress, fresh.n_points, strict=True)
        ]
    )
    lo90, hi90 = cal.LEVELS.index(0.05), cal.LEVELS.index(0.95)
    lo50, hi50 = cal.LEVELS.index(0.25), cal.LEVELS.index(0.75)
    cov90 = np.mean((q[:, lo90] <= fresh.r) & (fresh.r <= q[:, hi90]))
    cov50 = np.mean((q[:, lo50] <= fresh.r) & (fresh.r <= q[:, hi50]))
    assert 0.87 <= cov90 <= 0.93 and 0.46 <= cov50 <= 0.54, (cov50, cov90)
    # mirrored: symmetric around the forecaster's median
    assert np.allclose(q[:, cal.LEVELS.index(0.5)], 0.0)


def test_residuals_are_pooled_over_sources_not_split_by_them():
    rows = residual_rows(600)
    table = cal.fit_table(cal.as_residuals(rows)["power_law"])
    # One table for every source: its cells count residuals of both sources.
    assert table.counts.sum() == 600 and table.q.shape[:2] == table.centres.shape


def test_a_calibrated_interval_widens_with_the_extrapolation_distance_and_keeps_the_median():
    c = curve()
    raw = models.create("power_law").fit(c)
    tables = cal.build(cal.as_residuals(residual_rows(2000, spread_at=2.0)))
    fitted = cal.calibrated(raw, c, tables)
    assert fitted is not raw and fitted.model == raw.model and fitted.notes[:-1] == raw.notes
    assert "conformal" in fitted.notes[-1]
    steps = [c.last_step, 300, 600, BUDGET]
    q = fitted.quantiles((0.05, 0.5, 0.95), steps)
    widths = q[:, 2] - q[:, 0]
    assert widths[0] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(widths) > 0), widths
    assert np.allclose(q[:, 1], raw.quantiles((0.5,), steps)[:, 0], rtol=1e-6, atol=1e-9)
    # residuals twice as wide as the unit: wider than the forecaster's own interval
    own = raw.quantiles((0.05, 0.95), [BUDGET])[0]
    assert widths[-1] > own[1] - own[0]


def test_no_table_and_a_divergence_leave_the_prediction_as_it_is():
    c = curve()
    raw = models.create("power_law").fit(c)
    assert cal.calibrated(raw, c, None) is raw
    only_other = cal.Calibration(
        {"ensemble": cal.build(cal.as_residuals(residual_rows(200))).tables["power_law"]}
    )
    assert cal.calibrated(raw, c, only_other) is raw
    bank = ModelBank.load("none")
    assert bank.calibration is None
    assert cal.fit_calibrated(models.create("power_law"), c, None, bank).notes == raw.notes
    diverged = Curve(c.steps, np.append(c.values[:-1], math.nan), Direction.MIN, max_step=BUDGET)
    tables = cal.build(cal.as_residuals(residual_rows(200)))
    p = cal.calibrated(models.create("power_law").fit(diverged), diverged, tables)
    assert np.isnan(p.samples([BUDGET])).all() or np.isfinite(p.samples([BUDGET])).all()


def test_save_load_round_trip_and_a_corrupt_table_is_refused(tmp_path):
    built = cal.build(cal.as_residuals(residual_rows(500)))
    cal.save(tmp_path, built, {"corpus_sources": ["a", "b"]})
    loaded = cal.load(tmp_path)
    assert np.array_equal(loaded.tables["power_law"].q, built.tables["power_law"].q)
    assert loaded.meta["models"] == ["power_law"] and loaded.meta["residuals"] == {"power_law": 500}
    bank = ModelBank(tmp_path)
    assert bank.reload() == {"calibration": "loaded version 1"} and bank.calibration is not None
    body = json.loads((tmp_path / "calibration" / "tables.json").read_text())
    body["levels"] = [0.5]
    (tmp_path / "calibration" / "tables.json").write_text(json.dumps(body))
    with pytest.raises(ArtifactError, match="checksum"):
        cal.load(tmp_path)
    kept = bank.calibration
    assert "calibration" in bank.reload() and bank.calibration is kept  # keeps the loaded one


def test_train_writes_the_tables_and_both_paths_apply_them(trained_models, synthetic_corpus):
    meta = json.loads((trained_models / "calibration" / "meta.json").read_text())
    assert set(meta["models"]) >= {"power_law", "ensemble"}
    assert meta["corpus_sources"] == ["syn_a", "syn_b"]
    bank = ModelBank.load(str(trained_models))
    c = curve()
    served = fit_forecast("power_law", c, StudyHistory, "s/r", bank)
    assert served is not None and "conformal" in served.notes[-1]
    raw = fit_forecast("power_law", c, StudyHistory, "s/r", ModelBank.load("none"))
    assert raw is not None and not any("conformal" in n for n in raw.notes)
    scores, _ = accuracy.score_corpus(
        str(synthetic_corpus), model_names=["power_law"], cutoffs=[0.3], max_runs_per_task=2,
        workers=1, progress=False, models_dir=str(trained_models),
    )  # fmt: skip
    plain, _ = accuracy.score_corpus(
        str(synthetic_corpus), model_names=["power_law"], cutoffs=[0.3], max_runs_per_task=2,
        workers=1, progress=False, models_dir="none",
    )  # fmt: skip
    by_run = {(s.run_id, s.model): s for s in plain}
    mine = [s for s in scores if s.model == "power_law"]
    assert mine and all(
        s.abs_error == pytest.approx(by_run[(s.run_id, s.model)].abs_error, rel=0.2, abs=1e-6)
        for s in mine
    )  # the same medians, other intervals
    assert [s.crps for s in mine] != [by_run[(s.run_id, s.model)].crps for s in mine]


def test_a_source_left_out_of_training_is_left_out_of_the_tables(synthetic_corpus, tmp_path):
    """A marker: the tables built from syn_a alone hold no residual and no task of syn_b."""
    rows = calibrate.collect(
        synthetic_corpus, source_names=["syn_a"], max_runs_per_task=2, workers=1,
        progress=False, cutoffs=(0.2, 0.5),
    )  # fmt: skip
    assert rows and {r["source"] for r in rows} == {"syn_a"}
    from forecaster.corpus.reader import sources

    folder = calibrate.write(tmp_path, rows, sources(synthetic_corpus, ["syn_a"]), {})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["corpus_sources"] == ["syn_a"]
    assert meta["training_tasks"] and all(t.startswith("syn_a/") for t in meta["training_tasks"])


def test_calibrate_writes_the_tables_of_a_model_folder_without_retraining(
    trained_models, synthetic_corpus, tmp_path
):
    from forecaster.cli.parser import main

    copy = tmp_path / "models"
    shutil.copytree(trained_models, copy)
    shutil.rmtree(copy / "calibration")
    gbm_meta = (copy / "gbm" / "meta.json").read_text()
    out = tmp_path / "residuals.parquet"
    assert main(["calibrate", "--corpus", str(synthetic_corpus), "--models-dir", str(copy),
                 "--max-runs-per-task", "2", "--workers", "1", "--no-progress",
                 "--residuals-out", str(out)]) == 0  # fmt: skip
    assert (copy / "calibration" / "meta.json").exists() and out.stat().st_size > 0
    assert (copy / "gbm" / "meta.json").read_text() == gbm_meta
    assert ModelBank.load(str(copy)).calibration is not None
