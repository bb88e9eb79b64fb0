"""`forecaster eval` on a small corpus written here, in the schema of datasets/SCHEMA.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from forecaster import cli
from forecaster.evaluation.accuracy import crps_samples

KEYS = {
    *("source", "model", "cutoff", "n_runs", "mae", "medae", "mae_ratio_vs_last_value"),
    *("medae_ratio_vs_last_value", "coverage_50", "coverage_90", "crps", "fit_ms_median"),
    *("n_fallback", "fallback_why"),
}


def write_source(root: Path, name: str, direction: str, curves: dict[str, tuple[str, list]]):
    """curves: run name -> (task, [(step, value, lr), ...])."""
    runs, points = [], []
    for run, (task, rows) in curves.items():
        run_id = f"{name}/{run}"
        runs.append({"run_id": run_id, "source": name, "task": task, "metric": "m",
                     "direction": direction, "step_unit": "step", "max_step": rows[-1][0],
                     "final_step": rows[-1][0], "final_value": rows[-1][1], "target": None,
                     "config": "{}"})  # fmt: skip
        points += [{"run_id": run_id, "step": s, "value": v, "lr": lr, "wall_time": None}
                   for s, v, lr in rows]  # fmt: skip
    (root / name).mkdir(parents=True)
    pl.DataFrame(runs).write_parquet(root / name / "runs.parquet")
    pl.DataFrame(
        points, schema_overrides={"lr": pl.Float64, "wall_time": pl.Float64}
    ).write_parquet(root / name / "points.parquet")


def toy_corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    steps = np.arange(1, 101)
    loss_curves = {}
    for i in range(8):
        a, b, c = 1.0 + 0.1 * i, 2.0, 0.3 + 0.05 * i
        v = a + b * steps**-c + rng.normal(0, 0.002, len(steps))
        loss_curves[f"r{i}"] = (
            f"task{i % 2}",
            [(int(s), float(x), None) for s, x in zip(steps, v, strict=True)],
        )
    # Diverging runs: one ends at 1e8 (finite, scored within the task's plausible range), one
    # ends NaN (not scored).
    up = np.r_[1.5 + steps[:60] ** -0.5, np.geomspace(2, 1e8, 40)]
    loss_curves["boom"] = (
        "task0",
        [(int(s), float(x), None) for s, x in zip(steps, up, strict=True)],
    )
    nan = np.r_[1.5 + steps[:70] ** -0.5, [np.nan] * 30]
    loss_curves["nan"] = (
        "task1",
        [(int(s), float(x), None) for s, x in zip(steps, nan, strict=True)],
    )
    write_source(root, "toy_loss", "min", loss_curves)
    acc_curves = {}
    for i in range(4):
        lr = np.where(steps < 80, 1e-3, 1e-3 * (100 - steps) / 20 + 1e-5)
        v = 0.9 - 0.5 * steps ** -(0.4 + 0.05 * i) + rng.normal(0, 0.002, len(steps))
        acc_curves[f"a{i}"] = (
            "acc",
            [(int(s), float(x), float(r)) for s, x, r in zip(steps, v, lr, strict=True)],
        )
    write_source(root, "toy_acc", "max", acc_curves)
    return root


def run_eval(capsys, *args: str) -> list[dict]:
    code = cli.main(["eval", "--json", "--no-progress", *args])
    assert code == 0
    return json.loads(capsys.readouterr().out)["results"]


def test_eval_json_on_any_corpus_in_the_schema(tmp_path, capsys):
    corpus = toy_corpus(tmp_path / "corpus")
    rows = run_eval(capsys, "--corpus", str(corpus), "--models", "power_law,annealing_law",
                    "--cutoffs", "0.2,0.5", "--workers", "1")  # fmt: skip
    assert rows and all(set(r) == KEYS for r in rows)
    got = {(r["source"], r["model"], r["cutoff"]): r for r in rows}
    assert set(got) == {(s, m, c) for s in ("toy_acc", "toy_loss")
                        for m in ("last_value", "power_law", "annealing_law")
                        for c in (0.2, 0.5)}  # fmt: skip
    lv = got[("toy_loss", "last_value", 0.2)]
    assert lv["n_runs"] == 9  # 8 clean + the one that ends at 1e8; the NaN one is not scored
    assert lv["mae_ratio_vs_last_value"] == 1.0 and math.isfinite(lv["mae"])
    assert all(math.isfinite(r["mae"]) and math.isfinite(r["crps"]) for r in rows)
    pl_row = got[("toy_loss", "power_law", 0.2)]
    assert pl_row["medae_ratio_vs_last_value"] < 0.5  # clean power laws: far better than flat
    assert 0 <= pl_row["coverage_50"] <= pl_row["coverage_90"] <= 1
    assert got[("toy_acc", "annealing_law", 0.2)]["n_runs"] == 4
    # an accuracy is not a loss: the annealing law falls back, and the rows say so
    fell = got[("toy_acc", "annealing_law", 0.2)]
    assert fell["n_fallback"] == 4 and "not a loss" in fell["fallback_why"]
    assert pl_row["n_fallback"] == 0 and pl_row["fallback_why"] == ""


def test_eval_table_marks_the_rows_where_a_model_fell_back(tmp_path, capsys):
    corpus = toy_corpus(tmp_path / "corpus")
    code = cli.main(["eval", "--corpus", str(corpus), "--sources", "toy_acc", "--models",
                     "annealing_law,pow3", "--cutoffs", "0.3", "--workers", "1",
                     "--no-progress"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[-1] == "fallback"
    rows = {line.split()[1]: line for line in lines[1:] if line.startswith("toy_acc")}
    assert rows["annealing_law"].endswith("4 of 4 *") and rows["pow3"].endswith("-")
    assert lines[-1].startswith("* fallback: ") and "not a loss" in lines[-1]


def test_eval_table_with_workers_and_a_progress_bar(tmp_path, capsys):
    corpus = toy_corpus(tmp_path / "corpus")
    code = cli.main(["eval", "--corpus", str(corpus), "--sources", "toy_acc", "--models",
                     "pow3", "--cutoffs", "0.3", "--workers", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "eval" in err  # the bar is on stderr
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["source", "model", "cutoff"]
    assert {line.split()[1] for line in lines[1:]} == {"last_value", "pow3"}


def test_crps_of_samples_matches_the_normal_closed_form():
    z = np.random.default_rng(0).standard_normal(20000)
    y = 0.7
    pdf = math.exp(-(y**2) / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(y / math.sqrt(2)))
    exact = y * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi)
    assert crps_samples(z, y) == pytest.approx(exact, rel=0.02)


def test_bad_corpus_files_name_file_run_and_column(tmp_path, capsys):
    corpus = toy_corpus(tmp_path / "corpus")
    runs = corpus / "toy_acc" / "runs.parquet"
    pl.read_parquet(runs).drop("direction").write_parquet(runs)
    code = cli.main(["eval", "--corpus", str(corpus), "--sources", "toy_acc", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(runs) in err and "direction" in err

    points = corpus / "toy_loss" / "points.parquet"
    df = pl.read_parquet(points)
    pl.concat([df.head(5).reverse(), df.tail(df.height - 5)]).write_parquet(points)
    code = cli.main(["eval", "--corpus", str(corpus), "--sources", "toy_loss",
                     "--workers", "1", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(points) in err and "toy_loss/r0" in err and "'step'" in err

    code = cli.main(["eval", "--corpus", str(corpus), "--sources", "nope", "--no-progress"])
    assert code == 2 and "no source nope" in capsys.readouterr().err
