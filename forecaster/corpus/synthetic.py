"""Synthetic learning curves: a prior over shapes, for pre-training and for tests.

Each task draws a shape family and its base parameters; its runs jitter them, as the configs
of one sweep do. On top: a learning-rate schedule (constant, cosine, linear, warmup-stable-
decay or step) whose effect follows the annealing law, L = L0 + A*S1^-alpha - C*S2 (Tissue
et al. 2024, arXiv:2408.11029, with S2 in its momentum form), plateaus before the drop,
noise of several levels and tails, spikes, overfitting (a late rise), divergence to
inf/NaN, and accuracy-like (max) metrics. Everything is drawn from one seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.corpus.writer import RunRecord, write_source

FAMILIES = ("pow3", "exp3", "log_power", "mmf", "annealing")
SCHEDULES = ("constant", "cosine", "linear", "wsd", "step")


def _schedule(rng: np.random.Generator, kind: str, total: int) -> np.ndarray:
    s = np.arange(1, total + 1, dtype=np.float64)
    peak = float(10 ** rng.uniform(-4, -1))
    warm = int(total * rng.uniform(0, 0.05))
    floor = peak * rng.choice([0.0, 0.01, 0.1])
    frac = np.clip((s - warm) / max(total - warm, 1), 0, 1)
    if kind == "cosine":
        lr = floor + (peak - floor) * 0.5 * (1 + np.cos(np.pi * frac))
    elif kind == "linear":
        lr = peak - (peak - floor) * frac
    elif kind == "wsd":
        start = 1 - rng.uniform(0.1, 0.3)
        lr = np.where(frac < start, peak, peak - (peak - floor) * (frac - start) / (1 - start))
    elif kind == "step":
        every = max(int(total * rng.uniform(0.2, 0.4)), 1)
        lr = peak * 0.1 ** np.floor(np.maximum(s - warm, 0) / every)
    else:
        lr = np.full(total, peak)
    if warm:
        lr[:warm] = peak * s[:warm] / warm
    return np.asarray(lr)


def _annealing_area(lr: np.ndarray, decay: float) -> np.ndarray:
    """S2 in the momentum form: m_i = decay * m_{i-1} + (lr_{i-1} - lr_i); S2 = sum of m."""
    from scipy.signal import lfilter

    drops = np.concatenate([[0.0], lr[:-1] - lr[1:]])
    drops = np.maximum(drops, 0.0)  # warm-up rises do not anneal
    m = lfilter([1.0], [1.0, -decay], drops)
    return np.asarray(np.cumsum(m))


def _base(rng: np.random.Generator, family: str, s: np.ndarray, total: int, p: dict) -> np.ndarray:
    x = s / total
    if family == "pow3":
        return np.asarray(p["a"] + p["b"] * (x * 20 * p["k"] + 0.05) ** -p["c"])
    if family == "exp3":
        return np.asarray(p["a"] + p["b"] * np.exp(-p["c"] * 8 * x))
    if family == "log_power":
        return np.asarray(p["a"] + p["b"] / (1 + (x / (0.05 * p["k"])) ** p["c"]))
    # mmf: a logistic in log-step
    return np.asarray(p["a"] + p["b"] / (1 + (x * 20 * p["k"]) ** (1.5 * p["c"])))


def generate(
    n_tasks: int = 20,
    runs_per_task: int = 20,
    *,
    seed: int = 0,
    source: str = "synthetic",
) -> Iterator[RunRecord]:
    """Runs of n_tasks synthetic tasks, runs_per_task each."""
    rng = np.random.default_rng(seed)
    for t in range(n_tasks):
        family = str(rng.choice(FAMILIES, p=[0.25, 0.15, 0.15, 0.15, 0.3]))
        total = int(rng.choice([50, 100, 200, 500, 1000, 3000]))
        n_log = min(total, int(rng.integers(20, 200)))
        log_spaced = rng.random() < 0.3
        is_max = rng.random() < 0.2
        base = {
            "a": float(rng.uniform(0.05, 3.0)),
            "b": float(rng.lognormal(0.0, 0.7)),
            "c": float(rng.uniform(0.2, 1.2)),
            "k": float(rng.lognormal(0.0, 0.5)),
        }
        schedule_kind = str(rng.choice(SCHEDULES))
        noise_level = float(10 ** rng.uniform(-3.3, -1.0))
        task = f"{family}_{t:03d}"
        for r in range(runs_per_task):
            p = {k: v * float(rng.lognormal(0.0, 0.15)) for k, v in base.items()}
            s = np.arange(1, total + 1, dtype=np.float64)
            lr = None
            if family == "annealing":
                lr = _schedule(rng, schedule_kind, total)
                s1 = np.cumsum(lr) / (lr.max() * total)  # the forward area, in budget units
                s2 = _annealing_area(lr, float(rng.uniform(0.99, 0.999))) / (lr.max() * total)
                c = p["b"] * rng.uniform(0.5, 3.0)
                curve = p["a"] + p["b"] * (s1 * 20 * p["k"] + 0.05) ** -p["c"] - c * s2
            else:
                shifted = s
                if rng.random() < 0.15:  # a plateau before the curve starts to fall
                    shifted = np.maximum(s - total * rng.uniform(0.05, 0.3), 1.0)
                curve = _base(rng, family, shifted, total, p)
                if rng.random() < 0.3:  # a schedule without its law: decay sharpens the end
                    lr = _schedule(rng, schedule_kind, total)
                    curve = curve - p["b"] * 0.1 * (1 - lr / lr.max()) * rng.uniform(0, 1)
            if rng.random() < 0.1:  # overfitting: validation loss rises late
                curve = curve + p["b"] * rng.uniform(0.05, 0.5) * (s / total) ** 2
            sd = noise_level * (abs(p["b"]) + 0.1 * abs(p["a"]))
            noise = rng.standard_t(3, total) if rng.random() < 0.3 else rng.standard_normal(total)
            curve = curve + sd * noise
            if rng.random() < 0.2:  # spikes
                where = rng.integers(0, total, size=int(rng.integers(1, 4)))
                curve[where] += p["b"] * rng.uniform(0.2, 2.0, size=len(where))
            if rng.random() < 0.05:  # divergence: blows up, then NaN
                start = int(total * rng.uniform(0.2, 0.9))
                with np.errstate(over="ignore", invalid="ignore"):
                    grow = np.exp(np.arange(total - start) * rng.uniform(0.05, 0.5))
                    curve[start:] = curve[start:] * grow
                curve[start:][grow > 1e6] = np.nan
            if log_spaced:
                idx = np.unique(np.geomspace(1, total, n_log).round().astype(int)) - 1
            else:
                idx = np.unique(np.linspace(0, total - 1, n_log).round().astype(int))
            values = curve[idx]
            direction = "min"
            if is_max:  # an accuracy-like metric: bounded, rising
                values = 1.0 - values / (base["a"] + base["b"] * 2)
                direction = "max"
            yield RunRecord(
                run_id=f"{source}/{task}/{r:04d}",
                task=task,
                metric="synthetic_accuracy" if is_max else "synthetic_loss",
                direction=direction,
                steps=(idx + 1).astype(np.int64),
                values=values,
                lr=None if lr is None else lr[idx],
                max_step=total,
                config={
                    "family": family,
                    "schedule": schedule_kind if lr is not None else "",
                    "learning_rate": float(10 ** rng.uniform(-4, -2)),  # says nothing
                    # A hyper-parameter that moves where the run ends (its asymptote's jitter).
                    "weight_decay": 1e-3 * (p["a"] / base["a"]) ** 4 if base["a"] else 1e-3,
                },
            )


def write_corpus(
    out: str | Path, n_tasks: int = 20, runs_per_task: int = 20, *, seed: int = 0
) -> Path:
    """A synthetic source folder OUT (runs.parquet, points.parquet) in the corpus schema."""
    out = Path(out)
    return write_source(out, generate(n_tasks, runs_per_task, seed=seed, source=out.name))


def generate_samplewise(
    n_tasks: int = 248,
    runs_per_task: int = 40,
    *,
    seed: int = 0,
    source: str = "samplewise",
) -> Iterator[RunRecord]:
    """Sample-wise learning curves shaped like LCDB's (Mohr et al. 2022): a learner's validation
    accuracy at training-set sizes 16 * sqrt(2)^k up to the dataset's size (10 to 24 anchors),
    a rising power law to the learner's asymptote, with noise that shrinks as the training set
    grows. Learners of one dataset differ in asymptote and in rate, so their curves cross; a
    few sit at the chance level (a majority-class learner) and a few dip at the end. The
    replay benchmark's stand-in for a held-out corpus of such curves (issue 19: 248 tasks x 40
    runs), not a prior anything is fitted to."""
    rng = np.random.default_rng(seed)
    every_anchor = np.unique(np.round(16 * np.sqrt(2) ** np.arange(40)).astype(np.int64))
    for t in range(n_tasks):
        size = int(rng.choice([500, 1_000, 3_000, 10_000, 50_000]))
        anchors = every_anchor[every_anchor <= size]
        chance = float(rng.uniform(0.3, 0.6))
        best = float(rng.uniform(0.7, 0.99))
        task = f"dataset_{t:03d}"
        for r in range(runs_per_task):
            ceiling = chance + (best - chance) * float(rng.uniform(0.4, 1.0))
            rate = float(rng.uniform(0.2, 0.8))
            values = ceiling - (ceiling - chance) * (anchors / anchors[0]) ** -rate
            if rng.random() < 0.05:  # a majority-class learner: chance level throughout
                values = np.full(len(anchors), chance)
            if rng.random() < 0.1:  # a dip at the largest sizes
                values = values - 0.05 * (anchors / size) ** 2 * float(rng.uniform(0, 1))
            noise = float(rng.uniform(0.002, 0.03)) * (anchors / anchors[0]) ** -0.25
            values = np.clip(values + noise * rng.standard_normal(len(anchors)), 0.0, 1.0)
            yield RunRecord(
                run_id=f"{source}/{task}/{r:04d}",
                task=task,
                metric="val_accuracy",
                direction="max",
                steps=anchors,
                values=values,
                step_unit="sample",
                max_step=int(anchors[-1]),
                config={"learner": r % 20, "seed": r // 20},
            )


def write_samplewise_corpus(
    out: str | Path, n_tasks: int = 248, runs_per_task: int = 40, *, seed: int = 0
) -> Path:
    """A source folder OUT of `generate_samplewise` runs, in the corpus schema."""
    out = Path(out)
    return write_source(
        out, generate_samplewise(n_tasks, runs_per_task, seed=seed, source=out.name)
    )


def write_scale_corpus(
    out: str | Path,
    n_runs: int,
    *,
    runs_per_task: int = 1000,
    points: int = 10,
    seed: int = 0,
    chunk_runs: int = 50_000,
) -> Path:
    """A source folder of n_runs noisy power-law runs (`points` points each, budget twice as
    long), written chunk by chunk in row groups so that writing a million runs holds one chunk
    in memory: the input of the batch's scale benchmark and memory test."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps = np.arange(1, points + 1, dtype=np.int64)
    name = folder.name
    with (
        pq.ParquetWriter(folder / "points.parquet", _POINTS_SCHEMA(pa)) as points_out,
        pq.ParquetWriter(folder / "runs.parquet", _RUNS_SCHEMA(pa)) as runs_out,
    ):
        for start in range(0, n_runs, chunk_runs):
            idx = np.arange(start, min(start + chunk_runs, n_runs))
            ids = [f"{name}/t{i // runs_per_task:06d}/{i % runs_per_task:06d}" for i in idx]
            tasks = [f"t{i // runs_per_task:06d}" for i in idx]
            a = rng.uniform(0.5, 2.0, len(idx))
            c = rng.uniform(0.1, 0.5, len(idx))
            noise = rng.normal(0.0, 0.01, (len(idx), points))
            values = c[:, None] + a[:, None] * steps[None, :] ** -0.5 + noise
            points_out.write_table(
                pa.table(
                    {
                        "run_id": np.repeat(np.array(ids, dtype=object), points),
                        "step": np.tile(steps, len(idx)),
                        "value": values.ravel(),
                    },
                    schema=_POINTS_SCHEMA(pa),
                )
            )
            runs_out.write_table(
                pa.table(
                    {
                        "run_id": ids,
                        "task": tasks,
                        "direction": ["min"] * len(idx),
                        "max_step": np.full(len(idx), 2 * points, dtype=np.int64),
                        "final_step": np.full(len(idx), points, dtype=np.int64),
                        "final_value": values[:, -1],
                    },
                    schema=_RUNS_SCHEMA(pa),
                )
            )
    return folder


def _POINTS_SCHEMA(pa: Any) -> Any:  # noqa: N802 (a schema, built where pyarrow is imported)
    return pa.schema([("run_id", pa.string()), ("step", pa.int64()), ("value", pa.float64())])


def _RUNS_SCHEMA(pa: Any) -> Any:  # noqa: N802
    return pa.schema(
        [
            ("run_id", pa.string()),
            ("task", pa.string()),
            ("direction", pa.string()),
            ("max_step", pa.int64()),
            ("final_step", pa.int64()),
            ("final_value", pa.float64()),
        ]
    )
