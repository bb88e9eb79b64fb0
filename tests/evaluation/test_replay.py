"""`forecaster replay` on a small corpus written here; and the replay decides as the service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from forecaster import cli
from forecaster.corpus.reader import sources
from forecaster.curves import Direction, Points
from forecaster.engine import Engine
from forecaster.evaluation import replay
from forecaster.models.artifacts import ModelBank
from forecaster.policies import Action
from forecaster.store import RunSpec, RunState, StudySpec
from forecaster.store.sqlite import SqliteStore
from tests.evaluation.test_accuracy import write_source

KEYS = {"source", "policy", "params", "n_tasks", "compute_fraction", "mean_rel_regret",
        "top1_kept", "top3_kept"}  # fmt: skip


def sweep_corpus(root: Path, n_runs: int = 10) -> Path:
    """Two tasks of power-law runs that differ in where they end; one run diverges."""
    rng = np.random.default_rng(1)
    steps = np.arange(1, 61)
    curves = {}
    for task in ("a", "b"):
        for i in range(n_runs):
            level = 1.0 + 0.15 * ((i * 7) % n_runs)
            v = level + 2.0 * (steps / 5.0) ** -0.6 + rng.normal(0, 0.003, len(steps))
            curves[f"{task}{i}"] = (
                task,
                [(int(s), float(x), None) for s, x in zip(steps, v, strict=True)],
            )
    boom = np.r_[1.5 + steps[:30] ** -0.5, np.full(30, np.nan)]
    curves["boom"] = ("a", [(int(s), float(x), None) for s, x in zip(steps, boom, strict=True)])
    write_source(root, "toy", "min", curves)
    return root


def test_no_stopping_runs_everything_and_forecast_saves_compute(tmp_path):
    corpus = sweep_corpus(tmp_path / "corpus")
    results = replay.replay_corpus(
        corpus, policy_specs=["none", "forecast:epsilon=0.05"], workers=1, progress=False
    )
    rows = {(r["source"], r["policy"]): r for r in replay.summarize(results)}
    none, ours = rows[("toy", "none")], rows[("toy", "forecast")]
    assert set(none) >= KEYS and none["n_tasks"] == 2
    assert none["compute_fraction"] == 1.0 and none["mean_rel_regret"] == 0.0
    assert none["top1_kept"] == 1.0
    assert ours["compute_fraction"] < 0.8  # clearly worse runs are cut early
    assert ours["top1_kept"] == 1.0 and ours["mean_rel_regret"] < 0.01
    assert rows[("all", "forecast")]["n_tasks"] == 2
    task_a = next(r for r in results if r.task == "a" and r.setting.family == "forecast")
    boom = next(o for o in task_a.outcomes if o[0] == "toy/boom")
    assert boom[2] in ("diverged", "unpromising") and boom[1] <= 31  # at its first NaN at most


def test_the_replay_decides_as_the_service(tmp_path):
    """One run at a time, the replay's stops are the Engine's, step for step."""
    corpus = sweep_corpus(tmp_path / "corpus", n_runs=6)
    source = sources(corpus)[0]
    ids = tuple(f"toy/a{i}" for i in range(6))
    params = {"epsilon": 0.05, "hysteresis": 2}
    setting = replay.Setting("forecast", tuple(params.items()))
    bank = ModelBank.load("")  # the shipped models, for both
    job = replay._Job(source, "a", ids, (setting,), 1, 100, "", False, bank)
    (result,) = replay.replay_task(job)

    engine = Engine(SqliteStore(tmp_path / "service.db"), models=bank)
    engine.create_study(StudySpec("a", "m", Direction.MIN, 60, None, "forecast", params))
    service = []
    for run in source.load(list(ids)):
        engine.start_run("a", RunSpec(run.run_id, max_step=int(run.steps[-1])))
        reason = ""
        for s, v in zip(run.steps, run.values, strict=True):
            d = engine.report("a", run.run_id, Points.of([int(s)], [float(v)])).decision
            if d.action is Action.STOP:
                reason = "" if s == run.steps[-1] else d.reason.value
                break
        engine.finish_run("a", run.run_id, RunState.STOPPED if reason else RunState.FINISHED)
        service.append((run.run_id, int(s), reason))
    assert list(result.outcomes) == service
    assert any(reason for _, _, reason in service)  # the comparison includes stops


def test_optuna_pruners_run_through_optuna(tmp_path):
    corpus = sweep_corpus(tmp_path / "corpus")
    specs = ["optuna_median:n_warmup_fraction=0.1", "optuna_sha:reduction_factor=3",
             "optuna_hyperband:reduction_factor=3", "optuna_patient:patience=3"]  # fmt: skip
    results = replay.replay_corpus(corpus, policy_specs=specs, workers=1, progress=False)
    rows = [r for r in replay.summarize(results) if r["source"] == "toy"]
    assert {r["policy"] for r in rows} == {s.partition(":")[0] for s in specs}
    assert all(r["compute_fraction"] < 1.0 for r in rows)  # each of them pruned something


def test_hyperband_replays_the_same_every_time(tmp_path):
    # Issue 14: the Optuna study had a random name, and HyperbandPruner picks a trial's bracket
    # from a hash of the study name, so two replays of the same corpus differed.
    corpus = sweep_corpus(tmp_path / "corpus")
    specs = ["optuna_hyperband:reduction_factor=2"]
    first, second = (
        [r.outcomes for r in replay.replay_corpus(corpus, policy_specs=specs, workers=1,
                                                  progress=False)]
        for _ in range(2)
    )  # fmt: skip
    assert first == second


def test_cli_prints_json_and_draws_the_plot(tmp_path, capsys):
    corpus = sweep_corpus(tmp_path / "corpus", n_runs=5)
    png = tmp_path / "out" / "replay.png"
    code = cli.main(
        ["replay", "--corpus", str(corpus), "--policies", "none", "median", "forecast:epsilon=0.1",
         "--parallel", "2", "--workers", "1", "--json", "--no-progress", "--plot", str(png)]
    )  # fmt: skip
    assert code == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert {r["policy"] for r in results} == {"none", "median", "forecast"}
    assert all(set(r) >= KEYS for r in results)
    assert len([r for r in results if r["policy"] == "median" and r["source"] == "toy"]) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--policies", "oracle"], ["oracle", "forecast"]),
        (["--policies", "forecast:epsilon=2"], ["epsilon"]),
        (["--parallel", "0"], ["--parallel"]),
    ],
)
def test_bad_arguments_say_what_to_do(tmp_path, capsys, args, words):
    corpus = sweep_corpus(tmp_path / "corpus", n_runs=3)
    code = cli.main(["replay", "--corpus", str(corpus), "--no-progress", "--plot", "", *args])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words)


def test_a_corpus_missing_a_column_names_file_and_column(tmp_path, capsys):
    import polars as pl

    corpus = sweep_corpus(tmp_path / "corpus", n_runs=3)
    runs = pl.read_parquet(corpus / "toy" / "runs.parquet").drop("direction")
    runs.write_parquet(corpus / "toy" / "runs.parquet")
    code = cli.main(["replay", "--corpus", str(corpus), "--no-progress", "--plot", ""])
    err = capsys.readouterr().err
    assert code == 2 and "runs.parquet" in err and "direction" in err


def test_a_policy_that_never_stops_says_why(tmp_path, capsys):
    """Optuna's MedianPruner waits for 5 completed trials: on tasks of 4 runs it never prunes,
    and the row says so instead of showing compute 1.0 alone."""
    corpus = sweep_corpus(tmp_path / "corpus", n_runs=4)
    code = cli.main(
        ["replay", "--corpus", str(corpus), "--policies", "optuna_median:n_warmup_fraction=0.1",
         "forecast:epsilon=0.1", "--parallel", "2", "--workers", "1", "--no-progress",
         "--plot", ""]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    notes = [line for line in out.splitlines() if line.startswith("- optuna_median")]
    assert notes and "n_startup_trials=5" in notes[0] and "largest task here has 5 runs" in notes[0]
    assert not any(line.startswith("- forecast") for line in out.splitlines())


def test_plot_labels_do_not_overlap(tmp_path):
    """Points close together (a sweep whose settings all land near one spot) get labels that
    overlap neither each other nor the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from forecaster.reporting.png import place_labels

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    xs = [0.50, 0.501, 0.502, 0.503, 0.70, 0.701]
    ys = [0.010, 0.0101, 0.0102, 0.0100, 0.02, 0.0201]
    ax.plot(xs, ys, "-o", label="forecast")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    placed = place_labels(
        ax,
        [
            (f"{v:g}", x, y, "C0")
            for v, x, y in zip((0.01, 0.02, 0.05, 0.1, 0.2, 0.4), xs, ys, strict=True)
        ],
    )
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in placed]
    assert len(boxes) == 6
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    plt.close(fig)


