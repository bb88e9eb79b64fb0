"""The learned forecasters: trained end to end on a synthetic corpus, saved, loaded, refused
when from another version or corrupt, and used through the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from forecaster import models
from forecaster.corpus.reader import sources
from forecaster.curves import Curve, Direction, LrSchedule, ScheduleKind
from forecaster.models import ensemble, features, gbm, sequence
from forecaster.models.artifacts import ArtifactError, ModelBank

LEARNED = ("gbm", "sequence", "ensemble")
VERSIONS = {m.NAME: m.VERSION for m in (gbm, sequence, ensemble)}


def curve(n: int = 60, direction: Direction = Direction.MIN, budget: int = 600) -> Curve:
    s = np.arange(1, n + 1)
    v = 1.5 + 2.0 * (s / 5.0) ** -0.6 + np.random.default_rng(0).normal(0, 0.01, n)
    return Curve(s, v * direction.sign, direction, max_step=budget)


@pytest.fixture
def bank(trained_models: Path) -> ModelBank:
    b = ModelBank(trained_models)
    outcome = b.reload()
    loaded = {n: f"loaded version {VERSIONS[n]}" for n in LEARNED}
    assert outcome == {**loaded, "calibration": "loaded version 1"}, outcome
    return b


def test_artifacts_are_versioned_and_say_what_they_learned_from(trained_models, synthetic_corpus):
    for name in LEARNED:
        meta = json.loads((trained_models / name / "meta.json").read_text())
        assert meta["name"] == name and meta["version"] == VERSIONS[name] and meta["format"] == 1
        assert len(meta["corpus_fingerprint"]) == 64
        assert set(meta["corpus_sources"]) == {"syn_a", "syn_b"}
        trained = set(meta["training_tasks"])
        held_out = set(meta["test_tasks"])
        assert trained and held_out and not trained & held_out
        metrics = meta["heldout_metrics"]
        assert {"gbm", "sequence", "power_law", "ensemble"} <= set(metrics)
        for per_source in metrics.values():
            assert per_source["all"]["n"] > 0
            assert 0.0 <= per_source["all"]["coverage_90"] <= 1.0
    size = sum(p.stat().st_size for p in trained_models.rglob("*") if p.is_file())
    assert size < 20 * 2**20


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("direction", list(Direction))
def test_learned_forecasts_are_distributions_in_the_curves_direction(bank, name, direction):
    model = bank.get(name)
    c = curve(direction=direction)
    p = model.fit(c)
    assert p.model == name and p.model_version == VERSIONS[name] and p.converged
    q = p.quantiles([0.05, 0.25, 0.5, 0.75, 0.95], [60, 200, 600])
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    # At the newest point the forecast is the current level; it spreads out towards the budget.
    assert q[0, 4] - q[0, 0] <= q[2, 4] - q[2, 0] + 1e-9
    level = np.median(c.values[-5:])
    assert abs(q[0, 2] - level) < 0.2 * abs(level)
    np.testing.assert_array_equal(q, model.fit(c).quantiles([0.05, 0.25, 0.5, 0.75, 0.95],
                                                            [60, 200, 600]))  # fmt: skip


@pytest.mark.parametrize("name", LEARNED)
def test_curves_the_learned_models_cannot_read_fall_back_and_say_why(bank, name):
    model = bank.get(name)
    no_budget = Curve(np.arange(1, 40), np.linspace(3, 1, 39))
    p = model.fit(no_budget)
    assert not p.converged and "max_step" in p.notes[0] and name in p.notes[0]
    diverged = Curve(np.arange(1, 30), np.r_[np.linspace(3, 1, 25), [np.inf] * 4], max_step=100)
    p = model.fit(diverged)
    assert not p.converged and any("diverged" in n for n in p.notes)


def test_lr_schedule_features_come_from_the_plan():
    c = curve()
    plan = LrSchedule(ScheduleKind.COSINE, peak_lr=0.1, total_steps=600)
    with_plan = Curve(c.steps, c.values, max_step=600, schedule=plan)
    names = list(features.FEATURE_NAMES)
    without = features.extract(c).features
    f = features.extract(with_plan).features
    assert without[names.index("lr_known")] == 0 and np.isnan(without[names.index("lr_end")])
    assert f[names.index("lr_known")] == 1
    assert f[names.index("lr_now")] > f[names.index("lr_end")]  # cosine: still decaying
    assert 0 < f[names.index("s1_rest")] < 1


def test_a_different_version_is_refused_naming_both_and_the_loaded_model_stays(
    bank, trained_models, tmp_path
):
    copy = tmp_path / "models"
    shutil.copytree(trained_models, copy)
    live = ModelBank(copy)
    live.reload()
    before = live.get("gbm")
    meta_file = copy / "gbm" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["version"] = 7
    meta_file.write_text(json.dumps(meta))
    assert live.changed()
    outcome = live.reload()
    assert "version 7" in outcome["gbm"] and f"version {gbm.VERSION}" in outcome["gbm"]
    assert live.get("gbm") is before  # still serving the one it had
    with pytest.raises(ArtifactError, match=f"version 7.*version {gbm.VERSION}"):
        gbm.load(copy)


def test_a_corrupt_artifact_is_refused(trained_models, tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(trained_models, copy)
    q50 = copy / "gbm" / "q50.txt"
    q50.write_text(q50.read_text()[:1000])
    with pytest.raises(ArtifactError, match="corrupt.*q50.txt.*checksum"):
        gbm.load(copy)
    (copy / "sequence" / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        sequence.load(copy)
    fresh = ModelBank(copy)
    outcome = fresh.reload()
    assert fresh.get("gbm") is None and fresh.get("sequence") is None
    # The ensemble needs both members at the versions it stacked.
    assert (
        fresh.get("ensemble") is None and f"stacks gbm version {gbm.VERSION}" in outcome["ensemble"]
    )


def test_the_registry_serves_the_given_bank_and_says_when_a_model_is_missing(
    trained_models, tmp_path
):
    bank = ModelBank.load(str(trained_models))
    assert models.create("ensemble", bank=bank).version == ensemble.VERSION
    assert isinstance(models.create("gbm", bank=bank), gbm.GbmForecaster)
    empty = ModelBank.load(str(tmp_path / "empty"))
    p = models.create("gbm", bank=empty).fit(curve())
    assert p.model == "gbm" and not p.converged and "no model loaded" in p.notes[0]


def test_the_run_config_becomes_features_under_its_usual_names():
    c = curve()
    config = {"lr": 3e-4, "hparams": {"batch_size": 256, "lr": 1.0}, "size": "1.4b", "opt": "adam"}
    with_config = Curve(c.steps, c.values, max_step=600, config=config)
    names = list(features.FEATURE_NAMES)
    f = features.extract(with_config).features
    assert f[names.index("cfg_log_lr")] == pytest.approx(np.log10(3e-4))  # top level wins
    assert f[names.index("cfg_log_batch")] == pytest.approx(np.log10(256))  # one level down
    assert f[names.index("cfg_log_params")] == pytest.approx(np.log10(1.4e9))  # "1.4b"
    assert np.isnan(f[names.index("cfg_dropout")])  # not given
    without = features.extract(c).features
    assert np.isnan(without[[n.startswith("cfg_") for n in names]]).all()
    # Everything else is the curve's alone.
    curve_part = [not n.startswith("cfg_") for n in names]
    assert np.array_equal(f[curve_part], without[curve_part], equal_nan=True)


def test_the_schedule_laws_are_members_only_where_the_lr_is_known():
    c = curve()
    frame = features.extract(c).frame
    z = ensemble.parametric_z(c, frame)
    laws = [ensemble.PARAMETRIC_MEMBERS.index(m) for m in ensemble.SCHEDULE_MEMBERS]
    assert np.isnan(z[laws]).all()
    assert np.isfinite(np.delete(z, laws, axis=0)).all()
    plan = LrSchedule(ScheduleKind.COSINE, peak_lr=0.1, total_steps=600)
    with_plan = Curve(c.steps, c.values, max_step=600, schedule=plan)
    z = ensemble.parametric_z(with_plan, features.extract(with_plan).frame)
    assert np.isfinite(z).all() and (np.diff(z, axis=1) >= 0).all()


def test_ensemble_calibration_widens_intervals_that_miss_and_schedule_laws_weigh_only_with_lr():
    rng = np.random.default_rng(0)
    n = 4000
    truth = rng.normal(0, 1, n)
    with_lr = rng.random(n) < 0.5
    # Members overconfident (their 90% interval is the true 50% one) ...
    member = np.tile(np.array([-0.67, -0.3, 0.0, 0.3, 0.67]), (n, 1))
    # ... but for the annealing law, which knows the truth when the lr is known.
    knows = truth[:, None] + 0.01 * np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    member_z = np.stack([member, member + 0.05, member - 0.05, member, knows, member], axis=1)
    assert member_z.shape[1] == len(ensemble.MEMBERS)
    progress = rng.uniform(0.05, 0.6, n)
    fit = ensemble.fit_stack(member_z, truth, progress, np.ones(n), with_lr)
    assert np.allclose(fit.weights.sum(axis=2), 1.0)
    assert (fit.weights[0][:, 4:] == 0).all()  # no lr: the schedule laws never weigh
    assert (fit.weights[1][:, 4] >= 0.8).all()  # with one, the law that knows wins
    cell = (np.zeros(n, dtype=int), ensemble.bucket_of(np.full(n, 0.2)))
    zq = ensemble.calibrate(ensemble.stack(member_z, fit.weights[cell]), fit.deltas[cell])
    fresh = rng.normal(0, 1, n)
    cover90 = np.mean((zq[:, 0] <= fresh) & (fresh <= zq[:, 4]))
    cover50 = np.mean((zq[:, 1] <= fresh) & (fresh <= zq[:, 3]))
    assert 0.85 <= cover90 <= 0.95 and 0.43 <= cover50 <= 0.57


def test_training_examples_never_mix_train_and_test_tasks(trained_models, synthetic_corpus):
    meta = json.loads((trained_models / "gbm" / "meta.json").read_text())
    every = {f"{s.name}/{t}" for s in sources(synthetic_corpus) for t in s.runs()["task"].unique()}
    assert set(meta["training_tasks"]) | set(meta["test_tasks"]) == every


def test_a_served_ensemble_forecast_is_the_stack_blended_with_the_power_law(bank):
    """EnsembleForecaster.blend (default OUT_OF_SOURCE_BLEND): the served quantiles are
    (1 - b) * the stack's + b * the power-law member's, level by level, so every sample path is
    that mix of the two extremes' paths; the notes say so, and b = 0 is the stack alone."""
    from dataclasses import replace

    shipped = bank.get("ensemble")
    assert isinstance(shipped, ensemble.EnsembleForecaster)
    assert shipped.blend == ensemble.OUT_OF_SOURCE_BLEND
    ens = replace(shipped, blend=0.75)
    c = curve()
    steps = np.array([100.0, 300.0, 600.0])
    served = ens.fit(c).samples(steps)
    alone = {b: replace(ens, blend=b).fit(c) for b in (0.0, 1.0)}
    stack, power = (alone[b].samples(steps) for b in (0.0, 1.0))
    b = ens.blend
    np.testing.assert_allclose(served, (1 - b) * stack + b * power, rtol=1e-9, atol=1e-12)
    # b = 1 is the power-law member at the budget: the same median as power_law alone.
    member = models.create("power_law").fit(c).samples([600])[:, 0]
    assert abs(np.median(power[:, 2]) - np.median(member)) < 0.02 * np.ptp(c.values)
    assert "blended" in ens.fit(c).notes[0] and "blended" not in alone[0.0].notes[0]
    if shipped.blend == 0:  # the shipped share: the stack alone, to the bit
        np.testing.assert_array_equal(shipped.fit(c).samples(steps), stack)
