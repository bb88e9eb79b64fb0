"""Writing a corpus source folder (runs.parquet + points.parquet in the schema of
datasets/SCHEMA.md): what the importers and the synthetic generator produce."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.errors import InvalidArgumentError


@dataclass
class RunRecord:
    """One run on its way into the schema; points sorted by step, one per step."""

    run_id: str
    task: str
    metric: str
    direction: str
    steps: np.ndarray
    values: np.ndarray
    lr: np.ndarray | None = None
    wall_time: np.ndarray | None = None
    step_unit: str = "step"
    max_step: int | None = None
    target: float | None = None
    config: dict[str, Any] = field(default_factory=dict)


def write_source(out: str | Path, runs: Iterable[RunRecord], source: str | None = None) -> Path:
    """Writes OUT/runs.parquet and OUT/points.parquet; run ids become "<source>/<id>" where
    they do not start with it already. Returns OUT."""
    import polars as pl

    out = Path(out)
    source = source or out.name
    run_rows: list[dict[str, Any]] = []
    frames: list[pl.DataFrame] = []
    seen: set[str] = set()
    for r in runs:
        run_id = r.run_id if r.run_id.startswith(f"{source}/") else f"{source}/{r.run_id}"
        if run_id in seen:
            raise InvalidArgumentError(f"run {run_id!r} appears twice; run ids must be unique.")
        seen.add(run_id)
        if r.direction not in ("min", "max"):
            raise InvalidArgumentError(
                f"run {run_id!r}: direction must be 'min' or 'max'; got {r.direction!r}."
            )
        steps = np.asarray(r.steps, dtype=np.int64)
        order = np.argsort(steps, kind="stable")
        steps = steps[order]
        keep = np.ones(len(steps), dtype=bool)
        keep[:-1] = steps[1:] != steps[:-1]  # one point per step: the last one logged wins
        idx = order[keep]
        values = np.asarray(r.values, dtype=np.float64)[idx]
        steps = steps[keep]
        n = len(steps)

        def col(a: np.ndarray | None, idx: np.ndarray = idx, n: int = n) -> np.ndarray:
            return np.full(n, np.nan) if a is None else np.asarray(a, dtype=np.float64)[idx]

        frames.append(
            pl.DataFrame(
                {
                    "run_id": [run_id] * n,
                    "step": steps,
                    "value": values,
                    "lr": col(r.lr),
                    "wall_time": col(r.wall_time),
                },
                schema={
                    "run_id": pl.String,
                    "step": pl.Int64,
                    "value": pl.Float64,
                    "lr": pl.Float64,
                    "wall_time": pl.Float64,
                },
            ).with_columns(pl.col("lr").fill_nan(None), pl.col("wall_time").fill_nan(None))
        )
        run_rows.append(
            {
                "run_id": run_id,
                "source": source,
                "task": r.task,
                "metric": r.metric,
                "direction": r.direction,
                "step_unit": r.step_unit,
                "max_step": r.max_step,
                "final_step": int(steps[-1]) if n else 0,
                "final_value": float(values[-1]) if n else float("nan"),
                "target": r.target,
                "config": json.dumps(r.config, sort_keys=True, default=str),
            }
        )
    if not run_rows:
        raise InvalidArgumentError("nothing to write: no run with points was found.")
    out.mkdir(parents=True, exist_ok=True)
    runs_df = pl.DataFrame(
        run_rows,
        schema={
            "run_id": pl.String,
            "source": pl.String,
            "task": pl.String,
            "metric": pl.String,
            "direction": pl.String,
            "step_unit": pl.String,
            "max_step": pl.Int64,
            "final_step": pl.Int64,
            "final_value": pl.Float64,
            "target": pl.Float64,
            "config": pl.String,
        },
    )
    runs_df.sort("run_id").write_parquet(out / "runs.parquet", compression="zstd")
    pl.concat(frames).sort("run_id", "step").write_parquet(
        out / "points.parquet", compression="zstd"
    )
    return out
