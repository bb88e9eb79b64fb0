"""`forecaster eval` on learned models scores only the tasks they never trained on."""

from __future__ import annotations

import json

import pytest

from forecaster.cli import main
from forecaster.errors import FailedPreconditionError
from forecaster.evaluation.accuracy import aggregate, score_corpus


def test_learned_models_are_scored_on_held_out_tasks_beside_the_parametric(
    trained_models, synthetic_corpus
):
    meta = json.loads((trained_models / "ensemble" / "meta.json").read_text())
    scores, names = score_corpus(
        synthetic_corpus, model_names=["power_law", "gbm", "ensemble"], cutoffs=[0.2],
        max_runs_per_task=4, workers=1, progress=False, models_dir=str(trained_models),
    )  # fmt: skip
    assert names == ["last_value", "power_law", "gbm", "ensemble"]
    tasks = {s.run_id.rsplit("/", 1)[0] for s in scores}
    assert tasks and tasks <= set(meta["test_tasks"])
    assert not tasks & set(meta["training_tasks"])
    rows = aggregate(scores, names)
    models_scored = {r["model"] for r in rows}
    assert models_scored == set(names)
    for r in rows:
        assert r["n_runs"] > 0 and 0 <= r["coverage_90"] <= 1

    every, _ = score_corpus(
        synthetic_corpus, model_names=["gbm"], cutoffs=[0.2], max_runs_per_task=2, workers=1,
        progress=False, models_dir=str(trained_models), heldout=False,
    )  # fmt: skip
    assert {s.run_id.rsplit("/", 1)[0] for s in every} > tasks


def test_eval_of_a_learned_model_that_is_not_there_says_how_to_train_it(
    synthetic_corpus, tmp_path, capsys
):
    with pytest.raises(FailedPreconditionError, match="forecaster train"):
        score_corpus(synthetic_corpus, model_names=["gbm"], models_dir=str(tmp_path),
                     workers=1, progress=False)  # fmt: skip
    assert main(["eval", "--corpus", str(synthetic_corpus), "--models", "ensemble",
                 "--models-dir", "none", "--workers", "1"]) == 2  # fmt: skip
    assert "not loaded" in capsys.readouterr().err