def test_the_forecast_sweep_runs_its_bold_end_and_labels_it(tmp_path):
    """The forecast family's sweep is its epsilons plus the extra settings of fewer stop votes;
    an extra setting replays as any other, runs less compute than its three-vote twin, and is
    labelled on the chart with what sets it apart."""
    from forecaster.evaluation.replay.report import _point_label
    from forecaster.evaluation.replay.settings import SWEEP_EXTRAS, SWEEPS

    settings = replay.parse_settings(["forecast"])
    assert len(settings) == len(SWEEPS["forecast"][1]) + len(SWEEP_EXTRAS["forecast"])
    bold = settings[-2]
    assert dict(bold.params) == {"epsilon": 0.5, "hysteresis": 1}
    assert _point_label(dict(bold.params), "epsilon") == "0.5000, hysteresis=1"
    assert dict(settings[-1].params) == {"epsilon": 0.8, "hysteresis": 1}
    assert _point_label({"epsilon": 0.2}, "epsilon") == "0.2000"
    corpus = sweep_corpus(tmp_path / "corpus")
    results = replay.replay_corpus(
        corpus,
        policy_specs=["forecast:epsilon=0.5", "forecast:epsilon=0.5,hysteresis=1"],
        workers=1,
        progress=False,
    )
    rows = {json.dumps(r["params"], sort_keys=True): r for r in replay.summarize(results)
            if r["source"] == "toy"}  # fmt: skip
    one_vote = rows[json.dumps({"epsilon": 0.5, "hysteresis": 1}, sort_keys=True)]
    three_votes = rows[json.dumps({"epsilon": 0.5}, sort_keys=True)]
    assert one_vote["compute_fraction"] < three_votes["compute_fraction"]
