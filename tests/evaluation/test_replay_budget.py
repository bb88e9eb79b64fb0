"""The replay's budget (freeze-thaw against a fixed compute budget), its single-run mode and
its TARGET_UNREACHABLE precision, on a small corpus written here."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from forecaster.evaluation import replay
from tests.evaluation.test_replay import sweep_corpus


def test_a_budget_caps_compute_and_pausing_spends_it_on_the_best_paused_runs(tmp_path):
    corpus = sweep_corpus(tmp_path / "corpus")
    specs = ["forecast:epsilon=0.05,pause=true", "asha:eta=3", "none"]
    results = replay.replay_corpus(
        corpus, policy_specs=specs, compute_budget=0.3, workers=1, progress=False, parallel=2
    )
    by = {(r.task, r.setting.family, dict(r.setting.params).get("pause")): r for r in results}
    for r in results:  # one report of overshoot at most: the check is before each report
        assert r.compute_fraction <= 0.3 + 2 * 60 / (61 * 60) + 1e-9, r
    paused = by[("a", "forecast", True)]
    # Pausing cut the worse runs early, so the budget reached the best one: its regret is
    # small, where running runs in order to the end ("none") spends 0.3 on the first few.
    none = by[("a", "none", None)]
    assert paused.rel_regret < none.rel_regret
    assert any(reason == "budget_exhausted" for _, _, reason in none.outcomes)
    resumed = [o for o in paused.outcomes if o[2] in ("", "budget_exhausted")]
    assert resumed  # some paused run got compute again, or the budget ended it
    # The endgame: once the budget left can finish only one run, it finishes the one the
    # ranking forecasts best (ranking.finish_first), to its last step.
    finished = [o for o in paused.outcomes if o[2] == "" and o[1] == 60]
    assert finished
    # Without a budget a paused run that nothing resumes ends as the stop it replaced.
    free = replay.replay_corpus(corpus, policy_specs=specs[:1], workers=1, progress=False)
    plain = replay.replay_corpus(
        corpus, policy_specs=["forecast:epsilon=0.05"], workers=1, progress=False
    )
    assert [r.outcomes for r in free] == [r.outcomes for r in plain]


def test_single_runs_report_each_run_alone(tmp_path):
    corpus = sweep_corpus(tmp_path / "corpus", n_runs=3)
    results = replay.replay_corpus(
        corpus,
        policy_specs=["forecast:delta=0.002", "forecast:min_gain_rate=0.01"],
        single_runs=True,
        workers=1,
        progress=False,
    )
    assert len(results) == 2 * 7  # 7 runs (3 + 3 + "boom"), each alone, under two settings
    assert all(r.n_runs == 1 and "/" in r.task for r in results)
    for r in results:  # alone, a run's regret is the metric its stop gave up (NaN: no final)
        assert not r.rel_regret < 0 and r.compute_fraction <= 1.0
    assert sum(r.rel_regret >= 0 for r in results) == 2 * 6
    rows = [x for x in replay.summarize(results) if x["source"] == "toy"]
    assert {x["n_tasks"] for x in rows} == {7}
    stops = {reason for r in results for reason, _ in r.stops}
    assert stops <= {"converged", "diverged", "not_learning", "budget_exhausted"}


def test_use_targets_counts_runs_stopped_as_unreachable_that_would_have_reached(tmp_path):
    corpus = sweep_corpus(tmp_path / "corpus")
    runs = pl.read_parquet(corpus / "toy" / "runs.parquet")
    # A target only the best runs of each task reach, near their final value.
    runs.with_columns(pl.lit(1.7).alias("target")).write_parquet(corpus / "toy" / "runs.parquet")
    results = replay.replay_corpus(
        corpus,
        policy_specs=["forecast:epsilon=0.05", "none"],
        use_targets=True,
        workers=1,
        progress=False,
    )
    none = [r for r in results if r.setting.family == "none"]
    reach = sum(r.n_reach_target for r in none)
    assert 0 < reach < sum(r.n_runs for r in none)
    ours = [r for r in results if r.setting.family == "forecast"]
    assert sum(r.n_reach_target for r in ours) == reach  # counted on the whole curves
    false = sum(r.n_false_unreachable for r in ours)
    assert 0 <= false <= reach
    rows = {x["source"]: x for x in replay.summarize(ours)}
    assert rows["toy"]["n_reach_target"] == reach
    assert rows["toy"]["n_false_unreachable"] == false
    assert all(r.n_false_unreachable == 0 for r in none)


def test_a_budget_outside_zero_one_is_refused(tmp_path: Path):
    import pytest

    from forecaster.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="compute-budget"):
        replay.replay_corpus(sweep_corpus(tmp_path / "c"), compute_budget=1.5, progress=False)
