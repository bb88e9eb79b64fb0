"""forecaster batch: the sample corpus and points files through the judging path into Parquet;
the same bytes on every engine; a kill and --resume lose and repeat nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from forecaster.batch import CorpusInput, JudgeSpec, LocalEngine, RayEngine, points_input, run_batch
from forecaster.cli import main
from forecaster.errors import InvalidArgumentError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "sample"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "trainer_plugins")])}


def _sweep_csv(path: Path) -> Path:
    """Two studies of power-law runs; in each, run 0 is far better than the rest."""
    rows = []
    for task in ("a", "b"):
        for r in range(6):
            for s in range(1, 41):
                value = 0.2 + 0.3 * r + (1.0 + 0.2 * r) * s**-0.5 + 0.002 * np.sin(s)
                rows.append((f"{task}-{r}", s, value, 0.1, task, 40))
    frame = pl.DataFrame(
        rows, schema=["run_id", "step", "value", "lr", "task", "max_step"], orient="row"
    )
    frame.write_csv(path)
    return path


def test_sample_corpus_gives_one_row_per_run_and_cutoff(tmp_path):
    out = tmp_path / "results.parquet"
    summary = run_batch(
        CorpusInput(str(SAMPLE), ("lcbench",)),
        out,
        JudgeSpec(model="pow3", cutoffs=(0.2, 0.5)),
        engine=LocalEngine(1),
        progress=False,
    )
    runs = pl.read_parquet(SAMPLE / "lcbench" / "runs.parquet")
    df = pl.read_parquet(out)
    assert summary.runs == runs.height and df.height == 2 * runs.height
    assert df.select("run_id", "cutoff").is_duplicated().sum() == 0
    assert set(df["model"]) == {"pow3"} and set(df["action"]) <= {"stop", "continue"}
    assert (df["q05"] <= df["q50"]).all() and (df["q50"] <= df["q95"]).all()
    assert (df["last_step"] < df["final_step"]).all()  # judged before the end
    assert df["explanation"].str.len_chars().min() > 0
    assert df.filter(pl.col("cutoff") == 0.5)["path_steps"].list.len().min() > 1
    # Rows come in the order of the studies, then of their runs.
    assert df["task"].to_list() == sorted(df["task"].to_list())


def test_points_csv_studies_by_task_have_an_incumbent(tmp_path):
    csv = _sweep_csv(tmp_path / "sweep.csv")
    out = tmp_path / "r.parquet"
    assert main(["batch", "--points", str(csv), "--out", str(out), "--model", "pow3",
                 "--at", "0.5", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    df = pl.read_parquet(out)
    assert df.height == 12 and set(df["task"]) == {"a", "b"}
    by_run = {r["run_id"]: r for r in df.iter_rows(named=True)}
    for task in ("a", "b"):
        assert by_run[f"{task}-0"]["action"] == "continue"  # the best run of its study
        assert by_run[f"{task}-5"]["reason"] == "unpromising"  # far behind the incumbent
        assert by_run[f"{task}-5"]["action"] == "stop"
    assert not (tmp_path / "r.parquet.input").exists()  # the converted CSV is cleaned up


def test_points_csv_with_a_bad_value_is_one_line_naming_the_column(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("run_id,step,value,lr\nr1,1,0.9,0.1\nr1,2,0.8,0.1\nr1,3,oops,0.1\n")
    assert main(["batch", "--points", str(bad), "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "column 'value'" in err and "'oops'" in err and "line 4" in err
    missing = tmp_path / "missing.csv"
    missing.write_text("run_id,stp,value\nr1,1,0.9\n")
    assert main(["batch", "--points", str(missing), "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing column(s) step" in err
    assert not (tmp_path / "o.parquet").exists()


def test_bad_lr_in_parquet_points_is_named(tmp_path):
    frame = pl.DataFrame(
        {"run_id": ["a", "a"], "step": [1, 2], "value": [1.0, 0.9], "lr": ["x", "0.1"]}
    )
    frame.write_parquet(tmp_path / "p.parquet")
    with pytest.raises(InvalidArgumentError, match="column 'lr': 'x' is not a number"):
        points_input(tmp_path / "p.parquet", tmp_path / "work")


@pytest.mark.slow
def test_local_and_ray_engines_write_the_same_bytes(tmp_path):
    ray = pytest.importorskip("ray")
    spec = JudgeSpec(model="pow3", cutoffs=(0.3, 0.7))
    corpus = CorpusInput(str(SAMPLE))
    outputs = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name, engine in (
            ("ray", RayEngine()),
            ("local", LocalEngine(2)),
            ("one", LocalEngine(1)),
        ):
            out = tmp_path / f"{name}.parquet"
            run_batch(
                corpus, out, spec, engine=engine, runs_per_job=16, row_group_rows=64, progress=False
            )
            outputs[name] = out.read_bytes()
    finally:
        ray.shutdown()
    assert outputs["ray"] == outputs["local"] == outputs["one"]
    df = pl.read_parquet(tmp_path / "ray.parquet")
    total = sum(
        pl.read_parquet(SAMPLE / s / "runs.parquet").height
        for s in ("lcbench", "lr_scheduling_llm", "taskset")
    )
    assert df.height == 2 * total
    assert pl.read_parquet_schema(tmp_path / "ray.parquet")  # a whole file, footer and all


@pytest.mark.slow
def test_resume_after_a_kill_keeps_every_written_row_and_repeats_none(tmp_path):
    out = tmp_path / "results.parquet"
    args = [sys.executable, "-m", "forecaster.cli", "batch", "--corpus", str(SAMPLE), "--out",
            str(out), "--model", "power_law", "--at", "0.5", "--workers", "1",
            "--runs-per-job", "4", "--row-group-rows", "4", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not out.exists()
    before = {p.name: pl.read_parquet(p) for p in parts.glob("part-*.parquet")}
    assert len(before) >= 3
    written = pl.concat(list(before.values()))
    resumed = subprocess.run(
        [*args, "--resume"], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"({written.height} written before, kept)" in resumed.stderr
    final = pl.read_parquet(out)
    assert final.select("run_id", "cutoff").is_duplicated().sum() == 0
    # every row written before the kill is in the results, unchanged
    kept = final.join(written.select("run_id", "cutoff"), on=["run_id", "cutoff"], how="semi")
    assert kept.height == written.height
    assert kept.sort("run_id").equals(written.sort("run_id"))
    # and the results are those of a batch never interrupted, byte for byte
    fresh = tmp_path / "fresh.parquet"
    subprocess.run(
        [*args[:7], str(fresh), *args[8:]], env=ENV, check=True, capture_output=True, timeout=600
    )
    assert fresh.read_bytes() == out.read_bytes()
    assert not parts.exists()


def test_unfinished_parts_without_resume_are_refused(tmp_path):
    out = tmp_path / "r.parquet"
    (tmp_path / "r.parquet.parts").mkdir()
    with pytest.raises(InvalidArgumentError, match="pass --resume"):
        corpus = CorpusInput(str(SAMPLE), ("lr_scheduling_llm",))
        run_batch(corpus, out, JudgeSpec(model="last_value"), engine=LocalEngine(1), progress=False)


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "r.parquet"
    corpus = CorpusInput(str(SAMPLE), ("lr_scheduling_llm",))
    seen: list[int] = []

    def stop_after_first(index: int) -> None:
        seen.append(index)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(corpus, out, JudgeSpec(model="last_value"), engine=LocalEngine(1), progress=False,
                  runs_per_job=2, row_group_rows=2, on_job=stop_after_first)  # fmt: skip
    assert seen == [0]
    with pytest.raises(InvalidArgumentError, match="spec differ"):
        run_batch(corpus, out, JudgeSpec(model="pow3"), engine=LocalEngine(1), progress=False,
                  runs_per_job=2, row_group_rows=2, resume=True)  # fmt: skip
    summary = run_batch(corpus, out, JudgeSpec(model="last_value"), engine=LocalEngine(1),
                        progress=False, runs_per_job=2, row_group_rows=2, resume=True)  # fmt: skip
    assert summary.skipped_runs == 2
    assert pl.read_parquet(out).height == summary.runs


def test_at_step_judges_only_the_runs_that_got_there(tmp_path):
    out = tmp_path / "r.parquet"
    run_batch(CorpusInput(str(SAMPLE), ("lr_scheduling_llm",)), out,
              JudgeSpec(model="last_value", at_steps=(2000, 12000)), engine=LocalEngine(1),
              progress=False)  # fmt: skip
    df = pl.read_parquet(out)
    assert df["cutoff"].is_null().all()
    assert (df["last_step"] <= 12000).all()
    long_runs = df.filter(pl.col("last_step") > 2000)
    assert (long_runs["final_step"] >= 12000).all()
    assert df.filter(pl.col("final_step") < 12000).group_by("run_id").len()["len"].max() == 1


@pytest.mark.slow
def test_replay_on_the_ray_engine_gives_the_local_results():
    ray = pytest.importorskip("ray")
    from forecaster.evaluation import replay

    kwargs = dict(
        source_names=["lr_scheduling_llm"],
        policy_specs=["forecast:epsilon=0.05", "median"],
        max_runs_per_task=6,
        forecaster="pow3",
        progress=False,
    )
    local = replay.summarize(replay.replay_corpus(str(SAMPLE), workers=1, **kwargs))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = replay.summarize(replay.replay_corpus(str(SAMPLE), engine="ray", **kwargs))
    finally:
        ray.shutdown()
    assert on_ray == local and len(local) >= 2


def test_an_import_source_is_batched_like_a_corpus(tmp_path):
    out = tmp_path / "r.parquet"
    sweep = REPO / "datasets" / "long" / "sweep.csv"
    assert main(["batch", "--import", "long", str(sweep), "--out", str(out), "--model",
                 "last_value", "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    df = pl.read_parquet(out)
    assert df.height == pl.read_csv(sweep)["run_id"].n_unique()
    assert df["task"].n_unique() == 2
    assert not (tmp_path / "r.parquet.input").exists()


@pytest.mark.parametrize(("model", "source"), [("pow3", "lcbench"), ("auto", "taskset")])
def test_rows_do_not_depend_on_how_the_runs_are_batched(tmp_path, model, source):
    """A job fits its runs' forecasts together (and the stop votes' earlier prefixes in
    rounds): judging one run a job, where nothing is fitted with another run, gives the same
    rows."""
    spec = JudgeSpec(model=model, cutoffs=(0.3, 0.6))
    frames = []
    for per_job in (1, 256):
        out = tmp_path / f"{per_job}.parquet"
        run_batch(
            CorpusInput(str(SAMPLE), (source,)),
            out,
            spec,
            engine=LocalEngine(1),
            runs_per_job=per_job,
            progress=False,
        )
        frames.append(pl.read_parquet(out))
    one_a_job, together = frames
    assert together.height == 2 * pl.read_parquet(SAMPLE / source / "runs.parquet").height
    assert one_a_job.equals(together)
    # The stop votes were counted on earlier forecasts (the rounds ran), on some runs.
    assert (together["stop_votes"] >= 2).any()
    if model == "auto":
        assert (together["model"] == "ensemble").sum() > together.height // 2
