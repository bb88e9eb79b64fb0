"""`forecaster train`: the learned forecasters, from a corpus to versioned artifacts.

1. Tasks are split per source (corpus/splits.py): train, calib and test, never mixed.
2. Each sampled run is cut at several fractions of its final step; each cut is one example
   (features, normalised sequence, z at the final step and at a few later logged steps).
3. gbm trains on the train tasks; sequence is pre-trained on synthetic curves
   (corpus/synthetic.py) and fine-tuned on the train tasks; the ensemble stacks gbm, sequence,
   power_law, pow3 and the schedule laws (fitted with each run's study history: the task's runs of
   the other fold) and calibrates its intervals on the calib tasks.
4. Every model is scored on the test tasks; the figures go into each artifact's meta.json with
   the corpus fingerprint and the tasks it learned from.

Examples weigh each source the same, and each task the same within its source, so 35 lcbench
tasks of 2,000 runs do not drown three nanogpt tasks.
"""

from __future__ import annotations

import hashlib
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.corpus import splits
from forecaster.corpus.reader import Source, sources
from forecaster.errors import InvalidArgumentError
from forecaster.evaluation.pool import run_jobs
from forecaster.hashing import seed_of
from forecaster.models import artifacts, features

N_QUERIES = 4  # the final step and up to three logged steps between the cut and it
EVAL_CUTOFFS = (0.1, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class _Job:
    source: Source
    task: str
    part: str
    run_ids: tuple[str, ...]
    seed: int
    with_power_law: bool


def _cutoffs(rng: np.random.Generator, part: str) -> list[float]:
    if part == "test":
        return list(EVAL_CUTOFFS)
    jitter = rng.uniform(-0.04, 0.04, size=len(EVAL_CUTOFFS))
    return [*(np.asarray(EVAL_CUTOFFS) + jitter).tolist(), float(rng.uniform(0.05, 0.9))]


def _task_examples(job: _Job) -> dict[str, Any]:
    """Every example of one task (runs with a finite final value and a usable cut)."""
    from forecaster.models import ensemble
    from forecaster.models.annealing_law import schedule_known
    from forecaster.models.base import StudyHistory
    from forecaster.models.sequence import query_features

    rng = np.random.default_rng([job.seed, seed_of(f"{job.source.name}/{job.task}")])
    rows: dict[str, list[Any]] = defaultdict(list)
    runs = [
        r
        for r in job.source.load(list(job.run_ids))
        if len(r.steps) and math.isfinite(r.final_value)
    ]
    # A run's study history (what the schedule laws learn from): the task's completed runs of
    # the other fold, as in evaluation/accuracy.py, so that no run sees itself.
    histories = [
        StudyHistory(
            tuple(r.curve() for r in runs[1 - fold :: 2]) if job.with_power_law else (),
            f"train/{job.seed}/{job.source.name}/{job.task}/fold{fold}",
        )
        for fold in (0, 1)
    ]
    for i, run in enumerate(runs):
        final_loss = run.final_value * run.direction.sign
        loss = run.values * run.direction.sign
        for cut in _cutoffs(rng, job.part):
            curve = run.curve(until_step=int(math.floor(cut * run.final_step)))
            if features.usable(curve) is not None:
                continue
            f = features.extract(curve)
            frame = f.frame
            later = np.flatnonzero(
                (run.steps > frame.last_step) & (run.steps < run.final_step) & np.isfinite(loss)
            )
            picks = rng.choice(later, size=min(N_QUERIES - 1, len(later)), replace=False)
            q_steps = np.full(N_QUERIES, float(frame.horizon))
            q_z = np.full(N_QUERIES, np.nan)
            q_z[0] = float(frame.scaled(final_loss))
            q_steps[1 : 1 + len(picks)] = run.steps[picks]
            q_z[1 : 1 + len(picks)] = frame.scaled(loss[picks])
            rows["x"].append(f.features)
            rows["seq"].append(f.sequence)
            rows["queries"].append(query_features(frame, q_steps))
            rows["zq"].append(np.clip(q_z, -features.Z_CLIP, features.Z_CLIP))
            rows["progress"].append(f.features[0])
            rows["cutoff"].append(cut)
            rows["run"].append(run.run_id)
            rows["par"].append(
                ensemble.parametric_z(curve, frame, histories[i % 2])
                if job.with_power_law
                else np.full((len(ensemble.PARAMETRIC_MEMBERS), len(features.LEVELS)), np.nan)
            )
            rows["sched"].append(float(schedule_known(curve)))
    n = len(rows["x"])
    out: dict[str, Any] = {"source": job.source.name, "task": job.task, "part": job.part, "n": n}
    if n:
        for key in ("x", "seq", "queries", "zq", "par"):
            out[key] = np.stack(rows[key])
        for key in ("progress", "cutoff", "sched"):
            out[key] = np.asarray(rows[key], dtype=np.float64)
        out["run"] = rows["run"]
    return out


@dataclass
class Examples:
    """Examples of one part, with per-example source and weight."""

    x: np.ndarray
    seq: np.ndarray
    queries: np.ndarray
    zq: np.ndarray
    par: np.ndarray  # (n, P, L): ensemble.PARAMETRIC_MEMBERS' quantiles (calib and test)
    progress: np.ndarray
    cutoff: np.ndarray
    sched: np.ndarray  # 1.0 where the schedule laws apply (a loss whose lr is known)
    source: np.ndarray
    task: np.ndarray
    weight: np.ndarray

    @property
    def z(self) -> np.ndarray:
        return np.asarray(self.zq[:, 0])

    def __len__(self) -> int:
        return len(self.x)


def _combine(parts: list[dict[str, Any]]) -> Examples:
    parts = [p for p in parts if p["n"]]
    if not parts:
        raise InvalidArgumentError("no usable examples: the runs are too short or diverged.")
    per_source: dict[str, int] = defaultdict(int)
    for p in parts:
        per_source[p["source"]] += 1
    weights = [np.full(p["n"], 1.0 / (per_source[p["source"]] * p["n"])) for p in parts]
    w = np.concatenate(weights)
    return Examples(
        *(
            np.concatenate([p[k] for p in parts])
            for k in ("x", "seq", "queries", "zq", "par", "progress", "cutoff", "sched")
        ),
        np.concatenate([[p["source"]] * p["n"] for p in parts]),
        np.concatenate([[f"{p['source']}/{p['task']}"] * p["n"] for p in parts]),
        w / w.mean(),
    )


def fingerprint(srcs: Sequence[Source]) -> str:
    """sha256 over each source's name, runs.parquet bytes and points.parquet size."""
    h = hashlib.sha256()
    for s in sorted(srcs, key=lambda s: s.name):
        h.update(s.name.encode())
        h.update(s.runs_file.read_bytes())
        h.update(str(s.points_file.stat().st_size).encode())
    return h.hexdigest()


def build_examples(
    srcs: Sequence[Source],
    max_runs_per_task: int,
    seed: int,
    split_seed: int,
    parts: Sequence[str],
    workers: int | None,
    progress: bool,
    desc: str,
    power_law: bool = True,
) -> tuple[dict[str, Examples], dict[str, list[str]]]:
    """Examples per part, and the task keys in each part; the power-law ensemble's forecast
    (what the ensemble stacks) is computed for the calib and test examples when power_law."""
    jobs, keys = [], defaultdict(list)
    for source in srcs:
        runs = source.runs().sort("run_id")
        by_task = {
            str(t): f["run_id"].to_list() for (t,), f in runs.group_by("task", maintain_order=True)
        }
        assignment = splits.split_tasks(source.name, by_task, seed=split_seed)
        for task, ids in by_task.items():
            part = assignment[task]
            keys[part].append(splits.task_key(source.name, task))
            if part not in parts:
                continue
            rng = np.random.default_rng([seed, seed_of(f"{source.name}/{task}")])
            chosen = [ids[i] for i in rng.permutation(len(ids))[:max_runs_per_task]]
            jobs.append(
                _Job(source, task, part, tuple(chosen), seed, power_law and part != "train")
            )
    results = list(run_jobs(_task_examples, jobs, workers, progress, desc))
    by_part = {
        p: _combine([r for r in results if r["part"] == p])
        for p in parts
        if any(r["part"] == p and r["n"] for r in results)
    }
    return by_part, dict(keys)


def _scores(zq: np.ndarray, truth: np.ndarray) -> dict[str, float]:
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


def heldout_metrics(predictions: dict[str, np.ndarray], ex: Examples) -> dict[str, Any]:
    """Per model, per source (and overall) scores in z units on the test examples."""
    out: dict[str, Any] = {}
    for model, zq in predictions.items():
        per = {"all": _scores(zq, ex.z)}
        for source in sorted(set(ex.source)):
            mask = ex.source == source
            per[source] = _scores(zq[mask], ex.z[mask])
        out[model] = per
    return out


def train_all(
    corpus: str | Path,
    out: str | Path,
    *,
    source_names: Sequence[str] | None = None,
    max_runs_per_task: int = 60,
    synthetic_tasks: int = 150,
    pretrain_epochs: int = 6,
    finetune_epochs: int = 10,
    gbm_rounds: int = 300,
    seed: int = 0,
    split_seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains gbm, sequence and ensemble on the corpus and writes OUT/<name>/ for each.
    Returns the held-out metrics (z units) per model and source."""
    from forecaster.corpus import synthetic
    from forecaster.models import ensemble, gbm, sequence

    started = time.perf_counter()
    srcs = sources(corpus, source_names)
    say = _say(progress)
    say(f"corpus {corpus}: {', '.join(s.name for s in srcs)}")
    data, keys = build_examples(
        srcs,
        max_runs_per_task,
        seed,
        split_seed,
        ("train", "calib", "test"),
        workers,
        progress,
        "examples",
    )
    for part in ("train", "calib", "test"):
        if part not in data:
            raise InvalidArgumentError(
                f"the corpus has no {part} tasks: it needs at least 3 tasks in one source "
                "(tasks are split per source: 20% test, 20% calib, the rest train)."
            )
        say(f"{part}: {len(data[part])} examples from {len(keys.get(part, []))} tasks")
    train, calib, test = data["train"], data["calib"], data["test"]
    fp = fingerprint(srcs)

    say("training gbm")
    gbm_model = gbm.train(
        train.x, train.z, train.weight, rounds=gbm_rounds, seed=seed, progress=say
    )

    with tempfile.TemporaryDirectory() as tmp:
        syn_dir = synthetic.write_corpus(Path(tmp) / "synthetic", synthetic_tasks, 20, seed=seed)
        syn, _ = build_examples(
            sources(syn_dir),
            20,
            seed,
            split_seed,
            ("train", "calib", "test"),
            workers,
            progress,
            "synthetic",
            power_law=False,
        )
    prior = _combine_all(syn)
    say(f"pre-training sequence on {len(prior)} synthetic examples")
    seq_model = sequence.train(
        _seq_data(prior),
        epochs=pretrain_epochs,
        seed=seed,
        normalise_on=np.concatenate([prior.x, train.x]),
        progress=say,
    )
    say(f"fine-tuning sequence on {len(train)} corpus examples")
    seq_model = sequence.train(
        _seq_data(train),
        net=seq_model.net,
        epochs=finetune_epochs,
        lr=1e-3,
        seed=seed,
        progress=say,
    )

    def members(ex: Examples) -> np.ndarray:
        return ensemble.member_quantiles(
            gbm_model, seq_model, ex.x, ex.seq, ex.queries[:, :1], ex.par
        )

    say("stacking and calibrating the ensemble")
    stacking = ensemble.fit_stack(
        members(calib), calib.z, calib.progress, calib.weight, calib.sched, calib.task
    )
    ens = ensemble.EnsembleForecaster(gbm_model, seq_model, stacking)

    m_test = members(test)
    cell = (test.sched.astype(int), ensemble.bucket_of(test.progress))
    z_ens = ensemble.calibrate(
        ensemble.stack(m_test, stacking.weights[cell]), stacking.deltas[cell]
    )
    sched = test.sched[:, None] > 0
    predictions = {name: m_test[:, i] for i, name in enumerate(ensemble.MEMBERS)}
    for name in ensemble.SCHEDULE_MEMBERS:  # without a known lr they are the power law
        predictions[name] = np.where(sched, predictions[name], predictions["power_law"])
    metrics = heldout_metrics(
        {**predictions, "ensemble": z_ens, "last_value_level": np.zeros_like(z_ens)}, test
    )
    trained_on = sorted(keys.get("train", []) + keys.get("calib", []))
    common = {
        "corpus_fingerprint": fp,
        "corpus_sources": [s.name for s in srcs],
        "split": {"seed": split_seed, "test_fraction": 0.2, "calib_fraction": 0.2},
        "training_tasks": trained_on,
        "test_tasks": sorted(keys.get("test", [])),
        "heldout_metrics": metrics,
        "examples": {
            "train": len(train),
            "calib": len(calib),
            "test": len(test),
            "synthetic": len(prior),
        },
        "settings": {
            "max_runs_per_task": max_runs_per_task,
            "seed": seed,
            "synthetic_tasks": synthetic_tasks,
            "pretrain_epochs": pretrain_epochs,
            "finetune_epochs": finetune_epochs,
            "gbm_rounds": gbm_rounds,
        },
        "created_unix": time.time(),
    }
    out = Path(out)
    artifacts.save(out, gbm.NAME, gbm.VERSION, gbm_model.files(), common)
    artifacts.save(
        out,
        sequence.NAME,
        sequence.VERSION,
        seq_model.files(),
        {**common, "hidden": sequence.HIDDEN},
    )
    artifacts.save(
        out,
        ensemble.NAME,
        ensemble.VERSION,
        ens.files(),
        {
            **common,
            "member_versions": {"gbm": gbm.VERSION, "sequence": sequence.VERSION},
            "stacking": stacking.to_json(),
        },
    )
    say(f"wrote {out} in {time.perf_counter() - started:.0f} s")
    return metrics


def _combine_all(parts: dict[str, Examples]) -> Examples:
    items = list(parts.values())
    return Examples(
        *(np.concatenate([getattr(e, f.name) for e in items]) for f in fields(Examples))
    )


def _seq_data(ex: Examples) -> Any:
    from forecaster.models.sequence import SeqData

    return SeqData(ex.seq, ex.x, ex.queries, ex.zq, ex.weight)


def _say(progress: bool) -> Any:
    def say(text: str) -> None:
        if progress:
            print(f"[train] {text}", file=sys.stderr, flush=True)

    return say


def format_metrics(metrics: dict[str, Any]) -> str:
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
