"""The importers (forecaster/corpus/importers/), through the CLI `forecaster import KIND`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import polars as pl
import pytest

from forecaster.cli import main


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
