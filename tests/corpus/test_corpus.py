"""Splits by task, the synthetic prior, the source writer and the importers, through the CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from forecaster.cli import main
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


def _tensorboard_logs(root: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for r in range(2):
        writer = SummaryWriter(str(root / f"run{r}"))
        for s in range(1, 41):
            writer.add_scalar("train/loss", 3 * s**-0.3 + r, s)
            writer.add_scalar("val/loss", 3 * s**-0.3 + r + 0.1, s)
            writer.add_scalar("lr", 0.1 * (1 - s / 50), s)
        writer.close()


def _mlflow_store(root: Path) -> None:
    (root / "1").mkdir(parents=True)
    (root / "1" / "meta.yaml").write_text("name: cifar\nexperiment_id: '1'\n")
    for r in range(2):
        run = root / "1" / f"abc{r}"
        (run / "metrics").mkdir(parents=True)
        (run / "params").mkdir()
        (run / "meta.yaml").write_text(f"run_name: trial-{r}\n")
        (run / "params" / "batch_size").write_text("64")
        lines = "".join(f"{1000 + s} {2 * s**-0.5 + r} {s}\n" for s in range(1, 31))
        (run / "metrics" / "val_loss").write_text(lines)
        (run / "metrics" / "learning_rate").write_text("".join(f"0 0.01 {s}\n" for s in (1, 20)))


def _read(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_parquet(out / "runs.parquet"), pl.read_parquet(out / "points.parquet")


def test_import_tensorboard(tmp_path, capsys):
    _tensorboard_logs(tmp_path / "tb")
    assert main(["import", "tensorboard", str(tmp_path / "tb"), "--out",
                 str(tmp_path / "mine"), "--no-progress"]) == 0  # fmt: skip
    runs, points = _read(tmp_path / "mine")
    assert runs["metric"].to_list() == ["val/loss", "val/loss"]  # the validation loss
    assert runs["run_id"].to_list() == ["mine/run0", "mine/run1"]
    run0 = points.filter(pl.col("run_id") == "mine/run0")
    assert run0["step"].to_list() == list(range(1, 41))
    assert run0["value"][0] == pytest.approx(3.1, rel=1e-5)
    assert run0["lr"][9] == pytest.approx(0.1 * (1 - 10 / 50), rel=1e-5)
    # The imported folder is a corpus `forecaster eval` reads.
    assert main(["eval", "--corpus", str(tmp_path / "mine"), "--models", "pow3",
                 "--workers", "1", "--no-progress", "--cutoffs", "0.5"]) == 0  # fmt: skip
    assert "pow3" in capsys.readouterr().out


def test_import_tensorboard_without_the_extra_names_it(tmp_path, monkeypatch, capsys):
    _tensorboard_logs(tmp_path / "tb")
    # As if tensorboard were not installed: importing it raises ModuleNotFoundError.
    for name in ("tensorboard", "tensorboard.backend.event_processing"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["import", "tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "needs the tensorboard package" in err and 'pip install "forecaster[tensorboard]"' in err
    assert not os.path.exists(tmp_path / "x" / "runs.parquet")


def test_import_mlflow_wandb_and_long(tmp_path, capsys):
    _mlflow_store(tmp_path / "mlruns")
    assert main(["import", "mlflow", str(tmp_path / "mlruns"), "--out", str(tmp_path / "ml"),
                 "--no-progress"]) == 0  # fmt: skip
    runs, points = _read(tmp_path / "ml")
    assert runs["task"].to_list() == ["cifar", "cifar"]
    assert runs["run_id"].to_list() == ["ml/cifar/trial-0", "ml/cifar/trial-1"]
    assert json.loads(runs["config"][0]) == {"batch_size": "64"}
    lr = points.filter(pl.col("run_id") == "ml/cifar/trial-0")["lr"].to_list()
    assert lr[0] == 0.01 and lr[-1] == 0.01 and len(lr) == 30

    csv = tmp_path / "chart.csv"
    csv.write_text(
        "Step,a - val_acc,a - val_acc__MIN,b - val_acc\n"
        + "".join(f"{s},{1 - 1 / s},{1 - 1 / s},{1 - 2 / s}\n" for s in range(1, 21))
    )
    assert main(["import", "wandb", str(csv), "--out", str(tmp_path / "wb")]) == 2
    assert "no metric with 'loss'" in capsys.readouterr().err
    assert main(["import", "wandb", str(csv), "--out", str(tmp_path / "wb"), "--metric",
                 "val_acc", "--no-progress"]) == 0  # fmt: skip
    runs, _ = _read(tmp_path / "wb")
    assert runs["run_id"].to_list() == ["wb/a", "wb/b"]
    assert runs["direction"].to_list() == ["max", "max"]  # accuracy-like name
    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"_step": s, "loss": 1 / (s + 1), "lr": 0.1} for s in range(5)]))
    assert main(["import", "wandb", str(history), "--out", str(tmp_path / "wbj"),
                 "--no-progress"]) == 0  # fmt: skip
    runs, points = _read(tmp_path / "wbj")
    assert runs["final_step"][0] == 4 and points["lr"].to_list() == [0.1] * 5

    long = tmp_path / "long.csv"
    long.write_text("run_id,step,value,task\n" + "".join(
        f"r{r},{s},{1 / s + r},demo\n" for r in range(2) for s in (3, 1, 2)))  # fmt: skip
    assert main(["import", "long", str(long), "--out", str(tmp_path / "lg"),
                 "--no-progress"]) == 0  # fmt: skip
    _, points = _read(tmp_path / "lg")
    assert points.filter(pl.col("run_id") == "lg/r0")["step"].to_list() == [1, 2, 3]


def test_importers_say_which_kind_they_expected(tmp_path, capsys):
    _tensorboard_logs(tmp_path / "tb")
    csv = tmp_path / "history.csv"
    csv.write_text("_step,loss\n1,2.0\n2,1.5\n")
    cases = [
        (["tensorboard", str(csv)], "not a 'tensorboard' log.*looks like 'wandb'"),
        (["wandb", str(tmp_path / "tb")], "not a 'wandb' log.*looks like 'tensorboard'"),
        (["mlflow", str(csv)], "not a 'mlflow' log: expected an MLflow file store"),
        (["long", str(csv)], "not a 'long' log: expected columns run_id, step, value"),
    ]
    for argv, pattern in cases:
        assert main(["import", *argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("forecaster: error:")
        assert __import__("re").search(pattern, err), err
    bad = tmp_path / "bad.csv"
    bad.write_text("run_id,step,value\nr1,1,1.0\nr1,1,2.0\n")
    assert main(["import", "long", str(bad), "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "bad.csv: run 'r1', column 'step': step 1 appears twice" in capsys.readouterr().err
    bad.write_text("run_id,step,value\nr1,1,1.0\nr1,2,oops\n")
    assert main(["import", "long", str(bad), "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "run 'r1', column 'value': 'oops' is not a number" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y" / "runs.parquet")
