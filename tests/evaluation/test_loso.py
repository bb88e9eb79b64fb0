"""Leave-one-source-out: a scored source never reaches what scores it; same arguments, same
figures (training and evaluation)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest

from forecaster.cli import main
from forecaster.corpus.splits import leave_one_source_out
from forecaster.corpus.synthetic import generate
from forecaster.corpus.writer import write_source
from forecaster.errors import InvalidArgumentError
from forecaster.evaluation.accuracy import aggregate, score_corpus
from forecaster.evaluation.loso import DONE, LosoTraining, score_loso
from forecaster.training import train_all
from forecaster.training.report import EXAMPLE_INDEX

MARKER_TASK = "marker-task-7f3c"
MARKER_RUN = f"syn_c/{MARKER_TASK}/marker-run"
TINY = LosoTraining(
    max_runs_per_task=6, synthetic_tasks=6, pretrain_epochs=1, finetune_epochs=1, gbm_rounds=15
)


@pytest.fixture(scope="module")
def marked_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small synthetic sources; syn_c holds a task and runs named like nothing else."""
    root = tmp_path_factory.mktemp("loso_corpus")
    write_source(root / "syn_a", generate(4, 6, seed=21, source="syn_a"))
    write_source(root / "syn_b", generate(4, 6, seed=22, source="syn_b"))
    runs = list(generate(5, 6, seed=23, source="syn_c"))
    template = [r for r in runs if r.task == runs[0].task]
    marked = [
        dataclasses.replace(r, task=MARKER_TASK, run_id=f"{MARKER_RUN}-{i}")
        for i, r in enumerate(template)
    ]
    write_source(root / "syn_c", runs + marked)
    return root


def _seen_by(folder: Path) -> tuple[pl.DataFrame, list[dict]]:
    """What a bank learned from: its example index, and every artifact's meta.json."""
    index = pl.read_parquet(folder / EXAMPLE_INDEX)
    metas = [json.loads(p.read_text()) for p in sorted(folder.glob("*/meta.json"))]
    return index, metas


