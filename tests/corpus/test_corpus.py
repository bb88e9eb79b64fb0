"""Splits by task, the synthetic prior, the source writer and the reader."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from forecaster.corpus import splits, synthetic
from forecaster.corpus.reader import sources
from forecaster.errors import InvalidArgumentError


def test_task_splits_are_deterministic_disjoint_and_hold_out_every_source():
    tasks = [f"t{i}" for i in range(20)]
    a = splits.split_tasks("lcbench", tasks, seed=0)
    assert a == splits.split_tasks("lcbench", list(reversed(tasks)), seed=0)
    assert sorted(a.values()).count("test") == 4 and sorted(a.values()).count("calib") == 4
    assert a != splits.split_tasks("lcbench", tasks, seed=1)
    small = splits.split_tasks("nanogpt", ["a", "b", "c"])
    assert sorted(small.values()) == ["calib", "test", "train"]
    assert set(splits.split_tasks("one", ["only"]).values()) == {"train"}


def test_synthetic_prior_covers_the_shapes_it_promises(tmp_path):
    runs = list(synthetic.generate(n_tasks=60, runs_per_task=5, seed=3))
    again = synthetic.generate(n_tasks=60, runs_per_task=5, seed=3)
    assert all(
        np.array_equal(a.values, b.values, equal_nan=True) for a, b in zip(runs, again, strict=True)
    )
    assert any(r.lr is not None for r in runs) and any(r.lr is None for r in runs)
    assert {r.direction for r in runs} == {"min", "max"}
    assert any(not np.isfinite(r.values).all() for r in runs)  # divergence
    families = {r.config["family"] for r in runs}
    assert families == set(synthetic.FAMILIES)
    schedules = {r.config["schedule"] for r in runs} - {""}
    assert len(schedules) >= 3
    for r in runs:
        assert (np.diff(r.steps) > 0).all() and r.max_step >= r.steps[-1]
    out = synthetic.write_corpus(tmp_path / "syn", n_tasks=3, runs_per_task=4, seed=0)
    src = sources(out)[0]
    assert src.runs().height == 12
    assert len(src.load(src.runs()["run_id"].to_list()[:2])[0].steps) > 10


def test_samplewise_curves_are_lcdb_shaped_and_cross(tmp_path):
    runs = list(synthetic.generate_samplewise(n_tasks=6, runs_per_task=40, seed=1))
    assert len(runs) == 240 and len({r.task for r in runs}) == 6
    for r in runs:
        assert r.step_unit == "sample" and r.direction == "max" and r.steps[0] == 16
        assert 10 <= len(r.steps) <= 24 and r.max_step == r.steps[-1]
        assert ((r.values >= 0) & (r.values <= 1)).all()
    # learners of one dataset cross: the best at the smallest size is not the best at the end
    crossed = 0
    for task in {r.task for r in runs}:
        mine = [r for r in runs if r.task == task]
        first = max(range(len(mine)), key=lambda i: mine[i].values[0])
        final = max(range(len(mine)), key=lambda i: mine[i].values[-1])
        crossed += first != final
    assert crossed >= 3
    out = synthetic.write_samplewise_corpus(tmp_path / "samplewise", n_tasks=2, runs_per_task=3)
    src = sources(out)[0]
    assert src.runs().height == 6 and set(src.runs()["step_unit"]) == {"sample"}


def test_reader_names_file_run_and_column(tmp_path):
    source = tmp_path / "src"
    synthetic.write_corpus(source, n_tasks=1, runs_per_task=2, seed=0)
    runs = pl.read_parquet(source / "runs.parquet")
    runs.drop("task").write_parquet(source / "runs.parquet")
    with pytest.raises(InvalidArgumentError, match=r"runs.parquet: missing required column.*task"):
        sources(source)[0].runs()
    runs.write_parquet(source / "runs.parquet")
    points = pl.read_parquet(source / "points.parquet")
    first = points["run_id"][0]
    swapped = pl.concat([points.filter(pl.col("run_id") == first).reverse(),
                         points.filter(pl.col("run_id") != first)])  # fmt: skip
    swapped.write_parquet(source / "points.parquet")
    with pytest.raises(
        InvalidArgumentError, match=rf"points.parquet: run '{first}', column 'step'"
    ):
        sources(source)[0].load([first])


def test_a_runs_config_reaches_its_curve_and_bad_json_is_named(tmp_path):
    source = tmp_path / "src"
    synthetic.write_corpus(source, n_tasks=1, runs_per_task=2, seed=0)
    runs = pl.read_parquet(source / "runs.parquet")
    first = runs["run_id"][0]
    run = sources(source)[0].load([first])[0]
    written = json.loads(runs["config"][0])
    assert run.config == written and run.curve().config == written
    assert run.config["learning_rate"] > 0
    broken = runs.with_columns(
        pl.when(pl.col("run_id") == first)
        .then(pl.lit("{lr: 3e-4"))
        .otherwise(pl.col("config"))
        .alias("config")
    )
    broken.write_parquet(source / "runs.parquet")
    with pytest.raises(
        InvalidArgumentError, match=rf"runs.parquet: run '{first}', column 'config': not valid JSON"
    ):
        sources(source)[0].load([first])
