"""What training reports: the held-out metrics (z units, on the test tasks) and the meta it
writes into each artifact."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from forecaster.corpus.reader import Source
from forecaster.curves import FloatArray
from forecaster.models import artifacts
from forecaster.training.examples import Examples
from forecaster.training.fit import member_quantiles

if TYPE_CHECKING:
    from forecaster.models.ensemble import EnsembleForecaster


class Scores(TypedDict):
    """One model's figures on some test examples, in z units."""

    n: int
    medae_z: float
    mae_z: float
    coverage_50: float
    coverage_90: float
    pinball: float


Metrics = dict[str, dict[str, Scores]]  # model -> "all" or a source -> scores


def fingerprint(srcs: Sequence[Source]) -> str:
    """sha256 over each source's name, runs.parquet bytes and points.parquet size."""
    h = hashlib.sha256()
    for s in sorted(srcs, key=lambda s: s.name):
        h.update(s.name.encode())
        h.update(s.runs_file.read_bytes())
        h.update(str(s.points_file.stat().st_size).encode())
    return h.hexdigest()


def code_digest() -> str:
    """A name for the code that makes examples and trains and serves the learned models
    (forecaster/training and forecaster/models): what a cache of their outputs is keyed on."""
    root = Path(__file__).resolve().parents[1]
    files = sorted([*(root / "training").glob("*.py"), *(root / "models").glob("*.py")])
    return hashlib.sha256(
        "".join(f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in files).encode()
    ).hexdigest()


def heldout_predictions(ens: EnsembleForecaster, test: Examples) -> dict[str, FloatArray]:
    """(n, L) quantiles of z per model on the test examples: each member, the ensemble and the
    last value's level (z = 0)."""
    from forecaster.models import ensemble

    m_test = member_quantiles(ens.gbm, ens.sequence, test)
    stacking = ens.stacking
    cell = (test.sched.astype(int), ensemble.bucket_of(test.progress))
    z_ens = ensemble.calibrate(
        ensemble.stack(m_test, stacking.weights[cell]), stacking.deltas[cell]
    )
    sched = test.sched[:, None] > 0
    predictions = {name: m_test[:, i] for i, name in enumerate(ensemble.MEMBERS)}
    for name in ensemble.SCHEDULE_MEMBERS:  # without a known lr they are the power law
        predictions[name] = np.where(sched, predictions[name], predictions["power_law"])
    return {**predictions, "ensemble": z_ens, "last_value_level": np.zeros_like(z_ens)}


def _scores(zq: FloatArray, truth: FloatArray) -> Scores:
    from forecaster.models.ensemble import pinball

    err = np.abs(zq[:, 2] - truth)
    return {
        "n": int(len(truth)),
        "medae_z": float(np.median(err)),
        "mae_z": float(err.mean()),
        "coverage_50": float(np.mean((zq[:, 1] <= truth) & (truth <= zq[:, 3]))),
        "coverage_90": float(np.mean((zq[:, 0] <= truth) & (truth <= zq[:, 4]))),
        "pinball": float(pinball(zq, truth).mean()),
    }


def heldout_metrics(predictions: Mapping[str, FloatArray], ex: Examples) -> Metrics:
    """Per model, per source (and overall) scores in z units on the test examples."""
    out: Metrics = {}
    for model, zq in predictions.items():
        per = {"all": _scores(zq, ex.z)}
        for source in sorted(set(ex.source)):
            mask = ex.source == source
            per[source] = _scores(zq[mask], ex.select(mask).z)
        out[model] = per
    return out


def artifact_meta(
    srcs: Sequence[Source],
    tasks: Mapping[str, Sequence[str]],
    metrics: Metrics,
    n_examples: Mapping[str, int],
    settings: Mapping[str, int],
    split_seed: int,
    holdout_sources: Sequence[str] = (),
) -> dict[str, Any]:
    """What every artifact's meta.json holds besides its own: the corpus fingerprint, the
    sources trained on and those held out whole (leave-one-source-out), the tasks trained on
    (train and calib) and held out (test), the held-out metrics, the number of examples per
    part and the settings."""
    return {
        "corpus_fingerprint": fingerprint(srcs),
        "corpus_sources": [s.name for s in srcs],
        "holdout_sources": sorted(holdout_sources),
        "split": {"seed": split_seed, "test_fraction": 0.2, "calib_fraction": 0.2},
        "training_tasks": sorted([*tasks.get("train", []), *tasks.get("calib", [])]),
        "test_tasks": sorted(tasks.get("test", [])),
        "heldout_metrics": metrics,
        "examples": dict(n_examples),
        "settings": dict(settings),
        "created_unix": time.time(),
    }


EXAMPLE_INDEX = "training_examples.parquet"


def write_example_index(out: Path, parts: Mapping[str, Examples]) -> Path:
    """OUT/training_examples.parquet: one row per example of every set training read (part,
    source, task, run_id, cutoff, weight), so anyone can check what a model learned from."""
    import polars as pl

    frames = [
        pl.DataFrame(
            {
                "part": [part] * len(ex),
                "source": ex.source.tolist(),
                "task": ex.task.tolist(),
                "run_id": ex.run.tolist(),
                "cutoff": ex.cutoff,
                "weight": ex.weight,
            },
            schema={
                "part": pl.String,
                "source": pl.String,
                "task": pl.String,
                "run_id": pl.String,
                "cutoff": pl.Float64,
                "weight": pl.Float64,
            },
        )  # fmt: skip
        for part, ex in parts.items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / EXAMPLE_INDEX
    pl.concat(frames).write_parquet(path)
    return path


def write_artifacts(out: Path, ens: EnsembleForecaster, meta: Mapping[str, Any]) -> None:
    """OUT/gbm/, OUT/sequence/ and OUT/ensemble/, each with meta (and what only it has)."""
    from forecaster.models import ensemble, gbm, sequence

    artifacts.save(out, gbm.NAME, gbm.VERSION, ens.gbm.files(), meta)
    artifacts.save(
        out,
        sequence.NAME,
        sequence.VERSION,
        ens.sequence.files(),
        {**meta, "hidden": sequence.HIDDEN},
    )
    artifacts.save(
        out,
        ensemble.NAME,
        ensemble.VERSION,
        ens.files(),
        {
            **meta,
            "member_versions": {"gbm": gbm.VERSION, "sequence": sequence.VERSION},
            "stacking": ens.stacking.to_json(),
        },
    )


def format_metrics(metrics: Metrics) -> str:
    """The held-out metrics as a table: model x source."""
    lines = [
        f"{'model':<18}{'source':<20}{'n':>6}{'medae_z':>9}{'mae_z':>8}{'cov50':>7}"
        f"{'cov90':>7}{'pinball':>9}"
    ]
    for model, per in metrics.items():
        for source, s in per.items():
            lines.append(
                f"{model:<18}{source:<20}{s['n']:>6}{s['medae_z']:>9.3f}{s['mae_z']:>8.3f}"
                f"{s['coverage_50']:>7.2f}{s['coverage_90']:>7.2f}{s['pinball']:>9.4f}"
            )
    return "\n".join(lines)