@pytest.mark.slow  # trains two small banks
def test_the_scored_source_never_reaches_training_or_calibration(marked_corpus, tmp_path):
    scores, names, banks = score_loso(
        marked_corpus, source_names=["syn_c"], model_names=["power_law", "ensemble", "auto"],
        cutoffs=[0.2], max_runs_per_task=6, workers=1, progress=False, training=TINY,
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert names == ["last_value", "power_law", "ensemble", "auto"]
    scored = {s.run_id for s in scores}
    assert {s.source for s in scores} == {"syn_c"}
    assert any(r.startswith(MARKER_RUN) for r in scored)  # the marker was scored...

    index, metas = _seen_by(banks["syn_c"])
    assert set(index["part"].unique()) >= {"train", "calib", "test", "prior"}
    # ...by models that never had it, nor anything of its source, in any example set.
    assert not index.filter(pl.col("run_id").str.contains(MARKER_TASK)).height
    assert not index.filter(pl.col("task").str.starts_with("syn_c/")).height
    assert set(index.filter(pl.col("part") != "prior")["source"]) == {"syn_a", "syn_b"}
    assert {m["name"] for m in metas} >= {"gbm", "sequence", "ensemble", "calibration"}
    for meta in metas:
        assert meta["holdout_sources"] == ["syn_c"]
        assert meta["corpus_sources"] == ["syn_a", "syn_b"]
        # The calibration tables have no test split: every task they read is a training one.
        tasks = [*meta["training_tasks"], *meta.get("test_tasks", [])]
        assert tasks and not [t for t in tasks if t.startswith("syn_c/")]

    # The same instrument sees the marker when nothing is held out.
    everything = tmp_path / "all"
    train_all(
        marked_corpus, everything, max_runs_per_task=TINY.max_runs_per_task,
        synthetic_tasks=TINY.synthetic_tasks, pretrain_epochs=1, finetune_epochs=1,
        gbm_rounds=15, workers=1, progress=False, example_index=True,
    )  # fmt: skip
    index, metas = _seen_by(everything)
    assert index.filter(pl.col("run_id").str.contains(MARKER_TASK)).height
    assert all(m["holdout_sources"] == [] for m in metas)

    # A second evaluation reuses the bank (no retraining) and gives the same figures.
    done = (banks["syn_c"] / DONE).stat().st_mtime_ns
    again, _, banks2 = score_loso(
        marked_corpus, source_names=["syn_c"], model_names=["power_law", "ensemble", "auto"],
        cutoffs=[0.2], max_runs_per_task=6, workers=1, progress=False, training=TINY,
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert banks2 == banks and (banks["syn_c"] / DONE).stat().st_mtime_ns == done
    assert _figures(aggregate(again, names)) == _figures(aggregate(scores, names))


def _figures(rows: list[dict]) -> list[dict]:
    """The accuracy figures of aggregated rows (fit times are measurements, not figures)."""
    return [{k: v for k, v in r.items() if k != "fit_ms_median"} for r in rows]


def test_train_holds_out_named_sources_and_refuses_unknown_ones(marked_corpus, tmp_path, capsys):
    assert main(["train", "--corpus", str(marked_corpus), "--out", str(tmp_path / "m"),
                 "--holdout-source", "syn_x", "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "syn_x" in err and "syn_a" in err and len(err.splitlines()) == 1
    assert main(["eval", "--corpus", str(marked_corpus), "--protocol", "loso",
                 "--models-dir", str(tmp_path), "--no-progress"]) == 2  # fmt: skip
    assert "do not apply to --protocol loso" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="every source is held out"):
        train_all(marked_corpus, tmp_path / "m", holdout_sources=["syn_a", "syn_b", "syn_c"])
    assert leave_one_source_out(["syn_b", "syn_a", "syn_c"]) == [
        (["syn_b", "syn_c"], "syn_a"),
        (["syn_a", "syn_c"], "syn_b"),
        (["syn_a", "syn_b"], "syn_c"),
    ]


@pytest.mark.slow  # trains twice more
def test_training_twice_with_the_same_arguments_gives_the_same_models(
    trained_models, synthetic_corpus, tmp_path
):
    # The same arguments as the trained_models fixture (tests/conftest.py); then again with
    # every task's examples read back from the example cache the first run filled.
    first = json.loads((trained_models / "ensemble" / "meta.json").read_text())
    for again in ("fills", "reads"):
        metrics = train_all(
            synthetic_corpus, tmp_path / again, max_runs_per_task=12, synthetic_tasks=12,
            pretrain_epochs=1, finetune_epochs=2, gbm_rounds=25, workers=1, progress=False,
            example_cache=tmp_path / "examples",
        )  # fmt: skip
        assert json.loads(json.dumps(metrics)) == first["heldout_metrics"]
        for name in ("gbm", "ensemble"):
            a = json.loads((trained_models / name / "meta.json").read_text())["files"]
            b = json.loads((tmp_path / again / name / "meta.json").read_text())["files"]
            assert a == b  # every file's sha256: the same trees, stacking weights and deltas
    assert len(list((tmp_path / "examples").glob("*.npz"))) >= 14 + 12  # corpus + prior tasks


def test_evaluating_twice_gives_the_same_figures_whatever_order_workers_finish_in(
    trained_models, synthetic_corpus
):
    runs = []
    for workers in (2, 2, 1):
        scores, names = score_corpus(
            synthetic_corpus, model_names=["power_law", "ensemble", "auto"], cutoffs=[0.2, 0.5],
            max_runs_per_task=4, workers=workers, progress=False, models_dir=str(trained_models),
        )  # fmt: skip
        runs.append(_figures(aggregate(scores, names)))
    assert runs[0] and runs[0] == runs[1] == runs[2]
