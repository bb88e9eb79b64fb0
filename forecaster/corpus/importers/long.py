"""The long format: a CSV or Parquet file (or a folder of them), one row per point; a run is the
rows of one `run_id`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from forecaster.corpus.importers._common import (
    ImportOptions,
    Progress,
    guess_direction,
    wrong_kind,
)
from forecaster.corpus.writer import RunRecord
from forecaster.errors import InvalidArgumentError


def _long_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.csv"), *path.glob("*.parquet")])
        if not files:
            raise wrong_kind(path, "long", "CSV or Parquet files in the folder")
        return files
    return [path]


def import_long(path: Path, options: ImportOptions, progress: Progress) -> Iterator[RunRecord]:
    import polars as pl

    for file in progress(_long_files(path)):
        try:
            if file.suffix == ".parquet":
                df = pl.read_parquet(file)
            else:
                df = pl.read_csv(file, infer_schema_length=10_000)
        except Exception as e:  # polars raises several types for a file it cannot parse
            raise wrong_kind(file, "long", f"a CSV or Parquet table ({e})") from None
        missing = [c for c in ("run_id", "step", "value") if c not in df.columns]
        if missing:
            raise wrong_kind(
                file,
                "long",
                f"columns run_id, step, value (missing {', '.join(missing)}; "
                f"found {', '.join(df.columns)})",
            )
        for col in ("step", "value", "lr", "wall_time", "max_step", "target"):
            if col in df.columns:
                try:
                    df = df.with_columns(pl.col(col).cast(pl.Float64, strict=True))
                except Exception:
                    bad = df.filter(
                        pl.col(col).cast(pl.Float64, strict=False).is_null()
                        & pl.col(col).is_not_null()
                    ).row(0, named=True)
                    raise InvalidArgumentError(
                        f"{file}: run {bad['run_id']!r}, column {col!r}: {bad[col]!r} is not a "
                        "number."
                    ) from None
        for (run_id,), frame in df.group_by("run_id", maintain_order=True):
            yield _long_run(file, str(run_id), frame, options)


def _long_run(file: Path, run_id: str, frame: Any, options: ImportOptions) -> RunRecord:
    steps = frame["step"].to_numpy()
    if np.isnan(steps).any() or (steps < 0).any() or (steps != np.round(steps)).any():
        raise InvalidArgumentError(
            f"{file}: run {run_id!r}, column 'step': steps must be whole numbers >= 0."
        )
    if len(np.unique(steps)) != len(steps):
        dup = steps[np.flatnonzero(np.bincount(np.unique(steps, return_inverse=True)[1]) > 1)[0]]
        raise InvalidArgumentError(
            f"{file}: run {run_id!r}, column 'step': step {int(dup)} appears twice; keep one "
            "point per step."
        )

    def first(col: str, default: Any) -> Any:
        if col in frame.columns and frame[col].null_count() < frame.height:
            return frame[col].drop_nulls()[0]
        return default

    metric = str(first("metric", options.metric or "value"))
    direction = options.direction or str(first("direction", guess_direction(metric)))
    max_step = first("max_step", options.max_step)
    target = first("target", None)
    return RunRecord(
        run_id=run_id,
        task=options.task or str(first("task", file.stem)),
        metric=metric,
        direction=direction,
        steps=steps.astype(np.int64),
        values=frame["value"].fill_null(float("nan")).to_numpy(),
        lr=frame["lr"].to_numpy() if "lr" in frame.columns else None,
        wall_time=frame["wall_time"].to_numpy() if "wall_time" in frame.columns else None,
        max_step=None if max_step is None else int(max_step),
        target=None if target is None else float(target),
    )
